"""In-memory sessions: the MFA sessions bought with a code, the role credentials
derived from them, and the work that keeps them fresh.

Everything here runs on the daemon's event loop (no locks); STS calls run in a
thread pool. Caches are cachetools TLRU caches on the injected clock, so an entry
disappears the moment it expires: expired credentials can never be served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from cachetools import TLRUCache

from broker.clock import Clock
from broker.config import (
    BotocoreSource,
    BrokerConfig,
    MfaSessionKey,
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
    ProfileConfigError,
    UnknownProfile,
    login_hint,
)
from broker.models import Credentials, SourceSecret
from broker.refresh import RefreshPolicy
from broker.sts import StsGateway
from broker.wire import credentials_body

log = logging.getLogger("rolebroker.sessions")
T = TypeVar("T")
MAX_SESSIONS = 4096


@dataclass(frozen=True)
class Issued:
    """Credentials for one profile plus their wire body, serialized once."""

    credentials: Credentials
    body: bytes
    issued_at: float
    refresh_at: float


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


def _expiry_of(_key: object, value: Issued | MfaSession, _now: float) -> float:
    return value.credentials.expiration


class SessionManager:
    def __init__(self, config: BrokerConfig, sts: StsGateway, clock: Clock,
                 policy: RefreshPolicy | None = None, rng: random.Random | None = None,
                 workers: int = 8) -> None:
        self.config = config
        self.sts = sts
        self.clock = clock
        self.policy = policy or RefreshPolicy()
        self.rng = rng or random.Random()
        self._roles: TLRUCache[str, Issued] = TLRUCache(MAX_SESSIONS, ttu=_expiry_of, timer=clock.now)
        self._mfa: TLRUCache[MfaSessionKey, MfaSession] = TLRUCache(MAX_SESSIONS, ttu=_expiry_of, timer=clock.now)
        self._state: dict[str, ProfileState] = {}
        self._inflight: dict[object, asyncio.Task[object]] = {}
        self._warned: set[tuple[MfaSessionKey, float]] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sts")

    # ---- the request path -------------------------------------------------------------

    def cached_body(self, profile: str) -> bytes | None:
        """The hot path: cached, unexpired credentials or None. Never waits."""
        issued = self._roles.get(profile)
        if issued is None:
            return None
        if self.clock.now() >= issued.refresh_at:
            self._refresh_in_background(profile)
        return issued.body

    async def credentials_body(self, profile: str) -> bytes:
        body = self.cached_body(profile)
        if body is not None:
            return body
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
        root = self.root_session_source(plan)
        if root is not None and root.key.mfa_serial and root.key not in self._mfa:
            raise LoginRequired(f"not logged in: {login_hint(plan.name)}")

    def _raise_if_backing_off(self, profile: str) -> None:
        state = self._state.get(profile)
        if state and state.last_error and self.clock.now() < state.retry_at:
            raise state.last_error

    # ---- obtaining credentials --------------------------------------------------------

    def _single_flight(self, key: object, start: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._inflight[key] = task  # type: ignore[assignment]
            task.add_done_callback(lambda done, key=key: self._finished(key, done))
        return task  # type: ignore[return-value]

    def _finished(self, key: object, task: asyncio.Task[object]) -> None:
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

    async def _obtain(self, plan: ProfilePlan) -> Issued:
        state = self._state.setdefault(plan.name, ProfileState())
        try:
            credentials = await self._issue(plan)
        except BrokerError as exc:
            now = self.clock.now()
            state.failures += 1
            state.retry_at = now + self.policy.retry_delay(state.failures, self.rng)
            state.last_error, state.last_error_at = exc, now
            log.warning("profile %s: %s (%s); next try in %.0f s", plan.name, exc.code, exc.message,
                        state.retry_at - now)
            raise
        now = self.clock.now()
        role_arn = plan.role_arn if isinstance(plan, RolePlan) else None
        issued = Issued(
            credentials=credentials,
            body=credentials_body(credentials, role_arn),
            issued_at=now,
            refresh_at=self.policy.refresh_at(now, credentials.expiration, self.rng),
        )
        if self.config.plans.get(plan.name) == plan:  # a reload may have replaced the plan meanwhile
            self._roles[plan.name] = issued
        state.failures, state.retry_at, state.last_error = 0, 0.0, None
        state.refreshes += 1
        log.info("profile %s: credentials issued, valid for %.0f min", plan.name,
                 (credentials.expiration - now) / 60)
        return issued

    async def _issue(self, plan: ProfilePlan) -> Credentials:
        if isinstance(plan, SessionPlan):
            return await self._session_credentials(plan.source, plan.name)
        source = await self._source_secret(plan.source, plan.name)
        session_name = plan.role_session_name or f"rolebroker-{int(self.clock.now())}"
        try:
            return await self._run(self.sts.assume_role, plan.name, source, plan.role_arn, session_name,
                                   plan.duration, plan.external_id, plan.region)
        except LoginRequired:
            # STS says the MFA session ended early (revoked, or the clock was off): forget it.
            root = self.root_session_source(plan)
            if root is not None:
                self._mfa.pop(root.key, None)
            raise LoginRequired(f"the MFA session has ended: {login_hint(plan.name)}") from None

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
        assert isinstance(source, BotocoreSource)
        return await self._run(self.sts.resolve_source, source.profile)

    async def _session_credentials(self, source: SessionSource, profile: str) -> Credentials:
        session = self._mfa.get(source.key)
        if session is not None:
            return session.credentials
        if source.key.mfa_serial:
            raise LoginRequired(f"not logged in: {login_hint(profile)}")
        # No MFA device: a plain session needs no human, so fetch it on demand, once.
        return await self._single_flight(("session", source.key), lambda: self._start_session(source, None))

    async def _start_session(self, source: SessionSource, code: str | None,
                             login_profile: str | None = None) -> Credentials:
        credentials = await self._run(
            self.sts.get_session_token, source.key.source_profile, source.keys, source.duration,
            source.key.mfa_serial, code, self._region_of(source.key.source_profile), login_profile,
        )
        self._mfa[source.key] = MfaSession(source.key, credentials, self.clock.now())
        return credentials

    def _region_of(self, profile: str) -> str | None:
        plan = self.config.plans.get(profile)
        return plan.region if plan is not None else None

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # ---- login / logout ---------------------------------------------------------------

    def root_session_source(self, plan: ProfilePlan) -> SessionSource | None:
        """The GetSessionToken session at the bottom of a profile's chain, if any."""
        seen: set[str] = set()
        current: ProfilePlan | None = plan
        while current is not None and current.name not in seen:
            seen.add(current.name)
            if isinstance(current, SessionPlan):
                return current.source
            source = current.source
            if isinstance(source, SessionSource):
                return source
            if not isinstance(source, RoleSource):
                return None
            current = self.config.plans.get(source.profile)
        return None

    def profiles_using(self, key: MfaSessionKey) -> list[str]:
        return sorted(name for name, plan in self.config.plans.items()
                      if (root := self.root_session_source(plan)) is not None and root.key == key)

    async def login(self, profile: str, code: str | None) -> LoginResult:
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        if root is None or not root.key.mfa_serial:
            return LoginResult(profile, False, root.key.label() if root else "", None, [plan.name])
        if not code:
            raise LoginRequired(f"profile {profile!r} needs an MFA code: {login_hint(profile)} --code 123456")
        # Only a successful call replaces anything: a wrong code leaves every session as it was.
        credentials = await self._start_session(root, code, profile)
        sharing = self.profiles_using(root.key)
        for name in sharing:
            self._roles.pop(name, None)
            self._state.pop(name, None)
        log.info("login: MFA session %s started, valid for %.1f h, serving %s", root.key.label(),
                 (credentials.expiration - self.clock.now()) / 3600, ", ".join(sharing))
        warm = {name: self._single_flight(name, lambda p=self.config.plans[name]: self._obtain(p))
                for name in sharing}
        warm_error = None
        done, _ = await asyncio.wait({warm[profile]}, timeout=10)
        if done and warm[profile].exception() is not None:
            warm_error = str(warm[profile].exception())
        return LoginResult(profile, True, root.key.label(), credentials.expiration, sharing, warm_error)

    def logout(self, profile: str | None) -> list[str]:
        """Wipe sessions from memory: one profile's MFA session (and every profile it
        serves), or everything."""
        if profile is None:
            wiped = sorted(self._roles.keys())
            self._roles.clear()
            self._mfa.clear()
            self._state.clear()
            return wiped
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        affected = self.profiles_using(root.key) if root and root.key.mfa_serial else [profile]
        if root is not None:
            self._mfa.pop(root.key, None)
        for name in affected:
            self._roles.pop(name, None)
            self._state.pop(name, None)
        return affected

    # ---- background work --------------------------------------------------------------

    def _source_available(self, plan: ProfilePlan) -> bool:
        root = self.root_session_source(plan)
        return root is None or not root.key.mfa_serial or root.key in self._mfa

    async def refresh_due(self) -> None:
        """Renew every cached profile whose refresh time has come; return when done."""
        now = self.clock.now()
        self._roles.expire()
        for profile, issued in list(self._roles.items()):
            if now >= issued.refresh_at:
                self._refresh_in_background(profile)
        self._warn_mfa_endings(now)
        await self.settle()

    async def settle(self) -> None:
        while self._inflight:
            await asyncio.wait(set(self._inflight.values()))

    def _warn_mfa_endings(self, now: float) -> None:
        self._mfa.expire()
        for key, session in self._mfa.items():
            left = session.credentials.expiration - now
            marker = (key, session.started_at)
            if left <= self.policy.mfa_warning and marker not in self._warned:
                self._warned.add(marker)
                log.warning("MFA session %s ends in %.0f min: run `rolebroker login` for one of %s",
                            key.label(), left / 60, ", ".join(self.profiles_using(key)))

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
        keys = {root.key for plan in config.plans.values() if (root := self.root_session_source(plan))}
        for key in list(self._mfa.keys()):
            if key not in keys:
                self._mfa.pop(key, None)
        for name in changed:
            self._roles.pop(name, None)
            self._state.pop(name, None)
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
                rows.append(ProfileStatus(name, "invalid", None, None, None, None, False, None, None,
                                          None, None, config_error=self.config.errors.get(name)))
                continue
            issued = self._roles.get(name)
            root = self.root_session_source(plan)
            session = self._mfa.get(root.key) if root else None
            needs_mfa = bool(root and root.key.mfa_serial)
            notes: list[str] = []
            if session is not None and session.credentials.expiration - self.clock.now() <= self.policy.mfa_warning:
                left = (session.credentials.expiration - self.clock.now()) / 60
                notes.append(f"MFA session ends in {left:.0f} min: {login_hint(name)} to keep going")
            if isinstance(plan, RolePlan) and plan.capped:
                notes.append(f"duration_seconds {plan.requested_duration} capped to {plan.duration} "
                             "(STS limits roles assumed from session credentials to 1 hour)")
            rows.append(ProfileStatus(
                profile=name,
                kind="role" if isinstance(plan, RolePlan) else "session",
                role_arn=plan.role_arn if isinstance(plan, RolePlan) else None,
                credentials_expire_at=issued.credentials.expiration if issued else None,
                mfa_session=root.key.label() if needs_mfa and root else None,
                mfa_session_expires_at=session.credentials.expiration if session else None,
                login_required=needs_mfa and session is None,
                duration=plan.duration if isinstance(plan, RolePlan) else None,
                requested_duration=plan.requested_duration if isinstance(plan, RolePlan) else None,
                last_error=state.last_error.message if state and state.last_error else None,
                last_error_at=state.last_error_at if state else None,
                notes=notes,
            ))
        return rows

    def close(self) -> None:
        self._roles.clear()
        self._mfa.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
