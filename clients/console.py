"""`rolebroker console PROFILE`: open the AWS console signed in as the profile's role.

The daemon makes the federation call with the role's credentials and returns only the
sign-in URL; this opens it in the browser (`webbrowser`, which honours $BROWSER) or, with
--print, prints it. The URL signs anyone who has it in for 15 minutes, so it never goes on
a command line (every local user can read those): the browser is given a 0600 page in the
private runtime directory that forwards to it."""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path
from typing import Any

from .daemon_client import DaemonClient, DaemonError

SIGNIN_URL_VARIABLE = "ROLEBROKER_SIGNIN_URL"  # also read by the daemon (broker/console.py)


def add_arguments(parser: argparse.ArgumentParser, profile_type: Any, duration_type: Any) -> None:
    parser.add_argument("profile", type=profile_type)
    parser.add_argument("--print", action="store_true", dest="print_url",
                        help="print the sign-in URL instead of opening a browser (valid 15 minutes: keep it private)")
    parser.add_argument("--duration", type=duration_type,
                        help="console session length, 15m-12h; only for a role assumed with long-term keys "
                             "(rolebroker_strategy = direct): AWS caps roles from an MFA session at 1h")
    parser.set_defaults(handler=run)


def forwarding_page(url: str) -> Path:
    """A page that sends the browser on to `url`, readable by this user only."""
    from ..broker.runtime import runtime_dir, write_private

    path = runtime_dir() / "console.html"
    quoted = html.escape(url, quote=True)
    write_private(path, (f'<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
                         f'<meta http-equiv="refresh" content="0;url={quoted}"><title>AWS console</title>'
                         f'<a href="{quoted}">Open the AWS console</a>').encode())
    return path


def run(args: argparse.Namespace) -> int:
    duration = int(args.duration) if args.duration is not None else None
    if duration is not None and not 900 <= duration <= 43200:
        print("rolebroker: --duration must be 15m to 12h (what AWS allows a console session)", file=sys.stderr)
        return 2
    body = {"profile": args.profile, "duration_seconds": duration,
            "signin_url": os.environ.get(SIGNIN_URL_VARIABLE) or None}
    try:
        answer = DaemonClient(timeout=60).request("POST", "/v1/console", body)
    except DaemonError as exc:
        print(f"rolebroker: console sign-in failed: {exc.message}", file=sys.stderr)
        return 1
    for note in answer.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    url = answer["url"]
    if args.print_url:
        print(url)
        return 0
    import webbrowser

    if not webbrowser.open(forwarding_page(url).as_uri()):
        print("rolebroker: no browser could be started (set $BROWSER); `rolebroker console "
              f"{args.profile} --print` prints the URL instead", file=sys.stderr)
        return 1
    minutes = answer.get("session_seconds", 3600) // 60
    print(f"Opened the AWS console for {args.profile} in your browser (a {minutes}-minute console session).",
          file=sys.stderr)
    return 0
