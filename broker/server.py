"""The daemon: config -> sessions -> HTTP, and the run loop that owns them."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from broker import __version__
from broker.api import build_control_api
from broker.clock import Clock, SystemClock
from broker.config import BrokerConfig, ConfigFileError, ConfigFiles, load_config
from broker.endpoint import CREDENTIALS_PREFIX, CredentialsEndpoint
from broker.guard import FailureThrottle, RequestGuard, allowed_hosts
from broker.limits import Limits, uvicorn_options
from broker.peers import RefusalLog, scope_peer
from broker.refresh import RefreshPolicy
from broker.runtime import CONTROL_TOKEN_FILE, DAEMON_FILE, DEFAULT_PORT, ensure_private_dir, write_json, write_private
from broker.sessions import SessionManager
from broker.sts import BotocoreSts, StsGateway
from broker.tokens import TokenStore, new_token

log = logging.getLogger("rolebroker")

# Variables that outrank the container provider in some SDK's chain, or would make
# it read a different token: whoever points a process at the broker unsets them.
SHADOWING_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)
CREDENTIAL_KEYS = ("aws_access_key_id", "role_arn", "credential_process", "credential_source",
                   "sso_session", "sso_start_url", "web_identity_token_file", "login_session")


class PortInUse(Exception):
    pass


# The addresses the SDKs accept over plain http besides loopback (SDK-COMPAT.md).
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
                 sts: StsGateway | None = None, policy: RefreshPolicy | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.config_error: str | None = None
        config = self._load_or_empty()
        self.sessions = SessionManager(config, sts or BotocoreSts(settings.files), self.clock, policy)
        ensure_private_dir(settings.state_dir)
        self.tokens = TokenStore(settings.state_dir / "tokens.json", self.clock.now)
        self.control_token = new_token()
        control_api = build_control_api(self.sessions, self.tokens, self.control_token,
                                        self.describe_env, self.reload, lambda: self.config_error)
        self.refusals = RefusalLog(settings.limits.summary_interval)
        throttle = FailureThrottle(self.clock.now, self.refusals, settings.limits.failing_requests_per_peer)
        endpoint = CredentialsEndpoint(self.sessions, self.tokens, control_api, self.control_token, throttle.hold,
                                       lambda scope, what, detail: self.refusals.note(scope_peer(scope), what, detail))
        self.listeners: list[tuple[str, int]] = []
        self._hosts: frozenset[bytes] = frozenset()
        self.app = RequestGuard(endpoint, lambda: self._hosts, throttle)
        self.port = settings.port
        self.server: uvicorn.Server | None = None
        self._stop_requested = False
        self._mtimes = self._config_mtimes()

    # ---- configuration ----------------------------------------------------------------

    def _load_or_empty(self) -> BrokerConfig:
        try:
            return load_config(self.settings.files)
        except ConfigFileError as exc:
            self.config_error = str(exc)
            log.error("%s; serving no profiles until it is fixed", exc)
            return BrokerConfig(files=self.settings.files, plans={})

    def reload(self) -> dict[str, Any]:
        """Re-read the config; a broken file keeps the last good one."""
        self._mtimes = self._config_mtimes()
        try:
            config = load_config(self.settings.files)
        except ConfigFileError as exc:
            self.config_error = str(exc)
            log.error("config reload failed, keeping the last good config: %s", exc)
            return {"ok": False, "error": str(exc), "changed": []}
        self.config_error = None
        if isinstance(self.sessions.sts, BotocoreSts):
            self.sessions.sts.reset()  # its botocore sessions hold the old files' contents
        changed = self.sessions.apply_config(config)
        log.info("config reloaded: %d profiles, changed: %s", len(config.plans), ", ".join(changed) or "none")
        for name, problem in config.errors.items():
            log.warning("profile %s is not served: %s", name, problem)
        return {"ok": True, "error": None, "changed": changed}

    def _config_mtimes(self) -> tuple[float | None, ...]:
        stamps: list[float | None] = []
        for path in (self.settings.files.config_file, self.settings.files.credentials_file):
            try:
                stamps.append(os.stat(path).st_mtime)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def reload_if_changed(self) -> dict[str, Any] | None:
        """Reload when either file's modification time moved (an editor saved it)."""
        if self._config_mtimes() == self._mtimes:
            return None
        return self.reload()

    async def watch_config(self, interval: float = 2.0) -> None:
        # File watching is about the real files, so it runs on real time, not the injected clock.
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()

    # ---- what clients are told ----------------------------------------------------------

    def endpoint_url(self, profile: str, address: str = "127.0.0.1", port: int | None = None) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{port or self.port}{CREDENTIALS_PREFIX}{profile}"

    def container_listener(self) -> tuple[str, int] | None:
        """The link-local listener bridged containers can reach, if the daemon has one."""
        for address, port in self.listeners:
            if address in LINK_LOCAL_ADDRESSES:
                return address, port
        return None

    def describe_env(self, profile: str, target: str = "host") -> dict[str, Any]:
        plan = self.sessions.plan(profile)
        url = self.endpoint_url(profile)
        notes: list[str] = []
        if target == "docker":
            listener = self.container_listener()
            if listener is not None:
                url = self.endpoint_url(profile, *listener)
            else:
                notes.append("the daemon has no link-local listener, so only `docker run --network host` "
                             "containers can reach it; or run `sudo rolebroker docker setup` and restart the "
                             "daemon with `--listen 169.254.170.2:PORT`")
        set_vars: dict[str, str] = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": url}
        if plan.region:
            set_vars["AWS_REGION"] = plan.region
            set_vars["AWS_DEFAULT_REGION"] = plan.region
        # A [default] profile with keys in the shared files outranks the container provider
        # in every SDK: hide the files from the client (its region is exported above).
        set_vars["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        default = self.sessions.config.raw_profiles.get("default", {})
        if any(key in default for key in CREDENTIAL_KEYS):
            set_vars["AWS_CONFIG_FILE"] = os.devnull
        set_vars.update(self.settings.client_env)
        if target == "docker":
            # Inside a container the host's files do not exist; Go would proxy 169.254.170.x.
            set_vars.pop("AWS_SHARED_CREDENTIALS_FILE", None)
            set_vars.pop("AWS_CONFIG_FILE", None)
            set_vars["NO_PROXY"] = ",".join(a for a, _ in self.listeners)
        return {"profile": profile, "set": set_vars, "unset": list(SHADOWING_VARIABLES), "notes": notes}

    # ---- serving ----------------------------------------------------------------------

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
                raise PortInUse(
                    f"port {port} on {host} is already in use: another rolebroker may be running "
                    "(`rolebroker status`), or pick another port with --port / ROLEBROKER_PORT"
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
        directory = ensure_private_dir(self.settings.runtime_dir)
        write_private(directory / CONTROL_TOKEN_FILE, self.control_token.encode())
        write_json(directory / DAEMON_FILE, {
            "pid": os.getpid(), "port": self.port, "url": f"http://127.0.0.1:{self.port}",
            "listen": [f"{a}:{p}" for a, p in self.listeners], "version": __version__,
        })

    def remove_runtime_files(self) -> None:
        for name in (CONTROL_TOKEN_FILE, DAEMON_FILE):
            try:
                (self.settings.runtime_dir / name).unlink()
            except FileNotFoundError:
                pass

    def prepare(self, sockets: list[socket.socket]) -> None:
        """Know our own addresses and tell the CLI where we are (before anyone is told to try)."""
        self.listeners = [tuple(sock.getsockname()[:2]) for sock in sockets]  # type: ignore[misc]
        self._hosts = allowed_hosts(self.listeners)
        self.write_runtime_files()

    async def serve(self, sockets: list[socket.socket]) -> None:
        self.prepare(sockets)
        # The protocol bounds heads, deadlines and connections while reading (broker/limits.py).
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
            date_header=False, timeout_graceful_shutdown=5, loop="none",
            **uvicorn_options(self.settings.limits, self.refusals),
        )
        self.server = uvicorn.Server(config)
        self.server.should_exit = self._stop_requested  # a stop() that came before serve()
        background = [asyncio.ensure_future(self.sessions.run()), asyncio.ensure_future(self.watch_config())]
        self._install_reload_signal()
        try:
            await self.server.serve(sockets=sockets)
        finally:
            for task in background:
                task.cancel()
            self.remove_runtime_files()
            self.sessions.close()  # the sessions leave memory with the daemon
            self.refusals.flush()  # the last summary of what was refused, not lost with the loop
            log.info("stopped; sessions wiped from memory")

    def _install_reload_signal(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests), or no signals on this platform

    def stop(self) -> None:
        self._stop_requested = True
        if self.server is not None:
            self.server.should_exit = True
