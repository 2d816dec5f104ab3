"""What the sessions tell the outside world about moments a human should hear of.

The SessionManager calls these and goes on at once: whoever listens (the desktop
notifications and dialogs of `attention.py`) must never block or raise back into the
request path. Nothing secret is passed: profile names, MFA session keys, times, errors.
"""

from __future__ import annotations

from typing import Protocol

from .plans import MfaSessionKey
from .errors import BrokerError


class SessionEvents(Protocol):
    def login_refused(self, profile: str) -> None:
        """A client asked for `profile` and was refused: it needs an MFA login."""

    def mfa_session_ending(self, key: MfaSessionKey, expires_at: float) -> None:
        """An MFA session nobody renews by themselves ends soon (once per session)."""

    def renewal_failed(self, key: MfaSessionKey, message: str) -> None:
        """Renewing an MFA session with mfa_process failed (each failed try)."""

    def credentials_failing(self, profile: str, error: BrokerError, expires_at: float | None) -> None:
        """Getting `profile`'s credentials failed; `expires_at`: when the ones served now end."""


class NoEvents:
    """Nobody listening (the default, and what tests of the sessions alone get)."""

    def login_refused(self, profile: str) -> None:
        pass

    def mfa_session_ending(self, key: MfaSessionKey, expires_at: float) -> None:
        pass

    def renewal_failed(self, key: MfaSessionKey, message: str) -> None:
        pass

    def credentials_failing(self, profile: str, error: BrokerError, expires_at: float | None) -> None:
        pass
