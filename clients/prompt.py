"""Login at the point of use: `exec`, `env` and `login` ask the daemon whether a profile
needs a code, and ask the human on the terminal, naming the profile and the MFA device.
Without a terminal there is nobody to ask: they fail at once with the command to run.

Standard library only (plus broker's stdlib-only helpers): this runs before every `exec`.
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any, TextIO
from urllib.parse import quote

from ..broker.mfa import normalize_code
from .daemon_client import DaemonClient, DaemonError

TRIES = 3
# A session with less than this left is worth renewing (the daemon warns from 30 min on).
LIVE_MARGIN = 1800.0


class LoginCancelled(DaemonError):
    """Ctrl-D, or no valid code after a few tries: nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "LoginCancelled")


def session_state(client: DaemonClient, profile: str) -> dict[str, Any]:
    """The daemon's view of one profile: login_required, mfa_serial, expiry, how it ended."""
    return client.request("GET", f"/v1/profiles/{quote(profile, safe='')}/session")  # type: ignore[no-any-return]


def live_until(state: dict[str, Any]) -> float | None:
    """When a live MFA session ends, if it has more than LIVE_MARGIN left (else None)."""
    expires = state.get("mfa_session_expires_at")
    if state.get("login_required") or not state.get("mfa_serial") or expires is None:
        return None
    return float(expires) if expires - time.time() > LIVE_MARGIN else None


def ensure_logged_in(client: DaemonClient, profile: str, stdin: TextIO | None = None,
                     stderr: TextIO | None = None) -> None:
    """Return once `profile` can be served: at once if no code is needed, after a code typed
    on the terminal if one is; raise (with the command to run) when there is no terminal."""
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    state = session_state(client, profile)
    if not state.get("login_required"):
        return
    reason = state.get("mfa_session_ended") or "not logged in"
    if not stdin.isatty():
        raise DaemonError(f"{profile} needs an MFA code ({reason}): run `rolebroker login {shlex.quote(profile)}` "
                          "on a terminal, then try again", "LoginRequired")
    print(f"rolebroker: {profile} needs an MFA code ({reason}).", file=stderr)
    result = login_interactively(client, profile, state.get("mfa_serial"), stdin, stderr)
    print(f"rolebroker: logged in; MFA session valid until {_clock(result.get('session_expires_at'))}.",
          file=stderr)


def ask_code(profile: str, serial: str | None, stdin: TextIO, stderr: TextIO) -> str:
    """Six digits from the terminal ("123 456" is fine); asks again on anything else.
    Ctrl-D raises LoginCancelled; Ctrl-C raises KeyboardInterrupt, as everywhere."""
    device = f" (MFA device {serial})" if serial else ""
    for _ in range(TRIES):
        print(f"MFA code for {profile}{device}: ", end="", file=stderr, flush=True)
        line = stdin.readline()
        if not line:
            print(file=stderr)
            raise LoginCancelled("no code given: nothing was sent")
        code = normalize_code(line)
        if code is not None:
            return code
        print("rolebroker: an MFA code is six digits, as your authenticator shows it; try again", file=stderr)
    raise LoginCancelled(f"no six-digit code after {TRIES} tries: nothing was sent")


def login_interactively(client: DaemonClient, profile: str, serial: str | None, stdin: TextIO,
                        stderr: TextIO) -> dict[str, Any]:
    """Ask for a code and log in; a code STS rejects (a typo, a reused code) asks again."""
    for attempt in range(TRIES):
        code = ask_code(profile, serial, stdin, stderr)
        try:
            return client.request("POST", "/v1/login", {"profile": profile, "code": code})  # type: ignore[no-any-return]
        except DaemonError as exc:
            if exc.code != "MfaCodeRejected" or attempt == TRIES - 1:
                raise
            print(f"rolebroker: {exc.message}", file=stderr)
    raise AssertionError("unreachable")


def _clock(epoch: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(epoch)) if epoch else "its end"
