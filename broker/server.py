"""The daemon: config -> sessions -> HTTP, and the run loop that owns them."""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from typing import Any

import uvicorn

from . import __version__
from .attention import Attention
from .channel import bind_control_socket, is_unix, with_peer_credentials
from .clock import Clock, SystemClock
from .config import BrokerConfig, ConfigFiles, load_config
from .endpoint import CREDENTIALS_PREFIX, CredentialsEndpoint
from .configfiles import ConfigFileError
from .keyring_sessions import DaemonKeyring
from .keystore import index_path, read_index
from .probes import ProbeChallenges
from .guard import FailureThrottle, RequestGuard, allowed_hosts
from .lazyapp import LazyApp
from .leases import TokenLeases
from .notify import desktop_notifier
from .offloop import CallTimedOut, OffLoopCall, StillRunning
from .limits import Limits, uvicorn_options
from .peers import RefusalLog, scope_peer
from .refresh import RefreshPolicy
from .runtime import (
    CONTROL_SOCKET, DAEMON_FILE, DEFAULT_PORT, claim_runtime_dir, ensure_private_dir, write_json,
)
from .sessions import SessionManager
from .sts import BotocoreSts, StsGateway
from .tokens import TokenStore

log = logging.getLogger("rolebroker")

# A config read that takes longer is stuck (a hung mount): the last good config stays.
CONFIG_READ_TIMEOUT = 5.0
FileStamps = tuple[tuple[int, int, int] | None, ...]


class PortInUse(Exception):
    pass


# The addresses the SDKs accept over plain http besides loopback (docs/SDK-COMPATIBILITY.md).
LINK_LOCAL_ADDRESSES = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")


def check_listen_address(address: str, allow_network: bool) -> None:
    """Refuse to serve credentials on an address other machines can reach, unless asked by name."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    if ip.is_loopback or address in LINK_LOCAL_ADDRESSES or allow_network:
        return
    raise ValueError(
        f"{address} can be reached from other machines: anyone there could ask for credentials. "
        "Use 169.254.170.2 for containers, or pass --allow-network-listen if you mean it"
    )


@dataclass
class DaemonSettings:
    files: ConfigFiles
    runtime_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Extra variables for clients of every profile (the demo points them at its STS).
    client_env: dict[str, str] = field(default_factory=dict)
    # More addresses beside the loopback one, e.g. 169.254.170.2 for bridged containers.
    extra_listen: list[tuple[str, int]] = field(default_factory=list)
    # What one connection and one peer may hold: request sizes, deadlines, connections, failures.
    limits: Limits = field(default_factory=Limits)


class Daemon:
    def __init__(self, settings: DaemonSettings, clock: Clock | None = None,
                 sts: StsGateway | None = None, policy: RefreshPolicy | None = None,
                 keyring: DaemonKeyring | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.config_error: str | None = None
        # Reads of the AWS config files: off the loop, one at a time, bounded in time.
        self.config_read_timeout = CONFIG_READ_TIMEOUT
        self._config_reader: OffLoopCall[Any] = OffLoopCall("rolebroker-config-reader")
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Future[dict[str, Any]]] = set()
        self._mtimes: FileStamps = (None, None, None)
        config = self._load_or_empty()
        # The OS keyring is made on first use (keyring_sessions.DaemonKeyring): most users never need it.
        self.sessions = SessionManager(config, sts or BotocoreSts(settings.files), self.clock, policy,
                                       keyring=keyring)
        # Desktop notifications and the MFA dialog hear what the sessions report.
        self.attention = Attention(self.sessions, desktop_notifier)
        self.sessions.events = self.attention
        ensure_private_dir(settings.state_dir)
        self.tokens = TokenStore(settings.state_dir / "tokens.json", self.clock.now)
        self.leases = TokenLeases(self.tokens)
        self.control_api = LazyApp(self._build_control_api)
        self.refusals = RefusalLog(settings.limits.summary_interval)
        throttle = FailureThrottle(self.clock.now, self.refusals, settings.limits.failing_requests_per_peer)
        self.probes = ProbeChallenges()
        endpoint = CredentialsEndpoint(self.sessions, self.tokens, self.control_api, throttle.hold,
                                       lambda scope, what, detail: self.refusals.note(scope_peer(scope), what, detail),
                                       self.probes)
        self._lock_fd: int | None = None
        self._own_socket: tuple[int, int] | None = None  # (st_dev, st_ino) of the control socket we made
        self.listeners: list[tuple[str, int]] = []
        self._hosts: frozenset[bytes] = frozenset()
        self.app = RequestGuard(endpoint, lambda: self._hosts, throttle)
        self.port = settings.port
        self.server: uvicorn.Server | None = None
        self._stop_requested = False

    def _build_control_api(self) -> Any:
        # The control API loads with the first control request (see broker.lazyapp).
        from .api import build_control_api

        from .client_facts import describe_env

        return build_control_api(self.sessions, self.tokens, functools.partial(describe_env, self), self.reload,
                                 lambda: self.config_error, self.leases, self.probes)

    # ---- configuration ----------------------------------------------------------------

    def _read_config(self) -> tuple[FileStamps, BrokerConfig | ConfigFileError]:
        """On the reader thread: the files' stamps, then the config or why it is broken.
        The stamps come first so a broken file is not re-read until it changes again."""
        stamps = self._config_stamps()
        try:
            return stamps, load_config(self.settings.files, read_index(self.settings.state_dir))
        except ConfigFileError as exc:
            return stamps, exc

    def _load_or_empty(self) -> BrokerConfig:
        """The config at startup (no loop yet), read off this thread all the same: a file on
        a hung file system must not stop the daemon from serving tokens and status."""
        try:
            self._mtimes, loaded = self._config_reader.run_sync(self._read_config, self.config_read_timeout)
        except (CallTimedOut, StillRunning) as exc:
            loaded = self._stuck(exc)
        if isinstance(loaded, ConfigFileError):
            self.config_error = str(loaded)
            log.error("%s; serving no profiles until it is fixed", loaded)
            return BrokerConfig(files=self.settings.files, plans={})
        return loaded

    def _stuck(self, exc: CallTimedOut | StillRunning) -> ConfigFileError:
        files = self.settings.files.describe()
        if isinstance(exc, StillRunning):
            what = f"an earlier read of {files} has not returned for {exc.seconds:.0f} s"
        else:
            what = f"reading {files} took longer than {self.config_read_timeout:g} s"
        return ConfigFileError(f"{what} (a file on a hung network or FUSE file system?): fix or move the file, "
                               "then run `rolebroker reload`")

    async def reload(self) -> dict[str, Any]:
        """Re-read the config off the loop; a broken or unreadable file keeps the last good one.
        The watcher, SIGHUP and `rolebroker reload` take turns: never two reads at once."""
        async with self._reload_lock:
            return await self._reload_locked()

    async def _reload_locked(self) -> dict[str, Any]:
        try:
            self._mtimes, loaded = await self._config_reader.run(self._read_config, self.config_read_timeout)
        except (CallTimedOut, StillRunning) as exc:
            loaded = self._stuck(exc)
        if isinstance(loaded, ConfigFileError):
            self.config_error = f"{loaded} (still serving the last good config)"
            log.error("config reload failed, keeping the last good config: %s", loaded)
            return {"ok": False, "error": str(loaded), "changed": []}
        # Applied here, on the loop: the sessions are the loop's alone.
        self.config_error = None
        if isinstance(self.sessions.sts, BotocoreSts):
            self.sessions.sts.reset()  # its botocore sessions hold the old files' contents
        changed = self.sessions.apply_config(loaded)
        log.info("config reloaded: %d profiles, changed: %s", len(loaded.plans), ", ".join(changed) or "none")
        for name, problem in loaded.errors.items():
            log.warning("profile %s is not served: %s", name, problem)
        return {"ok": True, "error": None, "changed": changed}

    def _config_stamps(self) -> FileStamps:
        """What tells an edited or replaced file: modification time, size and inode."""
        stamps: list[tuple[int, int, int] | None] = []
        # ... and the list of profiles whose keys are in the OS keyring (`rolebroker keys`).
        for path in (self.settings.files.config_file, self.settings.files.credentials_file,
                     str(index_path(self.settings.state_dir))):
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
        return tuple(stamps)

    async def reload_if_changed(self) -> dict[str, Any] | None:
        """Reload when either file changed (an editor saved it). A stat can block too (a
        hung mount), so it runs off the loop like the read; while an earlier read is stuck
        there is nothing new to say, and the watcher just looks again next time."""
        if self._reload_lock.locked():
            return None  # a reload is running: it reads the files as they are now
        async with self._reload_lock:
            try:
                stamps = await self._config_reader.run(self._config_stamps, self.config_read_timeout)
            except (CallTimedOut, StillRunning):
                return None
            if stamps == self._mtimes:
                return None
            return await self._reload_locked()

    async def watch_config(self, interval: float = 2.0) -> None:
        # File watching is about the real files, so it runs on real time, not the injected clock.
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except Exception:  # a bug in one reload must not end the watching for good
                log.exception("config watcher: reload failed")

    def _reload_soon(self) -> None:
        """SIGHUP: a reload task, kept referenced until it is done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(self.reload())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def sweep_leases(self, interval: float = 1.0) -> None:
        # At once (tokens of `exec` commands that ended while no daemon ran), then every
        # interval: processes end in real time, whatever the injected clock says.
        while True:
            try:
                await self.leases.sweep()
            except Exception:  # a bug must not end the sweep for good: exec tokens would outlive exec
                log.exception("the sweep of ended processes' tokens failed; trying again in %g s", interval)
            await asyncio.sleep(interval)

    # ---- what clients are told ----------------------------------------------------------

    def endpoint_url(self, profile: str, address: str = "127.0.0.1", port: int | None = None) -> str:
        host = f"[{address}]" if ":" in address else address
        # Percent-encoded: botocore's profile names may hold spaces and other URL syntax.
        return f"http://{host}:{port or self.port}{CREDENTIALS_PREFIX}{quote(profile, safe='')}"

    def container_listener(self) -> tuple[str, int] | None:
        """The link-local listener bridged containers can reach, if the daemon has one."""
        for address, port in self.listeners:
            if address in LINK_LOCAL_ADDRESSES:
                return address, port
        return None

    # ---- serving ----------------------------------------------------------------------

    def claim(self, lock_fd: int | None = None) -> None:
        """Take the runtime directory (refused while a live daemon holds it; or adopt the lock
        the caller took) and clear what a dead one left behind. Call before binding anything."""
        self._lock_fd = lock_fd if lock_fd is not None else claim_runtime_dir(self.settings.runtime_dir)
        for name in (DAEMON_FILE, "control-token"):  # control-token: from versions before the socket
            (self.settings.runtime_dir / name).unlink(missing_ok=True)

    def bind_control(self) -> socket.socket:
        """The control channel's Unix socket (after `claim`)."""
        path = self.settings.runtime_dir / CONTROL_SOCKET
        sock = bind_control_socket(path)
        info = path.lstat()
        self._own_socket = (info.st_dev, info.st_ino)
        return sock

    def bind(self) -> socket.socket:
        """The loopback listener every local client uses."""
        return self._bind(self.settings.host, self.settings.port, primary=True)

    def bind_extra(self) -> list[socket.socket]:
        return [self._bind(address, port, primary=False) for address, port in self.settings.extra_listen]

    def _bind(self, host: str, port: int, primary: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
        # and without it a keep-alive answer can wait ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                # Not a rolebroker of ours with this runtime directory: it would have held the lock.
                raise PortInUse(
                    f"port {port} on {host} is in use by another program (`ss -ltnp` names it; not a "
                    "rolebroker daemon using this runtime directory, which would hold its lock): stop it, or "
                    "pick another port with --port / ROLEBROKER_PORT"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PortInUse(f"{host} is not an address of this machine: for 169.254.170.2 run "
                                "`sudo rolebroker docker setup` first (with the full path of rolebroker "
                                "if sudo does not find it)") from None
            raise
        sock.listen(1024)
        sock.setblocking(False)
        if primary:
            self.port = sock.getsockname()[1]
        return sock

    def write_runtime_files(self) -> None:
        # A description for humans and scripts; the CLI asks the control socket instead.
        directory = ensure_private_dir(self.settings.runtime_dir)
        write_json(directory / DAEMON_FILE, {
            "pid": os.getpid(), "port": self.port, "url": f"http://127.0.0.1:{self.port}",
            "listen": [f"{a}:{p}" for a, p in self.listeners], "version": __version__,
            "control_socket": str(directory / CONTROL_SOCKET),
        })

    def remove_runtime_files(self) -> None:
        """Remove what is still ours: never a socket systemd made, or a file another daemon
        wrote after ours (with the lock that cannot happen, but deleting costs a user a code)."""
        directory = self.settings.runtime_dir
        try:
            if json.loads((directory / DAEMON_FILE).read_bytes()).get("pid") == os.getpid():
                (directory / DAEMON_FILE).unlink()
        except (OSError, ValueError, AttributeError):
            pass
        if self._own_socket is not None:
            try:
                info = (directory / CONTROL_SOCKET).lstat()
                if (info.st_dev, info.st_ino) == self._own_socket:
                    (directory / CONTROL_SOCKET).unlink()
            except FileNotFoundError:
                pass
            self._own_socket = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock; the (empty) lock file stays for the next daemon
            self._lock_fd = None

    def prepare(self, sockets: list[socket.socket]) -> None:
        """Know our own addresses and describe them (before anyone is told to try)."""
        self.listeners = [tuple(sock.getsockname()[:2]) for sock in sockets if not is_unix(sock)]  # type: ignore[misc]
        self._hosts = allowed_hosts(self.listeners)
        self.write_runtime_files()

    async def serve(self, sockets: list[socket.socket]) -> None:
        self.prepare(sockets)
        # The protocol bounds heads, deadlines and connections while reading (broker/limits.py).
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
            date_header=False, timeout_graceful_shutdown=5, loop="none",
            **self._protocol_options(),
        )
        # Request lines carry ECS-form tokens (/v1/credentials/PROFILE/TOKEN): no access log,
        # whatever handlers the embedding process (a test runner, a logging setup) attached.
        logging.getLogger("uvicorn.access").disabled = True
        self.server = uvicorn.Server(config)
        self.server.should_exit = self._stop_requested  # a stop() that came before serve()
        background = [asyncio.ensure_future(self.sessions.run()), asyncio.ensure_future(self.watch_config()),
                      asyncio.ensure_future(self.sweep_leases())]
        self._install_reload_signal()
        try:
            await self.server.serve(sockets=sockets)
        finally:
            for task in background:
                task.cancel()
            await self.attention.close()  # open dialogs close with the daemon
            self.remove_runtime_files()
            self.sessions.close()  # the sessions leave memory with the daemon
            self.refusals.flush()  # the last summary of what was refused, not lost with the loop
            log.info("stopped; sessions wiped from memory")

    def _protocol_options(self) -> dict[str, Any]:
        options = uvicorn_options(self.settings.limits, self.refusals)
        # One protocol class serves every socket: the limits, and on the control socket the
        # peer's uid checked before a byte is read.
        options["http"] = with_peer_credentials(options["http"])
        return options

    def _install_reload_signal(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload_soon)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests), or no signals on this platform

    def stop(self) -> None:
        self._stop_requested = True
        if self.server is not None:
            self.server.should_exit = True
