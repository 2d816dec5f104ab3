"""In-memory sessions: the MFA sessions bought with a code, the role credentials
derived from them, and the work that keeps them fresh.

Everything here runs on the daemon's event loop (no locks); STS calls run in a
thread pool. Caches are cachetools TLRU caches on the injected clock, so an entry
disappears the moment it expires: expired credentials can never be served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import concurrent.futures
import functools
import logging
import random
from dataclasses import dataclass, field
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable

from cachetools import TLRUCache

from broker.clock import Clock
from broker.config import (
    BotocoreSource,
    BrokerConfig,
    DirectSource,
    MfaSessionKey,
    MfaSource,
    ProfilePlan,
    RolePlan,
    RoleSource,
    SessionPlan,
    SessionSource,
    Source,
    StaticSource,
)
from broker.errors import (
    BrokerError,
    CredentialsPending,
    LoginRequired,
    MfaCodeNotReady,
    ProfileConfigError,
    StsDenied,
    StsUnavailable,
    UnknownProfile,
    login_hint,
)
from broker.events import NoEvents, SessionEvents
from broker.history import SessionHistory, describe_end
from broker.mfa import next_window, run_mfa_process
from broker.models import Credentials, SourceSecret
from broker.refresh import RefreshPolicy
from broker.sts import StsGateway
from broker.wire import Message, credentials_body, response_messages

log = logging.getLogger("rolebroker.sessions")
T = TypeVar("T")
MAX_SESSIONS = 4096
# How long a botocore-resolved source (credential_process, SSO) may take.
SOURCE_TIMEOUT = 30.0


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


def _expiry_of(_key: object, value: Issued | MfaSession, _now: float) -> float:
    return value.credentials.expiration


class SessionManager:
    def __init__(self, config: BrokerConfig, sts: StsGateway, clock: Clock,
                 policy: RefreshPolicy | None = None, rng: random.Random | None = None,
                 workers: int = 4) -> None:
        self.config = config
        self.sts = sts
        self.clock = clock
        self.policy = policy or RefreshPolicy()
        self.rng = rng or random.Random()
        self._roles: TLRUCache[str, Issued] = TLRUCache(MAX_SESSIONS, ttu=_expiry_of, timer=clock.now)
        # A plain-dict mirror of _roles for the request path: a TLRU lookup costs ~1.4 us, this
        # ~0.1 us. Written together with _roles; expiry is checked on every read all the same.
        self._serving: dict[str, Issued] = {}
        self._mfa: TLRUCache[MfaSessionKey, MfaSession] = TLRUCache(MAX_SESSIONS, ttu=_expiry_of, timer=clock.now)
        self._state: dict[str, ProfileState] = {}
        self._inflight: dict[object, asyncio.Task[object]] = {}
        self._warned: set[tuple[MfaSessionKey, float]] = set()
        # The last code each MFA device gave, and when its window ends: a code is good once.
        self._last_code: dict[str, tuple[str, float]] = {}
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._renewal_retry_at: dict[MfaSessionKey, float] = {}
        self._renewal_error: dict[MfaSessionKey, str] = {}
        self._renewal_failures: dict[MfaSessionKey, int] = {}
        # Bumped whenever a profile's sessions are wiped, so an STS call that was already
        # in flight cannot bring them back when it lands.
        self._generation: dict[str, int] = {}
        # Counts logouts, so a session that STS grants after one is not stored.
        self._logouts = 0
        # Who hears of refused clients, ending sessions and failures (the desktop: attention.py).
        self.events: SessionEvents = NoEvents()
        self.history = SessionHistory()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sts")
        self._source_executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="source")

    # ---- the request path -------------------------------------------------------------

    def cached(self, profile: str) -> Issued | None:
        """The hot path: cached, unexpired credentials or None. Never waits."""
        issued = self._serving.get(profile)
        if issued is None:
            return None
        now = self.clock.now()
        if now >= issued.refresh_at:
            if now >= issued.credentials.expiration:
                self._serving.pop(profile, None)
                self._roles.pop(profile, None)
                return None
            self._refresh_in_background(profile)
        return issued

    async def credentials_body(self, profile: str) -> bytes:
        issued = self.cached(profile)
        if issued is not None:
            return issued.body
        plan = self.plan(profile)
        self._raise_if_login_needed(plan)
        self._raise_if_backing_off(profile)
        task = self._single_flight(profile, lambda: self._obtain(plan))
        done, _ = await asyncio.wait({task}, timeout=self.policy.bounded_wait)
        if not done:
            raise CredentialsPending(
                f"credentials for {profile!r} are being fetched from STS; retry in a second"
            )
        return task.result().body  # type: ignore[attr-defined, no-any-return]

    def plan(self, profile: str) -> ProfilePlan:
        plan = self.config.plans.get(profile)
        if plan is not None:
            return plan
        if profile in self.config.errors:
            raise ProfileConfigError(self.config.errors[profile])
        raise UnknownProfile(
            f"no profile {profile!r} with a role or MFA device in {self.config.files.describe()}; "
            "`rolebroker status` lists the profiles served"
        )

    def _raise_if_login_needed(self, plan: ProfilePlan) -> None:
        if not self._source_available(plan):
            self.events.login_refused(plan.name)
            raise LoginRequired(self._login_needed(plan.name))

    def _login_needed(self, profile: str) -> str:
        """Why a login is needed, and since when, if an MFA session has ended."""
        ended = self.session_ended(profile)
        return f"{ended or 'not logged in'}: {login_hint(profile)}"

    def session_ended(self, profile: str) -> str | None:
        plan = self.config.plans.get(profile)
        root = self.root_session_source(plan) if plan is not None else None
        span = self.history.ended(root.key, self.clock.now()) if root is not None else None
        return describe_end(span, self.clock.now()) if span is not None else None

    def needs_login(self, profile: str) -> bool:
        """Whether `profile` needs a human's code before it can be served."""
        return not self._source_available(self.plan(profile))

    def _raise_if_backing_off(self, profile: str) -> None:
        state = self._state.get(profile)
        if state and state.last_error and self.clock.now() < state.retry_at:
            raise state.last_error.with_traceback(None)  # else every re-raise adds frames

    # ---- obtaining credentials --------------------------------------------------------

    def _single_flight(self, key: object, start: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._inflight[key] = task  # type: ignore[assignment]
            task.add_done_callback(functools.partial(self._finished, key))
        return task  # type: ignore[return-value]

    def _finished(self, key: object, task: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a background failure is not reported as lost

    def _refresh_in_background(self, profile: str) -> None:
        if profile in self._inflight:
            return
        state = self._state.get(profile)
        if state and self.clock.now() < state.retry_at:
            return
        plan = self.config.plans.get(profile)
        if plan is None or not self._source_available(plan):
            return
        self._single_flight(profile, lambda: self._obtain(plan))

    def _forget(self, name: str) -> None:
        self._roles.pop(name, None)
        self._serving.pop(name, None)
        self._state.pop(name, None)
        self._generation[name] = self._generation.get(name, 0) + 1
        self._inflight.pop(name, None)  # a call already in flight finishes, but stores nothing

    async def _obtain(self, plan: ProfilePlan) -> Issued:
        generation = self._generation.get(plan.name, 0)
        state = self._state.setdefault(plan.name, ProfileState())
        try:
            try:
                credentials = await self._issue(plan)
            except BrokerError:
                raise
            except Exception as unexpected:  # a helper's odd output, an SDK surprise: still an answer
                log.error("profile %s: unexpected %s while getting credentials", plan.name,
                          type(unexpected).__name__)
                raise StsUnavailable(f"getting credentials for {plan.name!r} failed unexpectedly "
                                     f"({type(unexpected).__name__}); the broker retries by itself") from None
        except BrokerError as exc:
            now = self.clock.now()
            state.failures += 1
            state.retry_at = exc.retry_at or now + self.policy.retry_delay(state.failures, self.rng)
            state.last_error, state.last_error_at = exc, now
            log.warning("profile %s: %s (%s); next try in %.0f s", plan.name, exc.code, exc.message,
                        state.retry_at - now)
            serving = self._serving.get(plan.name)
            self.events.credentials_failing(plan.name, exc, serving.credentials.expiration if serving else None)
            raise
        if self._generation.get(plan.name, 0) != generation:
            # A login, logout or reload happened meanwhile: these credentials belong to the old
            # state. Retryable, so the client's retry meets the new state.
            raise CredentialsPending(f"the session of {plan.name!r} changed while fetching; retry")
        state.failures, state.retry_at, state.last_error = 0, 0.0, None
        state.refreshes += 1
        log.info("profile %s: credentials issued, valid for %.0f min", plan.name,
                 (credentials.expiration - self.clock.now()) / 60)
        return self._store(plan, credentials)

    def _mark_due(self, name: str) -> None:
        issued = self._serving.get(name)
        if issued is not None:
            due = dataclasses.replace(issued, refresh_at=self.clock.now())
            self._roles[name] = due
            self._serving[name] = due

    def _store(self, plan: ProfilePlan, credentials: Credentials) -> Issued:
        now = self.clock.now()
        role_arn = plan.role_arn if isinstance(plan, RolePlan) else None
        body = credentials_body(credentials, role_arn)
        issued = Issued(
            credentials=credentials,
            body=body,
            issued_at=now,
            refresh_at=self.policy.refresh_at(now, credentials.expiration, self.rng),
            messages=response_messages(200, body),
        )
        if self.config.plans.get(plan.name) == plan:  # a reload may have replaced the plan meanwhile
            self._roles[plan.name] = issued
            self._serving[plan.name] = issued
        return issued

    async def _issue(self, plan: ProfilePlan) -> Credentials:
        if isinstance(plan, SessionPlan):
            return await self._session_credentials(plan.source, plan.name)
        if isinstance(plan.source, DirectSource):
            if not plan.source.mfa_process:
                raise LoginRequired(f"profile {plan.name!r} uses the direct strategy and its credentials "
                                    f"have ended: {login_hint(plan.name)}")
            code = await self._code_from_process(plan.source, plan.name)
            return await self._assume_direct(plan, plan.source, code)
        source = await self._source_secret(plan.source, plan.name)
        try:
            return await self._run(self.sts.assume_role, plan.name, source, plan.role_arn,
                                   self._session_name(plan), plan.duration, plan.external_id, plan.region)
        except LoginRequired:
            # STS says the MFA session ended early (revoked, or the clock was off): forget it,
            # unless a login replaced it while this call was in flight.
            root = self.root_session_source(plan)
            current = self._mfa.get(root.key) if root is not None else None
            if root is not None and current is not None and current.credentials is source:
                self._mfa.pop(root.key, None)
            raise LoginRequired(f"the MFA session has ended: {login_hint(plan.name)}") from None
        except StsDenied as exc:
            if isinstance(plan.source, RoleSource):
                raise StsDenied(
                    f"{exc.message}. Note: {plan.name!r} is a second hop of role chaining (its source "
                    f"{plan.source.profile!r} is a role), and MFA does not carry over that hop: if the trust "
                    "policy requires MFA, point source_profile at the IAM user's profile instead"
                ) from None
            raise

    async def _assume_direct(self, plan: RolePlan, source: DirectSource, code: str) -> Credentials:
        return await self._run(self.sts.assume_role, plan.name, source.keys, plan.role_arn, self._session_name(plan),
                               plan.duration, plan.external_id, plan.region, source.key.mfa_serial, code)

    def _session_name(self, plan: RolePlan) -> str:
        return plan.role_session_name or f"rolebroker-{int(self.clock.now())}"

    async def _code_from_process(self, source: MfaSource, profile: str) -> str:
        """A fresh code from mfa_process, never one already given to STS."""
        serial = source.key.mfa_serial or ""
        lock = self._device_locks.setdefault(serial, asyncio.Lock())
        async with lock:  # concurrent renewals on one device must take turns, one code each
            assert source.mfa_process is not None
            code = await self._run(run_mfa_process, source.mfa_process, profile)
            self._claim_code(serial, code, profile)
            return code

    def _claim_code(self, serial: str, code: str, profile: str) -> None:
        now = self.clock.now()
        last = self._last_code.get(serial)
        if last is not None and last[0] == code and now < last[1]:
            raise MfaCodeNotReady(f"profile {profile!r}: the MFA device's current code was just used; "
                                  "the next one comes within 30 seconds", retry_at=last[1])
        self._remember_code(serial, code)

    def _remember_code(self, serial: str, code: str) -> None:
        self._last_code[serial] = (code, next_window(self.clock.now()))

    async def _source_secret(self, source: Source, profile: str) -> SourceSecret:
        if isinstance(source, StaticSource):
            return source.keys
        if isinstance(source, SessionSource):
            return await self._session_credentials(source, profile)
        if isinstance(source, RoleSource):
            inner = self.plan(source.profile)
            issued = self._roles.get(source.profile)
            if issued is None:
                issued = await self._single_flight(source.profile, lambda: self._obtain(inner))
            return issued.credentials
        if isinstance(source, DirectSource):  # only ever at the root, handled by _issue
            raise ProfileConfigError(f"profile {profile!r}: a direct-strategy profile cannot be a source")
        # credential_process and SSO helpers run without a timeout inside botocore: give them
        # their own threads and a deadline, so a hung helper holds neither STS calls nor refreshes.
        future = asyncio.get_running_loop().run_in_executor(
            self._source_executor, self.sts.resolve_source, source.profile, source.credential_source)
        try:
            return await asyncio.wait_for(future, timeout=SOURCE_TIMEOUT)
        except TimeoutError:
            raise ProfileConfigError(f"profile {source.profile!r}: its credential_process, SSO or "
                                     f"credential_source gave no answer within {SOURCE_TIMEOUT:.0f} s") from None

    async def _session_credentials(self, source: SessionSource, profile: str) -> Credentials:
        session = self._mfa.get(source.key)
        if session is not None:
            return session.credentials
        if source.key.mfa_serial and not source.mfa_process:
            raise LoginRequired(self._login_needed(profile))
        # No MFA device, or one the daemon can read (mfa_process): no human needed, fetch it once.
        return await self._single_flight(("session", source.key),
                                         lambda: self._start_session(source, None, profile))

    async def _start_session(self, source: SessionSource, code: str | None,
                             login_profile: str | None = None) -> Credentials:
        if source.key.mfa_serial:
            if code is None:
                code = await self._code_from_process(source, login_profile or source.key.source_profile)
            else:  # a typed code goes to STS, which judges it; mfa_process must not reuse it
                self._remember_code(source.key.mfa_serial, code)
        logouts = self._logouts
        credentials = await self._run(
            self.sts.get_session_token, source.key.source_profile, source.keys, source.duration,
            source.key.mfa_serial, code, self._region_of(source.key.source_profile), login_profile,
        )
        if self._logouts != logouts:  # the user logged out while STS answered: honour that
            hint = login_hint(login_profile or source.key.source_profile)
            raise LoginRequired(f"logged out while the session was starting: {hint}")
        self._mfa[source.key] = MfaSession(source.key, credentials, self.clock.now())
        self.history.started(source.key, self.clock.now(), credentials.expiration)
        return credentials

    def _region_of(self, profile: str) -> str | None:
        plan = self.config.plans.get(profile)
        return plan.region if plan is not None else None

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # ---- login / logout ---------------------------------------------------------------

    def root_session_source(self, plan: ProfilePlan) -> MfaSource | None:
        """The MFA-bearing source at the bottom of a profile's chain, if any."""
        seen: set[str] = set()
        current: ProfilePlan | None = plan
        while current is not None and current.name not in seen:
            seen.add(current.name)
            if isinstance(current, SessionPlan):
                return current.source
            source = current.source
            if isinstance(source, (SessionSource, DirectSource)):
                return source
            if not isinstance(source, RoleSource):
                return None
            current = self.config.plans.get(source.profile)
        return None

    def _root_plan(self, plan: ProfilePlan) -> ProfilePlan:
        """The profile at the bottom of a chain (the one whose source is not a role)."""
        current = plan
        for link in self._chain(plan):
            current = self.config.plans.get(link, current)
        return current

    def profiles_using(self, key: MfaSessionKey) -> list[str]:
        """Profiles served from the shared MFA session `key` (the direct strategy shares none)."""
        return sorted(name for name, plan in self.config.plans.items()
                      if isinstance(root := self.root_session_source(plan), SessionSource) and root.key == key)

    async def login(self, profile: str, code: str | None) -> LoginResult:
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        if root is None or not root.key.mfa_serial:
            return LoginResult(profile, False, root.key.label() if root else "", None, [plan.name])
        if not code and not root.mfa_process:
            raise LoginRequired(f"profile {profile!r} needs an MFA code: {login_hint(profile)} and type it "
                                "at the prompt (or pipe it on stdin)")
        if isinstance(root, DirectSource):
            base = self._root_plan(plan)
            result = await self._login_direct(base, root, code)
            if base is not plan:  # a chain on a direct profile: log in its bottom, then climb
                result.profiles.append(plan.name)
                climb = self._single_flight(plan.name, functools.partial(self._obtain, plan))
                done, _ = await asyncio.wait({climb}, timeout=10)
                if done and climb.exception() is not None:
                    result.warm_error = str(climb.exception())
            return result
        # Only a successful call replaces anything: a wrong code leaves every session as it was.
        credentials = await self._start_session(root, code or None, profile)
        self._renewal_retry_at.pop(root.key, None)
        self._renewal_error.pop(root.key, None)
        sharing = self.profiles_using(root.key)
        for name in sharing:
            # Credentials already issued stay served (they are valid); they are renewed from
            # the new session right away, and any backoff from the old one is forgotten.
            self._state.pop(name, None)
            self._mark_due(name)
        log.info("login: MFA session %s started, valid for %.1f h, serving %s", root.key.label(),
                 (credentials.expiration - self.clock.now()) / 3600, ", ".join(sharing))
        warm = {name: self._single_flight(name, functools.partial(self._obtain, self.config.plans[name]))
                for name in sharing}
        warm_error = None
        done, _ = await asyncio.wait({warm[profile]}, timeout=10)
        if done and warm[profile].exception() is not None:
            warm_error = str(warm[profile].exception())
        return LoginResult(profile, True, root.key.label(), credentials.expiration, sharing, warm_error)

    async def _login_direct(self, plan: ProfilePlan, root: DirectSource, code: str | None) -> LoginResult:
        assert isinstance(plan, RolePlan)
        if code:
            self._remember_code(root.key.mfa_serial or "", code)
        else:
            code = await self._code_from_process(root, plan.name)
        credentials = await self._assume_direct(plan, root, code)
        self._state.pop(plan.name, None)
        self._store(plan, credentials)
        log.info("login: %s assumed directly with MFA, valid for %.1f h", plan.name,
                 (credentials.expiration - self.clock.now()) / 3600)
        return LoginResult(plan.name, True, root.key.label(), credentials.expiration, [plan.name])

    def logout(self, profile: str | None) -> list[str]:
        """Wipe sessions from memory: one profile's MFA session (and every profile it
        serves), or everything."""
        if profile is None:
            wiped = sorted(self._roles.keys())
            for name in {*self._roles.keys(), *self._state, *self.config.plans}:
                self._forget(name)
            self._mfa.clear()
            self.history.logged_out_all(self.clock.now())
            self._logouts += 1
            return wiped
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        if isinstance(root, SessionSource) and root.key.mfa_serial:
            affected = self.profiles_using(root.key)
            self._mfa.pop(root.key, None)
            self.history.logged_out(root.key, self.clock.now())
            self._logouts += 1
        else:
            # A direct-strategy or keys-only profile: it alone, and the chains built on it.
            affected = sorted({profile} | {name for name, other in self.config.plans.items()
                                           if profile in self._chain(other)})
        for name in affected:
            self._forget(name)
        return affected

    # ---- background work --------------------------------------------------------------

    def _source_available(self, plan: ProfilePlan) -> bool:
        """Whether credentials can be made now without a human (else: login required)."""
        root = self.root_session_source(plan)
        if root is None or not root.key.mfa_serial or root.mfa_process:
            return True
        if isinstance(root, DirectSource):  # a chain on it renews while its bottom is served
            base = self._root_plan(plan)
            return base is not plan and base.name in self._serving
        return root.key in self._mfa

    async def refresh_due(self) -> None:
        """Renew every cached profile whose refresh time has come; return when done."""
        now = self.clock.now()
        self._roles.expire()
        for profile, issued in list(self._roles.items()):
            if now >= issued.refresh_at:
                self._refresh_in_background(profile)
        self._renew_mfa_sessions(now)
        self._warn_mfa_endings(now)
        await self.settle()

    def _renew_mfa_sessions(self, now: float) -> None:
        """With mfa_process, start a new MFA session before the current one ends."""
        self._mfa.expire()
        for key, source in self._self_renewing().items():
            session = self._mfa.get(key)
            if session is None or session.credentials.expiration - now > self.policy.mfa_renew_ahead:
                continue
            if now < self._renewal_retry_at.get(key, 0.0) or ("renew", key) in self._inflight:
                continue
            self._single_flight(("renew", key), functools.partial(self._renew, source))

    async def _renew(self, source: SessionSource) -> None:
        try:
            await self._start_session(source, None)
        except BrokerError as exc:
            now = self.clock.now()
            failures = self._renewal_failures[source.key] = self._renewal_failures.get(source.key, 0) + 1
            self._renewal_retry_at[source.key] = exc.retry_at or now + self.policy.retry_delay(failures, self.rng)
            self._renewal_error[source.key] = exc.message
            log.warning("MFA session %s: renewal with mfa_process failed: %s", source.key.label(), exc.message)
            self.events.renewal_failed(source.key, exc.message)
            return
        self._renewal_error.pop(source.key, None)
        self._renewal_failures.pop(source.key, None)
        log.info("MFA session %s renewed with mfa_process", source.key.label())

    async def settle(self) -> None:
        while self._inflight:
            await asyncio.wait(set(self._inflight.values()))

    def _warn_mfa_endings(self, now: float) -> None:
        self._mfa.expire()
        self_renewing = self._self_renewing()
        for key, session in self._mfa.items():
            left = session.credentials.expiration - now
            marker = (key, session.started_at)
            if key in self_renewing and key not in self._renewal_error:
                continue
            if left <= self.policy.mfa_warning and marker not in self._warned:
                self._warned.add(marker)
                log.warning("MFA session %s ends in %.0f min: run `rolebroker login` for one of %s",
                            key.label(), left / 60, ", ".join(self.profiles_using(key)))
                self.events.mfa_session_ending(key, session.credentials.expiration)

    def _self_renewing(self) -> dict[MfaSessionKey, SessionSource]:
        """The MFA sessions with an mfa_process: the daemon renews them, nobody is warned."""
        return {root.key: root for plan in self.config.plans.values()
                if isinstance(root := self.root_session_source(plan), SessionSource) and root.mfa_process}

    async def run(self) -> None:
        """The background loop: wake every `tick` on the injected clock."""
        while True:
            try:
                await self.refresh_due()
            except Exception:  # never let one bad refresh stop the loop
                log.exception("background refresh failed")
            await self.clock.sleep(self.policy.tick)

    # ---- configuration ----------------------------------------------------------------

    def apply_config(self, config: BrokerConfig) -> list[str]:
        """Swap in a new config, keeping the sessions of profiles whose plan is unchanged."""
        old = self.config
        self.config = config
        changed = {name for name in set(old.plans) | set(config.plans)
                   if old.plans.get(name) != config.plans.get(name)}
        # A chained profile depends on its source's credentials: drop it with the source.
        for name, plan in config.plans.items():
            if any(link in changed for link in self._chain(plan)):
                changed.add(name)
        # MFA sessions no profile refers to any more are kept until they expire (or a logout):
        # an editor's half-saved file must not throw away a session a human typed a code for.
        for name in changed:
            self._forget(name)
        return sorted(changed)

    def _chain(self, plan: ProfilePlan) -> list[str]:
        links: list[str] = []
        current: ProfilePlan | None = plan
        while isinstance(current, RolePlan) and isinstance(current.source, RoleSource):
            name = current.source.profile
            if name in links:
                break
            links.append(name)
            current = self.config.plans.get(name)
        return links

    # ---- status -----------------------------------------------------------------------

    def status(self) -> list[ProfileStatus]:
        rows: list[ProfileStatus] = []
        for name in self.config.profile_names():
            plan = self.config.plans.get(name)
            state = self._state.get(name)
            if plan is None:
                rows.append(ProfileStatus(name, "invalid", "-", None, None, None, None, False, None, None,
                                          None, None, config_error=self.config.errors.get(name)))
                continue
            issued = self._roles.get(name)
            root = self.root_session_source(plan)
            session = self._mfa.get(root.key) if root else None
            needs_mfa = bool(root and root.key.mfa_serial)
            direct = isinstance(root, DirectSource)
            ended = self.session_ended(name) if needs_mfa and session is None else None
            notes: list[str] = []
            if root is not None and root.mfa_process and needs_mfa:
                notes.append("codes come from mfa_process: renewed without a human")
                if root.key in self._renewal_error:
                    notes.append(f"last renewal failed: {self._renewal_error[root.key]}")
            if session is not None and session.credentials.expiration - self.clock.now() <= self.policy.mfa_warning:
                left = (session.credentials.expiration - self.clock.now()) / 60
                notes.append(f"MFA session ends in {left:.0f} min: {login_hint(name)} to keep going")
            if isinstance(plan, RolePlan) and plan.capped:
                notes.append(f"duration_seconds {plan.requested_duration} capped to {plan.duration} "
                             "(STS limits roles assumed from session credentials to 1 hour)")
            rows.append(ProfileStatus(
                profile=name,
                kind="role" if isinstance(plan, RolePlan) else "session",
                strategy=_strategy(plan, root),
                role_arn=plan.role_arn if isinstance(plan, RolePlan) else None,
                credentials_expire_at=issued.credentials.expiration if issued else None,
                mfa_session=root.key.label() if needs_mfa and root else None,
                mfa_session_expires_at=(issued.credentials.expiration if direct and issued
                                        else session.credentials.expiration if session else None),
                login_required=(needs_mfa and not (root and root.mfa_process)
                                and (issued is None if direct else session is None)),
                duration=plan.duration if isinstance(plan, RolePlan) else None,
                requested_duration=plan.requested_duration if isinstance(plan, RolePlan) else None,
                last_error=state.last_error.message if state and state.last_error else None,
                last_error_at=state.last_error_at if state else None,
                notes=notes,
                mfa_serial=root.key.mfa_serial if root else None,
                mfa_session_ended=ended,
            ))
        return rows

    def close(self) -> None:
        self._roles.clear()
        self._serving.clear()
        self._mfa.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._source_executor.shutdown(wait=False, cancel_futures=True)


def _strategy(plan: ProfilePlan, root: MfaSource | None) -> str:
    """How a profile's credentials are made, as `status` names it."""
    if isinstance(root, DirectSource):
        return "direct"
    if isinstance(plan, SessionPlan):
        return "session-token"
    source = plan.source
    if isinstance(source, RoleSource):
        return f"chain via {source.profile}"
    if isinstance(source, BotocoreSource):
        return f"from {source.credential_source or source.profile}"
    if isinstance(source, StaticSource):
        return "long-term keys"
    return "session-token"
