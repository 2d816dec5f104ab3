"""Which variables point a process at the broker, decided here on the client's side.

The daemon describes facts (the endpoint URL, the profile's region, ...); only this module
names variables, from a fixed list, and each value is checked for its shape. Shell output
built from names or values a daemon chose would run whatever that daemon said: PATH,
LD_PRELOAD or PROMPT_COMMAND from an impostor become code in the user's shell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

ENDPOINT_VARIABLE = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
TOKEN_FILE_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"

# Variables that outrank the container provider in some SDK's chain, or would make it read a
# different token: whoever points a process at the broker unsets them.
SHADOWING_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    TOKEN_FILE_VARIABLE, "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)

# The hosts every SDK accepts over plain http: loopback and the container link-local addresses.
_ENDPOINT = re.compile(
    r"http://(?P<host>127\.0\.0\.1|\[::1\]|169\.254\.170\.2|169\.254\.170\.23|\[fd00:ec2::23\])"
    r":(?P<port>[0-9]{1,5})/v1/credentials/[A-Za-z0-9_.~@+=,:%-]{1,384}"
)
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_TOKEN = re.compile(r"rbt_[A-Za-z0-9_-]{20,200}")
_ADDRESS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]{2,39}")  # an IPv4 or IPv6 literal
_LOCAL_URL = re.compile(r"https?://(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}/?")


class UntrustedAnswer(ValueError):
    """The daemon's description did not have the shape this client expects."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise UntrustedAnswer(f"the daemon's answer has an unexpected {what}; nothing was printed")


def variables_for(described: Mapping[str, Any], token: str) -> tuple[dict[str, str], list[str]]:
    """(variables to set, variables to unset) for one profile, from the daemon's facts."""
    url = described.get("endpoint_url")
    _expect(isinstance(url, str) and _ENDPOINT.fullmatch(url) is not None, "endpoint URL")
    _expect(_TOKEN.fullmatch(token) is not None, "token")
    set_vars = {ENDPOINT_VARIABLE: str(url)}
    region = described.get("region")
    if region:
        _expect(isinstance(region, str) and _REGION.fullmatch(region) is not None, "region")
        set_vars["AWS_REGION"] = set_vars["AWS_DEFAULT_REGION"] = str(region)
    if described.get("target") == "docker":
        # Go would send 169.254.170.x through HTTP_PROXY; the host's files are not in a container.
        addresses = described.get("no_proxy") or []
        _expect(all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in addresses), "listener address")
        set_vars["NO_PROXY"] = ",".join(addresses)
    else:
        # A [default] profile with keys in the shared files outranks the container provider in
        # every SDK: hide the files from the client (its region is exported above).
        set_vars["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        if described.get("default_profile_has_credentials"):
            set_vars["AWS_CONFIG_FILE"] = os.devnull
    sts = described.get("sts_endpoint_url")
    if sts:  # the demo's embedded STS, on this machine
        _expect(isinstance(sts, str) and _LOCAL_URL.fullmatch(sts) is not None, "STS endpoint")
        set_vars["AWS_ENDPOINT_URL_STS"] = str(sts)
    set_vars[TOKEN_VARIABLE] = token
    return set_vars, list(SHADOWING_VARIABLES)
