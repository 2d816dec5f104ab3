"""`rolebroker service install | uninstall | status`: the systemd user units that start the
daemon on the first connection to its port (socket activation).

Standard library only, like the rest of the CLI. The unit texts below are the shipped
files systemd/rolebroker.{socket,service} (a test keeps them identical): they are embedded
because those files are not part of an installed wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

from ..broker.runtime import DEFAULT_PORT, configured_port, write_atomic

SOCKET_UNIT = "rolebroker.socket"
SERVICE_UNIT = "rolebroker.service"
UNITS = (SOCKET_UNIT, SERVICE_UNIT)
# The shipped ExecStart=/ExecReload= program; `install` puts the executable it runs from there.
EXECUTABLE_PLACEHOLDER = "%h/.local/bin/rolebroker"
SYSTEMCTL_TIMEOUT = 60.0

SOCKET_TEMPLATE = """\
# rolebroker: socket activation of the user daemon: its credentials port and its control socket.
# `rolebroker service install` writes this unit to ~/.config/systemd/user/ and enables it;
# the first connection to either starts rolebroker.service, which takes both over (LISTEN_FDS).

[Unit]
Description=rolebroker AWS credential endpoint (socket)

[Socket]
# Loopback only: the endpoint serves credentials to local clients holding a token and must
# never listen on a routable address. To use another port, override this unit
# (`systemctl --user edit rolebroker.socket`): under socket activation --port and
# ROLEBROKER_PORT do not apply, the daemon serves whatever socket systemd passes.
ListenStream=127.0.0.1:9911
# The control channel the CLI uses (login, env, status, ...), private to this user: the
# directory is the daemon's runtime directory ($XDG_RUNTIME_DIR/rolebroker), 0700 like the
# socket's 0600. The daemon also checks each peer's uid. It must stay at this path, where
# the CLI looks for it.
ListenStream=%t/rolebroker/control.sock
SocketMode=0600
DirectoryMode=0700
# Accept=no (the default): one daemon owns the listening socket and all the sessions.
Accept=no

[Install]
WantedBy=sockets.target
"""

SERVICE_TEMPLATE = """\
# rolebroker: the credential broker daemon as a systemd user service, started on demand by
# rolebroker.socket. `rolebroker service install` writes this unit to ~/.config/systemd/user/
# with ExecStart= and ExecReload= running the installed executable, not the path below.

[Unit]
Description=rolebroker local AWS credential broker
# The daemon takes 127.0.0.1:9911 from the socket unit: starting the service by hand must
# bring the socket up first, and stopping the socket stops the daemon with it.
Requires=rolebroker.socket
After=rolebroker.socket

[Service]
# The daemon sends READY=1 once it accepts connections, so dependents start only then.
Type=notify
ExecStart=%h/.local/bin/rolebroker serve
# Re-reads ~/.aws/config and ~/.aws/credentials (as SIGHUP does), keeping the MFA sessions;
# unlike `kill -HUP` it waits for the result, so `systemctl --user reload` reports a broken
# config, and it needs no /bin/kill (absent from minimal images).
ExecReload=%h/.local/bin/rolebroker reload
# A crash has already lost the in-memory sessions; restarting keeps the endpoint answering
# (the socket queues clients meanwhile). A stop (SIGTERM, exit 0) is never restarted.
Restart=on-failure
RestartSec=2
# uvicorn drains open requests for at most 5 s before the sessions are wiped.
TimeoutStopSec=15

# ---- Sandboxing ---------------------------------------------------------------------------
# The daemon reads ~/.aws/config and ~/.aws/credentials, writes $XDG_RUNTIME_DIR/rolebroker
# and ~/.local/state/rolebroker, reaches STS over the network and may run credential_process
# helpers, which inherit all of the below. Only options a user manager applies without user
# namespaces are used, because the file-system ones (ProtectSystem=, ProtectHome=, PrivateTmp=,
# PrivateDevices=, ReadWritePaths=, ProtectKernel*=, ProtectControlGroups=) make a user
# manager set up PrivateUsers= and the unit then fails to start wherever unprivileged user
# namespaces are off or restricted (some distributions' defaults); ProtectHome= would also
# hide ~/.aws. Left out on purpose as well: PrivateNetwork=/IPAddressDeny= (STS is remote;
# IP filtering needs BPF a user manager lacks), MemoryDenyWriteExecute= (breaks JIT runtimes
# such as Node or Java in credential_process helpers), RestrictNamespaces= (browser-based
# SAML/SSO helpers sandbox themselves with namespaces).

# Nothing here needs setuid binaries or file capabilities; blocks gaining privileges via exec.
NoNewPrivileges=yes
# Files the daemon or a helper (credential caches) creates are private to the user.
UMask=0077
# A core dump would write the in-memory MFA sessions to disk (systemd-coredump keeps them).
LimitCORE=0
# The default soft limit (1024 open files) is what another user's idle sockets exhausted: the
# daemon bounds connections below this (broker/limits.py) and raises its soft limit when
# started by hand as well.
LimitNOFILE=8192
# AF_INET/AF_INET6: the endpoint and STS. AF_UNIX: journald, NOTIFY_SOCKET, and helpers that
# talk to agents or the secret service over D-Bus. AF_NETLINK: getaddrinfo() and Go's
# resolver ask the kernel which addresses are configured.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# The syscalls of an ordinary service (no ptrace, mount, module loading, clock setting...);
# anything else fails with EPERM instead of killing the process, so a helper that probes an
# exotic syscall degrades rather than crashes.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native
# Cheap seccomp-only hardening nothing in the daemon or its helpers relies on.
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
"""

UNIT_TEMPLATES: dict[str, str] = {SOCKET_UNIT: SOCKET_TEMPLATE, SERVICE_UNIT: SERVICE_TEMPLATE}


class ServiceError(Exception):
    pass


# ---- where things are ---------------------------------------------------------------------

def unit_dir() -> Path:
    """~/.config/systemd/user, or under $XDG_CONFIG_HOME: where systemd looks for user units."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config_home):  # the XDG spec (and systemd) ignore relative values
        config_home = os.path.join(os.path.expanduser("~"), ".config")
    return Path(config_home) / "systemd" / "user"


def installed_executable() -> Path:
    """The `rolebroker` executable this command runs from, as an absolute path.

    Symlinks are kept, not resolved: pipx links ~/.local/bin/rolebroker into a virtualenv that
    upgrades and reinstalls replace, and the unit should keep following the link.
    """
    candidates: list[str] = []
    if sys.argv and Path(sys.argv[0]).name == "rolebroker":
        candidates.append(sys.argv[0])  # the console script (under `python -m`, argv[0] is cli.py)
    candidates.append(str(Path(sys.executable).parent / "rolebroker"))  # its virtualenv's bin
    on_path = shutil.which("rolebroker")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(os.path.abspath(candidate))
    raise ServiceError("cannot find the `rolebroker` executable to put in the unit: install rolebroker "
                       "(e.g. `pipx install rolebroker`) and run `rolebroker service install` from it")


def unit_quote(path: str) -> str:
    """`path` as one word of an ExecStart= line: systemd expands % specifiers and $VARIABLES
    and splits at whitespace, so a path containing those must be escaped or quoted."""
    escaped = path.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_units(executable: Path, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The unit texts with ExecStart= and ExecReload= running `executable`, listening on `port`."""
    service = UNIT_TEMPLATES[SERVICE_UNIT]
    if f"\nExecStart={EXECUTABLE_PLACEHOLDER} " not in service:  # a template edit must not lose it silently
        raise AssertionError(f"the {SERVICE_UNIT} template must run {EXECUTABLE_PLACEHOLDER} in ExecStart=")
    listen = f"\nListenStream=127.0.0.1:{DEFAULT_PORT}\n"
    if listen not in UNIT_TEMPLATES[SOCKET_UNIT]:
        raise AssertionError(f"the {SOCKET_UNIT} template must listen on 127.0.0.1:{DEFAULT_PORT}")
    return {SOCKET_UNIT: UNIT_TEMPLATES[SOCKET_UNIT].replace(listen, f"\nListenStream=127.0.0.1:{port}\n"),
            SERVICE_UNIT: service.replace(f"={EXECUTABLE_PLACEHOLDER} ", f"={unit_quote(str(executable))} ")}


# ---- systemctl ----------------------------------------------------------------------------

@dataclass
class Systemctl:
    """`systemctl --user`; ROLEBROKER_SYSTEMCTL names another program (tests use a recorder)."""

    program: str

    @classmethod
    def from_environment(cls) -> Systemctl:
        return cls(os.environ.get("ROLEBROKER_SYSTEMCTL") or "systemctl")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.program, "--user", *args], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=SYSTEMCTL_TIMEOUT)
        except FileNotFoundError:
            return subprocess.CompletedProcess([self.program], 127, "", f"{self.program}: command not found")
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([self.program], 124, "",
                                               f"no answer within {SYSTEMCTL_TIMEOUT:.0f} s")

    def unreachable(self) -> str | None:
        """Why the user manager cannot be used (no systemd, no user bus), or None."""
        probe = self.run("show", "--property=Version")
        if probe.returncode == 0:
            return None
        return _first_line(probe.stderr) or f"exit status {probe.returncode}"

    def state(self, verb: str, unit: str) -> str:
        """`is-enabled` / `is-active`: their answer is on stdout whatever the exit status."""
        return _first_line(self.run(verb, unit).stdout) or "unknown"

    def check(self, *args: str) -> None:
        result = self.run(*args)
        if result.returncode != 0:
            raise ServiceError(f"`systemctl --user {' '.join(args)}` failed: "
                               f"{_first_line(result.stderr) or f'exit status {result.returncode}'}")
        print(f"ran: systemctl --user {' '.join(args)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


# ---- the actions --------------------------------------------------------------------------

def write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, so a daemon-reload racing with us never reads half a unit; 0644 because unit
    # files hold no secret and systemd tools expect them readable.
    write_atomic(path, text.encode(), mode=0o644)
    return True


def _no_manager(problem: str, paths: Sequence[Path], commands: Sequence[str]) -> None:
    print(f"rolebroker: systemd's user manager is not reachable ({problem}): there is no systemd "
          "user session here (a container, WSL without systemd, or an SSH login without "
          "`loginctl enable-linger`).", file=sys.stderr)
    if paths:
        print("The unit files:", file=sys.stderr)
        for path in paths:
            print(f"  {path}", file=sys.stderr)
    print("Run these where a user manager is running:", file=sys.stderr)
    for command in commands:
        print(f"  {command}", file=sys.stderr)


def install() -> int:
    executable = installed_executable()
    directory = unit_dir()
    changed: list[str] = []
    port = configured_port()
    for name, text in render_units(executable, port).items():
        path = directory / name
        if write_if_changed(path, text):
            changed.append(name)
            print(f"wrote {path}")
        else:
            print(f"unchanged {path}")
    print(f"ExecStart: {executable} serve; credentials on 127.0.0.1:{port}")
    systemctl = Systemctl.from_environment()
    problem = systemctl.unreachable()
    if problem is not None:
        _no_manager(problem, [directory / name for name in UNITS],
                    ["systemctl --user daemon-reload", f"systemctl --user enable --now {SOCKET_UNIT}"])
        return 1
    if changed:
        systemctl.check("daemon-reload")
    enabled = systemctl.state("is-enabled", SOCKET_UNIT) == "enabled"
    listening = systemctl.state("is-active", SOCKET_UNIT) == "active"
    if enabled and listening and not changed:
        print(f"{SOCKET_UNIT} is already installed, enabled and listening; nothing changed.")
        return 0
    if not (enabled and listening):
        try:
            systemctl.check("enable", "--now", SOCKET_UNIT)
        except ServiceError as exc:
            raise ServiceError(f"{exc}\nIs another `rolebroker serve` holding its port? "
                               f"`systemctl --user status {SOCKET_UNIT}` tells more.") from None
    if changed and systemctl.state("is-active", SERVICE_UNIT) == "active":
        # Restarting would wipe the MFA sessions in memory, so that stays the user's call.
        print(f"note: the running daemon uses the old unit until `systemctl --user restart {SERVICE_UNIT}` "
              "(which wipes its sessions: log in again afterwards)")
    print(f"rolebroker starts on the first connection to its socket ({SOCKET_UNIT}).")
    return 0


def uninstall() -> int:
    directory = unit_dir()
    installed = [directory / name for name in UNITS if os.path.lexists(directory / name)]
    # Enable links (sockets.target.wants/rolebroker.socket): `disable` removes them, and so do
    # we when there is no manager to ask, so no dangling link is left behind.
    links = [link for link in directory.glob("*.wants/rolebroker.*") if link.is_symlink() and link.name in UNITS]
    systemctl = Systemctl.from_environment()
    problem = systemctl.unreachable()
    running = False
    if problem is None:
        enabled = systemctl.state("is-enabled", SOCKET_UNIT) == "enabled"
        socket_active = systemctl.state("is-active", SOCKET_UNIT) == "active"
        service_active = systemctl.state("is-active", SERVICE_UNIT) == "active"
        running = enabled or socket_active or service_active
        if running:
            systemctl.check("disable", "--now", SOCKET_UNIT)
            if service_active:
                systemctl.check("stop", SERVICE_UNIT)
    for path in [*installed, *links]:
        try:
            path.unlink()
            print(f"removed {path}")
        except FileNotFoundError:
            pass  # `disable` already removed the link
    if not installed and not links and not running:
        print(f"rolebroker's units are not installed in {directory}; nothing changed.")
        return 0
    if problem is not None:
        _no_manager(problem, [], [f"systemctl --user stop {SOCKET_UNIT} {SERVICE_UNIT}",
                                  "systemctl --user daemon-reload"])
        return 1
    if installed:
        systemctl.check("daemon-reload")
    return 0


def status() -> int:
    directory = unit_dir()
    for name in UNITS:
        path = directory / name
        print(f"{path}: {'installed' if path.exists() else 'not installed'}")
    systemctl = Systemctl.from_environment()
    problem = systemctl.unreachable()
    if problem is not None:
        print(f"rolebroker: systemd's user manager is not reachable ({problem})", file=sys.stderr)
        return 4  # the LSB status code for "unknown"
    # `is-active` prints one state per unit, in order, whatever its exit status.
    states = systemctl.run("is-active", SOCKET_UNIT, SERVICE_UNIT).stdout.split()
    states += ["unknown"] * (len(UNITS) - len(states))
    for name, state in zip(UNITS, states):
        print(f"{name}: {state}")
    print(f"{SOCKET_UNIT} at login: {systemctl.state('is-enabled', SOCKET_UNIT)}")
    return 0 if states[0] == "active" else 3  # the LSB status code for "not running"


def main(action: str) -> int:
    handlers = {"install": install, "uninstall": uninstall, "status": status}
    try:
        return handlers[action]()
    except ServiceError as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 1
