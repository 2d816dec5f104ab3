"""Naming rules shared by the daemon and the CLI (standard library `re` only, so the CLI's
fast paths can import it). A profile name goes into URL paths, log lines and shell output:
one rule, checked everywhere with fullmatch."""

from __future__ import annotations

import re

PROFILE_NAME_CHARS = r"[A-Za-z0-9_.@+=,:-]{1,128}"
PROFILE_NAME = re.compile(PROFILE_NAME_CHARS)


def token_name_part(text: str) -> str:
    """Text made fit for a token name (profile names allow characters token names do not)."""
    return re.sub(r"[^A-Za-z0-9_.@:-]", "_", text)
