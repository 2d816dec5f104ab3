"""Reads the user's own AWS config (through botocore's loader) and turns each profile
into a plan: where its source credentials come from and what to ask STS for.

A broken profile does not break the others: it gets an entry in `errors` with a
message naming the file, the profile and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

import botocore.configloader
import botocore.exceptions
import botocore.session

from broker.configfiles import ConfigFileError, checked_paths
from broker.models import StaticKeys

# GetSessionToken accepts 900..129600 s; 12 h is STS's own default.
DEFAULT_MFA_SESSION_SECONDS = 43200
MIN_STS_SECONDS = 900
MAX_MFA_SESSION_SECONDS = 129600
# AssumeRole from any temporary credentials is capped by STS at one hour (role chaining).
CHAINED_ROLE_CAP_SECONDS = 3600
MAX_ROLE_SECONDS = 43200
DEFAULT_ROLE_SECONDS = 3600

# Our own per-profile key: the MFA session's length (the AWS tools ignore unknown keys).
MFA_SESSION_KEY = "rolebroker_mfa_session_seconds"

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")


@dataclass(frozen=True)
class MfaSessionKey:
    """One GetSessionToken session serves every profile with the same source and MFA device."""

    source_profile: str
    mfa_serial: str | None

    def label(self) -> str:
        return f"{self.source_profile} ({self.mfa_serial})" if self.mfa_serial else self.source_profile


@dataclass(frozen=True)
class SessionSource:
    """GetSessionToken with an IAM user's long-term keys, with MFA when a serial is set."""

    key: MfaSessionKey
    keys: StaticKeys
    duration: int
    # A command that prints a code (a YubiKey, a password manager): the daemon renews
    # the session by itself with it, so no human is needed at all.
    mfa_process: str | None = None
    # The desktop dialog the daemon may raise for a code (rolebroker_mfa_prompt). Not part of
    # the plan's identity: changing it must not throw away a session a human typed a code for.
    mfa_prompt: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DirectSource:
    """The direct strategy: AssumeRole from long-term keys with the MFA code itself, for
    accounts whose policies deny session-token credentials or check MFA age. Each
    renewal needs a fresh code, so without `mfa_process` it lasts one role session."""

    key: MfaSessionKey
    keys: StaticKeys
    mfa_process: str | None = None
    mfa_prompt: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StaticSource:
    """Long-term keys used directly (no MFA anywhere in the chain)."""

    profile: str
    keys: StaticKeys


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


Source = SessionSource | DirectSource | StaticSource | RoleSource | BotocoreSource
MfaSource = SessionSource | DirectSource
STRATEGY_KEY = "rolebroker_strategy"
# Which desktop dialog asks for a code when no terminal is there (unset: none).
MFA_PROMPT_KEY = "rolebroker_mfa_prompt"
MFA_PROMPTS = ("zenity", "kdialog", "osascript")
STRATEGIES = ("session-token", "direct")
CREDENTIAL_SOURCES = ("Environment", "Ec2InstanceMetadata", "EcsContainer")


@dataclass(frozen=True)
class RolePlan:
    name: str
    role_arn: str
    source: Source
    requested_duration: int
    duration: int  # what is asked of STS after the chaining cap
    external_id: str | None
    role_session_name: str | None
    region: str | None

    @property
    def capped(self) -> bool:
        return self.duration < self.requested_duration


@dataclass(frozen=True)
class SessionPlan:
    """A profile served the MFA session's own credentials (an MFA-protected IAM user)."""

    name: str
    source: SessionSource
    region: str | None


ProfilePlan = RolePlan | SessionPlan


@dataclass(frozen=True)
class ConfigFiles:
    config_file: str
    credentials_file: str

    @classmethod
    def from_environment(cls) -> ConfigFiles:
        # Same variables and defaults as the AWS CLI and every SDK.
        return cls(
            config_file=os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")),
            credentials_file=os.path.expanduser(
                os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
            ),
        )

    def describe(self) -> str:
        return f"{self.config_file} or {self.credentials_file}"


@dataclass(frozen=True)
class BrokerConfig:
    files: ConfigFiles
    plans: Mapping[str, ProfilePlan]
    errors: Mapping[str, str] = field(default_factory=dict)
    # Raw profile sections, kept for the STS client factory (regions, endpoints).
    raw_profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def profile_names(self) -> list[str]:
        return sorted({*self.plans, *self.errors})


def new_botocore_session(files: ConfigFiles, profile: str | None = None) -> botocore.session.Session:
    session = botocore.session.Session(profile=profile)
    session.set_config_variable("config_file", files.config_file)
    session.set_config_variable("credentials_file", files.credentials_file)
    return session


def load_config(files: ConfigFiles) -> BrokerConfig:
    """Parse both files. Raises ConfigFileError when a file itself is broken."""
    real = (files.config_file, files.credentials_file)
    with checked_paths(real) as safe:
        try:
            raw = new_botocore_session(ConfigFiles(*safe)).full_config
        except botocore.exceptions.ConfigParseError as exc:
            path = str(exc.kwargs.get("path", ""))
            named = dict(zip(safe, real)).get(path, files.describe())
            raise ConfigFileError(
                f"cannot parse {named}: fix the INI syntax "
                "(every setting must sit under a [section] header as `key = value`)"
            ) from None
        except UnicodeDecodeError:
            raise ConfigFileError(f"{files.describe()} is not valid UTF-8: re-save it as UTF-8") from None
    profiles: Mapping[str, Mapping[str, Any]] = raw.get("profiles", {})
    plans: dict[str, ProfilePlan] = {}
    errors: dict[str, str] = {}
    for name in profiles:
        try:
            plan = _plan_profile(name, profiles, files)
        except ProfileError as exc:
            errors[name] = str(exc)
            continue
        if plan is not None:
            plans[name] = plan
    return BrokerConfig(files=files, plans=plans, errors=errors, raw_profiles=profiles)


class ProfileError(Exception):
    pass


class ProfileCycle(ProfileError):
    """A source_profile loop; its message names every profile in it."""


def _plan_profile(
    name: str, profiles: Mapping[str, Mapping[str, Any]], files: ConfigFiles
) -> ProfilePlan | None:
    section = profiles[name]
    where = f"profile {name!r} in {files.describe()}"
    region = _str(section.get("region"))
    if "role_arn" in section:
        return _plan_role(name, profiles, files, chain=(name,))
    keys = _static_keys(section)
    if keys is None:
        return None  # SSO, credential_process or region-only profiles: nothing to broker
    serial = _str(section.get("mfa_serial"))
    if serial is None:
        return None  # plain long-term keys: nothing to broker, and never handed out as they are
    duration = _int_setting(section, MFA_SESSION_KEY, DEFAULT_MFA_SESSION_SECONDS,
                            MIN_STS_SECONDS, MAX_MFA_SESSION_SECONDS, where)
    source = SessionSource(MfaSessionKey(name, serial), keys, duration, _str(section.get("mfa_process")),
                           mfa_prompt=_mfa_prompt(section, section, where))
    return SessionPlan(name=name, source=source, region=region)


def _plan_role(
    name: str, profiles: Mapping[str, Mapping[str, Any]], files: ConfigFiles, chain: tuple[str, ...]
) -> RolePlan:
    section = profiles[name]
    where = f"profile {name!r} in {files.describe()}"
    role_arn = _str(section.get("role_arn")) or ""
    if not ROLE_ARN.match(role_arn):
        raise ProfileError(
            f"{where}: role_arn {role_arn!r} is not a role ARN; "
            "expected arn:aws:iam::123456789012:role/NAME"
        )
    session_name = _str(section.get("role_session_name"))
    if session_name is not None and not SESSION_NAME.match(session_name):
        raise ProfileError(
            f"{where}: role_session_name must be 2-64 characters of letters, digits and +=,.@_-"
        )
    requested = _int_setting(section, "duration_seconds", DEFAULT_ROLE_SECONDS,
                             MIN_STS_SECONDS, MAX_ROLE_SECONDS, where)
    source_name = _str(section.get("source_profile"))
    strategy = _str(section.get(STRATEGY_KEY)) or "session-token"
    if strategy not in STRATEGIES:
        raise ProfileError(f"{where}: {STRATEGY_KEY} = {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if source_name is None:
        credential_source = _str(section.get("credential_source"))
        if credential_source is None:
            raise ProfileError(f"{where}: role_arn needs a source_profile (the profile with your IAM user's keys)")
        if credential_source not in CREDENTIAL_SOURCES:
            raise ProfileError(f"{where}: credential_source = {credential_source!r}; use one of "
                               f"{', '.join(CREDENTIAL_SOURCES)}")
        source: Source = BotocoreSource(name, credential_source)
    else:
        source = _plan_source(name, source_name, profiles, files, chain)
    if strategy == "direct":
        if not isinstance(source, SessionSource):
            raise ProfileError(f"{where}: {STRATEGY_KEY} = direct needs a source_profile with long-term keys "
                               "and an mfa_serial")
        source = DirectSource(source.key, source.keys, source.mfa_process, mfa_prompt=source.mfa_prompt)
    # Only long-term keys (or the direct strategy's MFA code) escape the one-hour chaining cap.
    temporary_source = not isinstance(source, (StaticSource, DirectSource))
    duration = min(requested, CHAINED_ROLE_CAP_SECONDS) if temporary_source else requested
    return RolePlan(
        name=name,
        role_arn=role_arn,
        source=source,
        requested_duration=requested,
        duration=duration,
        external_id=_str(section.get("external_id")),
        role_session_name=session_name,
        region=_str(section.get("region")) or _inherited_region(source_name, profiles),
    )


def _plan_source(
    name: str, source_name: str, profiles: Mapping[str, Mapping[str, Any]],
    files: ConfigFiles, chain: tuple[str, ...],
) -> Source:
    where = f"profile {name!r} in {files.describe()}"
    if source_name not in profiles:
        raise ProfileError(
            f"{where}: source_profile {source_name!r} does not exist; add a [{source_name}] section "
            "with aws_access_key_id and aws_secret_access_key to your credentials file"
        )
    own_keys = source_name == name and _static_keys(profiles[name]) is not None
    if source_name in chain and not own_keys:
        cycle = " -> ".join((*chain, source_name))
        where = f"profile {chain[0]!r} in {files.describe()}"
        raise ProfileCycle(f"{where}: source_profile cycle {cycle}; one profile in it must hold keys")
    source = profiles[source_name]
    keys = _static_keys(source)
    if source_name != name and "role_arn" in source and keys is None:
        try:
            _plan_role(source_name, profiles, files, chain=(*chain, source_name))
        except ProfileCycle:
            raise  # already names the whole cycle
        except ProfileError as exc:
            raise ProfileError(f"{where}: its source_profile {source_name!r} is broken: {exc}") from None
        return RoleSource(source_name)
    if keys is None:
        return BotocoreSource(source_name)
    serial = _str(profiles[name].get("mfa_serial")) or _str(source.get("mfa_serial"))
    if serial is None:
        return StaticSource(source_name, keys)
    # The session length is a property of the shared MFA session: read it from the
    # source profile so every role profile using that session agrees on it.
    duration = _int_setting(source, MFA_SESSION_KEY, DEFAULT_MFA_SESSION_SECONDS,
                            MIN_STS_SECONDS, MAX_MFA_SESSION_SECONDS,
                            f"profile {source_name!r} in {files.describe()}")
    mfa_process = _str(profiles[name].get("mfa_process")) or _str(source.get("mfa_process"))
    return SessionSource(MfaSessionKey(source_name, serial), keys, duration, mfa_process,
                         mfa_prompt=_mfa_prompt(profiles[name], source, where))


def _mfa_prompt(section: Mapping[str, Any], source: Mapping[str, Any], where: str) -> str | None:
    """rolebroker_mfa_prompt, read like mfa_process: the profile's own, else its source's."""
    prompt = _str(section.get(MFA_PROMPT_KEY)) or _str(source.get(MFA_PROMPT_KEY))
    if prompt is not None and prompt not in MFA_PROMPTS:
        raise ProfileError(f"{where}: {MFA_PROMPT_KEY} = {prompt!r}; use one of {', '.join(MFA_PROMPTS)} "
                           "(or leave it out for no desktop dialog)")
    return prompt


def _inherited_region(source_name: str | None, profiles: Mapping[str, Mapping[str, Any]]) -> str | None:
    if source_name is None or source_name not in profiles:
        return None
    return _str(profiles[source_name].get("region"))


def _static_keys(section: Mapping[str, Any]) -> StaticKeys | None:
    key_id = _str(section.get("aws_access_key_id"))
    secret = _str(section.get("aws_secret_access_key"))
    if key_id and secret:
        return StaticKeys(key_id, secret)
    return None


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _int_setting(section: Mapping[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    raw = _str(section.get(key))
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProfileError(f"{where}: {key} = {raw!r} is not a whole number of seconds") from None
    if not low <= value <= high:
        raise ProfileError(f"{where}: {key} = {value} is out of range; use {low} to {high} seconds")
    return value
