"""Challenges that let the CLI learn whether an address reaches this very daemon, without
sending anything worth stealing.

`rolebroker env` must know whether http://169.254.170.2 (port 80, the ECS form's fixed
address) ends at this user's daemon: on a shared machine it may be another user's daemon,
or anyone who bound the port it is redirected to. So the CLI never probes with a client
token. It asks the daemon, over the control channel, for a challenge: an id it may send
anywhere, and the answer only this daemon gives for it. Whoever receives the id learns
nothing; whoever cannot give the answer is not this daemon. Each challenge is good once,
for a few seconds.
"""

from __future__ import annotations

import hmac
import secrets
import time

PROBE_PREFIX = "rbp_"
PROBE_LIFETIME = 30.0
MAX_PROBES = 64


class ProbeChallenges:
    def __init__(self) -> None:
        self._open: dict[str, tuple[str, float]] = {}

    def create(self) -> tuple[str, str]:
        """(id to send, answer to expect)."""
        now = time.monotonic()
        self._open = {k: v for k, v in self._open.items() if v[1] > now}
        if len(self._open) >= MAX_PROBES:  # bounded whatever a caller does
            self._open.pop(next(iter(self._open)))
        probe, answer = PROBE_PREFIX + secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self._open[probe] = (answer, now + PROBE_LIFETIME)
        return probe, answer

    def answer(self, probe: str) -> str | None:
        """The answer to a challenge (once), or None for an unknown or stale one."""
        found = self._open.pop(probe, None)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]


def is_probe(token: bytes) -> bool:
    return token.startswith(PROBE_PREFIX.encode())


def answer_matches(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())
