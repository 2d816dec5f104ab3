"""`rolebroker`: the command line. It forwards to the daemon over HTTP; only `serve`
imports the daemon (and with it boto3)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence

from pathlib import Path
from urllib.parse import quote

from broker import __version__
from broker.names import PROFILE_NAME, PROFILE_NAME_RULE, token_name_part
from broker.runtime import DEFAULT_PORT, configured_port, write_atomic
from clients.daemon_client import DaemonClient, DaemonError
from clients.durations import parse_duration
from clients.envfmt import FORMATS
from clients.envvars import TOKEN_FILE_VARIABLE, TOKEN_VARIABLE, UntrustedAnswer, variables_for

# typing is for the type checker only (annotations are strings here): importing it would cost
# every call about a tenth of an interpreter start. mypy and ruff read this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENV_TOKEN_TTL = 7 * 86400


def profile_name(text: str) -> str:
    """argparse type: the daemon serves only names it can put in a URL path segment."""
    if not PROFILE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a profile name rolebroker can serve ({PROFILE_NAME_RULE})")
    return text


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def duration(text: str) -> float:
    """argparse type: 90s, 30m, 8h, 7d."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_or_zero(text: str) -> float:
    """argparse type: a duration, or 0 for no expiry."""
    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def profile_list(text: str) -> list[str]:
    """argparse type: one profile, or several separated by commas (`--profile dev,prod`)."""
    return [profile_name(part.strip()) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if (len(arguments) == 2 and arguments[0] == "credential-process" and not arguments[1].startswith("-")
            and PROFILE_NAME.fullmatch(arguments[1])):
        # The fast path: tools run this before every AWS call, so skip argparse and friends.
        from clients.credential_process import main as credential_process

        return credential_process(arguments[1])
    try:
        parser = build_parser()
        args = parser.parse_args(arguments)
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.handler(args) or 0)
    except DaemonError as exc:
        print(f"rolebroker: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. ROLEBROKER_PORT=abc
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rolebroker token list | head -1`: the reader is gone, and so is anything left to say.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by the pipe


class Parser(argparse.ArgumentParser):
    """argparse builds a help formatter for every argument it adds (to check its metavar), and
    each asks shutil for the terminal's width: importing shutil (with bz2, lzma and zlib) on
    every call of every command. os.get_terminal_size gives the same width without them.
    Subparsers are made of the parent's class, so they all format this way."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # -2: what HelpFormatter takes off the width it asks shutil for.
        return self.formatter_class(prog=self.prog, width=_terminal_width() - 2)  # type: ignore[call-arg]


def _terminal_width() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rolebroker",
        description="Local AWS credential broker: one MFA code a day, role credentials for every tool.",
    )
    parser.add_argument("--version", action="version", version=f"rolebroker {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--port", type=port_number, default=configured_port(),
                       help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, or $ROLEBROKER_PORT)")
    serve.add_argument("--demo", action="store_true",
                       help="serve a built-in demo (embedded STS, demo profiles dev and prod)")
    serve.add_argument("--listen", action="append", default=[], metavar="ADDRESS:PORT",
                       help="also listen here (repeatable), e.g. 169.254.170.2:9911 for bridged containers")
    serve.add_argument("--allow-network-listen", action="store_true",
                       help="allow --listen on an address other machines can reach (exposes credentials)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=cmd_serve)

    login = commands.add_parser("login", help="type an MFA code once; every profile sharing it is served")
    login.add_argument("profile", type=profile_name)
    login.add_argument("--code", help="the MFA code (else prompted on a terminal, or read from stdin); "
                                      "a command line shows in `ps`: prefer the prompt or stdin")
    login.set_defaults(handler=cmd_login)

    logout = commands.add_parser("logout", help="wipe sessions from the daemon's memory")
    group = logout.add_mutually_exclusive_group(required=True)
    group.add_argument("profile", nargs="?", type=profile_name)
    group.add_argument("--all", action="store_true")
    logout.set_defaults(handler=cmd_logout)

    env = commands.add_parser("env", help="print the environment that points SDKs at the broker")
    env.add_argument("profile", type=profile_name)
    env.add_argument("--format", choices=sorted(FORMATS), default="sh")
    env.add_argument("--ttl", type=duration_or_zero, default=ENV_TOKEN_TTL,
                     help="how long the printed client token stays valid: 30m, 8h, 7d (default 7d; 0: until revoked)")
    env.add_argument("--target", choices=["host", "docker"],
                     help="where the variables are used: docker points at the link-local listener "
                          "(default: docker for --format docker, host otherwise)")
    env.add_argument("--token-file", metavar="PATH",
                     help="write the token to PATH (0600) and export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    env.add_argument("--output", "-o", metavar="FILE",
                     help="write the output to FILE, readable by you only (0600), instead of stdout")
    env.set_defaults(handler=cmd_env)

    process = commands.add_parser("credential-process",
                                  help="print credential_process JSON (for IDE toolkits, Terraform, older SDKs)")
    process.add_argument("profile", type=profile_name)
    process.set_defaults(handler=cmd_credential_process)

    exec_ = commands.add_parser("exec", help="run a command with a profile's credentials")
    exec_.add_argument("profile", type=profile_name)
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    exec_.set_defaults(handler=cmd_exec)

    status = commands.add_parser("status", help="sessions, expiry times and errors")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    reload = commands.add_parser("reload", help="re-read the AWS config files")
    reload.set_defaults(handler=cmd_reload)

    token = commands.add_parser("token", help="client tokens scoped to profiles")
    token_commands = token.add_subparsers(metavar="ACTION")
    create = token_commands.add_parser("create", help="print a new client token")
    create.add_argument("--profile", action="extend", default=[], dest="profiles", type=profile_list,
                        help="profiles the token may read: repeat it, or separate them with commas")
    create.add_argument("--all-profiles", action="store_true",
                        help="let the token read every profile, including ones added later")
    create.add_argument("--name")
    create.add_argument("--ttl", type=duration, help="lifetime such as 30m, 8h, 7d (default: no expiry)")
    create.set_defaults(handler=cmd_token_create)
    listing = token_commands.add_parser("list", help="show tokens (never their values)")
    listing.set_defaults(handler=cmd_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_token_revoke)

    service = commands.add_parser("service", help="install the systemd user units (socket activation)")
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.set_defaults(handler=cmd_service)

    completion = commands.add_parser("completion", help="print a shell completion script (bash, zsh, fish)")
    completion.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"])
    completion.add_argument("--profiles", action="store_true", help="list the AWS config's profile names")
    completion.set_defaults(handler=cmd_completion)

    docker = commands.add_parser("docker", help="put 169.254.170.2 on this machine for bridged containers (root)")
    from clients.docker_args import add_arguments as add_docker_arguments  # not docker_link: its imports are slow

    add_docker_arguments(docker)
    docker.set_defaults(handler=cmd_docker)
    return parser


# ---- serve ------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from broker.main import serve  # the only path that imports the daemon's stack

    return serve(port=args.port, demo=args.demo, log_level=args.log_level, listen=args.listen,
                 allow_network_listen=args.allow_network_listen)


def cmd_service(args: argparse.Namespace) -> int:
    from clients.service import main as service_main

    return service_main(args.action)


def cmd_completion(args: argparse.Namespace) -> int:
    from clients import completion

    if args.profiles:
        print("\n".join(completion.profile_names()))
        return 0
    if not args.shell:
        print("rolebroker: usage: rolebroker completion bash|zsh|fish  (e.g. in ~/.bashrc: "
              'eval "$(rolebroker completion bash)")', file=sys.stderr)
        return 2
    sys.stdout.write(completion.SHELLS[args.shell](build_parser()))
    return 0


def cmd_docker(args: argparse.Namespace) -> int:
    from clients.docker_link import run as docker_link

    return docker_link(args)


# ---- login / logout ---------------------------------------------------------------------

def read_code(profile: str, given: str | None) -> str:
    if given:
        return given.strip()
    if sys.stdin.isatty():
        print(f"MFA code for {profile}: ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return line.strip()


def cmd_login(args: argparse.Namespace) -> int:
    client = DaemonClient(timeout=60)
    code = read_code(args.profile, args.code)
    if code and not re.fullmatch(r"[0-9]{6}", code):
        print("rolebroker: an MFA code is six digits, as your authenticator shows it", file=sys.stderr)
        return 1
    try:
        result = client.request("POST", "/v1/login", {"profile": args.profile, "code": code or None})
    except DaemonError as exc:
        print(f"rolebroker: login failed: {exc.message}", file=sys.stderr)
        return 1
    if not result["mfa_required"]:
        print(f"{args.profile} needs no MFA code: it is served as soon as a client asks.")
        return 0
    expires = result["session_expires_at"]
    print(f"Logged in: MFA session {result['session']} valid until {_local_time(expires)} "
          f"({_duration(expires - time.time())}).")
    print(f"Profiles served by it: {', '.join(result['profiles'])}")
    if result.get("warm_error"):
        print(f"warning: {args.profile}: {result['warm_error']}", file=sys.stderr)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    client = DaemonClient()
    result = client.request("POST", "/v1/logout", {"profile": None if args.all else args.profile})
    wiped = result["wiped"]
    print(f"Wiped from memory: {', '.join(wiped) if wiped else 'nothing was cached'}")
    return 0


# ---- env / exec -------------------------------------------------------------------------

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
    try:
        set_vars, unset = variables_for(described, minted["token"])
    except UntrustedAnswer:
        _revoke_quietly(client, minted.get("name", ""))
        raise
    return {"set": set_vars, "unset": unset, "token_name": minted["name"], "notes": described.get("notes", [])}


def cmd_env(args: argparse.Namespace) -> int:
    client = DaemonClient()
    target = args.target or ("docker" if args.format == "docker" else "host")
    try:
        described = client_environment(client, args.profile, args.ttl or None, target, reuse=True)
    except UntrustedAnswer as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 1
    set_vars, unset = described["set"], list(described["unset"])
    if args.token_file:
        # The file wins over the variable in every SDK but Java, so drop the variable too.
        try:
            write_token_file(args.token_file, set_vars.pop(TOKEN_VARIABLE))
        except OSError as exc:
            _revoke_quietly(client, described["token_name"])  # nobody will ever hold it
            print(f"rolebroker: cannot write {args.token_file}: {exc.strerror}", file=sys.stderr)
            return 1
        set_vars[TOKEN_FILE_VARIABLE] = os.path.abspath(args.token_file)
        unset = [v for v in unset if v != TOKEN_FILE_VARIABLE]
        unset.append(TOKEN_VARIABLE)
    elif args.format == "docker":
        # `docker run` flags end up in every local user's view of the process list: the token
        # goes to a 0600 env file instead, named on the command line.
        env_file = docker_env_file(client, described["token_name"])
        try:
            write_token_file(str(env_file), f"{TOKEN_VARIABLE}={set_vars.pop(TOKEN_VARIABLE)}\n")
        except OSError as exc:
            _revoke_quietly(client, described["token_name"])
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
        _revoke_quietly(client, described["token_name"])  # printed nowhere, so held by nobody
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
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("rolebroker: usage: rolebroker exec PROFILE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    import signal
    import subprocess

    client = DaemonClient()
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


def _revoke_quietly(client: DaemonClient, name: str) -> None:
    try:
        client.request("DELETE", f"/v1/tokens/{quote(name, safe='')}")
    except DaemonError:
        pass


def cmd_credential_process(args: argparse.Namespace) -> int:
    from clients.credential_process import main as credential_process

    return credential_process(args.profile)


# ---- status -----------------------------------------------------------------------------

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
            rows.append((row["profile"], "-", "-", "-", "config error"))
            notes.append(f"{row['profile']}: {row['config_error']}")
            continue
        credentials = (_duration(row["credentials_expire_at"] - now)
                       if row["credentials_expire_at"] else "none yet")
        if row["mfa_session"] is None:
            mfa = "not needed"
        elif row["login_required"]:
            mfa = f"login needed (rolebroker login {row['profile']})"
        elif row["mfa_session_expires_at"] is None:
            mfa = "starts on first use (mfa_process)"
        else:
            mfa = _duration(row["mfa_session_expires_at"] - now)
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


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def _local_time(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


# ---- reload / tokens --------------------------------------------------------------------

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
        stamp = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"  # noqa: E731
        print(f"{row['name']:24} {','.join(row['profiles']) or '(all)':20} {stamp(row['created_at']):16} "
              f"{stamp(row['expires_at']):16} {stamp(row['last_used_at'])}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    DaemonClient().request("DELETE", f"/v1/tokens/{quote(args.name, safe='')}")
    print(f"Revoked {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
