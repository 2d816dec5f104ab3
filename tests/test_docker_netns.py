"""The docker path proven without docker.

A Docker bridge is, for the broker, nothing but another network namespace whose packets
reach the host through a veth pair. So these tests build that out of real namespaces and the
real `ip`: a "host" namespace runs a real `rolebroker serve --listen 169.254.170.2:P`, a
"container" namespace runs botocore's own ContainerProvider against it. Nothing of rolebroker
or botocore is mocked. `rolebroker docker setup | teardown` runs against the real `ip` inside
throwaway namespaces too, so the host's own links are never touched.

Needs root and `ip netns` (iproute2); skipped with the reason otherwise. Every wait is bounded
and waits for an event (a log line, a file, a process exit), and every namespace and process
a test creates is removed in a finally block.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from tests.harness import Lines

import pytest

from rolebroker.clients import docker_link

REPO = Path(__file__).resolve().parent.parent
# The console script of the environment running the tests: what `pip install` puts on PATH.
ROLEBROKER = Path(sys.executable).parent / "rolebroker"
IP = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"]))
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
UNIT = REPO / "systemd" / "rolebroker-docker-link.service"
COMPOSE = REPO / "clients" / "docker-compose.example.yml"

LINK_LOCAL = "169.254.170.2"
CONTAINER_ADDRESS = "169.254.170.3"
PORT = 9911  # each test's namespaces are fresh: the default port is free in them
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60.0

needs_rolebroker = pytest.mark.skipif(not ROLEBROKER.exists(),
                                      reason=f"no rolebroker console script at {ROLEBROKER}: pip install -e .")


# ---- namespaces -----------------------------------------------------------------------------

def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    result = subprocess.run([IP, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=COMMAND_TIMEOUT)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def unique(prefix: str) -> str:
    # Short enough for a link name (15 bytes), unique across runs and parallel workers.
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Namespaces:
    """Network namespaces (and what runs in them) that a test creates; all removed at close()."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.processes: list[Daemon] = []

    def add(self, prefix: str) -> str:
        name = unique(f"rb{prefix}-")
        result = ip("netns", "add", name, check=False)
        if result.returncode != 0:
            pytest.skip(f"`ip netns add` fails here ({result.stderr.strip()}): no network namespaces to test in")
        self.names.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def close(self) -> None:
        try:
            for process in self.processes:
                process.stop()
        finally:
            for name in self.names:
                # Deleting the namespace deletes its links (the veth pair goes with either end).
                ip("netns", "del", name, check=False)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (run the tests as root, as CI does)")
    if IP is None:
        pytest.skip("the `ip` program is missing (apt-get install iproute2)")
    created = Namespaces()
    try:
        yield created
    finally:
        created.close()


def veth(host_ns: str, host_cidr: str, container_ns: str, container_cidr: str) -> None:
    """Join two namespaces as a Docker bridge joins a container to the host."""
    host_end, container_end = unique("rbh"), unique("rbc")
    ip("link", "add", host_end, "netns", host_ns, "type", "veth", "peer", "name", container_end,
       "netns", container_ns)
    for ns, end, cidr in ((host_ns, host_end, host_cidr), (container_ns, container_end, container_cidr)):
        ip("-n", ns, "addr", "add", cidr, "dev", end)
        ip("-n", ns, "link", "set", end, "up")


def dummy_supported(spaces: Namespaces) -> bool:
    """Whether this kernel can make dummy links (some VM kernels have no CONFIG_DUMMY)."""
    probe = spaces.add("probe")
    return ip("-n", probe, "link", "add", "probe0", "type", "dummy", check=False).returncode == 0


def addresses(ns: str, device: str) -> list[dict[str, Any]]:
    """The IPv4 addresses on a link: [{"local": ..., "prefixlen": ..., "label": ...}]."""
    result = ip("-n", ns, "-j", "-4", "addr", "show", "dev", device, check=False)
    if result.returncode != 0:
        return []
    return [info for link in json.loads(result.stdout or "[]") for info in link.get("addr_info", [])]


def holders(ns: str) -> list[str]:
    """Every link in the namespace that holds the link-local address."""
    links = json.loads(ip("-n", ns, "-j", "-4", "addr", "show").stdout or "[]")
    return [link["ifname"] for link in links
            if any(info.get("local") == LINK_LOCAL for info in link.get("addr_info", []))]


# ---- processes ------------------------------------------------------------------------------

def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of every command: private runtime/state dirs, empty AWS files, no proxy,
    and nothing AWS- or systemd-ish inherited from whatever runs the tests."""
    dropped = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ROLEBROKER_", "LISTEN_")) and k.upper() not in dropped}
    env.update(ROLEBROKER_RUNTIME_DIR=str(tmp / "run"), ROLEBROKER_STATE_DIR=str(tmp / "state"),
               AWS_CONFIG_FILE=str(tmp / "aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp / "aws-credentials"))
    env.update(extra)
    return env


def in_ns(ns: str, argv: list[str], env: dict[str, str], stdin: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    return subprocess.run([IP, "netns", "exec", ns, *argv], env=env, capture_output=True, text=True,
                          input=stdin if stdin is not None else "", timeout=COMMAND_TIMEOUT)


def rolebroker(ns: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return in_ns(ns, [str(ROLEBROKER), *args], env)


class Daemon:
    """`ip netns exec NS rolebroker serve ...` (or a socket activator that execs it): ip execs
    into its command, so the pid is the daemon's and SIGTERM reaches it."""

    def __init__(self, ns: str, env: dict[str, str], *args: str, argv: list[str] | None = None) -> None:
        assert IP is not None
        self.runtime = Path(env["ROLEBROKER_RUNTIME_DIR"])
        command = argv if argv is not None else [str(ROLEBROKER), "serve", *args]
        self.proc = subprocess.Popen([IP, "netns", "exec", ns, *command], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log = Lines(self.proc.stderr)

    def wait_ready(self) -> None:
        self.log.wait_for("rolebroker demo")
        # The banner is printed just before the server loop writes daemon.json, which the CLI
        # needs: wait for the file too (bounded, a few milliseconds in practice).
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (self.runtime / "daemon.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no daemon.json (exit {self.proc.poll()}); log:\n{''.join(self.log.seen)}")
            time.sleep(0.01)

    def stop(self) -> int | None:
        """SIGTERM, as systemd stops it; killed if that does not work in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.log.join(STOP_TIMEOUT)
        return self.proc.returncode


# ---- what the "container" runs ----------------------------------------------------------------

# botocore's own container provider, fed the variables `rolebroker env --format docker` printed
# (on stdin, so the token never shows in a process listing).
BOTOCORE_CLIENT = """
import json, sys
from botocore.credentials import ContainerProvider
environ = json.load(sys.stdin)
try:
    frozen = ContainerProvider(environ=environ).load().get_frozen_credentials()
except Exception as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"ok": True, "access_key": frozen.access_key,
                      "secret": bool(frozen.secret_key), "token": bool(frozen.token)}))
"""

# One plain GET, to see the HTTP status botocore hides behind its retries; no proxy.
HTTP_CLIENT = """
import json, sys, urllib.error, urllib.request
asked = json.load(sys.stdin)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
headers = {"Authorization": asked["token"]} if asked.get("token") else {}
try:
    with opener.open(urllib.request.Request(asked["url"], headers=headers), timeout=10) as response:
        print(json.dumps({"status": response.status, "body": json.loads(response.read())}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": json.loads(exc.read())}))
except urllib.error.URLError as exc:
    reason = exc.reason
    print(json.dumps({"status": None, "error": type(reason).__name__, "message": str(reason)}))
"""


def botocore_in(ns: str, env: dict[str, str], environ: dict[str, str]) -> dict[str, Any]:
    result = in_ns(ns, [sys.executable, "-c", BOTOCORE_CLIENT], env, stdin=json.dumps(environ))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def http_get_in(ns: str, env: dict[str, str], url: str, token: str | None = None) -> dict[str, Any]:
    result = in_ns(ns, [sys.executable, "-c", HTTP_CLIENT], env, stdin=json.dumps({"url": url, "token": token}))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def parse_docker_flags(text: str) -> dict[str, str]:
    """`-e NAME=value ... --env-file PATH` as `docker run` reads it (shell words, then
    NAME=value; the env file holds the token, one NAME=value per line)."""
    words = shlex.split(text)
    assert words and len(words) % 2 == 0 and set(words[::2]) <= {"-e", "--env-file"}, text
    values: dict[str, str] = {}
    for flag, word in zip(words[::2], words[1::2]):
        if flag == "--env-file":
            values.update(line.split("=", 1) for line in Path(word).read_text().splitlines() if line)
        else:
            name, value = word.split("=", 1)
            values[name] = value
    return values


# ---- the bridge: host and container namespaces joined by a veth pair ------------------------

@dataclass
class Bridge:
    host: str
    container: str
    env: dict[str, str]       # for commands in either namespace
    client_env: dict[str, str]  # for what runs "in the container": nothing of the host's
    docker_env: dict[str, str]  # parsed from `rolebroker env dev --format docker`
    env_stderr: str
    daemon: Daemon
    runtime: Path


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    if not ROLEBROKER.exists():
        pytest.skip(f"no rolebroker console script at {ROLEBROKER}: pip install -e .")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (run the tests as root, as CI does)")
    if IP is None:
        pytest.skip("the `ip` program is missing (apt-get install iproute2)")
    tmp = tmp_path_factory.mktemp("bridge")
    spaces = Namespaces()
    try:
        host, container = spaces.add("host"), spaces.add("ctr")
        veth(host, f"{LINK_LOCAL}/24", container, f"{CONTAINER_ADDRESS}/24")
        env = isolated_env(tmp)
        daemon = Daemon(host, env, "--demo", "--port", str(PORT), "--listen", f"{LINK_LOCAL}:{PORT}")
        spaces.processes.append(daemon)
        daemon.wait_ready()
        login = rolebroker(host, env, "login", "dev", "--code", "123456")
        assert login.returncode == 0, login.stderr
        printed = rolebroker(host, env, "env", "dev", "--format", "docker")
        assert printed.returncode == 0, printed.stderr
        client_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
        yield Bridge(host, container, env, client_env, parse_docker_flags(printed.stdout), printed.stderr,
                     daemon, tmp / "run")
        # A clean SIGTERM stop, and the runtime files (the control token) leave with the daemon.
        assert daemon.stop() == 0, "".join(daemon.log.seen)
        assert not (tmp / "run" / "control.sock").exists()
    finally:
        spaces.close()


def credentials_url(profile: str) -> str:
    return f"http://{LINK_LOCAL}:{PORT}/v1/credentials/{profile}"


@needs_rolebroker
def test_docker_env_points_at_the_link_local_listener(bridge: Bridge) -> None:
    env = bridge.docker_env
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credentials_url("dev")
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert LINK_LOCAL in env["NO_PROXY"].split(",")  # Go would send it to an HTTP_PROXY otherwise
    assert env["AWS_REGION"]
    # The host's files do not exist inside a container: nothing may point at them.
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env and "AWS_CONFIG_FILE" not in env
    assert "no link-local listener" not in bridge.env_stderr
    listing = rolebroker(bridge.host, bridge.env, "token", "list")
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:2] and line.split()[0].startswith("docker-dev-") and line.split()[1] == "dev"
               for line in listing.stdout.splitlines()), listing.stdout
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] not in listing.stdout  # names, never values


@needs_rolebroker
def test_botocore_in_the_container_gets_role_credentials(bridge: Bridge) -> None:
    seen = botocore_in(bridge.container, bridge.client_env, bridge.docker_env)
    assert seen["ok"], seen
    assert seen["access_key"].startswith("ASIA"), seen  # temporary STS credentials
    assert seen["secret"] and seen["token"]


@needs_rolebroker
def test_without_a_token_the_container_gets_401_and_botocore_raises(bridge: Bridge) -> None:
    environ = {k: v for k, v in bridge.docker_env.items() if k != "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
    seen = botocore_in(bridge.container, bridge.client_env, environ)
    assert not seen["ok"] and seen["error"] == "CredentialRetrievalError", seen
    answer = http_get_in(bridge.container, bridge.client_env, credentials_url("dev"))
    assert (answer["status"], answer["body"]["code"]) == (401, "MissingToken"), answer


@needs_rolebroker
def test_a_token_for_another_profile_gets_403(bridge: Bridge) -> None:
    minted = rolebroker(bridge.host, bridge.env, "token", "create", "--profile", "prod")
    assert minted.returncode == 0, minted.stderr
    prod_token = minted.stdout.strip()
    # The token is good (prod is served from the container) ...
    answer = http_get_in(bridge.container, bridge.client_env, credentials_url("prod"), prod_token)
    assert answer["status"] == 200 and answer["body"]["AccessKeyId"].startswith("ASIA"), answer
    # ... but not for dev.
    answer = http_get_in(bridge.container, bridge.client_env, credentials_url("dev"), prod_token)
    assert (answer["status"], answer["body"]["code"]) == (403, "ProfileNotAllowed"), answer
    seen = botocore_in(bridge.container, bridge.client_env,
                       {**bridge.docker_env, "AWS_CONTAINER_AUTHORIZATION_TOKEN": prod_token})
    assert not seen["ok"] and "ProfileNotAllowed" in seen["message"], seen


@needs_rolebroker
def test_the_control_api_is_refused_on_the_link_local_listener(bridge: Bridge) -> None:
    # The CLI reaches the control API on the Unix socket (this works), and TCP serves credentials only.
    assert rolebroker(bridge.host, bridge.env, "status").returncode == 0
    for namespace, address in ((bridge.host, "127.0.0.1"), (bridge.container, LINK_LOCAL)):
        for path in ("/v1/status", "/v1/tokens", "/openapi.json"):
            answer = http_get_in(namespace, bridge.client_env, f"http://{address}:{PORT}{path}")
            assert (answer["status"], answer["body"]["code"]) == (403, "ControlChannelOnly"), answer


@needs_rolebroker
def test_the_hosts_loopback_listener_is_not_reachable_from_the_container(bridge: Bridge) -> None:
    token = bridge.docker_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    here = http_get_in(bridge.host, bridge.client_env, f"http://127.0.0.1:{PORT}/v1/credentials/dev", token)
    assert here["status"] == 200, here
    answer = http_get_in(bridge.container, bridge.client_env, f"http://127.0.0.1:{PORT}/v1/credentials/dev",
                         token)
    assert answer["status"] is None, answer
    assert answer["error"] in ("ConnectionRefusedError", "OSError"), answer  # refused or unreachable


@needs_rolebroker
def test_dotenv_for_compose_points_at_the_link_local_listener(bridge: Bridge) -> None:
    printed = rolebroker(bridge.host, bridge.env, "env", "dev", "--format", "dotenv", "--target", "docker")
    assert printed.returncode == 0, printed.stderr
    values = dict(line.split("=", 1) for line in printed.stdout.splitlines() if line)
    assert values["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credentials_url("dev")
    assert LINK_LOCAL in values.get("NO_PROXY", "").split(",")


# ---- `rolebroker docker setup` for real: through the container's default gateway -----------

@needs_rolebroker
def test_setup_address_is_reached_through_the_default_gateway(namespaces: Namespaces, tmp_path: Path) -> None:
    # As on a real host: the host end of the veth is the bridge (172.30.0.1), the container has
    # only a default route to it, and 169.254.170.2 exists only because `docker setup` made it.
    host, container = namespaces.add("host"), namespaces.add("ctr")
    veth(host, "172.30.0.1/24", container, "172.30.0.2/24")
    ip("-n", container, "route", "add", "default", "via", "172.30.0.1")
    env = isolated_env(tmp_path)
    assert holders(host) == []

    # Before setup the daemon cannot listen there, and says what to do.
    refused = in_ns(host, [str(ROLEBROKER), "serve", "--port", str(PORT), "--listen", f"{LINK_LOCAL}:{PORT}"], env)
    assert refused.returncode == 1
    assert "sudo rolebroker docker setup" in refused.stderr, refused.stderr

    setup = rolebroker(host, env, "docker", "setup")
    assert setup.returncode == 0, setup.stderr
    assert len(holders(host)) == 1, setup.stdout
    daemon = Daemon(host, env, "--demo", "--port", str(PORT), "--listen", f"{LINK_LOCAL}:{PORT}")
    namespaces.processes.append(daemon)
    daemon.wait_ready()
    status = rolebroker(host, env, "docker", "status")
    assert status.returncode == 0 and f"listens on 127.0.0.1:{PORT}, {LINK_LOCAL}:{PORT}" in status.stdout, \
        status.stdout
    assert rolebroker(host, env, "login", "dev", "--code", "123456").returncode == 0
    printed = rolebroker(host, env, "env", "dev", "--format", "docker")
    assert printed.returncode == 0, printed.stderr
    docker_env = parse_docker_flags(printed.stdout)
    if "nft: tcp" in setup.stdout:
        # setup also redirected the ECS port to the daemon: the container gets the ECS form.
        assert docker_env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"].startswith("/v1/credentials/dev/rbt_")
    else:
        assert docker_env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credentials_url("dev")
    seen = botocore_in(container, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, docker_env)
    assert seen["ok"] and seen["access_key"].startswith("ASIA"), seen

    assert daemon.stop() == 0
    teardown = rolebroker(host, env, "docker", "teardown")
    assert teardown.returncode == 0, teardown.stderr
    assert holders(host) == []
    gone = http_get_in(container, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, credentials_url("dev"))
    assert gone["status"] is None, gone  # nothing answers there any more


SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@needs_rolebroker
@pytest.mark.skipif(SOCKET_ACTIVATE is None,
                    reason="systemd-socket-activate is not installed (apt-get install systemd)")
def test_a_second_listen_stream_lets_a_container_start_the_daemon(namespaces: Namespaces, tmp_path: Path) -> None:
    # What `docker setup` advises for the user units: rolebroker.socket with a second
    # ListenStream= on the link-local address. The container's request is the first one.
    assert SOCKET_ACTIVATE is not None
    host, container = namespaces.add("host"), namespaces.add("ctr")
    veth(host, f"{LINK_LOCAL}/24", container, f"{CONTAINER_ADDRESS}/24")
    env = isolated_env(tmp_path)
    passed = [arg for name in ("ROLEBROKER_RUNTIME_DIR", "ROLEBROKER_STATE_DIR", "AWS_CONFIG_FILE",
                               "AWS_SHARED_CREDENTIALS_FILE") for arg in ("-E", name)]
    daemon = Daemon(host, env, argv=[SOCKET_ACTIVATE, "-l", f"127.0.0.1:{PORT}", "-l", f"{LINK_LOCAL}:{PORT}",
                                     *passed, str(ROLEBROKER), "serve", "--demo"])
    namespaces.processes.append(daemon)
    daemon.log.wait_for(f"Listening on {LINK_LOCAL}:{PORT}")
    assert not (tmp_path / "run" / "daemon.json").exists()  # nothing runs yet

    answer = http_get_in(container, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, credentials_url("dev"))
    assert (answer["status"], answer["body"]["code"]) == (401, "MissingToken"), answer
    info = json.loads((tmp_path / "run" / "daemon.json").read_text())
    assert info["listen"] == [f"127.0.0.1:{PORT}", f"{LINK_LOCAL}:{PORT}"]
    # The daemon knows it has a link-local listener, though no --listen was given.
    assert rolebroker(host, env, "login", "dev", "--code", "123456").returncode == 0
    printed = rolebroker(host, env, "env", "dev", "--format", "docker")
    assert parse_docker_flags(printed.stdout)["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credentials_url("dev")
    assert daemon.stop() == 0


# ---- `rolebroker docker setup | teardown | status` against the real ip ---------------------

def docker_cmd(ns: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return rolebroker(ns, env, "docker", *args)


@needs_rolebroker
def test_setup_is_idempotent_and_teardown_reverses_it(namespaces: Namespaces, tmp_path: Path) -> None:
    with_dummy = dummy_supported(namespaces)
    ns = namespaces.add("link")
    env = isolated_env(tmp_path)
    assert docker_cmd(ns, env, "status").returncode == 3  # not set up

    first = docker_cmd(ns, env, "setup")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Done:") and "--listen 169.254.170.2:9911" in first.stdout, first.stdout
    assert "NO_PROXY" in first.stdout  # the Go note
    if with_dummy:
        assert [(a["local"], a["prefixlen"]) for a in addresses(ns, "rolebroker0")] == [(LINK_LOCAL, 32)]
        link = json.loads(ip("-n", ns, "-d", "-j", "link", "show", "dev", "rolebroker0").stdout)[0]
        assert link["linkinfo"]["info_kind"] == "dummy" and "UP" in link["flags"]
    else:
        # This kernel has no dummy driver: the address went on lo under rolebroker's label.
        assert "no dummy link driver" in first.stderr
        assert [(a["local"], a["prefixlen"], a["label"]) for a in addresses(ns, "lo")
                if a["local"] == LINK_LOCAL] == [(LINK_LOCAL, 32, "lo:rolebroker0")]
    before = ip("-n", ns, "-j", "addr", "show").stdout

    again = docker_cmd(ns, env, "setup")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Already set up"), again.stdout
    assert ip("-n", ns, "-j", "addr", "show").stdout == before  # nothing added twice
    status = docker_cmd(ns, env, "status")
    assert status.returncode == 0 and "(up, rolebroker's)" in status.stdout, status.stdout

    down = docker_cmd(ns, env, "teardown")
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith("Done:"), down.stdout
    assert holders(ns) == []
    assert ip("-n", ns, "link", "show", "dev", "rolebroker0", check=False).returncode != 0
    assert [a["local"] for a in addresses(ns, "lo")] == ["127.0.0.1"]  # lo keeps only its own

    twice = docker_cmd(ns, env, "teardown")
    assert twice.returncode == 0 and twice.stdout.startswith("Nothing to tear down"), twice.stdout
    assert docker_cmd(ns, env, "status").returncode == 3


@needs_rolebroker
def test_setup_makes_a_dummy_link_where_the_kernel_has_the_driver(namespaces: Namespaces, tmp_path: Path) -> None:
    if not dummy_supported(namespaces):
        pytest.skip("this kernel has no dummy link driver (CONFIG_DUMMY); the loopback fallback is tested instead")
    ns = namespaces.add("dummy")
    env = isolated_env(tmp_path)
    first = docker_cmd(ns, env, "setup")
    assert first.returncode == 0, first.stderr
    assert "ip link add rolebroker0 type dummy" in first.stdout
    assert holders(ns) == ["rolebroker0"]
    assert addresses(ns, "lo") and all(a["local"] != LINK_LOCAL for a in addresses(ns, "lo"))
    assert docker_cmd(ns, env, "teardown").returncode == 0
    assert ip("-n", ns, "link", "show", "dev", "rolebroker0", check=False).returncode != 0


# On a kernel without the dummy driver, a bridge link (no ports: as inert as a dummy one)
# stands in for it, so the dummy path of `docker setup` still runs against real kernel links.
IP_BRIDGE_AS_DUMMY = """#!{python}
import subprocess, sys
args = ["bridge" if arg == "dummy" else arg for arg in sys.argv[1:]]
result = subprocess.run([{ip!r}, *args], capture_output=True, text=True)
sys.stdout.write(result.stdout.replace('"info_kind":"bridge"', '"info_kind":"dummy"'))
sys.stderr.write(result.stderr)
sys.exit(result.returncode)
"""


@needs_rolebroker
def test_the_dummy_path_with_a_stand_in_link(namespaces: Namespaces, tmp_path: Path) -> None:
    fake = tmp_path / "ip-bridge-as-dummy"
    fake.write_text(IP_BRIDGE_AS_DUMMY.format(python=sys.executable, ip=str(IP)))
    fake.chmod(0o755)
    ns = namespaces.add("stand")
    env = isolated_env(tmp_path, ROLEBROKER_IP=str(fake))
    first = docker_cmd(ns, env, "setup")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1:4] == [
        "  ip link add rolebroker0 type dummy", "  ip addr add 169.254.170.2/32 dev rolebroker0",
        "  ip link set rolebroker0 up"], first.stdout
    assert holders(ns) == ["rolebroker0"]
    # Left down (say, by hand): setup brings it up again and adds nothing.
    ip("-n", ns, "link", "set", "rolebroker0", "down")
    again = docker_cmd(ns, env, "setup")
    assert again.stdout.splitlines()[:2] == ["Done:", "  ip link set rolebroker0 up"], again.stdout
    assert docker_cmd(ns, env, "setup").stdout.startswith("Already set up: 169.254.170.2 is on rolebroker0.")
    assert [a["local"] for a in addresses(ns, "rolebroker0")] == [LINK_LOCAL]
    down = docker_cmd(ns, env, "teardown")
    assert down.stdout.splitlines()[:2] == ["Done:", "  ip link del rolebroker0"], down.stdout
    assert ip("-n", ns, "link", "show", "dev", "rolebroker0", check=False).returncode != 0
    assert holders(ns) == []


IP_WITHOUT_DUMMY = """#!/bin/sh
# The real ip, except that this "kernel" has no dummy driver (as some VM kernels).
case " $* " in
  *" type dummy "*) echo "Error: Unknown device type." >&2; exit 2 ;;
esac
exec {ip} "$@"
"""


@needs_rolebroker
def test_setup_falls_back_to_lo_without_a_dummy_driver(namespaces: Namespaces, tmp_path: Path) -> None:
    fake = tmp_path / "ip-without-dummy"
    fake.write_text(IP_WITHOUT_DUMMY.format(ip=shlex.quote(str(IP))))
    fake.chmod(0o755)
    ns = namespaces.add("lo")
    env = isolated_env(tmp_path, ROLEBROKER_IP=str(fake))
    first = docker_cmd(ns, env, "setup")
    assert first.returncode == 0, first.stderr
    assert "no dummy link driver" in first.stderr
    assert holders(ns) == ["lo"]
    assert [a["label"] for a in addresses(ns, "lo") if a["local"] == LINK_LOCAL] == ["lo:rolebroker0"]
    again = docker_cmd(ns, env, "setup")
    assert again.stdout.startswith("Already set up") and again.stderr == "", again
    down = docker_cmd(ns, env, "teardown")
    assert down.returncode == 0 and "dev lo label lo:rolebroker0" in down.stdout, down.stdout
    assert holders(ns) == []
    assert [a["local"] for a in addresses(ns, "lo")] == ["127.0.0.1"]


@needs_rolebroker
def test_an_address_someone_else_configured_is_left_alone(namespaces: Namespaces, tmp_path: Path) -> None:
    ns = namespaces.add("other")
    ip("-n", ns, "addr", "add", f"{LINK_LOCAL}/32", "dev", "lo")  # e.g. by hand, without our label
    env = isolated_env(tmp_path)
    setup = docker_cmd(ns, env, "setup")
    assert setup.returncode == 0 and "not by rolebroker" in setup.stdout, setup.stdout
    assert holders(ns) == ["lo"]
    assert ip("-n", ns, "link", "show", "dev", "rolebroker0", check=False).returncode != 0  # nothing created
    status = docker_cmd(ns, env, "status")
    assert status.returncode == 0 and "not rolebroker's" in status.stdout, status.stdout
    down = docker_cmd(ns, env, "teardown")
    assert down.returncode == 0 and "Nothing to tear down" in down.stdout, down.stdout
    assert holders(ns) == ["lo"]  # still there


@needs_rolebroker
def test_a_link_of_that_name_that_is_not_a_dummy_is_refused(namespaces: Namespaces, tmp_path: Path) -> None:
    ns, peer = namespaces.add("veth"), namespaces.add("peer")
    ip("link", "add", "rolebroker0", "netns", ns, "type", "veth", "peer", "name", unique("rbp"), "netns", peer)
    env = isolated_env(tmp_path)
    setup = docker_cmd(ns, env, "setup")
    assert setup.returncode == 1 and "is not a dummy link" in setup.stderr, setup
    assert holders(ns) == []
    down = docker_cmd(ns, env, "teardown")
    assert down.returncode == 1 and "leaving it alone" in down.stderr, down
    assert ip("-n", ns, "link", "show", "dev", "rolebroker0", check=False).returncode == 0


# ---- refusals that need no namespace -----------------------------------------------------------

def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    docker_link.add_arguments(parser)
    return parser.parse_args(argv)


def test_setup_and_teardown_refuse_without_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A recording stand-in for ip: the refusal must come before any ip command at all.
    calls = tmp_path / "calls"
    recorder = tmp_path / "ip"
    recorder.write_text(f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(calls))}\necho '[]'\n")
    recorder.chmod(0o755)
    monkeypatch.setenv("ROLEBROKER_IP", str(recorder))
    monkeypatch.setattr(docker_link.os, "geteuid", lambda: 1000)
    for action in ("setup", "teardown"):
        assert docker_link.run(parsed(action)) == 1
        error = capsys.readouterr().err
        assert "run with sudo" in error and f"docker {action}" in error, error
    assert not calls.exists()
    # status only reads, so it works without root (here: "not set up", from the recorder's empty list)
    assert docker_link.run(parsed("status")) == 3
    assert calls.read_text().startswith("-j -4 addr show")


def test_a_missing_ip_is_reported_with_the_package_to_install(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ROLEBROKER_IP", raising=False)
    monkeypatch.setattr(docker_link.shutil, "which", lambda *args, **kwargs: None)
    assert docker_link.run(parsed("setup")) == 1
    assert "iproute2" in capsys.readouterr().err
    monkeypatch.setenv("ROLEBROKER_IP", "/nonexistent/ip")
    assert docker_link.run(parsed("status")) == 1
    assert "ROLEBROKER_IP=/nonexistent/ip is not an executable" in capsys.readouterr().err


def test_the_cli_forwards_docker_to_docker_link() -> None:
    from rolebroker.clients.cli import build_parser

    args = build_parser().parse_args(["docker", "setup", "--interface", "rb1", "--address", "169.254.170.23"])
    assert (args.action, args.interface, args.address, args.port) == ("setup", "rb1", "169.254.170.23", 9911)
    assert args.handler.__name__ == "cmd_docker"
    with pytest.raises(SystemExit):  # an address the SDKs would not accept is refused up front
        build_parser().parse_args(["docker", "setup", "--address", "10.0.0.1"])


def test_bad_interface_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a-name-longer-than-15", "eth0:1", "x/y", ""):
        assert docker_link.run(parsed("setup", "--interface", name)) == 2, name
        assert "--interface" in capsys.readouterr().err


# ---- the system unit and the compose example -------------------------------------------------

def unit_lines(option: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(f"{option}=")]


def test_the_boot_unit_runs_what_setup_does() -> None:
    assert unit_lines("Type") == ["oneshot"] and unit_lines("RemainAfterExit") == ["yes"]
    assert "docker.service" in " ".join(unit_lines("Before"))
    starts = unit_lines("ExecStart")
    interface, address = docker_link.DEFAULT_INTERFACE, docker_link.DEFAULT_ADDRESS
    assert starts[:3] == [f"-ip link add {interface} type dummy", f"ip addr replace {address}/32 dev {interface}",
                          f"ip link set {interface} up"]
    # The ECS port redirect, the very rules `docker setup` installs (clients/ecs_redirect.py).
    from rolebroker.clients import ecs_redirect

    assert starts[3] == f"-nft delete table ip {ecs_redirect.TABLE}"
    rules = ecs_redirect.ruleset(9911).split("\n")
    assert all(rule.strip().rstrip("}").strip() in starts[4] for rule in rules[3:5]), (starts[4], rules)
    assert unit_lines("ExecStop") == [f"ip link del {interface}", f"-nft delete table ip {ecs_redirect.TABLE}"]
    assert unit_lines("WantedBy") == ["multi-user.target"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
def test_the_boot_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(UNIT)], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, cwd=UNIT.parent)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The check is real: without Type=oneshot, three ExecStart= lines are an error.
    broken = tmp_path / UNIT.name
    broken.write_text(UNIT.read_text().replace("Type=oneshot\n", ""))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(broken)], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, cwd=tmp_path)
    assert result.returncode != 0 and "ExecStart=" in result.stdout + result.stderr, result


def test_the_boot_units_commands_work_in_a_namespace(namespaces: Namespaces) -> None:
    if not dummy_supported(namespaces):
        pytest.skip("this kernel has no dummy link driver (CONFIG_DUMMY), which the boot unit needs")
    ns = namespaces.add("unit")

    def run(line: str) -> int:
        argv = shlex.split(line.lstrip("-"))
        if argv[0] == "nft":
            if shutil.which("nft", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) is None:
                return 0  # no nftables here: the address part is still tested
            assert IP is not None
            result = subprocess.run([IP, "netns", "exec", ns, *argv], capture_output=True, text=True,
                                    timeout=COMMAND_TIMEOUT)
            assert line.startswith("-") or result.returncode == 0, result.stderr
            return 0 if line.startswith("-") else result.returncode
        assert argv[0] == "ip"
        return ip("-n", ns, *argv[1:], check=not line.startswith("-")).returncode

    for _ in range(2):  # a restart after a start (or after `docker setup`) must work too
        for line in unit_lines("ExecStart"):
            run(line)
        assert holders(ns) == ["rolebroker0"]
    for line in unit_lines("ExecStop"):
        assert run(line) == 0
    assert holders(ns) == []


def test_the_compose_example_uses_the_env_file_rolebroker_writes() -> None:
    yaml = pytest.importorskip("yaml")
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    app = compose["services"]["app"]
    assert app["env_file"] == "rolebroker.env" and "network_mode" not in app
    assert "rolebroker env dev --format dotenv --target docker > rolebroker.env" in text
    assert "docker compose up" in text and "sudo \"$(command -v rolebroker)\" docker setup" in text
    assert f"--listen {LINK_LOCAL}:{PORT}" in text
    # The host-network alternative is there, commented out.
    assert "#   network_mode: host" in text and list(compose["services"]) == ["app"]
    # Nothing in the file may outrank the container endpoint.
    assert not any(name in text for name in ("AWS_ACCESS_KEY_ID:", "AWS_PROFILE:", "~/.aws:"))


def test_the_boot_units_redirect_lines_work_in_a_namespace(namespaces: Namespaces) -> None:
    nft = shutil.which("nft", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if nft is None:
        pytest.skip("nft is not installed (apt-get install nftables; CI does)")
    ns = namespaces.add("nft")
    assert IP is not None

    def run(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IP, "netns", "exec", ns, nft, *shlex.split(line.lstrip("-"))[1:]],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)

    nft_starts = [line for line in unit_lines("ExecStart") if line.lstrip("-").startswith("nft ")]
    for _ in range(2):  # a restart must work too
        for line in nft_starts:
            result = run(line)
            assert line.startswith("-") or result.returncode == 0, (line, result.stderr)
        listed = run("nft list table ip rolebroker")
        assert listed.stdout.count(f"dnat to {LINK_LOCAL}:{PORT}") == 2, listed.stdout  # prerouting and output
    for line in unit_lines("ExecStop"):
        if line.lstrip("-").startswith("nft "):
            assert run(line).returncode == 0
    assert run("nft list table ip rolebroker").returncode != 0
