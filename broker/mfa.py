"""Where MFA codes come from when no human types them: `mfa_process`, a command that
prints the current code (`ykman oath accounts code -s aws`, a password manager's OTP
command). Its output is never logged: a code is a secret for its 30 seconds."""

from __future__ import annotations

import re

from .errors import MfaProcessFailed

CODE = re.compile(r"^\d{6}$")
TOTP_STEP = 30
PROCESS_TIMEOUT = 60.0


def run_mfa_process(command: str, profile: str, timeout: float = PROCESS_TIMEOUT) -> str:
    """Run the user's command through the shell (pipes are common there) and return the code."""
    import subprocess  # here, not above: the CLI imports this module for normalize_code
    try:
        result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MfaProcessFailed(f"profile {profile!r}: mfa_process did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise MfaProcessFailed(f"profile {profile!r}: cannot run mfa_process ({exc.strerror})") from None
    if result.returncode != 0:
        said = first_line(result.stderr)
        raise MfaProcessFailed(f"profile {profile!r}: mfa_process exited with status {result.returncode}"
                               + (f" saying: {said}" if said else "; run it by hand to see why"))
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines or not CODE.match(lines[-1]):
        raise MfaProcessFailed(f"profile {profile!r}: mfa_process must print a six-digit code on its last line")
    return lines[-1]


def first_line(text: str, limit: int = 200) -> str:
    """What a failing helper said, fit for a log line and a status cell: its first non-empty
    line, control characters dropped, anything shaped like a code masked, cut to `limit`."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = re.sub(r"[\x00-\x1f\x7f]", "", line)
    line = re.sub(r"(?<![0-9])[0-9]{6,8}(?![0-9])", "******", line)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def next_window(now: float) -> float:
    """When the next TOTP code becomes available."""
    return (now // TOTP_STEP + 1) * TOTP_STEP


def normalize_code(text: str) -> str | None:
    """A code as people type it ("123 456", "123-456") as six digits, or None."""
    code = "".join(text.split()).replace("-", "")
    return code if re.fullmatch(r"[0-9]{6}", code) else None  # ASCII only: \d admits any script's digits
