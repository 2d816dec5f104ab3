"""The options of `rolebroker docker` (and of clients/docker_link.py run on its own), in a
module of their own that imports next to nothing: the CLI builds its whole parser, this
command's options included, on every call."""

from __future__ import annotations

import argparse

from ..broker.runtime import DEFAULT_PORT, configured_port

DEFAULT_ADDRESS = "169.254.170.2"
DEFAULT_INTERFACE = "rolebroker0"
# Keep in step with broker.server.LINK_LOCAL_ADDRESSES: the plain-http addresses every SDK
# accepts besides loopback. Any other address would be useless to the SDKs.
LINK_LOCAL_ADDRESSES = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Shared by `rolebroker docker` (clients/cli.py) and this module's own main()."""
    parser.add_argument("action", choices=["setup", "teardown", "status"],
                        help="setup: add the address (root, idempotent); teardown: remove it; "
                             "status: is it there, and does the daemon listen on it")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, choices=LINK_LOCAL_ADDRESSES,
                        help=f"the link-local address the SDKs accept (default {DEFAULT_ADDRESS})")
    parser.add_argument("--interface", default=DEFAULT_INTERFACE, metavar="NAME",
                        help=f"dummy link to create (default {DEFAULT_INTERFACE}); `lo` puts the "
                             "address on the loopback link instead")
    parser.add_argument("--port", type=int, default=configured_port(),
                        help=f"the daemon's port, for the printed next steps "
                             f"(default $ROLEBROKER_PORT or {DEFAULT_PORT})")
