"""What a profile becomes once its config is read: a plan naming where its source
credentials come from (keys, a shared MFA session, another role, a botocore-resolved
source) and what to ask STS for. Pure data: config.py makes plans, sessions.py follows them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import StaticKeys

# GetSessionToken accepts 900..129600 s; 12 h is STS's own default.
DEFAULT_MFA_SESSION_SECONDS = 43200
MIN_STS_SECONDS = 900
MAX_MFA_SESSION_SECONDS = 129600
# AssumeRole from any temporary credentials is capped by STS at one hour (role chaining).
CHAINED_ROLE_CAP_SECONDS = 3600
MAX_ROLE_SECONDS = 43200
DEFAULT_ROLE_SECONDS = 3600


@dataclass(frozen=True)
class MfaSessionKey:
    """One GetSessionToken session serves every profile with the same source and MFA device."""

    source_profile: str
    mfa_serial: str | None

    def label(self) -> str:
        return f"{self.source_profile} ({self.mfa_serial})" if self.mfa_serial else self.source_profile


@dataclass(frozen=True)
class KeyringKeys:
    """An IAM user's long-term keys kept in the OS keyring (`rolebroker keys`): read from
    it when a call needs them, never held in the plan."""

    profile: str

    @property
    def temporary(self) -> bool:
        return False  # `rolebroker keys` stores long-term keys only


LongTermKeys = StaticKeys | KeyringKeys


@dataclass(frozen=True)
class SessionSource:
    """GetSessionToken with an IAM user's long-term keys, with MFA when a serial is set."""

    key: MfaSessionKey
    keys: LongTermKeys
    duration: int
    # A command that prints a code (a YubiKey, a password manager): the daemon renews
    # the session by itself with it, so no human is needed at all.
    mfa_process: str | None = None
    # The role profile whose STS client sends GetSessionToken (its region, `services`,
    # endpoint_url): botocore sends every call of a profile where that profile points.
    via: str | None = None
    # `rolebroker_session_cache = keyring`: the session outlives a daemon restart (see sessions).
    session_cache: bool = False

    @property
    def sts_profile(self) -> str:
        return self.via or self.key.source_profile
    # The desktop dialog the daemon may raise for a code (rolebroker_mfa_prompt). Not part of
    # the plan's identity: changing it must not throw away a session a human typed a code for.
    mfa_prompt: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StaticSource:
    """Keys from the files used as they are: long-term keys with no MFA anywhere in the
    chain, or temporary keys (with aws_session_token), which cannot buy an MFA session."""

    profile: str
    keys: LongTermKeys


@dataclass(frozen=True)
class RoleSource:
    """The source is another role profile: AssumeRole from its credentials (a chain)."""

    profile: str


@dataclass(frozen=True)
class BotocoreSource:
    """A source botocore resolves itself: a profile with credential_process or SSO, or a
    role profile's `credential_source` (Environment, Ec2InstanceMetadata, EcsContainer)."""

    profile: str
    credential_source: str | None = None


@dataclass(frozen=True)
class DirectSource:
    """AssumeRole with the MFA code itself. Either the direct strategy (long-term keys, for
    accounts whose policies deny session-token credentials or check MFA age), or a role
    profile's own `mfa_serial` over a source that cannot buy an MFA session (another role,
    temporary keys, credential_source, credential_process, SSO): botocore sends that
    profile's serial and a code with its AssumeRole, and so do we. Each renewal needs a
    fresh code, so without `mfa_process` it lasts one role session."""

    key: MfaSessionKey
    signer: StaticSource | RoleSource | BotocoreSource
    mfa_process: str | None = None
    mfa_prompt: str | None = field(default=None, compare=False)


Source = SessionSource | DirectSource | StaticSource | RoleSource | BotocoreSource
PlainSource = SessionSource | StaticSource | RoleSource | BotocoreSource  # a source profile as it is
MfaSource = SessionSource | DirectSource


@dataclass(frozen=True)
class RolePlan:
    name: str
    role_arn: str
    source: Source
    requested_duration: int
    # What is asked of STS after the chaining cap. A botocore-resolved source's credentials
    # are capped when they turn out temporary (SessionManager decides, when it has them).
    duration: int
    external_id: str | None
    role_session_name: str | None
    region: str | None
    # Where this profile is read differently from the AWS CLI, for `status`.
    notes: tuple[str, ...] = ()

    @property
    def capped(self) -> bool:
        return self.duration < self.requested_duration


@dataclass(frozen=True)
class SessionPlan:
    """A profile served the MFA session's own credentials (an MFA-protected IAM user)."""

    name: str
    source: SessionSource
    region: str | None
    notes: tuple[str, ...] = ()


ProfilePlan = RolePlan | SessionPlan
