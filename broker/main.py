"""`rolebroker serve`: logging, settings, the demo, and the run loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from collections.abc import Coroutine

from . import systemd
from .channel import is_unix
from .config import ConfigFiles
from .fd_budget import raise_open_file_limit
from .lockdown import forbid_dumps
from .runtime import (
    CONTROL_SOCKET, DaemonAlreadyRunning, RuntimeDirError, claim_runtime_dir, runtime_dir, state_dir,
)
from .server import DEFAULT_PORT, Daemon, DaemonSettings, PortInUse, check_listen_address

log = logging.getLogger("rolebroker")


def configure_logging(level: str) -> None:
    # journald stamps every line itself; a second timestamp would only be noise there.
    under_journald = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=fmt)
    # botocore logs request details at debug level; never let them reach the journal.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own arena; the STS worker threads would
    each keep one, a few MB of resident memory apiece for a daemon that is mostly idle."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def serve(port: int, demo: bool, log_level: str, listen: list[str] | None = None,
          allow_network_listen: bool = False) -> int:
    configure_logging(log_level)
    # Before the first secret enters memory: no core dumps, no same-user ptrace or /proc/PID/mem.
    for problem in forbid_dumps():
        log.warning("process hardening: %s", problem)
    limit_malloc_arenas()
    raise_open_file_limit()  # systemd's soft limit of 1024 is too few for many clients
    directory = runtime_dir()
    files = ConfigFiles.from_environment()
    try:  # before anything is started
        extra = [parse_listen(value, allow_network_listen) for value in listen or []]
        inherited = systemd.listen_fds()
        check_inherited(inherited, allow_network_listen, directory)
    except ValueError as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 2
    started_demo = None
    try:
        lock = claim_runtime_dir(directory)  # refuses while another live daemon owns the directory
        demo_env: dict[str, str] = {}
        if demo:
            from .demo import start_demo

            started_demo = start_demo(directory)
            files = started_demo.files
            demo_env = {"AWS_ENDPOINT_URL_STS": started_demo.sts.endpoint_url}
        daemon = Daemon(DaemonSettings(files=files, runtime_dir=directory, state_dir=state_dir(), port=port,
                                       client_env=demo_env, extra_listen=extra))
        daemon.claim(lock)
        # Socket-activated: systemd holds the sockets (it may be queueing the first client).
        tcp = [sock for sock in inherited if not is_unix(sock)] or [daemon.bind()]
        control = [sock for sock in inherited if is_unix(sock)] or [daemon.bind_control()]
        daemon.port = tcp[0].getsockname()[1]
        sockets = tcp + daemon.bind_extra() + control
        daemon.prepare(sockets)
    except (PortInUse, RuntimeDirError, DaemonAlreadyRunning, OSError) as exc:
        if isinstance(exc, (PortInUse, RuntimeDirError, DaemonAlreadyRunning)):
            print(f"rolebroker: {exc}", file=sys.stderr)
        else:  # e.g. a port below 1024 without the privilege for it
            print(f"rolebroker: cannot listen: {exc.strerror}; pick a port from 1024 up with --port", file=sys.stderr)
        if started_demo is not None:
            started_demo.stop()
        return 1
    # Everything loaded so far (the modules serving needs) lives as long as the process: take it
    # out of the garbage collector's view, so a full collection does not stall requests. The
    # control API and botocore's client load later, with their first use (broker.lazyapp, broker.sts).
    gc.collect()
    gc.freeze()
    log.info("serving %d profiles from %s on http://127.0.0.1:%d", len(daemon.sessions.config.plans),
             files.describe(), daemon.port)
    if started_demo is not None:
        print(DEMO_BANNER.format(sts=started_demo.sts.endpoint_url), file=sys.stderr, flush=True)
    # uvicorn re-raises SIGTERM once it has shut down; as an exception rather than the default
    # instant death it lets Daemon.serve's cleanup run (runtime files, sessions), and exits 0.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run(_serve_notifying(daemon, sockets))
    finally:
        if started_demo is not None:
            started_demo.stop()
    return 0


def check_inherited(sockets: list[socket.socket], allow_network: bool, directory: Path) -> None:
    """Sockets from systemd get the checks --listen gets: a `ListenStream=9911` (every
    address) would serve credentials to other machines and network namespaces."""
    for sock in sockets:
        if is_unix(sock):
            path = sock.getsockname()
            if path != str(directory / CONTROL_SOCKET):
                log.warning("systemd passed a control socket at %s, but the CLI looks for %s: set "
                            "ROLEBROKER_RUNTIME_DIR for both, or use the shipped socket unit", path,
                            directory / CONTROL_SOCKET)
            continue
        address = sock.getsockname()[0]
        try:
            check_listen_address(address, allow_network)
        except ValueError as exc:
            raise ValueError(f"the socket systemd passed ({address}:{sock.getsockname()[1]}): {exc}; "
                             "make the socket unit's ListenStream= name an address, e.g. 127.0.0.1:9911") from None


def parse_listen(value: str, allow_network: bool) -> tuple[str, int]:
    """ADDRESS:PORT (IPv6 as [ADDRESS]:PORT); the address must be safe unless allowed by name."""
    address, sep, port = value.rpartition(":")
    address = address.strip("[]")
    if not sep or not port.isdigit() or not address or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected ADDRESS:PORT, e.g. 169.254.170.2:{DEFAULT_PORT}")
    try:
        check_listen_address(address, allow_network)  # also rejects what is not an IP address
    except ValueError as exc:
        raise ValueError(f"--listen {value!r}: {exc}") from None
    return address, int(port)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _serve_notifying(daemon: Daemon, sockets: list[socket.socket]) -> None:
    # Type=notify: READY=1 only once uvicorn accepts; it has a `started` flag but no callback.
    ready = asyncio.ensure_future(
        systemd.notify_when(lambda: daemon.server is not None and daemon.server.started))
    try:
        await daemon.serve(sockets)
    finally:
        ready.cancel()
        systemd.notify("STOPPING=1")


DEMO_BANNER = """
rolebroker demo: an embedded STS at {sts} and demo profiles `dev` and `prod`.
The demo MFA device accepts any six-digit code, once. In another terminal, try:

    rolebroker login dev            (type any six digits at the prompt)
    eval "$(rolebroker env dev)"
    aws sts get-caller-identity

then `rolebroker status`: prod was served by the same MFA session, no second code.
"""
