"""Reads the user's own AWS config (through botocore's loader) and has each profile
planned (planner.py): where its source credentials come from and what to ask STS for.

A broken profile does not break the others: it gets an entry in `errors` with a
message naming the file, the profile and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

import botocore.configloader
import botocore.exceptions

if TYPE_CHECKING:
    import botocore.session

from .configfiles import ConfigFileError, checked_paths
from .names import PROFILE_NAME, PROFILE_NAME_RULE
from .planner import ProfileError, plan_profile, with_keyring
from .plans import ProfilePlan


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
    # The `[services NAME]` sections, for the stand-in config `env` writes (client_settings.py).
    raw_services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def profile_names(self) -> list[str]:
        return sorted({*self.plans, *self.errors})


def new_botocore_session(files: ConfigFiles, profile: str | None = None) -> botocore.session.Session:
    import botocore.session  # the STS side: a daemon that has made no STS call has no need of it

    session = botocore.session.Session(profile=profile)
    session.set_config_variable("config_file", files.config_file)
    session.set_config_variable("credentials_file", files.credentials_file)
    return session


def read_full_config(config_file: str, credentials_file: str) -> dict[str, Any]:
    """What botocore's `Session.full_config` gives, from the same loader functions, without
    importing botocore.session (its client machinery: most of the daemon's start-up CPU
    and about 10 MiB). The steps are the property's own: the config file, then each
    credentials-file section merged over the profile of the same name."""
    try:
        config: dict[str, Any] = botocore.configloader.load_config(config_file)
    except botocore.exceptions.ConfigNotFound:
        config = {"profiles": {}}
    try:
        credentials = botocore.configloader.raw_config_parse(credentials_file)
    except botocore.exceptions.ConfigNotFound:
        credentials = {}
    for profile, values in credentials.items():
        if profile not in config["profiles"]:
            config["profiles"][profile] = values
        else:
            config["profiles"][profile].update(values)
    return config


def load_config(files: ConfigFiles, keyring_profiles: frozenset[str] = frozenset()) -> BrokerConfig:
    """Parse both files. Raises ConfigFileError when a file itself is broken.
    `keyring_profiles`: profiles whose long-term keys the OS keyring holds (`rolebroker keys`)."""
    real = (files.config_file, files.credentials_file)
    with checked_paths(real) as safe:
        try:
            raw = read_full_config(*safe)
        except botocore.exceptions.ConfigParseError as exc:
            path = str(exc.kwargs.get("path", ""))
            named = dict(zip(safe, real)).get(path, files.describe())
            raise ConfigFileError(
                f"cannot parse {named}: fix the INI syntax "
                "(every setting must sit under a [section] header as `key = value`)"
            ) from None
        except UnicodeDecodeError:
            raise ConfigFileError(f"{files.describe()} is not valid UTF-8: re-save it as UTF-8") from None
    raw_profiles: Mapping[str, Mapping[str, Any]] = raw.get("profiles", {})
    profiles = with_keyring(raw_profiles, keyring_profiles)
    plans: dict[str, ProfilePlan] = {}
    errors: dict[str, str] = {}
    for name in profiles:
        try:
            plan = plan_profile(name, profiles, files)
        except ProfileError as exc:
            errors[name] = str(exc)
            continue
        if plan is not None and not PROFILE_NAME.fullmatch(name):
            errors[name] = (f"profile {name!r} in {files.describe()}: rolebroker cannot serve this name "
                            f"({PROFILE_NAME_RULE}); copy the profile under another name")
        elif plan is not None:
            plans[name] = plan
    return BrokerConfig(files=files, plans=plans, errors=errors, raw_profiles=raw_profiles,
                        raw_services=raw.get("services", {}))
