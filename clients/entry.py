"""The `rolebroker` console script's entry point.

Tools run `rolebroker credential-process PROFILE` before every AWS call, so that command
is dispatched here, before the rest of the command line (argparse, every command's
module) is imported: it costs little more than starting the interpreter. Everything
else goes to clients.cli.
"""

from __future__ import annotations

import sys


def main() -> int:
    arguments = sys.argv[1:]
    if len(arguments) == 2 and arguments[0] == "credential-process" and not arguments[1].startswith("-"):
        from ..broker.names import PROFILE_NAME

        if PROFILE_NAME.fullmatch(arguments[1]):
            from .credential_process import main as credential_process

            return credential_process(arguments[1])
    from .cli import main as cli_main

    return cli_main(arguments)
