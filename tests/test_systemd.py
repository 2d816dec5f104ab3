"""systemd integration, for real: the unit files checked by systemd-analyze, socket activation
through systemd-socket-activate, READY=1 / STOPPING=1 on a real notify socket, SIGTERM and
SIGHUP sent to a real `rolebroker serve` process, and `rolebroker service` against a
recording systemctl (a test double for the external program, nothing of rolebroker's own).

Every wait is bounded, and each one waits for an event (a notify datagram, a log line, a
process exit), never for a fixed time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from tests.processes import (
    ROLEBROKER, STARTUP_TIMEOUT, STOP_TIMEOUT, Serve, daemon_env, free_port, needs_rolebroker, rolebroker,
    socket_activated,
)

import pytest

from rolebroker.broker import systemd
from rolebroker.clients import service
from rolebroker.clients.cli import DEFAULT_PORT

REPO = Path(__file__).resolve().parent.parent
def tool(name: str) -> str | None:
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/bin", "/usr/local/bin"]:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


SYSTEMD_ANALYZE = tool("systemd-analyze")
SOCKET_ACTIVATE = tool("systemd-socket-activate")


# ---- helpers ------------------------------------------------------------------------------

class NotifySocket:
    """What systemd listens on for a Type=notify service: a real AF_UNIX datagram socket."""

    def __init__(self, directory: Path) -> None:
        # sun_path holds 107 bytes; pytest's tmp_path can be longer than that.
        self._dir = tempfile.mkdtemp(prefix="rb-notify-", dir="/tmp" if len(str(directory)) > 80 else directory)
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def wait_for(self, state: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while state not in self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {state} within {timeout} s; received {self.received}")
            self.sock.settimeout(remaining)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.received.extend(message.splitlines())

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self._dir)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path)
    yield listener
    listener.close()


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Authorization": token} if token else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def runtime_files(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "run").glob("*") if p.name != "demo")


# ---- the unit files -----------------------------------------------------------------------

def test_shipped_unit_files_are_what_install_writes() -> None:
    # `service install` embeds the units (systemd/ is not in the wheel); they must not drift.
    for name in service.UNITS:
        assert (REPO / "systemd" / name).read_text() == service.UNIT_TEMPLATES[name], name


def test_socket_is_the_default_port_on_loopback_and_service_is_notify() -> None:
    socket_unit = service.UNIT_TEMPLATES[service.SOCKET_UNIT]
    assert f"\nListenStream=127.0.0.1:{DEFAULT_PORT}\n" in socket_unit
    assert "\nWantedBy=sockets.target\n" in socket_unit
    service_unit = service.UNIT_TEMPLATES[service.SERVICE_UNIT]
    for line in ("Type=notify", f"ExecStart={service.EXECUTABLE_PLACEHOLDER} serve", "Restart=on-failure",
                 "NoNewPrivileges=yes", f"ExecReload={service.EXECUTABLE_PLACEHOLDER} reload"):
        assert f"\n{line}\n" in service_unit, line
    # Options that would break the daemon (hide ~/.aws, cut STS off, break JIT helpers) or need
    # user namespaces a user manager may not have.
    settings = [line.split("=")[0] for line in service_unit.splitlines() if line and not line.startswith("#")]
    for option in ("ProtectHome", "ProtectSystem", "PrivateTmp", "PrivateNetwork", "PrivateUsers",
                   "MemoryDenyWriteExecute", "IPAddressDeny", "ReadWritePaths"):
        assert option not in settings, option


def verify(env: dict[str, str], *units: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--user", "--man=no", *map(str, units)], env=env,
                          capture_output=True, text=True, timeout=60, cwd=units[0].parent)


def verify_env(tmp: Path) -> dict[str, str]:
    # A user-mode systemd-analyze wants a runtime directory even with no user manager around.
    runtime = tmp / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp / "home"),
            "XDG_CONFIG_HOME": str(tmp / "home" / ".config")}


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
@needs_rolebroker
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    directory = tmp_path / "units"
    directory.mkdir()
    for name, text in service.render_units(ROLEBROKER).items():
        (directory / name).write_text(text)
    rendered = (directory / service.SERVICE_UNIT).read_text()
    assert f"\nExecStart={ROLEBROKER} serve\n" in rendered
    assert f"\nExecReload={ROLEBROKER} reload\n" in rendered
    assert service.EXECUTABLE_PLACEHOLDER not in rendered
    result = verify(verify_env(tmp_path), directory / service.SOCKET_UNIT, directory / service.SERVICE_UNIT)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
@needs_rolebroker
def test_shipped_units_verify_with_the_placeholder_path(tmp_path: Path) -> None:
    # %h/.local/bin/rolebroker, where `pip install --user` and pipx put the script.
    local_bin = tmp_path / "home" / ".local" / "bin"
    local_bin.mkdir(parents=True)
    (local_bin / "rolebroker").symlink_to(ROLEBROKER)
    result = verify(verify_env(tmp_path), REPO / "systemd" / service.SOCKET_UNIT,
                    REPO / "systemd" / service.SERVICE_UNIT)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
@needs_rolebroker
def test_an_awkward_executable_path_is_quoted_for_systemd(tmp_path: Path) -> None:
    odd = tmp_path / "my tools 100%" / "rolebroker"
    odd.parent.mkdir()
    odd.symlink_to(ROLEBROKER)
    assert service.unit_quote(str(odd)) == f'"{str(odd).replace("%", "%%")}"'
    assert service.unit_quote("/a/$HOME/b") == "/a/$$HOME/b"
    directory = tmp_path / "units"
    directory.mkdir()
    for name, text in service.render_units(odd).items():
        (directory / name).write_text(text)
    result = verify(verify_env(tmp_path), directory / service.SOCKET_UNIT, directory / service.SERVICE_UNIT)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# ---- broker/systemd.py on its own -----------------------------------------------------------

def test_notify_does_nothing_without_a_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_reaches_an_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"rolebroker-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(STARTUP_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        assert listener.recv(4096) == b"READY=1"


def test_notify_to_a_missing_socket_reports_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("READY=1") is False


def test_listen_fds_ignores_another_process_variables_and_unsets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "rolebroker.socket")
    assert systemd.listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)
    assert systemd.listen_fds() == []  # not activated at all


ADOPT_CHILD = """
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
os.dup2(listener.fileno(), 3)  # where systemd puts the first socket
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="rolebroker.socket")
from rolebroker.broker.systemd import listen_fds
sockets = listen_fds()
print(json.dumps({
    "fds": [s.fileno() for s in sockets], "port": sockets[0].getsockname()[1],
    "expected_port": listener.getsockname()[1], "type": int(sockets[0].type),
    "inheritable": os.get_inheritable(3), "left": [k for k in os.environ if k.startswith("LISTEN_")],
}))
"""


def test_listen_fds_adopts_the_socket_at_fd_3_and_keeps_it_from_children() -> None:
    result = subprocess.run([sys.executable, "-c", ADOPT_CHILD, str(REPO)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["fds"] == [3]
    assert seen["port"] == seen["expected_port"]
    assert seen["type"] == socket.SOCK_STREAM
    assert seen["inheritable"] is False  # credential_process helpers must not hold the port
    assert seen["left"] == []


# ---- the daemon under systemd's protocols ---------------------------------------------------

@needs_rolebroker
@pytest.mark.skipif(SOCKET_ACTIVATE is None,
                    reason="systemd-socket-activate is not installed (apt-get install systemd)")
def test_socket_activation_serves_credentials(tmp_path: Path, started: list[Serve]) -> None:
    assert SOCKET_ACTIVATE is not None
    port = free_port()
    daemon, env = socket_activated(SOCKET_ACTIVATE, tmp_path, [f"127.0.0.1:{port}"], "--demo")
    started.append(daemon)
    assert runtime_files(tmp_path) == []  # nothing runs yet: the first connection starts it

    # The first request is queued on systemd's socket and answered by the daemon it started.
    status, body = http_get(port, "/v1/credentials/dev")
    assert (status, body["code"]) == (401, "MissingToken")
    info = json.loads((tmp_path / "run" / "daemon.json").read_text())
    assert (info["port"], info["pid"]) == (port, daemon.proc.pid)  # the socket, not a bind of its own
    daemon.log.wait_for(f"on http://127.0.0.1:{port}")

    login = rolebroker(env, "login", "dev", "--code", "123456")
    assert login.returncode == 0, login.stderr
    minted = rolebroker(env, "token", "create", "--profile", "dev")
    assert minted.returncode == 0, minted.stderr
    status, body = http_get(port, "/v1/credentials/dev", token=minted.stdout.strip())
    assert status == 200, body
    assert body["AccessKeyId"].startswith("ASIA") and body["Token"] and body["Expiration"]

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert runtime_files(tmp_path) == ["daemon.lock"]


@needs_rolebroker
def test_ready_is_sent_once_the_daemon_accepts(tmp_path: Path, notify_socket: NotifySocket,
                                              started: list[Serve]) -> None:
    env = daemon_env(tmp_path, NOTIFY_SOCKET=notify_socket.path)
    daemon = Serve([str(ROLEBROKER), "serve", "--demo", "--port", "0"], env)
    started.append(daemon)
    notify_socket.wait_for("READY=1")
    # READY=1 promises a working endpoint: the runtime files are there and a request is answered.
    port = json.loads((tmp_path / "run" / "daemon.json").read_text())["port"]
    status, body = http_get(port, "/v1/credentials/dev")
    assert (status, body["code"]) == (401, "MissingToken")
    daemon.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1", timeout=STOP_TIMEOUT)
    assert daemon.wait() == 0
    assert notify_socket.received == ["READY=1", "STOPPING=1"]


@needs_rolebroker
def test_sigterm_stops_promptly_and_removes_the_runtime_files(tmp_path: Path, notify_socket: NotifySocket,
                                                              started: list[Serve]) -> None:
    env = daemon_env(tmp_path, NOTIFY_SOCKET=notify_socket.path)
    daemon = Serve([str(ROLEBROKER), "serve", "--demo", "--port", "0"], env)
    started.append(daemon)
    notify_socket.wait_for("READY=1")
    assert runtime_files(tmp_path) == ["control.sock", "daemon.json", "daemon.lock"]
    assert rolebroker(env, "login", "dev", "--code", "123456").returncode == 0  # a session to wipe

    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=STOP_TIMEOUT) == 0  # a clean stop: Restart=on-failure leaves it be
    assert time.monotonic() - sent < 10  # well inside TimeoutStopSec=15
    assert runtime_files(tmp_path) == ["daemon.lock"]  # unlocked and empty: the next daemon's to take
    assert (tmp_path / "run" / "daemon.lock").read_text() == str(daemon.proc.pid)
    daemon.log.wait_for("sessions wiped from memory", timeout=STOP_TIMEOUT)
    assert rolebroker(env, "status").returncode == 3  # the CLI sees it stopped, not a stale file


CONFIG_ONE = """\
[profile one]
role_arn = arn:aws:iam::222222222222:role/one
source_profile = base
"""
CONFIG_TWO = CONFIG_ONE + """
[profile two]
role_arn = arn:aws:iam::333333333333:role/two
source_profile = base
"""
CREDENTIALS = """\
[base]
aws_access_key_id = AKIATESTONLY00000001
aws_secret_access_key = test-only-secret-never-sent-anywhere
"""


def profile_names(env: dict[str, str]) -> list[str]:
    result = rolebroker(env, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(row["profile"] for row in json.loads(result.stdout)["profiles"])


@needs_rolebroker
def test_sighup_reloads_the_config(tmp_path: Path, notify_socket: NotifySocket, started: list[Serve]) -> None:
    env = daemon_env(tmp_path, NOTIFY_SOCKET=notify_socket.path)
    config = Path(env["AWS_CONFIG_FILE"])
    config.write_text(CONFIG_ONE)
    Path(env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(CREDENTIALS)
    daemon = Serve([str(ROLEBROKER), "serve", "--port", "0"], env)
    started.append(daemon)
    notify_socket.wait_for("READY=1")  # the SIGHUP handler is installed before READY=1
    assert profile_names(env) == ["one"]

    # Swap the file in with its old mtime, so the daemon's file watcher sees no change and only
    # SIGHUP can make it re-read the config.
    before = config.stat()
    replacement = tmp_path / "aws-config.new"
    replacement.write_text(CONFIG_TWO)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, config)
    daemon.signal(signal.SIGHUP)
    daemon.log.wait_for("config reloaded")
    assert profile_names(env) == ["one", "two"]
    assert daemon.proc.poll() is None  # SIGHUP reloads; it does not stop the daemon

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


# ---- rolebroker service, with a recording systemctl -----------------------------------------

FAKE_SYSTEMCTL = """\
#!{python}
# A stand-in for `systemctl --user`: records its arguments, keeps unit states in a JSON file,
# and, like the real one, needs the unit file to enable it and links it into the .wants dir.
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
here = Path(os.environ["FAKE_SYSTEMCTL_DIR"])
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SYSTEMCTL_NO_BUS"):
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit(1)
assert args[0] == "--user", args
verb, units = args[1], [a for a in args[2:] if not a.startswith("-")]
state_file = here / "state.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {{"enabled": [], "active": []}}
unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
code = 0
if verb == "show":
    print("Version=252")
elif verb == "is-enabled":
    enabled = units[0] in state["enabled"]
    print("enabled" if enabled else ("disabled" if (unit_dir / units[0]).exists() else "not-found"))
    code = 0 if enabled else 1
elif verb == "is-active":
    for unit in units:
        print("active" if unit in state["active"] else "inactive")
    code = 0 if all(unit in state["active"] for unit in units) else 3
elif verb == "enable":
    for unit in units:
        if not (unit_dir / unit).exists():
            print(f"Failed to enable unit: Unit file {{unit}} does not exist.", file=sys.stderr)
            sys.exit(1)
        (unit_dir / "sockets.target.wants").mkdir(exist_ok=True)
        (unit_dir / "sockets.target.wants" / unit).symlink_to(unit_dir / unit)
        state["enabled"].append(unit)
        if "--now" in args:
            state["active"].append(unit)
elif verb == "disable":
    for unit in units:
        (unit_dir / "sockets.target.wants" / unit).unlink(missing_ok=True)
        state["enabled"] = [u for u in state["enabled"] if u != unit]
        if "--now" in args:
            state["active"] = [u for u in state["active"] if u != unit]
elif verb == "stop":
    state["active"] = [u for u in state["active"] if u not in units]
elif verb != "daemon-reload":
    print(f"fake systemctl: unexpected {{args}}", file=sys.stderr)
    code = 2
state_file.write_text(json.dumps(state))
sys.exit(code)
"""


class FakeSystemctl:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "fake-systemctl"
        self.dir.mkdir()
        self.program = self.dir / "systemctl"
        self.program.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
        self.program.chmod(0o755)

    def set_active(self, unit: str) -> None:
        state_file = self.dir / "state.json"
        state = json.loads(state_file.read_text())
        state["active"].append(unit)
        state_file.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        """The commands since the last call, without the leading --user every one has."""
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        log.unlink()
        assert all(call[0] == "--user" for call in calls), calls
        return [call[1:] for call in calls]


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> FakeSystemctl:
    return FakeSystemctl(tmp_path)


def service_env(tmp: Path, fake: FakeSystemctl, **extra: str) -> dict[str, str]:
    env = daemon_env(tmp, HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "config"),
                     ROLEBROKER_SYSTEMCTL=str(fake.program), FAKE_SYSTEMCTL_DIR=str(fake.dir))
    env.update(extra)
    return env


PROBE = ["show", "--property=Version"]


@needs_rolebroker
def test_service_install_status_uninstall(tmp_path: Path, fake_systemctl: FakeSystemctl) -> None:
    env = service_env(tmp_path, fake_systemctl)
    unit_dir = tmp_path / "config" / "systemd" / "user"
    socket_path, service_path = unit_dir / service.SOCKET_UNIT, unit_dir / service.SERVICE_UNIT

    first = rolebroker(env, "service", "install")
    assert first.returncode == 0, first.stderr
    assert socket_path.read_text() == service.UNIT_TEMPLATES[service.SOCKET_UNIT]
    written = service_path.read_text()
    assert f"\nExecStart={ROLEBROKER} serve\n" in written
    assert f"\nExecReload={ROLEBROKER} reload\n" in written
    assert written == service.UNIT_TEMPLATES[service.SERVICE_UNIT].replace(
        service.EXECUTABLE_PLACEHOLDER, str(ROLEBROKER))
    assert fake_systemctl.calls() == [
        PROBE, ["daemon-reload"], ["is-enabled", "rolebroker.socket"], ["is-active", "rolebroker.socket"],
        ["enable", "--now", "rolebroker.socket"], ["is-active", "rolebroker.service"],
    ]
    assert f"wrote {socket_path}" in first.stdout and f"wrote {service_path}" in first.stdout
    assert "ran: systemctl --user enable --now rolebroker.socket" in first.stdout
    assert (unit_dir / "sockets.target.wants" / service.SOCKET_UNIT).is_symlink()

    stamps = [path.stat().st_mtime_ns for path in (socket_path, service_path)]
    again = rolebroker(env, "service", "install")
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert fake_systemctl.calls() == [PROBE, ["is-enabled", "rolebroker.socket"],
                                      ["is-active", "rolebroker.socket"]]
    assert [path.stat().st_mtime_ns for path in (socket_path, service_path)] == stamps

    status = rolebroker(env, "service", "status")
    assert status.returncode == 0, status.stderr
    assert "rolebroker.socket: active" in status.stdout
    assert "rolebroker.service: inactive" in status.stdout  # nothing connected yet
    assert fake_systemctl.calls() == [PROBE, ["is-active", "rolebroker.socket", "rolebroker.service"],
                                      ["is-enabled", "rolebroker.socket"]]

    fake_systemctl.set_active("rolebroker.service")  # a client connected: systemd started the daemon
    removed = rolebroker(env, "service", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert fake_systemctl.calls() == [
        PROBE, ["is-enabled", "rolebroker.socket"], ["is-active", "rolebroker.socket"],
        ["is-active", "rolebroker.service"], ["disable", "--now", "rolebroker.socket"],
        ["stop", "rolebroker.service"], ["daemon-reload"],
    ]
    assert not socket_path.exists() and not service_path.exists()
    assert not os.path.lexists(unit_dir / "sockets.target.wants" / service.SOCKET_UNIT)

    twice = rolebroker(env, "service", "uninstall")
    assert twice.returncode == 0 and "nothing changed" in twice.stdout
    stopped = rolebroker(env, "service", "status")
    assert stopped.returncode == 3 and "rolebroker.socket: inactive" in stopped.stdout


@needs_rolebroker
def test_service_install_rewrites_a_unit_pointing_elsewhere(tmp_path: Path, fake_systemctl: FakeSystemctl) -> None:
    env = service_env(tmp_path, fake_systemctl)
    assert rolebroker(env, "service", "install").returncode == 0
    service_path = tmp_path / "config" / "systemd" / "user" / service.SERVICE_UNIT
    service_path.write_text(service_path.read_text().replace(str(ROLEBROKER), "/old/venv/bin/rolebroker"))
    fake_systemctl.calls()
    result = rolebroker(env, "service", "install")
    assert result.returncode == 0, result.stderr
    assert f"ExecStart={ROLEBROKER} serve" in service_path.read_text()
    assert f"wrote {service_path}" in result.stdout
    # Reloaded, but the socket already listens: not enabled a second time.
    assert fake_systemctl.calls() == [PROBE, ["daemon-reload"], ["is-enabled", "rolebroker.socket"],
                                      ["is-active", "rolebroker.socket"], ["is-active", "rolebroker.service"]]


@needs_rolebroker
def test_service_install_without_a_user_manager(tmp_path: Path, fake_systemctl: FakeSystemctl) -> None:
    # No XDG_CONFIG_HOME: the units go to ~/.config/systemd/user.
    env = service_env(tmp_path, fake_systemctl, FAKE_SYSTEMCTL_NO_BUS="1")
    del env["XDG_CONFIG_HOME"]
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    result = rolebroker(env, "service", "install")
    assert result.returncode == 1
    assert (unit_dir / service.SOCKET_UNIT).exists() and (unit_dir / service.SERVICE_UNIT).exists()
    assert fake_systemctl.calls() == [PROBE]  # it asked, and changed nothing in systemd
    assert "user manager is not reachable (Failed to connect to bus: No medium found)" in result.stderr
    for expected in (str(unit_dir / service.SOCKET_UNIT), str(unit_dir / service.SERVICE_UNIT),
                     "systemctl --user daemon-reload", "systemctl --user enable --now rolebroker.socket"):
        assert expected in result.stderr, expected

    status = rolebroker(env, "service", "status")
    assert status.returncode == 4 and "not reachable" in status.stderr


@needs_rolebroker
def test_service_install_without_systemctl(tmp_path: Path, fake_systemctl: FakeSystemctl) -> None:
    env = service_env(tmp_path, fake_systemctl, ROLEBROKER_SYSTEMCTL=str(tmp_path / "no-such-systemctl"))
    result = rolebroker(env, "service", "install")
    assert result.returncode == 1
    assert "no-such-systemctl: command not found" in result.stderr
    assert "systemctl --user enable --now rolebroker.socket" in result.stderr

