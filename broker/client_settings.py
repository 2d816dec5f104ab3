"""The settings of a profile that a stand-in AWS config carries over (see clients/envvars.py).

When [default] holds credentials, `rolebroker env` hides the user's AWS files and writes a
stand-in config instead. What a profile says about how clients behave (output format, pager,
retries, endpoints, S3 addressing) has to survive that, or `aws s3 ls` in that shell talks to
another endpoint, prints another format or opens a pager. Only these keys are carried: none of
them is a credential or says where credentials come from. The daemon picks them, and the CLI
checks them again against the same list before it writes a line. Standard library only: the
CLI's `env` imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TYPE_CHECKING = False  # typing is not imported at run time: see runtime.py
if TYPE_CHECKING:
    from typing import Any

# Scalar settings the AWS CLI and SDKs read from a profile (botocore's config-variable table
# and the CLI's own), minus `region` (written from the broker's plan) and everything about
# credentials or roles.
SCALAR_SETTINGS = frozenset({
    "output", "cli_pager", "cli_timestamp_format", "cli_binary_format", "cli_auto_prompt", "cli_history",
    "cli_follow_urlparam", "ca_bundle", "endpoint_url", "ignore_configured_endpoint_urls", "services",
    "max_attempts", "retry_mode", "parameter_validation", "tcp_keepalive", "defaults_mode",
    "sts_regional_endpoints", "use_fips_endpoint", "use_dualstack_endpoint", "account_id_endpoint_mode",
    "request_checksum_calculation", "response_checksum_validation", "disable_request_compression",
    "request_min_compression_size_bytes", "sdk_ua_app_id", "metadata_service_timeout",
    "metadata_service_num_attempts", "ec2_metadata_service_endpoint", "ec2_metadata_service_endpoint_mode",
    "ec2_metadata_v1_disabled", "auth_scheme_preference", "sigv4a_signing_region_set",
})
# Settings written as an indented block of their own keys (`s3 =` then `  addressing_style = path`).
NESTED_SETTINGS = frozenset({"s3", "api_versions"})

SETTING_KEY = re.compile(r"[a-z0-9_]{1,64}")
# One line of printable text: nothing that could start another line or section in the file.
SETTING_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{0,1024}")
# A `[services NAME]` header botocore reads as one word: no space, quote or bracket.
SERVICES_NAME = re.compile(r"[A-Za-z0-9_.@+=,:-]{1,64}")
SERVICE_ID = re.compile(r"[a-z0-9_-]{1,64}")
# Nested blocks (`s3 =`, a services section's entries) hold settings like addressing_style and
# endpoint_url; a key that names a secret there is a mistake in the user's file, never copied.
SECRET_WORDS = ("aws_", "secret", "token", "password", "credential")


def _plain(values: Any) -> dict[str, str]:
    """The key = value pairs of a nested block that are fit to write back."""
    if not isinstance(values, Mapping):
        return {}
    return {key: value for key, value in values.items()
            if isinstance(key, str) and SETTING_KEY.fullmatch(key) and not any(w in key for w in SECRET_WORDS)
            and isinstance(value, str) and SETTING_VALUE.fullmatch(value)}


def carried_settings(section: Any) -> dict[str, Any]:
    """A profile section's settings a stand-in config keeps: str values, and dicts of str for
    the nested ones."""
    if not isinstance(section, Mapping):
        return {}
    kept: dict[str, Any] = {}
    for key, value in section.items():
        if key in SCALAR_SETTINGS and isinstance(value, str) and SETTING_VALUE.fullmatch(value):
            kept[key] = value
        elif key in NESTED_SETTINGS and _plain(value):
            kept[key] = _plain(value)
    return kept


def carried_services(sections: Any, wanted: set[str]) -> dict[str, dict[str, dict[str, str]]]:
    """The `[services NAME]` sections that carried profiles name: per service id, its settings.
    A section left with nothing to write is left out whole: botocore refuses an empty one."""
    if not isinstance(sections, Mapping):
        return {}
    carried: dict[str, dict[str, dict[str, str]]] = {}
    for name in sorted(wanted):
        section = sections.get(name)
        if not SERVICES_NAME.fullmatch(name) or not isinstance(section, Mapping):
            continue
        services = {service: _plain(values) for service, values in section.items()
                    if isinstance(service, str) and SERVICE_ID.fullmatch(service) and _plain(values)}
        if services:
            carried[name] = services
    return carried
