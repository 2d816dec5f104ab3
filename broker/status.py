"""`status` as a read-only view over the sessions: one row a profile, with the notes that
explain it (caps, regions, renewals, config errors). It changes nothing it reads."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .plans import (
    CHAINED_ROLE_CAP_SECONDS,
    BotocoreSource,
    DirectSource,
    MfaSource,
    ProfilePlan,
    RolePlan,
    RoleSource,
    SessionPlan,
    StaticSource,
)
from .errors import login_hint
from .session_types import ProfileStatus

if TYPE_CHECKING:
    from .sessions import SessionManager


def profile_rows(sessions: SessionManager) -> list[ProfileStatus]:
    """One row a profile: what `status` shows, read from the sessions without changing them."""
    rows: list[ProfileStatus] = []
    for name in sessions.config.profile_names():
        plan = sessions.config.plans.get(name)
        state = sessions.profile_state(name)
        if plan is None:
            rows.append(ProfileStatus(name, "invalid", "-", None, None, None, None, False, None, None,
                                      None, None, config_error=sessions.config.errors.get(name)))
            continue
        issued = sessions.issued(name)
        root = sessions.root_session_source(plan)
        session = sessions.mfa_session(root.key) if root else None
        needs_mfa = bool(root and root.key.mfa_serial)
        direct = isinstance(root, DirectSource)
        ended = sessions.session_ended(name) if needs_mfa and session is None else None
        notes: list[str] = []
        if root is not None and root.mfa_process and needs_mfa:
            notes.append("codes come from mfa_process: renewed without a human")
            if sessions.renewal_error(root.key):
                notes.append(f"last renewal failed: {sessions.renewal_error(root.key)}")
        if session is not None and session.credentials.expiration - sessions.clock.now() <= sessions.policy.mfa_warning:
            left = (session.credentials.expiration - sessions.clock.now()) / 60
            notes.append(f"MFA session ends in {left:.0f} min: {login_hint(name)} to keep going")
        if isinstance(plan, RolePlan) and plan.capped:
            notes.append(f"duration_seconds {plan.requested_duration} capped to {plan.duration} "
                         "(STS limits roles assumed from session credentials to 1 hour)")
        if sessions.capped_duration(name) is not None:
            notes.append(f"duration_seconds {sessions.capped_duration(name)} capped to {CHAINED_ROLE_CAP_SECONDS} (its "
                         "source gave temporary credentials: STS limits roles assumed from them to 1 hour)")
        notes.extend(plan.notes)
        notes.extend(_endpoint_notes(sessions, plan))
        if name in sessions.config.errors:
            notes.append("served with its last good settings until the config error is fixed")
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
            config_error=sessions.config.errors.get(name),
            notes=notes,
            mfa_serial=root.key.mfa_serial if root else None,
            mfa_session_ended=ended,
        ))
    return rows

def _endpoint_notes(sessions: SessionManager, plan: ProfilePlan) -> list[str]:
    if plan.region is not None:
        environment = os.environ.get("AWS_DEFAULT_REGION")
        if environment and environment != plan.region:
            return [f"region {plan.region} of the profile is used, not AWS_DEFAULT_REGION={environment} of "
                    "the daemon's environment (which the AWS CLI would prefer)"]
        return []  # only a profile without a region can lack one to sign for
    try:
        endpoint = sessions.sts.endpoint(plan.name, plan.region)
    except Exception:  # a profile botocore cannot make a client for: its STS call says why
        return []
    if not endpoint.region_fallback:
        return []
    return [f"no region for {endpoint.url}: calls are signed for {endpoint.region} (the AWS CLI "
            "would stop with 'You must specify a region'); set `region` on the profile"]


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
