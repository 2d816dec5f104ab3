"""Naming rules shared by the daemon and the CLI (standard library `re` only, so the CLI's
fast paths can import it). A profile name goes into URL paths, log lines and shell output:
one rule, checked everywhere with fullmatch."""

from __future__ import annotations

import re

# Every name botocore reads from a config file, as it is (`[profile my profile]`, a
# credentials-file section literally named `profile dev4`), except what could forge a log
# line or split a URL path: control characters, line separators and "/". Clients
# percent-encode the name in URLs; the server matches the decoded path.
PROFILE_NAME_CHARS = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029/]{1,128}"
PROFILE_NAME = re.compile(PROFILE_NAME_CHARS)
PROFILE_NAME_RULE = "1-128 characters, no control characters and no /"


def token_name_part(text: str) -> str:
    """Text made fit for a token name (profile names allow characters token names do not)."""
    return re.sub(r"[^A-Za-z0-9_.@:-]", "_", text)
