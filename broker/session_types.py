"""What the session modules hand each other and the API: issued credentials with their
ready-made answer, MFA sessions, per-profile bookkeeping, and the rows of `status`.
Nothing here does anything; nothing here is logged with its secrets (see the reprs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .plans import MfaSessionKey
from .errors import BrokerError
from .models import Credentials
from .wire import Message


@dataclass(frozen=True)
class Issued:
    """Credentials for one profile plus their wire body, serialized once."""

    credentials: Credentials
    body: bytes = field(repr=False)
    issued_at: float
    refresh_at: float
    # The ready-made ASGI answer (see wire.response_messages).
    messages: tuple[Message, Message] = field(repr=False)


@dataclass(frozen=True)
class MfaSession:
    key: MfaSessionKey
    credentials: Credentials
    started_at: float


@dataclass
class ProfileState:
    """Bookkeeping that outlives a profile's credentials (nothing secret)."""

    failures: int = 0
    retry_at: float = 0.0
    last_error: BrokerError | None = None
    last_error_at: float | None = None
    refreshes: int = 0


@dataclass
class LoginResult:
    profile: str
    mfa_required: bool
    session: str
    session_expires_at: float | None
    profiles: list[str]
    warm_error: str | None = None


@dataclass
class ProfileStatus:
    profile: str
    kind: str
    strategy: str
    role_arn: str | None
    credentials_expire_at: float | None
    mfa_session: str | None
    mfa_session_expires_at: float | None
    login_required: bool
    duration: int | None
    requested_duration: int | None
    last_error: str | None
    last_error_at: float | None
    config_error: str | None = None
    notes: list[str] = field(default_factory=list)
    mfa_serial: str | None = None
    # "MFA session ended at 17:02, after 12 h", while a login is needed after one.
    mfa_session_ended: str | None = None


# Entries a session cache holds at most (cachetools evicts the least recently used past it).
MAX_SESSIONS = 4096


def expiry_of(_key: object, value: Issued | MfaSession, _now: float) -> float:
    return value.credentials.expiration
