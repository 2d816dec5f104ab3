"""What `rolebroker env` is told about a profile: facts only (the endpoint URL, regions,
which of the user's profiles hold credentials, the listeners). The CLI alone turns them into
variables, from a fixed list with checked values (clients/envvars.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .client_settings import carried_services, carried_settings
from .names import PROFILE_NAME_CHARS

if TYPE_CHECKING:
    from .server import Daemon

CREDENTIAL_KEYS = ("aws_access_key_id", "role_arn", "credential_process", "credential_source",
                   "sso_session", "sso_start_url", "web_identity_token_file", "login_session")


# A profile that asks rolebroker itself (the README's `credential_process` profile for IDEs).
_BROKER_PROCESS = re.compile(r"(?:\S*/)?rolebroker credential-process (" + PROFILE_NAME_CHARS + ")")


def _broker_process(section: Any) -> str | None:
    """The profile a `credential_process = rolebroker credential-process NAME` line asks for."""
    value = section.get("credential_process") if isinstance(section, Mapping) else None
    match = _BROKER_PROCESS.fullmatch(value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def _has_credentials(section: Any) -> bool:
    return isinstance(section, Mapping) and any(key in section for key in CREDENTIAL_KEYS)


def _region_of(section: Any) -> str | None:
    region = section.get("region") if isinstance(section, Mapping) else None
    return region if isinstance(region, str) and region else None


def describe_env(daemon: Daemon, profile: str, target: str = "host") -> dict[str, Any]:
    """Facts a client needs to point a process at this profile. The CLI turns them into
    variables from a fixed list of its own: the daemon never names a variable."""
    plan = daemon.sessions.plan(profile)
    url = daemon.endpoint_url(profile)
    notes: list[str] = []
    if target == "docker":
        listener = daemon.container_listener()
        if listener is not None:
            url = daemon.endpoint_url(profile, *listener)
        else:
            notes.append("the daemon has no link-local listener, so only `docker run --network host` "
                         "containers can reach it; or run `sudo rolebroker docker setup` and restart the "
                         "daemon with `--listen 169.254.170.2:PORT`")
    raw = daemon.sessions.config.raw_profiles
    default = raw.get("default", {})
    others = [_describe_other(daemon, name, section) for name, section in sorted(raw.items()) if name != "default"]
    default_settings = carried_settings(default)
    carried = [default_settings, *(o["settings"] for o in others)]
    services = carried_services(daemon.sessions.config.raw_services,
                                {s["services"] for s in carried if "services" in s})
    dropped = set()
    for settings in carried:
        # A `services = NAME` whose section is not carried would make botocore fail on every
        # call in the env shell: the profile keeps its other endpoint settings there instead.
        if settings.get("services") not in (None, *services):
            dropped.add(settings.pop("services"))
    for name in sorted(dropped):
        notes.append(f"the services section {name!r} is not in the stand-in config (it is missing, has nothing "
                     "that can be carried, or its name is not one plain word): profiles naming it use their "
                     "other endpoint settings there")
    return {
        "profile": profile,
        "target": target,
        "endpoint_url": url,
        "region": plan.region,
        # A [default] profile with credentials outranks the container provider in every SDK.
        "default_profile_has_credentials": _has_credentials(default),
        # The region the default chain sees without any variable (the client decides whether
        # exporting this profile's region is needed).
        "default_region": _region_of(default),
        # The user's other profiles, for a client that must hide [default] without hiding them.
        "other_profiles": others,
        # What the stand-in config keeps of each profile besides credentials (client_settings.py).
        "default_settings": default_settings,
        "services_sections": services,
        "no_proxy": [address for address, _ in daemon.listeners],
        # The demo points its clients at its embedded STS.
        "sts_endpoint_url": daemon.settings.client_env.get("AWS_ENDPOINT_URL_STS"),
        "notes": notes,
    }

def _describe_other(daemon: Daemon, name: str, section: Any) -> dict[str, Any]:
    plan = daemon.sessions.config.plans.get(name)
    return {"name": name, "served": plan is not None, "has_credentials": _has_credentials(section),
            # A served profile's region as the broker resolves it (a role inherits its source's).
            "region": plan.region if plan is not None and plan.region else _region_of(section),
            "broker_process": _broker_process(section), "settings": carried_settings(section)}
