"""How profiles hang together: which MFA source sits at the bottom of a profile's chain,
which profiles share an MFA session, which role profiles sign another's calls. Pure
functions of the planned config: no state, no I/O, so sessions and status agree."""

from __future__ import annotations

from collections.abc import Mapping

from .plans import (
    DirectSource,
    MfaSessionKey,
    MfaSource,
    ProfilePlan,
    RolePlan,
    RoleSource,
    SessionPlan,
    SessionSource,
)

Plans = Mapping[str, ProfilePlan]


def root_session_source(plans: Plans, plan: ProfilePlan) -> MfaSource | None:
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
        current = plans.get(source.profile)
    return None


def chain(plans: Plans, plan: ProfilePlan) -> list[str]:
    """The role profiles a chain passes through below `plan`, nearest first."""
    links: list[str] = []
    current: ProfilePlan | None = plan
    while isinstance(current, RolePlan) and isinstance(current.source, RoleSource):
        name = current.source.profile
        if name in links:
            break
        links.append(name)
        current = plans.get(name)
    return links


def root_plan(plans: Plans, plan: ProfilePlan) -> ProfilePlan:
    """The profile at the bottom of a chain (the one whose source is not a role)."""
    current = plan
    for link in chain(plans, plan):
        current = plans.get(link, current)
    return current


def dependencies(plans: Plans, plan: ProfilePlan) -> list[str]:
    """Every role profile whose credentials sign this profile's calls, nearest first (a
    direct-strategy profile's signer included)."""
    links: list[str] = []
    current: ProfilePlan | None = plan
    while isinstance(current, RolePlan):
        source = current.source.signer if isinstance(current.source, DirectSource) else current.source
        if not isinstance(source, RoleSource) or source.profile in links:
            break
        links.append(source.profile)
        current = plans.get(source.profile)
    return links


def profiles_using(plans: Plans, key: MfaSessionKey) -> list[str]:
    """Profiles served from the shared MFA session `key` (the direct strategy shares none)."""
    return sorted(name for name, plan in plans.items()
                  if isinstance(root := root_session_source(plans, plan), SessionSource) and root.key == key)


def self_renewing(plans: Plans) -> dict[MfaSessionKey, SessionSource]:
    """The MFA sessions with an mfa_process: the daemon renews them, nobody is warned."""
    return {root.key: root for plan in plans.values()
            if isinstance(root := root_session_source(plans, plan), SessionSource) and root.mfa_process}
