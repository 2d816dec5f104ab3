"""Turns one profile of the user's AWS config into a plan: where its source credentials
come from, what to ask STS for, and the settings of ours it carries (the rolebroker_* keys).

The rules are botocore's (see README, "Where rolebroker reads your config differently"):
a profile botocore would resolve by itself (SSO, credential_process, web identity) is left
to it; a broken profile raises ProfileError with a message naming the file, the profile and
the fix, and the others are planned all the same (config.py collects the errors).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from .models import StaticKeys
from .plans import (
    BotocoreSource,
    CHAINED_ROLE_CAP_SECONDS,
    DEFAULT_MFA_SESSION_SECONDS,
    DEFAULT_ROLE_SECONDS,
    DirectSource,
    KeyringKeys,
    MAX_MFA_SESSION_SECONDS,
    MAX_ROLE_SECONDS,
    MIN_STS_SECONDS,
    MfaSessionKey,
    PlainSource,
    ProfilePlan,
    RolePlan,
    RoleSource,
    SessionPlan,
    SessionSource,
    Source,
    StaticSource,
)

if TYPE_CHECKING:
    from .config import ConfigFiles

# Our own per-profile key: the MFA session's length (the AWS tools ignore unknown keys).
MFA_SESSION_KEY = "rolebroker_mfa_session_seconds"
# On a source profile: `keyring` keeps its MFA session in the OS keyring across restarts.
SESSION_CACHE_KEY = "rolebroker_session_cache"
# Set on the planner's copy of a section (never in a file): the keyring holds this profile's keys,
# and whether the file's own keys shadow them.
IN_KEYRING = "rolebroker:keyring"
SHADOWED = "rolebroker:keyring-shadowed"

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")


STRATEGY_KEY = "rolebroker_strategy"
STRATEGIES = ("session-token", "direct")
CREDENTIAL_SOURCES = ("Environment", "Ec2InstanceMetadata", "EcsContainer")
# Which desktop dialog asks for a code when no terminal is there (unset: none).
MFA_PROMPT_KEY = "rolebroker_mfa_prompt"
MFA_PROMPTS = ("zenity", "kdialog", "osascript")


def with_keyring(profiles: Mapping[str, Mapping[str, Any]],
                  keyring: frozenset[str]) -> Mapping[str, Mapping[str, Any]]:
    """The planner's view: a profile with no keys in the files and nothing else botocore
    would resolve takes the keyring's keys; keys in both: the file's win (as every AWS tool
    reads them), marked so `status` can say so."""
    if not keyring:
        return profiles
    marked = dict(profiles)
    for name in keyring & set(profiles):
        section = profiles[name]
        if "aws_access_key_id" in section or "aws_secret_access_key" in section:
            marked[name] = {**section, SHADOWED: True}
        elif not _resolved_by_botocore(section) and "login_session" not in section:
            marked[name] = {**section, IN_KEYRING: name}
    return marked


def _shadow_note(profile: str, section: Mapping[str, Any], files: ConfigFiles) -> tuple[str, ...]:
    if not section.get(SHADOWED):
        return ()
    return (f"the keys of {profile!r} are both in {files.describe()} and in the OS keyring: the file's are "
            f"used; `rolebroker keys import {profile}` moves them out of the file, or `rolebroker keys remove "
            f"{profile}` drops the keyring's",)


def _session_cache(section: Mapping[str, Any], where: str) -> bool:
    value = _str(section.get(SESSION_CACHE_KEY))
    if value is None or value == "none":
        return False
    if value != "keyring":
        raise ProfileError(f"{where}: {SESSION_CACHE_KEY} = {value!r}; use `keyring` (or remove the key)")
    return True


class ProfileError(Exception):
    pass


class ProfileCycle(ProfileError):
    """A source_profile loop; its message names every profile in it."""


def plan_profile(
    name: str, profiles: Mapping[str, Mapping[str, Any]], files: ConfigFiles
) -> ProfilePlan | None:
    section = profiles[name]
    where = f"profile {name!r} in {files.describe()}"
    region = _str(section.get("region"))
    if "role_arn" in section:
        return _plan_role(name, profiles, files, chain=(name,))
    keys = _static_keys(section)
    if keys is None or keys.temporary or _resolved_by_botocore(section):
        return None  # SSO, credential_process, temporary keys or region-only: nothing to broker
    serial = _str(section.get("mfa_serial"))
    if serial is None:
        return None  # plain long-term keys: nothing to broker, and never handed out as they are
    duration = _int_setting(section, MFA_SESSION_KEY, DEFAULT_MFA_SESSION_SECONDS,
                            MIN_STS_SECONDS, MAX_MFA_SESSION_SECONDS, where)
    source = SessionSource(MfaSessionKey(name, serial), keys, duration, _str(section.get("mfa_process")), name,
                           session_cache=_session_cache(section, where),
                           mfa_prompt=_mfa_prompt(section, section, where))
    return SessionPlan(name=name, source=source, region=region, notes=_shadow_note(name, section, files))


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
    notes: list[str] = []
    requested = _role_duration(section, where, notes)
    source_name = _str(section.get("source_profile"))
    credential_source = _str(section.get("credential_source"))
    strategy = _str(section.get(STRATEGY_KEY)) or "session-token"
    if strategy not in STRATEGIES:
        raise ProfileError(f"{where}: {STRATEGY_KEY} = {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if source_name is not None and credential_source is not None:
        raise ProfileError(f"{where}: it sets both source_profile and credential_source; keep the one that "
                           "holds your credentials (the AWS CLI refuses this profile too)")
    if source_name is None:
        if credential_source is None:
            raise ProfileError(f"{where}: role_arn needs a source_profile (the profile with your IAM user's keys)")
        if credential_source not in CREDENTIAL_SOURCES:
            raise ProfileError(f"{where}: credential_source = {credential_source!r}; use one of "
                               f"{', '.join(CREDENTIAL_SOURCES)}")
        found: PlainSource = BotocoreSource(name, credential_source)
    else:
        found = _plan_source(name, source_name, profiles, files, chain)
        notes.extend(_shadow_note(source_name, profiles[source_name], files))
    own_serial = _str(section.get("mfa_serial"))
    source: Source = found
    if strategy == "direct":
        if not isinstance(found, SessionSource):
            raise ProfileError(f"{where}: {STRATEGY_KEY} = direct needs a source_profile with long-term keys "
                               "and an mfa_serial")
        source = DirectSource(found.key, StaticSource(found.key.source_profile, found.keys), found.mfa_process,
                              mfa_prompt=found.mfa_prompt)
    elif own_serial is not None and not isinstance(found, SessionSource):
        # botocore sends this profile's mfa_serial and a code with its AssumeRole whatever
        # signs it; a source that is not an IAM user's long-term keys cannot buy a session.
        source = DirectSource(MfaSessionKey(source_name or name, own_serial), found,
                              _str(section.get("mfa_process")), mfa_prompt=_mfa_prompt(section, section, where))
    # Only long-term keys escape the one-hour chaining cap.
    temporary = _signs_temporary(source)
    duration = min(requested, CHAINED_ROLE_CAP_SECONDS) if temporary else requested
    region = _str(section.get("region"))
    if region is None and (region := _inherited_region(source_name, profiles)) is not None:
        notes.append(f"region {region} comes from source profile {source_name!r} (the AWS CLI would not "
                     "inherit it): set `region` on this profile to choose another")
    return RolePlan(
        name=name,
        role_arn=role_arn,
        source=source,
        requested_duration=requested,
        duration=duration,
        external_id=_str(section.get("external_id")),
        role_session_name=session_name,
        region=region,
        notes=tuple(notes),
    )


def _signs_temporary(source: Source) -> bool | None:
    """Whether the credentials signing a role's AssumeRole are temporary (None: known only
    once botocore has resolved them)."""
    signer = source.signer if isinstance(source, DirectSource) else source
    if isinstance(signer, StaticSource):
        return signer.keys.temporary
    if isinstance(signer, BotocoreSource):
        return None
    return True  # an MFA session or another role


def _role_duration(section: Mapping[str, Any], where: str, notes: list[str]) -> int:
    raw = _str(section.get("duration_seconds"))
    try:
        int(raw or "0")
    except ValueError:
        # botocore ignores a value it cannot read and lets STS use its default: the profile
        # works with the AWS CLI, so it works here too, and `status` says why it is an hour.
        notes.append(f"duration_seconds = {raw!r} is not a whole number of seconds: using "
                     f"{DEFAULT_ROLE_SECONDS} (as the AWS CLI does); write it in seconds, e.g. 7200")
        return DEFAULT_ROLE_SECONDS
    return _int_setting(section, "duration_seconds", DEFAULT_ROLE_SECONDS, MIN_STS_SECONDS, MAX_ROLE_SECONDS, where)


def _plan_source(
    name: str, source_name: str, profiles: Mapping[str, Mapping[str, Any]],
    files: ConfigFiles, chain: tuple[str, ...],
) -> PlainSource:
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
        holders = [p for p in dict.fromkeys(chain) if _static_keys(profiles.get(p, {})) is not None]
        if holders:
            # Keys on a profile that also has role_arn are its source's keys only when its
            # source_profile is itself: otherwise the AWS CLI assumes its role, round and round.
            fix = (f"{', '.join(map(repr, holders))} holds keys but also a role_arn, so it is used as a role; "
                   "give it `source_profile = " + holders[0] + "` (its own keys), or move the keys to a "
                   "profile without role_arn")
        else:
            fix = "one profile in it must hold keys"
        raise ProfileCycle(f"{where}: source_profile cycle {cycle}; {fix}")
    source = profiles[source_name]
    keys = _static_keys(source)
    has_keys = "aws_access_key_id" in source or "aws_secret_access_key" in source
    if source_name != name and "role_arn" in source and not has_keys and "web_identity_token_file" not in source:
        try:
            _plan_role(source_name, profiles, files, chain=(*chain, source_name))
        except ProfileCycle:
            raise  # already names the whole cycle
        except ProfileError as exc:
            raise ProfileError(f"{where}: its source_profile {source_name!r} is broken: {exc}") from None
        return RoleSource(source_name)
    if keys is None or _resolved_by_botocore(source):
        # botocore tries SSO and web identity before keys (and credential_process before keys
        # in the config file): a profile with those is resolved the way botocore resolves it.
        return BotocoreSource(source_name)
    if keys.temporary:
        return StaticSource(source_name, keys)  # no MFA session from these: see DirectSource
    serial = _str(profiles[name].get("mfa_serial")) or _str(source.get("mfa_serial"))
    if serial is None:
        return StaticSource(source_name, keys)
    # The session length is a property of the shared MFA session: read it from the
    # source profile so every role profile using that session agrees on it.
    duration = _int_setting(source, MFA_SESSION_KEY, DEFAULT_MFA_SESSION_SECONDS,
                            MIN_STS_SECONDS, MAX_MFA_SESSION_SECONDS,
                            f"profile {source_name!r} in {files.describe()}")
    mfa_process = _str(profiles[name].get("mfa_process")) or _str(source.get("mfa_process"))
    return SessionSource(MfaSessionKey(source_name, serial), keys, duration, mfa_process, name,
                         session_cache=_session_cache(source, f"profile {source_name!r} in {files.describe()}"),
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


def _static_keys(section: Mapping[str, Any]) -> StaticKeys | KeyringKeys | None:
    if section.get(IN_KEYRING):
        return KeyringKeys(str(section[IN_KEYRING]))
    key_id = _str(section.get("aws_access_key_id"))
    secret = _str(section.get("aws_secret_access_key"))
    if key_id and secret:
        return StaticKeys(key_id, secret, _str(section.get("aws_session_token")))
    return None


def _resolved_by_botocore(section: Mapping[str, Any]) -> bool:
    """Settings botocore's profile chain prefers over (config-file) keys: SSO, web identity,
    credential_process."""
    return any(key.startswith("sso_") or key in ("web_identity_token_file", "credential_process")
               for key in section)


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
