"""The refresh policy, in one place: when to renew, how to back off, when to warn.

The SDKs start refreshing container credentials when 15 minutes are left (botocore;
5 minutes for the others). Renewing `margin` (+ jitter) ahead keeps every response
above that line while STS answers, and the jitter keeps many profiles from renewing
in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RefreshPolicy:
    margin: float = 20 * 60
    jitter: float = 5 * 60
    backoff_base: float = 5.0
    backoff_cap: float = 300.0
    # Users are warned this long before their MFA session ends...
    mfa_warning: float = 30 * 60
    # ...unless mfa_process lets the daemon start the next one this long ahead.
    mfa_renew_ahead: float = 45 * 60
    # How long a request with nothing cached waits for STS before a retryable 503.
    # The JS and Java SDKs give up after 1 s, so stay well under it.
    bounded_wait: float = 0.6
    # How often the background loop looks for due work (on the injected clock).
    tick: float = 30.0

    def refresh_at(self, issued_at: float, expiration: float, rng: random.Random) -> float:
        ahead = expiration - self.margin - rng.uniform(0, self.jitter)
        # Short credentials (15-minute minimum) cannot keep the margin: renew at half-life.
        return max(ahead, issued_at + (expiration - issued_at) / 2)

    def retry_delay(self, failures: int, rng: random.Random) -> float:
        """Capped exponential backoff with jitter; `failures` counts from 1."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(0, failures - 1))
        return rng.uniform(ceiling / 2, ceiling)
