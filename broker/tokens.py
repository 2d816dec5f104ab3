"""Client tokens: who may fetch which profile's credentials.

Only SHA-256 digests are kept, in memory and in a 0600 file, so tokens survive a
daemon restart while the file alone grants nothing. A presented token is hashed and
looked up by digest: the lookup's timing depends on the digest, never on how much of
the token an attacker guessed right.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable

from broker.names import token_name_part
from broker.runtime import read_json, write_json

log = logging.getLogger("rolebroker.tokens")
TOKEN_PREFIX = "rbt_"
NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    name: str
    digest: str
    profiles: tuple[str, ...]  # empty: every profile
    created_at: float
    expires_at: float | None
    # A process whose end revokes the token (`rolebroker exec`): (pid, start time), see leases.py.
    holder: tuple[int, int] | None = None

    def allows(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles

    def __repr__(self) -> str:
        return f"TokenRecord(name={self.name!r}, profiles={self.profiles!r})"


class TokenRejected(Exception):
    pass


class TokenStore:
    def __init__(self, path: Path | None, now: Callable[[], float]) -> None:
        self.path = path
        self.now = now
        self._by_digest: dict[str, TokenRecord] = {}
        self.last_used: dict[str, float] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            for raw in read_json(path).get("tokens", []):
                holder = raw.get("holder")
                record = TokenRecord(raw["name"], raw["digest"], tuple(raw["profiles"]),
                                     float(raw["created_at"]), raw.get("expires_at"),
                                     (int(holder[0]), int(holder[1])) if holder else None)
                self._by_digest[record.digest] = record
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read client tokens from %s (%s): clients must get new tokens", path,
                      type(exc).__name__)

    def _save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"tokens": [asdict(r) for r in self._by_digest.values()]})

    def create(self, name: str | None, profiles: tuple[str, ...], ttl: float | None,
               holder: tuple[int, int] | None = None) -> tuple[str, TokenRecord]:
        self._prune()
        if name is None:
            name = f"{token_name_part('-'.join(profiles)) or 'all'}-{secrets.token_hex(3)}"[-64:]
        if not NAME.match(name):
            raise ValueError("a token name is 1-64 letters, digits and _.@:-")
        if any(r.name == name for r in self._by_digest.values()):
            raise ValueError(f"a token named {name!r} exists; revoke it first or pick another name")
        token = new_token()
        now = self.now()
        record = TokenRecord(name, digest(token), tuple(sorted(set(profiles))), now,
                             now + ttl if ttl else None, holder)
        self._by_digest[record.digest] = record
        self._save()
        return token, record

    def check(self, token: str) -> TokenRecord:
        """The record of a valid token, else TokenRejected (no hint which way it failed)."""
        record = self.lookup(token.encode("latin-1", "replace"))
        if record is None:
            raise TokenRejected("unknown, revoked or expired token")
        return record

    def lookup(self, token: bytes) -> TokenRecord | None:
        """The hot-path form of `check`: the raw header bytes in, a valid record or None out."""
        presented = hashlib.sha256(token).hexdigest()
        record = self._by_digest.get(presented)
        if record is None or not hmac.compare_digest(record.digest, presented):
            return None
        now = self.now()
        if record.expires_at is not None and now >= record.expires_at:
            return None
        self.last_used[record.name] = now
        return record

    def revoke(self, name: str) -> bool:
        found = [d for d, r in self._by_digest.items() if r.name == name]
        for d in found:
            del self._by_digest[d]
        self.last_used.pop(name, None)  # a later token under this name starts afresh
        if found:
            self._save()
        return bool(found)

    def records(self) -> list[TokenRecord]:
        return sorted(self._by_digest.values(), key=lambda r: r.created_at)

    def _prune(self) -> None:
        now = self.now()
        expired = [d for d, r in self._by_digest.items() if r.expires_at is not None and r.expires_at <= now]
        for d in expired:
            self.last_used.pop(self._by_digest.pop(d).name, None)
