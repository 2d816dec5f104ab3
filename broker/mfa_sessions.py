"""The MFA sessions: one GetSessionToken bought with a code, shared by every profile on the
same source and device. Getting one, renewing one with mfa_process before it ends, and
warning before one ends that a human must renew. Kept in memory, in a TLRU cache on the
injected clock, so an ended session is gone the moment it ends; and, for a source profile
that opts in (`rolebroker_session_cache = keyring`), in the OS keyring too, so a restarted
daemon needs no new code."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from cachetools import TLRUCache

from . import topology
from .clock import Clock
from .codes import MfaCodes, Runner
from .plans import MfaSessionKey, ProfilePlan, SessionSource
from .errors import BrokerError, LoginRequired, login_hint
from .events import SessionEvents
from .history import SessionHistory, describe_end
from .keyring_sessions import DaemonKeyring
from .models import Credentials
from .refresh import RefreshPolicy
from .session_types import MAX_SESSIONS, MfaSession, expiry_of
from .sts import StsGateway

log = logging.getLogger("rolebroker.sessions")
# The sessions' single-flight registry: one call per key at a time, awaited by `settle`.
SingleFlight = Callable[[object, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class MfaSessions:
    def __init__(self, sts: StsGateway, clock: Clock, policy: RefreshPolicy, rng: random.Random,
                 codes: MfaCodes, run: Runner, single_flight: SingleFlight,
                 in_flight: Callable[[object], bool], plans: Callable[[], Mapping[str, ProfilePlan]],
                 keyring: Callable[[], DaemonKeyring], events: Callable[[], SessionEvents],
                 history: SessionHistory) -> None:
        self.sts, self.clock, self.policy, self.rng = sts, clock, policy, rng
        self._codes, self._run, self._single_flight, self._in_flight, self._plans = (
            codes, run, single_flight, in_flight, plans)
        self._keyring = keyring
        self._events = events  # looked up at each event: the daemon wires its listener after start
        self.history = history
        # Sessions already looked up in the keyring's cache (once per daemon, or a login since).
        self._cache_tried: set[MfaSessionKey] = set()
        self._uncaching: set[asyncio.Task[str | None]] = set()
        self._sessions: TLRUCache[MfaSessionKey, MfaSession] = TLRUCache(MAX_SESSIONS, ttu=expiry_of,
                                                                          timer=clock.now)
        self._warned: set[tuple[MfaSessionKey, float]] = set()
        self._renewal_retry_at: dict[MfaSessionKey, float] = {}
        self._renewal_error: dict[MfaSessionKey, str] = {}
        self._renewal_failures: dict[MfaSessionKey, int] = {}
        # Counts logouts, so a session that STS grants after one is not stored.
        self._logouts = 0

    # ---- what the sessions hold --------------------------------------------------------

    def get(self, key: MfaSessionKey) -> MfaSession | None:
        return self._sessions.get(key)

    def __contains__(self, key: MfaSessionKey) -> bool:
        return key in self._sessions

    def items(self) -> Iterator[tuple[MfaSessionKey, MfaSession]]:
        self._sessions.expire()
        return iter(list(self._sessions.items()))

    def renewal_error(self, key: MfaSessionKey) -> str | None:
        return self._renewal_error.get(key)

    def ended(self, key: MfaSessionKey) -> str | None:
        """"MFA session ended at 17:02, after 12 h" (or logged out at ...), if one has."""
        now = self.clock.now()
        span = self.history.ended(key, now)
        return describe_end(span, now) if span is not None else None

    def drop_if_current(self, key: MfaSessionKey, credentials: Credentials) -> None:
        """STS says these session credentials have ended: forget them, unless a login has
        replaced them meanwhile."""
        current = self._sessions.get(key)
        if current is not None and current.credentials is credentials:
            self._sessions.pop(key, None)

    def log_out(self, key: MfaSessionKey | None) -> None:
        """Wipe one session (None: all); a session STS grants after this is not stored."""
        if key is None:
            self._sessions.clear()
        else:
            self._sessions.pop(key, None)
        self._logouts += 1

    def clear(self) -> None:
        self._sessions.clear()

    # ---- getting one -------------------------------------------------------------------

    async def credentials(self, source: SessionSource, profile: str) -> Credentials:
        """The session's credentials; without a session, a new one if no human is needed."""
        session = self._sessions.get(source.key)
        if session is None and source.session_cache and source.key not in self._cache_tried:
            await self._single_flight(("restore", source.key), functools.partial(self._restore, source))
            session = self._sessions.get(source.key)
        if session is not None:
            return session.credentials
        if source.key.mfa_serial and not source.mfa_process:
            raise LoginRequired(f"{self.ended(source.key) or 'not logged in'}: {login_hint(profile)}")
        # No MFA device, or one the daemon can read (mfa_process): no human needed, fetch it once.
        result: Credentials = await self._single_flight(("session", source.key),
                                                        lambda: self.start(source, None, profile))
        return result

    async def start(self, source: SessionSource, code: str | None, login_profile: str | None = None) -> Credentials:
        """A new session for `source` with a typed code (or one from mfa_process)."""
        if source.key.mfa_serial:
            if code is None:
                code = await self._codes.from_process(source, login_profile or source.key.source_profile)
            else:  # a typed code goes to STS, which judges it; mfa_process must not reuse it
                self._codes.remember(source.key.mfa_serial, code)
        logouts = self._logouts
        keys = await self._keyring().keys(source.keys, login_profile or source.key.source_profile)
        # Sent where the role profile's own STS client goes (its region, services, endpoint_url).
        plan = self._plans().get(source.sts_profile)
        credentials: Credentials = await self._run(
            self.sts.get_session_token, source.sts_profile, keys, source.duration,
            source.key.mfa_serial, code, plan.region if plan is not None else None, login_profile,
        )
        if self._logouts != logouts:  # the user logged out while STS answered: honour that
            hint = login_hint(login_profile or source.key.source_profile)
            raise LoginRequired(f"logged out while the session was starting: {hint}")
        self._sessions[source.key] = MfaSession(source.key, credentials, self.clock.now())
        self.history.started(source.key, self.clock.now(), credentials.expiration)
        self._renewal_retry_at.pop(source.key, None)
        self._renewal_error.pop(source.key, None)
        if source.session_cache:  # written before a logout can be queued behind it (one keyring thread)
            self._cache_tried.add(source.key)
            await self._keyring().save_session(source.key, credentials)
        return credentials

    # ---- the opt-in cache in the keyring -------------------------------------------------

    def may_be_cached(self, source: SessionSource) -> bool:
        """Whether the keyring may hold this session: look before telling anyone to log in."""
        return source.session_cache and source.key not in self._cache_tried

    async def _restore(self, source: SessionSource) -> None:
        """A session a previous daemon kept in the keyring, taken up while it has time left."""
        logouts = self._logouts
        try:
            credentials = await self._keyring().load_session(source.key)
        finally:
            self._cache_tried.add(source.key)
        now = self.clock.now()
        if credentials is None or self._logouts != logouts or source.key in self._sessions:
            return
        if credentials.expiration - now <= self.policy.mfa_warning:
            # Too little left to be worth serving from; a login replaces it.
            await self._keyring().drop_session(source.key)
            return
        self._sessions[source.key] = MfaSession(source.key, credentials, now)
        self.history.started(source.key, now, credentials.expiration)  # so its end is announced and named
        log.info("MFA session %s taken from the keyring, valid for %.1f h more", source.key.label(),
                 (credentials.expiration - now) / 3600)

    def restore_cached(self) -> None:
        """Look up every cached session once (at start-up), so `status` shows them."""
        plans = self._plans()
        for plan in plans.values():
            root = topology.root_session_source(plans, plan)
            if isinstance(root, SessionSource) and self.may_be_cached(root):
                self._single_flight(("restore", root.key), functools.partial(self._restore, root))

    def uncache(self, keys: set[MfaSessionKey]) -> list[asyncio.Task[str | None]]:
        """Start removing these sessions from the keyring (a logout); `forgotten` waits for them."""
        started = []
        for key in keys:
            self._cache_tried.add(key)  # nothing to take from the keyring after a logout
            task = asyncio.ensure_future(self._keyring().drop_session(key))
            self._uncaching.add(task)
            task.add_done_callback(self._uncaching.discard)
            started.append(task)
        return started

    @staticmethod
    async def forgotten(removals: list[asyncio.Task[str | None]]) -> list[str]:
        """Wait for these removals (one logout's own); what the keyring could not forget."""
        if not removals:
            return []
        await asyncio.wait(removals)
        problems = []
        for task in removals:
            failure = None if task.cancelled() else task.exception()
            if task.cancelled() or failure is not None:
                problems.append("an MFA session may still be in the OS keyring: removing it failed "
                                f"({'cancelled' if failure is None else type(failure).__name__}); run "
                                "`rolebroker logout` again, or remove it with your keyring's own tool")
            elif (problem := task.result()) is not None:
                problems.append(problem)
        return sorted(problems)

    # ---- keeping them going --------------------------------------------------------------

    def renew_due(self, now: float) -> None:
        """With mfa_process, start a new MFA session before the current one ends."""
        self._sessions.expire()
        for key, source in topology.self_renewing(self._plans()).items():
            session = self._sessions.get(key)
            if session is None or session.credentials.expiration - now > self.policy.mfa_renew_ahead:
                continue
            if now < self._renewal_retry_at.get(key, 0.0) or self._in_flight(("renew", key)):
                continue
            self._single_flight(("renew", key), functools.partial(self._renew, source))

    async def _renew(self, source: SessionSource) -> None:
        try:
            await self.start(source, None)
        except BrokerError as exc:
            now = self.clock.now()
            failures = self._renewal_failures[source.key] = self._renewal_failures.get(source.key, 0) + 1
            self._renewal_retry_at[source.key] = exc.retry_at or now + self.policy.retry_delay(failures, self.rng)
            self._renewal_error[source.key] = exc.message
            log.warning("MFA session %s: renewal with mfa_process failed: %s", source.key.label(), exc.message)
            self._events().renewal_failed(source.key, exc.message)
            return
        self._renewal_failures.pop(source.key, None)
        log.info("MFA session %s renewed with mfa_process", source.key.label())

    def warn_endings(self, now: float) -> None:
        """Log once per session, `mfa_warning` ahead, that a human must renew it."""
        plans = self._plans()
        self_renewing = topology.self_renewing(plans)
        for key, session in self.items():
            left = session.credentials.expiration - now
            marker = (key, session.started_at)
            if key in self_renewing and key not in self._renewal_error:
                continue
            if left <= self.policy.mfa_warning and marker not in self._warned:
                self._warned.add(marker)
                log.warning("MFA session %s ends in %.0f min: run `rolebroker login` for one of %s",
                            key.label(), left / 60, ", ".join(topology.profiles_using(plans, key)))
                self._events().mfa_session_ending(key, session.credentials.expiration)

    def __repr__(self) -> str:
        return f"MfaSessions({len(self._sessions)} sessions)"  # never their keys
