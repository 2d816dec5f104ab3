"""Role credentials: AssumeRole signed by whatever a profile's plan names as its source
(long-term keys, from the files or the keyring; the shared MFA session; another role's
credentials; a botocore-resolved source), with the MFA code itself for the direct
strategy. The one-hour cap STS puts on temporary signers is applied and remembered here."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping

from . import topology
from .clock import Clock
from .codes import MfaCodes, Runner
from .errors import LoginRequired, ProfileConfigError, StsDenied, login_hint
from .keyring_sessions import DaemonKeyring
from .mfa_sessions import MfaSessions
from .models import Credentials, SourceSecret, is_temporary
from .plans import (
    CHAINED_ROLE_CAP_SECONDS, DirectSource, ProfilePlan, RolePlan, RoleSource, SessionPlan, SessionSource, Source,
    StaticSource,
)
from .sts import StsGateway

# How long a botocore-resolved source (credential_process, SSO) may take.
SOURCE_TIMEOUT = 30.0


class RoleIssuer:
    def __init__(self, sts: StsGateway, clock: Clock, run: Runner, mfa: MfaSessions, codes: MfaCodes,
                 keyring: Callable[[], DaemonKeyring], plans: Callable[[], Mapping[str, ProfilePlan]],
                 role_credentials: Callable[[str], Awaitable[Credentials]],
                 source_executor: concurrent.futures.Executor) -> None:
        self.sts, self.clock, self._run, self._mfa, self._codes = sts, clock, run, mfa, codes
        self._keyring, self._plans, self._role_credentials = keyring, plans, role_credentials
        self._source_executor = source_executor
        # Profiles whose botocore-resolved source gave temporary credentials: their role is
        # asked for the one hour STS allows (profile -> the duration asked).
        self._capped: dict[str, int] = {}

    def capped_duration(self, profile: str) -> int | None:
        return self._capped.get(profile)

    def forget(self, profile: str) -> None:
        self._capped.pop(profile, None)

    async def issue(self, plan: ProfilePlan) -> Credentials:
        if isinstance(plan, SessionPlan):
            return await self._mfa.credentials(plan.source, plan.name)
        if isinstance(plan.source, DirectSource):
            if not plan.source.mfa_process:
                raise LoginRequired(f"profile {plan.name!r} uses the direct strategy and its credentials "
                                    f"have ended: {login_hint(plan.name)}")
            code = await self._codes.from_process(plan.source, plan.name)
            return await self.assume_direct(plan, plan.source, code)
        source = await self.source_secret(plan.source, plan.name)
        try:
            return await self._run(self.sts.assume_role, plan.name, source, plan.role_arn,
                                   self.session_name(plan), self._duration(plan, source), plan.external_id,
                                   plan.region)
        except LoginRequired:
            # STS says the MFA session ended early (revoked, or the clock was off): forget it,
            # unless a login replaced it while this call was in flight.
            root = topology.root_session_source(self._plans(), plan)
            if root is not None and isinstance(source, Credentials):
                self._mfa.drop_if_current(root.key, source)
            raise LoginRequired(f"the MFA session has ended: {login_hint(plan.name)}") from None
        except StsDenied as exc:
            if isinstance(plan.source, RoleSource):
                raise StsDenied(
                    f"{exc.message}. Note: {plan.name!r} is a second hop of role chaining (its source "
                    f"{plan.source.profile!r} is a role), and MFA does not carry over that hop: if the trust "
                    "policy requires MFA, point source_profile at the IAM user's profile instead"
                ) from None
            raise

    async def assume_direct(self, plan: RolePlan, source: DirectSource, code: str) -> Credentials:
        signer = await self.source_secret(source.signer, plan.name)
        return await self._run(self.sts.assume_role, plan.name, signer, plan.role_arn, self.session_name(plan),
                               self._duration(plan, signer), plan.external_id, plan.region,
                               source.key.mfa_serial, code)

    def _duration(self, plan: RolePlan, signer: SourceSecret) -> int:
        """The plan's duration, capped at one hour when the signer turned out temporary
        (a credential_process or credential_source can give either kind)."""
        if plan.duration > CHAINED_ROLE_CAP_SECONDS and is_temporary(signer):
            self._capped[plan.name] = plan.duration
            return CHAINED_ROLE_CAP_SECONDS
        self._capped.pop(plan.name, None)
        return plan.duration

    def session_name(self, plan: RolePlan) -> str:
        return plan.role_session_name or f"rolebroker-{int(self.clock.now())}"

    async def source_secret(self, source: Source, profile: str) -> SourceSecret:
        if isinstance(source, StaticSource):
            return await self._keyring().keys(source.keys, profile)
        if isinstance(source, SessionSource):
            return await self._mfa.credentials(source, profile)
        if isinstance(source, RoleSource):
            return await self._role_credentials(source.profile)
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
