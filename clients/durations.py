"""One way to say how long, for every option that takes a lifetime: 90s, 30m, 8h, 7d.

A bare number is refused rather than guessed: `--ttl 8` meant hours in one command and
seconds in another, and a token that lives 3600 times longer than meant is a security bug.
"""

from __future__ import annotations

import re

# How long a token from `env` lives unless --ttl says otherwise.
ENV_TOKEN_TTL = 7 * 86400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")


def parse_duration(text: str, allow_zero: bool = False) -> float:
    """Seconds for `90s`, `30m`, `8h`, `7d` (also `1.5h`); `0` when `allow_zero` (no expiry)."""
    text = text.strip().lower()
    if allow_zero and text in ("0", "0s", "0m", "0h", "0d"):
        return 0.0
    match = _DURATION.fullmatch(text)
    if match is None:
        hint = f" (did you mean {text}h or {text}d?)" if re.fullmatch(r"[0-9]+", text) else ""
        raise ValueError(f"{text!r} is not a duration: use a number with s, m, h or d, e.g. 30m, 8h, 7d{hint}")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        alone = " (0 alone: no expiry)" if allow_zero else ""
        raise ValueError(f"{text!r}: a lifetime must be longer than 0{alone}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"
