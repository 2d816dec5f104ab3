"""Which variables point a process at the broker, decided here on the client's side.

The daemon describes facts (the endpoint URL, the profile's region, ...); only this module
names variables, from a fixed list, and each value is checked for its shape. Shell output
built from names or values a daemon chose would run whatever that daemon said: PATH,
LD_PRELOAD or PROMPT_COMMAND from an impostor become code in the user's shell.
"""

from __future__ import annotations

import os
import re
import shlex
from urllib.parse import quote
from collections.abc import Mapping

from ..broker.client_settings import (
    NESTED_SETTINGS, SCALAR_SETTINGS, SERVICE_ID, SERVICES_NAME, SETTING_KEY, SETTING_VALUE,
)
from ..broker.names import PROFILE_NAME

# typing is for the type checker only: env runs at every shell start of some users, and the
# import costs a tenth of an interpreter start. mypy and ruff read this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENDPOINT_VARIABLE = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
RELATIVE_VARIABLE = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
TOKEN_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
TOKEN_FILE_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
CONFIG_FILE_VARIABLE = "AWS_CONFIG_FILE"
CREDENTIALS_FILE_VARIABLE = "AWS_SHARED_CREDENTIALS_FILE"

# Variables that outrank the container provider in some SDK's chain, or would make it read a
# different token: whoever points a process at the broker unsets them.
SHADOWING_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", RELATIVE_VARIABLE,
    TOKEN_FILE_VARIABLE, "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)

# The hosts every SDK accepts over plain http: loopback and the container link-local addresses.
_ENDPOINT = re.compile(
    r"http://(?P<host>127\.0\.0\.1|\[::1\]|169\.254\.170\.2|169\.254\.170\.23|\[fd00:ec2::23\])"
    r":(?P<port>[0-9]{1,5})/v1/credentials/[A-Za-z0-9_.~@+=,:%-]{1,384}"
)
# The ECS form: SDKs fetch http://169.254.170.2 (port 80) + this path, with no header, so the
# path carries the token.
_RELATIVE = re.compile(r"/v1/credentials/[A-Za-z0-9_.~@+=,:%-]{1,384}/rbt_[A-Za-z0-9_-]{20,200}")
# Profile names written into the stand-in config: an INI header, a `credential_process` word
# and a message inside "..." for sh. Names with anything else are left out of it.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.@+=,:-]{1,128}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_TOKEN = re.compile(r"rbt_[A-Za-z0-9_-]{20,200}")
_ADDRESS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]{2,39}")  # an IPv4 or IPv6 literal
_LOCAL_URL = re.compile(r"https?://(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}/?")


# The SDKs an output without the ECS form leaves out (docs/SDK-COMPATIBILITY.md has the matrix).
LEFT_OUT_HOST = "Ruby (aws-sdk-core) and PHP (async-aws)"
LEFT_OUT_DOCKER = "Ruby, PHP (async-aws), Go v1/v2 (older releases) and JavaScript v2 (aws-sdk)"


class UntrustedAnswer(ValueError):
    """The daemon's description did not have the shape this client expects."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise UntrustedAnswer(f"the daemon's answer has an unexpected {what}; nothing was printed")


class ClientEnvironment:
    """What points a process at the broker: variables to set and unset, what that hides from
    the user and why (for stderr), and the stand-in AWS config to write, if any, at the path
    in set_vars[AWS_CONFIG_FILE]. (A plain class: dataclasses costs `env` its import.)"""

    __slots__ = ("set_vars", "unset", "notices", "config_text")

    def __init__(self, set_vars: dict[str, str], unset: list[str], notices: list[str] | None = None,
                 config_text: str | None = None) -> None:
        self.set_vars = set_vars
        self.unset = unset
        self.notices: list[str] = notices if notices is not None else []
        self.config_text = config_text


def variables_for(described: Mapping[str, Any], token: str) -> tuple[dict[str, str], list[str]]:
    """(variables to set, variables to unset) for one profile, from the daemon's facts; with
    no stand-in config, a [default] profile with credentials hides both files."""
    environment = environment_for(described, token)
    return environment.set_vars, environment.unset


def environment_for(described: Mapping[str, Any], token: str, *, stand_in_config: str | None = None,
                    environ: Mapping[str, str] | None = None, rolebroker: str = "rolebroker",
                    ecs: bool = False) -> ClientEnvironment:
    """The environment for one profile. `stand_in_config`: where the CLI will write the
    stand-in AWS config (None: hide the config file instead); `environ`: the caller's
    environment, to say which of its variables are unset; `rolebroker`: the executable the
    stand-in config runs for `credential_process`; `ecs`: http://169.254.170.2 on port 80
    reaches the daemon (see ecs_probe.py), so AWS_CONTAINER_CREDENTIALS_RELATIVE_URI works."""
    url = described.get("endpoint_url")
    _expect(isinstance(url, str) and _ENDPOINT.fullmatch(url) is not None, "endpoint URL")
    _expect(_TOKEN.fullmatch(token) is not None, "token")
    profile = described.get("profile", "")
    _expect(isinstance(profile, str) and (profile == "" or PROFILE_NAME.fullmatch(profile) is not None), "profile")
    environment = ClientEnvironment({ENDPOINT_VARIABLE: str(url)}, list(SHADOWING_VARIABLES))
    region = _region(described.get("region"))
    docker = described.get("target") == "docker"
    if docker:
        # Go would send 169.254.170.x through HTTP_PROXY; the host's files are not in a container.
        addresses = described.get("no_proxy") or []
        _expect(all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in addresses), "listener address")
        environment.set_vars["NO_PROXY"] = ",".join(addresses)
        _export_region(environment, region)
    elif described.get("default_profile_has_credentials"):
        _hide_default(environment, described, profile, region, stand_in_config, rolebroker)
    else:
        _keep_files(environment, described, profile, region)
    sts = described.get("sts_endpoint_url")
    if sts:  # the demo's embedded STS, on this machine
        _expect(isinstance(sts, str) and _LOCAL_URL.fullmatch(sts) is not None, "STS endpoint")
        environment.set_vars["AWS_ENDPOINT_URL_STS"] = str(sts)
    environment.set_vars[TOKEN_VARIABLE] = token
    if ecs:
        _add_ecs_form(environment, profile, token, docker)
    else:
        environment.notices.append(
            f"{LEFT_OUT_DOCKER if docker else LEFT_OUT_HOST} get nothing from this output: they "
            + ("refuse a FULL_URI on a link-local address or " if docker else "")
            + "read only the ECS form, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, which needs http://169.254.170.2 "
            "(port 80) to reach the daemon; `sudo rolebroker docker setup` makes it so (docs/SDK-COMPATIBILITY.md)")
    present = [name for name in SHADOWING_VARIABLES if environ and name in environ]
    if present:
        environment.notices.insert(0, f"unsetting {', '.join(present)}: set here, they outrank the broker in "
                                      "SDKs' credential chains")
    return environment


def _export_region(environment: ClientEnvironment, region: str | None) -> None:
    if region:
        environment.set_vars["AWS_REGION"] = environment.set_vars["AWS_DEFAULT_REGION"] = region


def _hide_default(environment: ClientEnvironment, described: Mapping[str, Any], profile: str, region: str | None,
                  stand_in_config: str | None, rolebroker: str) -> None:
    """[default] with keys (or a role, SSO, a process) outranks the container provider in
    every SDK. Hiding only it is impossible (one file holds every profile's keys), so both
    files are hidden; a stand-in config keeps explicit profiles honest."""
    set_vars = environment.set_vars
    set_vars[CREDENTIALS_FILE_VARIABLE] = os.devnull
    if stand_in_config is None:
        set_vars[CONFIG_FILE_VARIABLE] = os.devnull
        _export_region(environment, region)
        return
    set_vars[CONFIG_FILE_VARIABLE] = stand_in_config
    # JavaScript v2 and Go v1 read a config file (its region) only when told to.
    set_vars["AWS_SDK_LOAD_CONFIG"] = "1"
    environment.config_text, hidden = _stand_in_config(profile, region, described, rolebroker)
    environment.notices.append(
        f"[default] in your AWS files has credentials, which every SDK would use before the broker: "
        f"{CREDENTIALS_FILE_VARIABLE} is {os.devnull} and {CONFIG_FILE_VARIABLE} a stand-in ({stand_in_config}) "
        "here, where [default] is the broker's; profiles served by rolebroker answer through "
        "`rolebroker credential-process`"
        + (f", and {_names(hidden)} fail with a message saying this (their keys are hidden)" if hidden else "")
        + ". Keep every profile usable: move those keys out of [default] (e.g. to [alice], with "
        "`source_profile = alice` on the roles)")


def _keep_files(environment: ClientEnvironment, described: Mapping[str, Any], profile: str,
                region: str | None) -> None:
    """Nothing in the files outranks the broker: they stay visible, so an explicit
    `--profile X` resolves as X, as it would without rolebroker."""
    if region and region != described.get("default_region"):
        _export_region(environment, region)
        environment.notices.append(f"AWS_REGION={region} ({profile or 'the profile'}'s region) also applies to "
                                   "`--profile X` here; pass --region for another")
    bare = [str(p["name"]) for p in _profiles(described.get("other_profiles"))
            if not p["has_credentials"] and not p["served"]]
    if bare:
        environment.notices.append(
            f"{_names(bare)} have no credentials of their own: like any SDK setting, `--profile` with one of "
            f"them gets {profile or 'this profile'}'s role from the broker here")


def _add_ecs_form(environment: ClientEnvironment, profile: str, token: str, docker: bool) -> None:
    relative = f"/v1/credentials/{quote(profile, safe='')}/{token}"
    _expect(_RELATIVE.fullmatch(relative) is not None, "profile")
    environment.set_vars[RELATIVE_VARIABLE] = relative
    environment.unset.remove(RELATIVE_VARIABLE)
    if docker:
        # In a container every SDK reads the ECS form (Go v1/v2 and JS v2 refuse a FULL_URI on
        # 169.254.170.2), and it wins over FULL_URI in most: that alone, then.
        del environment.set_vars[ENDPOINT_VARIABLE], environment.set_vars[TOKEN_VARIABLE]
    # On the host both: Go prefers FULL_URI (loopback, the only host it accepts), the others
    # RELATIVE_URI, which Ruby and PHP read alone.


def _region(value: Any) -> str | None:
    if not value:
        return None
    _expect(isinstance(value, str) and _REGION.fullmatch(value) is not None, "region")
    return str(value)


def _profiles(value: Any) -> list[dict[str, Any]]:
    """The daemon's list of the user's other profiles, checked entry by entry."""
    _expect(value is None or isinstance(value, list), "profile list")
    checked: list[dict[str, Any]] = []
    for entry in value or []:
        _expect(isinstance(entry, dict) and isinstance(entry.get("name"), str), "profile entry")
        checked.append({"name": entry["name"], "served": entry.get("served") is True,
                        "has_credentials": entry.get("has_credentials") is True,
                        "region": _region(entry.get("region")),
                        "broker_process": entry.get("broker_process"), "settings": entry.get("settings")})
    return checked


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"profile{'s' if len(names) > 1 else ''} {shown}"


def _stand_in_config(profile: str, region: str | None, described: Mapping[str, Any],
                     rolebroker: str) -> tuple[str, list[str]]:
    """An AWS config with no secret in it: [default] is the broker's (its region, no
    credentials, so the container provider answers); each profile rolebroker serves answers
    as itself through `credential_process`; every other profile fails saying why, instead
    of falling through to the broker's role. Every profile keeps its client settings (output,
    pager, endpoints, retries: broker/client_settings.py). Names the failing profiles."""
    hidden: list[str] = []
    profile = profile if _PLAIN_NAME.fullmatch(profile) else "PROFILE"
    lines = [f"# Written by `rolebroker env {profile}`: a stand-in for your AWS config in that environment.",
             "[default]"] + ([f"region = {region}"] if region else [])
    sections = described.get("services_sections") or {}
    written = set(sections) if isinstance(sections, dict) else set()
    lines += _setting_lines(described.get("default_settings"), written)
    for entry in _profiles(described.get("other_profiles")):
        name = entry["name"]
        if not _PLAIN_NAME.fullmatch(name):
            continue  # cannot be named safely in an INI header; botocore will say it is not found
        lines += ["", f"[profile {name}]"]
        asks = entry["broker_process"] if entry["broker_process"] is not None else name if entry["served"] else None
        if isinstance(asks, str) and _PLAIN_NAME.fullmatch(asks):
            # Served by the broker (or a `rolebroker credential-process` profile): answers as itself.
            lines.append(f"credential_process = {shlex.quote(rolebroker)} credential-process {asks}")
        else:
            hidden.append(name)
            message = (f"rolebroker: profile {name} is hidden here: rolebroker env {profile} hid your AWS files "
                       "because [default] has credentials. Use another shell, or run: "
                       f"unset {CONFIG_FILE_VARIABLE} {CREDENTIALS_FILE_VARIABLE}")
            # The message holds only profile names (no quote, $ or backquote): safe in "...".
            script = 'echo "' + message + '" >&2; exit 1'
            lines.append(f"credential_process = /bin/sh -c {shlex.quote(script)}")
        if entry["region"]:
            lines.append(f"region = {entry['region']}")
        lines += _setting_lines(entry["settings"], written)
    lines += _services_lines(sections)
    return "\n".join(lines) + "\n", hidden


def _setting_lines(settings: Any, sections: set[str]) -> list[str]:
    """`key = value` lines (and indented blocks) for the carried settings, each checked again
    here: only keys of the list, one printable line each; `services` only naming a section
    that is written too (botocore fails every call of a profile whose section is missing)."""
    if not settings:
        return []
    _expect(isinstance(settings, dict), "settings")
    lines: list[str] = []
    for key, value in settings.items():
        if (key not in SCALAR_SETTINGS and key not in NESTED_SETTINGS) or (key == "services" and value not in sections):
            continue  # a newer daemon's key, or a section not written: left out
        if key in NESTED_SETTINGS:
            lines += [f"{key} ="] + [f"  {line}" for line in _pairs(value)]
        else:
            _expect(isinstance(value, str) and SETTING_VALUE.fullmatch(value) is not None, "setting")
            lines.append(f"{key} = {value}".rstrip())
    return lines


def _pairs(values: Any) -> list[str]:
    _expect(isinstance(values, dict) and all(
        isinstance(k, str) and SETTING_KEY.fullmatch(k) and isinstance(v, str) and SETTING_VALUE.fullmatch(v)
        for k, v in values.items()), "nested setting")
    return [f"{key} = {value}".rstrip() for key, value in values.items()]


def _services_lines(sections: Any) -> list[str]:
    """The `[services NAME]` sections the carried profiles name, checked as the settings are."""
    if not sections:
        return []
    _expect(isinstance(sections, dict), "services sections")
    lines: list[str] = []
    for name, services in sections.items():
        _expect(isinstance(name, str) and SERVICES_NAME.fullmatch(name) is not None and isinstance(services, dict),
                "services section")
        lines += ["", f"[services {name}]"]
        for service, values in services.items():
            _expect(isinstance(service, str) and SERVICE_ID.fullmatch(service) is not None, "service id")
            lines += [f"{service} ="] + [f"  {line}" for line in _pairs(values)]
    return lines
