"""In-memory sessions: the MFA sessions bought with a code, the role credentials
derived from them, and the work that keeps them fresh.

Everything here runs on the daemon's event loop (no locks); STS calls run in a
thread pool. Caches are cachetools TLRU caches on the injected clock, so an entry
disappears the moment it expires: expired credentials can never be served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import random
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable

from .clock import Clock
from .config import BrokerConfig
from .config_changes import next_config
from .plans import (
    DirectSource,
    MfaSessionKey,
    MfaSource,
    ProfilePlan,
    RolePlan,
    SessionSource,
)
from .errors import (
    BrokerError,
    CredentialsPending,
    LoginRequired,
    ProfileConfigError,
    StsUnavailable,
    UnknownProfile,
    login_hint,
)
from . import topology
from .codes import MfaCodes
from .issued import IssuedStore, issue
from .roles import RoleIssuer
from .events import NoEvents, SessionEvents
from .history import SessionHistory
from .keyring_sessions import DaemonKeyring
from .mfa_sessions import MfaSessions
from .models import Credentials
from .refresh import RefreshPolicy
from .sts import StsGateway
from .status import profile_rows
from .session_types import Issued, LoginResult, MfaSession, ProfileState, ProfileStatus

log = logging.getLogger("rolebroker.sessions")
T = TypeVar("T")


class SessionManager:
    def __init__(self, config: BrokerConfig, sts: StsGateway, clock: Clock,
                 policy: RefreshPolicy | None = None, rng: random.Random | None = None,
                 workers: int = 4, keyring: DaemonKeyring | None = None) -> None:
        self.config = config
        # The OS keyring (long-term keys, the opt-in MFA session cache): made on first use.
        self._keyring = keyring
        self.sts = sts
        self.clock = clock
        self.policy = policy or RefreshPolicy()
        self.rng = rng or random.Random()
        self._roles = IssuedStore(clock.now)
        self._serving = self._roles.serving  # the request path reads the dict itself
        self._state: dict[str, ProfileState] = {}
        self._inflight: dict[object, asyncio.Task[object]] = {}
        self._codes = MfaCodes(clock, self._run)
        # Who hears of refused clients, ending sessions and failures (the desktop: attention.py).
        self.events: SessionEvents = NoEvents()
        self.history = SessionHistory()
        self._mfa = MfaSessions(sts, clock, self.policy, self.rng, self._codes, self._run, self._single_flight,
                                lambda key: key in self._inflight, lambda: self.config.plans, lambda: self.keyring,
                                lambda: self.events, self.history)
        # Bumped whenever a profile's sessions are wiped, so an STS call that was already
        # in flight cannot bring them back when it lands.
        self._generation: dict[str, int] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sts")
        self._source_executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="source")
        self._roles_issuer = RoleIssuer(sts, clock, self._run, self._mfa, self._codes, lambda: self.keyring,
                                        lambda: self.config.plans, self._role_credentials, self._source_executor)

    # ---- the request path -------------------------------------------------------------

    def cached(self, profile: str) -> Issued | None:
        """The hot path: cached, unexpired credentials or None. Never waits."""
        issued = self._serving.get(profile)
        if issued is None:
            return None
        now = self.clock.now()
        if now >= issued.refresh_at:
            if now >= issued.credentials.expiration:
                self._roles.drop(profile)
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
        """"MFA session ended at 17:02, after 12 h", while a login is needed after one."""
        plan = self.config.plans.get(profile)
        root = self.root_session_source(plan) if plan is not None else None
        return self._mfa.ended(root.key) if root is not None else None

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
        self._roles.drop(name)
        self._state.pop(name, None)
        self._generation[name] = self._generation.get(name, 0) + 1
        self._roles_issuer.forget(name)
        self._inflight.pop(name, None)  # a call already in flight finishes, but stores nothing

    async def _obtain(self, plan: ProfilePlan) -> Issued:
        generation = self._generation.get(plan.name, 0)
        state = self._state.setdefault(plan.name, ProfileState())
        try:
            try:
                credentials = await self._roles_issuer.issue(plan)
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

    def _store(self, plan: ProfilePlan, credentials: Credentials) -> Issued:
        issued = issue(credentials, plan.role_arn if isinstance(plan, RolePlan) else None, self.clock.now(),
                       self.policy, self.rng)
        if self.config.plans.get(plan.name) == plan:  # a reload may have replaced the plan meanwhile
            self._roles.put(plan.name, issued)
        return issued

    @property
    def keyring(self) -> DaemonKeyring:
        if self._keyring is None:
            self._keyring = DaemonKeyring()
        return self._keyring

    async def _role_credentials(self, profile: str) -> Credentials:
        """Another role profile's credentials, to sign a chain's next hop: cached, or fetched once."""
        inner = self.plan(profile)
        issued = self._roles.get(profile)
        if issued is None:
            issued = await self._single_flight(profile, lambda: self._obtain(inner))
        return issued.credentials

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # ---- login / logout ---------------------------------------------------------------

    def root_session_source(self, plan: ProfilePlan) -> MfaSource | None:
        return topology.root_session_source(self.config.plans, plan)

    def profiles_using(self, key: MfaSessionKey) -> list[str]:
        return topology.profiles_using(self.config.plans, key)

    async def login(self, profile: str, code: str | None) -> LoginResult:
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        if root is None or not root.key.mfa_serial:
            return LoginResult(profile, False, root.key.label() if root else "", None, [plan.name])
        if not code and not root.mfa_process:
            raise LoginRequired(f"profile {profile!r} needs an MFA code: {login_hint(profile)} and type it "
                                "at the prompt (or pipe it on stdin)")
        if isinstance(root, DirectSource):
            base = topology.root_plan(self.config.plans, plan)
            result = await self._login_direct(base, root, code)
            if base is not plan:  # a chain on a direct profile: log in its bottom, then climb
                result.profiles.append(plan.name)
                climb = self._single_flight(plan.name, functools.partial(self._obtain, plan))
                done, _ = await asyncio.wait({climb}, timeout=10)
                if done and climb.exception() is not None:
                    result.warm_error = str(climb.exception())
            return result
        # Only a successful call replaces anything: a wrong code leaves every session as it was.
        credentials = await self._mfa.start(root, code or None, profile)
        sharing = self.profiles_using(root.key)
        for name in sharing:
            # Credentials already issued stay served (they are valid); they are renewed from
            # the new session right away, and any backoff from the old one is forgotten.
            self._state.pop(name, None)
            self._roles.mark_due(name)
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
            self._codes.remember(root.key.mfa_serial or "", code)
        else:
            code = await self._codes.from_process(root, plan.name)
        credentials = await self._roles_issuer.assume_direct(plan, root, code)
        self._state.pop(plan.name, None)
        self._store(plan, credentials)
        log.info("login: %s assumed directly with MFA, valid for %.1f h", plan.name,
                 (credentials.expiration - self.clock.now()) / 3600)
        return LoginResult(plan.name, True, root.key.label(), credentials.expiration, [plan.name])

    async def logout(self, profile: str | None) -> tuple[list[str], list[str]]:
        """Wipe sessions from memory: one profile's MFA session (and every profile it serves),
        or everything; and from the keyring, for sessions kept there. (The profiles wiped, what
        the keyring could not forget.)"""
        wiped, removals = self._wipe(profile)  # memory first, with no await in between
        return wiped, await self._mfa.forgotten(removals)

    def _wipe(self, profile: str | None) -> tuple[list[str], list[asyncio.Task[str | None]]]:
        if profile is None:
            wiped = sorted(self._roles.profiles())
            for name in {*self._roles.profiles(), *self._state, *self.config.plans}:
                self._forget(name)
            everything = self._mfa.uncache({root.key for plan in self.config.plans.values()
                                            if isinstance(root := self.root_session_source(plan), SessionSource)
                                            and root.session_cache})
            self._mfa.log_out(None)
            self.history.logged_out_all(self.clock.now())
            return wiped, everything
        plan = self.plan(profile)
        root = self.root_session_source(plan)
        removals: list[asyncio.Task[str | None]] = []
        if isinstance(root, SessionSource) and root.key.mfa_serial:
            served = set(self.profiles_using(root.key))
            self._mfa.log_out(root.key)
            self.history.logged_out(root.key, self.clock.now())
            if root.session_cache:
                removals = self._mfa.uncache({root.key})
        else:
            served = {profile}  # a direct-strategy or keys-only profile
        # ... and every profile built on those (chains, and roles assumed with a code from them).
        affected = sorted(served | {name for name, other in self.config.plans.items()
                                    if served & set(topology.dependencies(self.config.plans, other))})
        for name in affected:
            self._forget(name)
        return affected, removals

    # ---- background work --------------------------------------------------------------

    def _source_available(self, plan: ProfilePlan) -> bool:
        """Whether credentials can be made now without a human (else: login required)."""
        root = self.root_session_source(plan)
        if root is None or not root.key.mfa_serial or root.mfa_process:
            return True
        if isinstance(root, DirectSource):  # a chain on it renews while its bottom is served
            base = topology.root_plan(self.config.plans, plan)
            return base is not plan and base.name in self._serving
        # A session the keyring may hold is looked up before anyone is told to log in.
        return root.key in self._mfa or self._mfa.may_be_cached(root)

    async def refresh_due(self) -> None:
        """Renew every cached profile whose refresh time has come; return when done."""
        now = self.clock.now()
        for profile, issued in self._roles.live():
            if now >= issued.refresh_at:
                self._refresh_in_background(profile)
        self._mfa.renew_due(now)
        self._mfa.warn_endings(now)
        await self.settle()

    async def settle(self) -> None:
        while self._inflight:
            await asyncio.wait(set(self._inflight.values()))

    async def run(self) -> None:
        """The background loop: wake every `tick` on the injected clock."""
        self._mfa.restore_cached()
        while True:
            try:
                await self.refresh_due()
            except Exception:  # never let one bad refresh stop the loop
                log.exception("background refresh failed")
            await self.clock.sleep(self.policy.tick)

    # ---- configuration ----------------------------------------------------------------

    def apply_config(self, config: BrokerConfig) -> list[str]:
        """Swap in a new config, keeping the sessions of profiles whose plan is unchanged
        (config_changes.py decides which); the profiles that lost theirs."""
        self.config, changed = next_config(self.config, config)
        for name in changed:
            self._forget(name)
        return sorted(changed)

    # ---- what status reads (see status.py) ---------------------------------------------

    def status(self) -> list[ProfileStatus]:
        return profile_rows(self)

    def issued(self, profile: str) -> Issued | None:
        return self._roles.get(profile)

    def mfa_session(self, key: MfaSessionKey) -> MfaSession | None:
        return self._mfa.get(key)

    def profile_state(self, profile: str) -> ProfileState | None:
        return self._state.get(profile)

    def capped_duration(self, profile: str) -> int | None:
        """The duration a profile asked for, when its temporary signer capped it at one hour."""
        return self._roles_issuer.capped_duration(profile)

    def renewal_error(self, key: MfaSessionKey) -> str | None:
        return self._mfa.renewal_error(key)

    def close(self) -> None:
        self._roles.clear()
        self._mfa.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._source_executor.shutdown(wait=False, cancel_futures=True)
        if self._keyring is not None:
            self._keyring.close()

