"""`rolebroker keys`: its arguments. The commands themselves are in keys_commands.py,
imported only when one runs: the parser is built on every CLI run, and they need botocore
and the keyring."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser, profile_type: Any) -> None:
    actions = parser.add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="store a profile's access key in the keyring (prompts for it)")
    add.add_argument("profile", type=profile_type)
    add.set_defaults(handler=run, keys_action="add")
    move = actions.add_parser("import", help="move a profile's keys from the credentials file into the keyring")
    move.add_argument("profile", type=profile_type)
    move.set_defaults(handler=run, keys_action="import")
    listing = actions.add_parser("list", help="profiles with long-term keys, and where they are (never the secret)")
    listing.set_defaults(handler=run, keys_action="list")
    remove = actions.add_parser("remove", help="delete a profile's keys from the keyring")
    remove.add_argument("profile", type=profile_type)
    remove.set_defaults(handler=run, keys_action="remove")


def run(args: argparse.Namespace) -> int:
    from .keys_commands import run as run_keys

    return run_keys(args)
