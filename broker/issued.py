"""Role credentials as issued, per profile, each with its answer built once (the body and
the ASGI messages the endpoint sends as they are) and the time its refresh is due.

Two views of one store: a TLRU cache on the injected clock, where an entry vanishes the
moment it expires, and a plain-dict mirror for the request path (a TLRU lookup costs about
1.4 us, a dict 0.1 us), whose reader checks expiry itself."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator

from cachetools import TLRUCache

from .models import Credentials
from .refresh import RefreshPolicy
from .session_types import MAX_SESSIONS, Issued, expiry_of
from .wire import credentials_body, response_messages



class IssuedStore:
    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._cache: TLRUCache[str, Issued] = TLRUCache(MAX_SESSIONS, ttu=expiry_of, timer=now)
        # Read directly by SessionManager.cached, the hot path; written only here.
        self.serving: dict[str, Issued] = {}

    def get(self, profile: str) -> Issued | None:
        return self._cache.get(profile)

    def put(self, profile: str, issued: Issued) -> None:
        self._cache[profile] = issued
        self.serving[profile] = issued

    def drop(self, profile: str) -> None:
        self._cache.pop(profile, None)
        self.serving.pop(profile, None)

    def mark_due(self, profile: str) -> None:
        """Renew at the next look (a new MFA session): the credentials stay served meanwhile."""
        issued = self.serving.get(profile)
        if issued is not None:
            self.put(profile, dataclasses.replace(issued, refresh_at=self.now()))

    def profiles(self) -> list[str]:
        return list(self._cache.keys())

    def live(self) -> Iterator[tuple[str, Issued]]:
        """Every unexpired entry (the expired ones are dropped first)."""
        self._cache.expire()
        return iter(list(self._cache.items()))

    def clear(self) -> None:
        self._cache.clear()
        self.serving.clear()


def issue(credentials: Credentials, role_arn: str | None, now: float, policy: RefreshPolicy,
          rng: random.Random) -> Issued:
    """Credentials with their answer built once, and a jittered refresh time."""
    body = credentials_body(credentials, role_arn)
    return Issued(credentials=credentials, body=body, issued_at=now,
                  refresh_at=policy.refresh_at(now, credentials.expiration, rng),
                  messages=response_messages(200, body))
