"""`rolebroker`: the command line. It forwards to the daemon over HTTP; only `serve`
imports the daemon (and with it boto3)."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from collections.abc import Sequence


from ..broker import __version__
from ..broker.mfa import normalize_code
from ..broker.names import PROFILE_NAME, PROFILE_NAME_RULE
from ..broker.runtime import DEFAULT_PORT, configured_port
from .daemon_client import DaemonClient, DaemonError
from .durations import ENV_TOKEN_TTL, parse_duration
from .envfmt import FORMATS
from .prompt import LoginCancelled, live_until, login_interactively, session_state

# typing is for the type checker only (annotations are strings here): importing it would cost
# every call about a tenth of an interpreter start. mypy and ruff read this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


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
        from .credential_process import main as credential_process

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
        print(file=sys.stderr)  # Ctrl-C at a prompt: end the prompt's line, nothing was sent
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
    login.add_argument("--force", action="store_true",
                       help="start a new MFA session even while the current one has hours left")
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

    keys = commands.add_parser("keys", help="long-term keys in the OS keyring: add, import, list, remove")
    from .keys import add_arguments as add_keys_arguments  # no keyring import until a command runs

    add_keys_arguments(keys, profile_name)

    console = commands.add_parser("console", help="open the AWS console signed in as a profile's role")
    from .console import add_arguments as add_console_arguments  # standard library only

    add_console_arguments(console, profile_name, duration)

    service = commands.add_parser("service", help="install the systemd user units (socket activation)")
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.set_defaults(handler=cmd_service)

    completion = commands.add_parser("completion", help="print a shell completion script (bash, zsh, fish)")
    completion.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"])
    completion.add_argument("--profiles", action="store_true", help="list the AWS config's profile names")
    completion.set_defaults(handler=cmd_completion)

    docker = commands.add_parser("docker", help="put 169.254.170.2 on this machine for bridged containers (root)")
    from .docker_args import add_arguments as add_docker_arguments  # not docker_link: its imports are slow

    add_docker_arguments(docker)
    docker.set_defaults(handler=cmd_docker)
    return parser


# ---- serve ------------------------------------------------------------------------------

# The commands living in modules of their own load with their command only: every CLI call
# pays for the imports at the top of this file, so they stay few.

def _from(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module, __package__), name)
        return run(args)

    return handler


cmd_env = _from(".env_cmds", "cmd_env")
cmd_exec = _from(".env_cmds", "cmd_exec")
cmd_status = _from(".status_view", "cmd_status")
cmd_reload = _from(".token_cmds", "cmd_reload")
cmd_token_create = _from(".token_cmds", "cmd_token_create")
cmd_token_list = _from(".token_cmds", "cmd_token_list")
cmd_token_revoke = _from(".token_cmds", "cmd_token_revoke")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..broker.main import serve  # the only path that imports the daemon's stack

    return serve(port=args.port, demo=args.demo, log_level=args.log_level, listen=args.listen,
                 allow_network_listen=args.allow_network_listen)


def cmd_service(args: argparse.Namespace) -> int:
    from .service import main as service_main

    return service_main(args.action)


def cmd_completion(args: argparse.Namespace) -> int:
    from . import completion

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
    from .docker_link import run as docker_link

    return docker_link(args)


# ---- login / logout ---------------------------------------------------------------------

def read_code(given: str | None) -> str | None:
    """A code given with --code or as one line on stdin ("123 456" is fine); "" for none
    (mfa_process then gets it); None for something that is not a code."""
    text = given if given is not None else sys.stdin.readline()
    if not text.strip():
        return ""
    return normalize_code(text)


def cmd_login(args: argparse.Namespace) -> int:
    client = DaemonClient(timeout=60)
    try:
        state = session_state(client, args.profile)
    except DaemonError as exc:
        print(f"rolebroker: login failed: {exc.message}", file=sys.stderr)
        return 1
    until = live_until(state)
    if until is not None and not args.force:
        # No code is spent on a session with hours left (codes are scarce: one per 30 s).
        print(f"{args.profile} is logged in already: MFA session {state['mfa_session']} valid until "
              f"{_local_time(until)} ({_duration_text(until - time.time())}). "
              f"`rolebroker login {shlex.quote(args.profile)} --force` starts a new one.")
        return 0
    try:
        needs_code = bool(state.get("mfa_serial")) and not _self_renewing(state)
        if args.code is None and needs_code and sys.stdin.isatty():
            result = login_interactively(client, args.profile, state["mfa_serial"], sys.stdin, sys.stderr)
        else:
            # No code needed (no MFA, or mfa_process fetches it): stdin is not read at all.
            code = read_code(args.code) if args.code is not None or needs_code else ""
            if code is None:
                print("rolebroker: an MFA code is six digits, as your authenticator shows it", file=sys.stderr)
                return 1
            result = client.request("POST", "/v1/login", {"profile": args.profile, "code": code or None})
    except LoginCancelled as exc:
        print(f"rolebroker: login cancelled: {exc.message}", file=sys.stderr)
        return 1
    except DaemonError as exc:
        print(f"rolebroker: login failed: {exc.message}", file=sys.stderr)
        return 1
    if not result["mfa_required"]:
        print(f"{args.profile} needs no MFA code: it is served as soon as a client asks.")
        return 0
    expires = result["session_expires_at"]
    print(f"Logged in: MFA session {result['session']} valid until {_local_time(expires)} "
          f"({_duration_text(expires - time.time())}).")
    print(f"Profiles served by it: {', '.join(result['profiles'])}")
    if result.get("warm_error"):
        print(f"warning: {args.profile}: {result['warm_error']}", file=sys.stderr)
    return 0


def _self_renewing(state: dict[str, Any]) -> bool:
    return any("mfa_process" in note for note in state.get("notes", []))


def cmd_logout(args: argparse.Namespace) -> int:
    client = DaemonClient()
    result = client.request("POST", "/v1/logout", {"profile": None if args.all else args.profile})
    wiped = result["wiped"]
    print(f"Wiped from memory: {', '.join(wiped) if wiped else 'nothing was cached'}")
    problems = result.get("keyring_problems", [])
    for problem in problems:
        print(f"rolebroker: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_credential_process(args: argparse.Namespace) -> int:
    from .credential_process import main as credential_process

    return credential_process(args.profile)


def _duration_text(seconds: float) -> str:
    from .status_view import duration_text

    return duration_text(seconds)


def _local_time(epoch: float) -> str:
    from .status_view import local_time

    return local_time(epoch)


if __name__ == "__main__":
    sys.exit(main())
