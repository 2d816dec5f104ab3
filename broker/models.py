"""Value objects shared by every layer. Secrets never appear in a repr."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


def mask(secret: str) -> str:
    """Show just enough of an identifier to tell two apart (aws-vault style)."""
    return f"****{secret[-4:]}" if len(secret) > 8 else "****"


@dataclass(frozen=True)
class StaticKeys:
    """Keys as read from the user's own config files: an IAM user's long-term keys, or
    temporary ones with their `aws_session_token` (written by saml2aws, gimme-aws-creds,
    `aws configure set`...), which must be sent with every call they sign."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def temporary(self) -> bool:
        return self.session_token is not None

    def __repr__(self) -> str:
        return f"StaticKeys(access_key_id={mask(self.access_key_id)!r})"


@dataclass(frozen=True)
class Credentials:
    """Temporary credentials from STS: a frozen snapshot, so a reader never mixes
    the key of one refresh with the token of another."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: float  # epoch seconds, UTC
    account_id: str | None = None

    def remaining(self, now: float) -> float:
        return self.expiration - now

    def expiration_iso(self) -> str:
        # Capital Z and no fractional part: the strictest SDK (JS v3) accepts only that shape.
        return dt.datetime.fromtimestamp(self.expiration, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={mask(self.access_key_id)!r}, expiration={self.expiration_iso()!r})"


SourceSecret = StaticKeys | Credentials


def is_temporary(secret: SourceSecret) -> bool:
    """Temporary credentials sign AssumeRole for at most one hour (role chaining) and can
    never buy a GetSessionToken session."""
    return isinstance(secret, Credentials) or secret.temporary
