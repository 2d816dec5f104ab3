"""`rolebroker status`: the daemon's view of every profile, as a table or JSON, and an exit
code scripts can act on."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from .daemon_client import DaemonClient, DaemonError


def cmd_status(args: argparse.Namespace) -> int:
    try:
        client = DaemonClient()
        status = client.request("GET", "/v1/status")
    except DaemonError as exc:
        if args.json:
            print(json.dumps({"running": False, "message": exc.message}))
        else:
            print(exc.message)
        return 3  # the LSB status code for "not running"
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
    else:
        print(render_status(status))
    return STATUS_NEEDS_YOU if needs_attention(status) else 0


# `status` exit codes, for scripts: 0 every profile can be served as it is; 1 something needs
# you (a login, or a config error); 3 the daemon is not running (the LSB code).
STATUS_NEEDS_YOU = 1


def needs_attention(status: dict[str, Any]) -> bool:
    return bool(status.get("config_error") or status.get("tokens_error")
                or any(row["config_error"] or row["login_required"] for row in status["profiles"]))


def render_status(status: dict[str, Any]) -> str:
    now = status["now"]
    headers = ("PROFILE", "ROLE", "CREDENTIALS", "MFA SESSION", "LAST ERROR")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for row in status["profiles"]:
        if row["config_error"]:
            notes.append(f"{row['profile']}: {row['config_error']}")
            if row["kind"] == "invalid":
                rows.append((row["profile"], "-", "-", "-", "config error"))
                continue
        credentials = (duration_text(row["credentials_expire_at"] - now)
                       if row["credentials_expire_at"] else "none yet")
        if row["mfa_session"] is None:
            mfa = "not needed"
        elif row["login_required"]:
            mfa = f"login needed (rolebroker login {row['profile']})"
            if row.get("mfa_session_ended"):
                notes.append(f"{row['profile']}: {row['mfa_session_ended']}")
        elif row["mfa_session_expires_at"] is None:
            mfa = "starts on first use (mfa_process)"
        else:
            mfa = duration_text(row["mfa_session_expires_at"] - now)
        role = row["role_arn"] or "(MFA session itself)"
        rows.append((row["profile"], role, credentials, mfa, row["last_error"] or "-"))
        notes.extend(f"{row['profile']}: {note}" for note in row["notes"])
    if status.get("config_error"):
        notes.insert(0, f"config: {status['config_error']}")
    if status.get("tokens_error"):
        notes.insert(0, f"tokens: {status['tokens_error']}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if not rows:
        lines.append("(no profiles with a role or an MFA device in the AWS config)")
    return "\n".join(lines + [""] + notes if notes else lines)


def duration_text(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def local_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%H:%M")
