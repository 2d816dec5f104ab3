"""`rolebroker reload` and `rolebroker token create | list | revoke`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from urllib.parse import quote

from .daemon_client import DaemonClient


def cmd_reload(args: argparse.Namespace) -> int:
    result = DaemonClient().request("POST", "/v1/reload")
    if not result["ok"]:
        print(f"rolebroker: {result['error']} (still serving the last good config)", file=sys.stderr)
        return 1
    print(f"Config reloaded; profiles changed: {', '.join(result['changed']) or 'none'}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    if bool(args.profiles) == args.all_profiles:
        print("rolebroker: name the profiles the token may read (--profile dev, repeatable), or pass "
              "--all-profiles for a token that reads every profile", file=sys.stderr)
        return 2
    ttl = args.ttl
    result = DaemonClient().request("POST", "/v1/tokens", {"profiles": args.profiles, "all_profiles": args.all_profiles,
                                                           "name": args.name, "ttl_seconds": ttl})
    print(result["token"])
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    result = DaemonClient().request("GET", "/v1/tokens")
    print(f"{'NAME':24} {'PROFILES':20} {'CREATED':16} {'EXPIRES':16} LAST USED")
    for row in result["tokens"]:
        stamp = lambda t: dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
        print(f"{row['name']:24} {','.join(row['profiles']) or '(all)':20} {stamp(row['created_at']):16} "
              f"{stamp(row['expires_at']):16} {stamp(row['last_used_at'])}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    DaemonClient().request("DELETE", f"/v1/tokens/{quote(args.name, safe='')}")
    print(f"Revoked {args.name}")
    return 0
