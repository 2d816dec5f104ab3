"""`rolebroker env` and `rolebroker exec`: point a shell, a file or one command at the broker,
with a client token of its own (reused by `env`, tied to the process by `exec`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import quote

from ..broker.names import token_name_part
from ..broker.runtime import write_atomic
from .daemon_client import DaemonClient, DaemonError
from .durations import ENV_TOKEN_TTL
from .envfmt import FORMATS
from .executable import rolebroker_executable
from .envvars import (
    RELATIVE_VARIABLE, TOKEN_FILE_VARIABLE, TOKEN_VARIABLE, UntrustedAnswer, environment_for,
)
from .prompt import LoginCancelled, ensure_logged_in

# typing is for the type checker only (annotations are strings here): see cli.py.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

def client_environment(client: DaemonClient, profile: str, ttl_seconds: float | None, target: str = "host",
                       reuse: bool = False, bind_to_caller: bool = False) -> dict[str, Any]:
    """The variables for one profile ("set", "unset"), its token's name, and the daemon's notes.
    `reuse`: hand out the token the last `env` got for this profile and target, while most of its
    life is ahead; `bind_to_caller`: the token dies with this process."""
    described = client.request("GET", f"/v1/profiles/{quote(profile, safe='')}/env?target={target}")
    minted = client.request("POST", "/v1/tokens", {
        "profiles": [profile], "ttl_seconds": ttl_seconds, "bind_to_caller": bind_to_caller,
        "reuse": f"env-{target}" if reuse else None,
        "name": f"{'exec' if bind_to_caller else target}-{token_name_part(profile)}-{os.urandom(3).hex()}"[-64:],
    })
    stand_in = client.directory / "env-config" / f"{token_name_part(profile)}-{target}.config"
    from .ecs_probe import reaches_daemon  # standard library only

    try:
        environment = environment_for(described, minted["token"], stand_in_config=str(stand_in),
                                      environ=os.environ, rolebroker=rolebroker_executable(),
                                      ecs=reaches_daemon(client, profile))
        if environment.config_text is not None:
            # No secret in it, but the profile names are the user's own business: 0600 in a 0700 dir.
            stand_in.parent.mkdir(mode=0o700, exist_ok=True)
            write_atomic(stand_in, environment.config_text.encode())
    except (UntrustedAnswer, OSError):
        if not minted.get("reused"):
            _revoke_quietly(client, minted.get("name", ""))
        raise
    # A token handed out again is held by earlier shells too: a failure here must not revoke it.
    return {"set": environment.set_vars, "unset": environment.unset, "token_name": minted["name"],
            "reused": bool(minted.get("reused")), "token": minted["token"],
            "notes": [*environment.notices, *described.get("notes", [])]}


def cmd_env(args: argparse.Namespace) -> int:
    client = DaemonClient()
    target = args.target or ("docker" if args.format == "docker" else "host")
    if not _logged_in(client, args.profile):
        return 1
    try:
        described = client_environment(client, args.profile, args.ttl or None, target, reuse=True)
    except UntrustedAnswer as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the stand-in AWS config could not be written
        print(f"rolebroker: cannot write the stand-in AWS config under {client.directory}: {exc.strerror}",
              file=sys.stderr)
        return 1
    set_vars, unset = described["set"], list(described["unset"])
    if args.token_file:
        # The file wins over the variable in every SDK but Java, so drop the variable too; the
        # ECS form carries the token in its path, so it goes as well.
        if set_vars.pop(RELATIVE_VARIABLE, None) is not None:
            unset.append(RELATIVE_VARIABLE)
            described["notes"].append("--token-file leaves out AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (its path "
                                      "holds the token): Ruby and PHP (async-aws) get nothing from this output")
        try:
            set_vars.pop(TOKEN_VARIABLE, None)
            write_token_file(args.token_file, described["token"])
        except OSError as exc:
            _discard(client, described)  # nobody will ever hold it
            print(f"rolebroker: cannot write {args.token_file}: {exc.strerror}", file=sys.stderr)
            return 1
        set_vars[TOKEN_FILE_VARIABLE] = os.path.abspath(args.token_file)
        unset = [v for v in unset if v != TOKEN_FILE_VARIABLE]
        unset.append(TOKEN_VARIABLE)
    elif args.format == "docker":
        # `docker run` flags end up in every local user's view of the process list: the token
        # goes to a 0600 env file instead, named on the command line.
        env_file = docker_env_file(client, described["token_name"])
        secret = {name: set_vars.pop(name) for name in (TOKEN_VARIABLE, RELATIVE_VARIABLE) if name in set_vars}
        try:
            write_token_file(str(env_file), "".join(f"{name}={value}\n" for name, value in secret.items()))
        except OSError as exc:
            _discard(client, described)
            print(f"rolebroker: cannot write {env_file}: {exc.strerror}", file=sys.stderr)
            return 1
        set_vars["--env-file"] = str(env_file)
    for note in described["notes"]:
        print(f"rolebroker: note: {note}", file=sys.stderr)
    try:
        text = FORMATS[args.format](set_vars, unset)
        if args.output:
            # The output holds a token: 0600 from the first byte, whatever the umask says.
            write_atomic(Path(os.path.abspath(args.output)), text.encode())
        else:
            sys.stdout.write(text)
    except (ValueError, OSError) as exc:
        _discard(client, described)  # printed nowhere, so held by nobody
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"rolebroker: {f'cannot write {args.output}: ' if isinstance(exc, OSError) else ''}{reason}",
              file=sys.stderr)
        return 1
    return 0


def docker_env_file(client: DaemonClient, token_name: str) -> Path:
    directory = client.directory / "docker-env"
    directory.mkdir(mode=0o700, exist_ok=True)
    # Files of revoked or expired tokens hold nothing useful any more: clear them out.
    live = {row["name"] for row in client.request("GET", "/v1/tokens")["tokens"]}
    for stale in directory.glob("*.env"):
        if stale.stem not in live:
            stale.unlink(missing_ok=True)
    return directory / f"{token_name}.env"


def write_token_file(path: str, token: str) -> None:
    """0600 from the first byte, no trailing newline (botocore rejects a token with one)."""
    write_atomic(Path(os.path.abspath(path)), token.encode())


def cmd_exec(args: argparse.Namespace) -> int:
    import signal  # here: `env` shares this module and needs neither
    import subprocess

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("rolebroker: usage: rolebroker exec PROFILE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    client = DaemonClient()
    if not _logged_in(client, args.profile):
        return 1
    # The token dies with this process, however it ends: the daemon revokes it once we are gone.
    described = client_environment(client, args.profile, ENV_TOKEN_TTL, bind_to_caller=True)
    environment = {k: v for k, v in os.environ.items() if k not in described["unset"]}
    environment.update(described["set"])
    try:
        child = subprocess.Popen(command, env=environment)
    except OSError as exc:
        _revoke_quietly(client, described["token_name"])
        if isinstance(exc, FileNotFoundError):
            print(f"rolebroker: command not found: {command[0]}", file=sys.stderr)
            return 127
        print(f"rolebroker: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 126
    forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
    # Ctrl-C already reaches the child (same process group): forwarding it too would be a
    # second interrupt, which tools like terraform treat as "abort now".
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    previous.update({s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)})
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _revoke_quietly(client, described["token_name"])  # the token dies with the command
    return 128 - code if code < 0 else code


def _logged_in(client: DaemonClient, profile: str) -> bool:
    """Ask for a code now if the profile needs one (on a terminal); False: say why and stop."""
    try:
        ensure_logged_in(client, profile)
    except LoginCancelled as exc:
        print(f"rolebroker: login cancelled: {exc.message}", file=sys.stderr)
        return False
    except DaemonError as exc:
        if exc.code in ("LoginRequired", "MfaCodeRejected"):
            print(f"rolebroker: {exc.message}", file=sys.stderr)
            return False
        raise
    return True


def _discard(client: DaemonClient, described: dict[str, Any]) -> None:
    """Revoke the token of an environment nobody received, unless it was handed out again:
    earlier shells and containers hold that one too."""
    if not described.get("reused"):
        _revoke_quietly(client, described["token_name"])


def _revoke_quietly(client: DaemonClient, name: str) -> None:
    try:
        client.request("DELETE", f"/v1/tokens/{quote(name, safe='')}")
    except DaemonError:
        pass
