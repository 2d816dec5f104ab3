"""The SDK matrix: every client the package registries here carry, end to end.

Each client is a real program using only its SDK's default credential chain and the variables
`rolebroker env` printed for its target; it calls GetCallerIdentity against the strict STS
double and prints the ARN, which must be the dev role's. Only the STS endpoint is pointed at
the double: AWS_ENDPOINT_URL_STS where the SDK honours it, otherwise RB_STS_ENDPOINT, which the
small client programs (tests/sdk_clients/, tests/js/) hand to their SDK's endpoint option.

Where:
- "host, ECS port up": a network namespace stands for the host; 169.254.170.2 is on its link
  to a second namespace (the container), the daemon listens on 127.0.0.1 and on
  169.254.170.2:80 (root here), and the client runs after `eval "$(rolebroker env dev)"`.
- "container": the second namespace, with only what `rolebroker env dev --format docker` gives
  (the ECS relative URI: Ruby, PHP, JS v2 and Go read it).
- "host, no ECS port": the test harness's daemon on loopback only; Ruby and PHP cannot be
  served there, and `env` says so.
- "redirect": `rolebroker docker setup` redirects port 80 to an unprivileged daemon.

docs/SDK-COMPATIBILITY.md holds the resulting matrix. A client is skipped, with the reason,
only when its package is absent (CI installs them all: .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from rolebroker.broker.sts_world import totp
from tests.harness import MFA_SECRET, Broker, CREDENTIALS_LAYOUT, Lines, write_config
from tests.test_docker_netns import (
    IP, ROLEBROKER, Namespaces, in_ns, isolated_env, parse_docker_flags, rolebroker, veth,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JS_DIR = REPO / "tests" / "js"
CLIENTS_DIR = REPO / "tests" / "sdk_clients"
DEV_ARN_PREFIX = "arn:aws:sts::222222222222:assumed-role/dev/"
ECS = "169.254.170.2"
CONTAINER_ADDRESS = "169.254.170.3"
STS_PORT = 8090
DAEMON_PORT = 9911
CLIENT_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
# Debian's awscli package (AWS CLI v2) installs here; the venv's `aws` is v1.
AWS_CLI_V2 = Path("/usr/bin/aws")
PHP_AUTOLOAD = Path("/usr/share/php/AsyncAws/Core/autoload.php")
GOPATH = Path("/usr/share/gocode")

# The STS double in the "host" namespace, on the address the container reaches too.
STS_SERVER = """
import sys
from rolebroker.broker.sts_double import StsDouble
from tests.harness import alice, standard_roles
sts = StsDouble([alice()], standard_roles(), host=sys.argv[1], port=int(sys.argv[2])).start()
print("sts ready", sts.endpoint_url, flush=True)
sys.stdin.read()  # until the test closes stdin
sts.stop()
"""


# ---- the clients ------------------------------------------------------------------------------

@dataclass
class Client:
    name: str
    argv: Callable[[str], list[str]]  # from the STS endpoint
    missing: Callable[[], str | None]  # why it cannot run here, or None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def _absent(path: Path, package: str) -> Callable[[], str | None]:
    return lambda: None if path.exists() else f"{path} is missing (apt-get install {package}; CI does)"


def _node_module(module: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        if shutil.which("node") is None:
            return "node is not installed (apt-get install nodejs npm; CI does)"
        if not (JS_DIR / "node_modules" / module).is_dir():
            return f"tests/js/node_modules/{module} is missing: run `npm ci` in tests/js (CI does)"
        return None
    return missing


class GoBuilds:
    """The Go clients, compiled once per session from Debian's SDK sources (GOPATH mode:
    no module download, nothing from a proxy)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binaries: dict[str, Path] = {}
        self.errors: dict[str, str] = {}

    def build(self) -> None:
        go = shutil.which("go")
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "",
               "GOCACHE": str(self.directory / "cache"), "GOPROXY": "off", "CGO_ENABLED": "0"}
        jobs = {}
        for name, package in (("go_v2", "golang-github-aws-aws-sdk-go-v2-dev"),
                              ("go_v1", "golang-github-aws-aws-sdk-go-dev")):
            sdk = GOPATH / "src" / "github.com" / "aws" / ("aws-sdk-go-v2" if name == "go_v2" else "aws-sdk-go")
            if go is None:
                self.errors[name] = "go is not installed (apt-get install golang-go; CI does)"
            elif not sdk.is_dir():
                self.errors[name] = f"{sdk} is missing (apt-get install {package}; CI does)"
            else:
                jobs[name] = subprocess.Popen([go, "build", "-o", str(self.directory / name), "."],
                                              cwd=CLIENTS_DIR / name, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True)
        for name, job in jobs.items():  # the two builds run side by side
            output, _ = job.communicate(timeout=300)
            if job.returncode != 0:
                self.errors[name] = f"go build failed:\n{output}"
            else:
                self.binaries[name] = self.directory / name


@pytest.fixture(scope="session")
def go_builds(tmp_path_factory: pytest.TempPathFactory) -> GoBuilds:
    builds = GoBuilds(tmp_path_factory.mktemp("go-clients"))
    builds.build()
    return builds


def all_clients(go: GoBuilds) -> dict[str, Client]:
    def go_client(name: str) -> Client:
        def missing() -> str | None:
            error = go.errors.get(name)
            if error and error.startswith("go build failed"):
                pytest.fail(f"{name}: {error}")  # a build failure is a failure, not a skip
            return error
        return Client(name, lambda sts: [str(go.binaries.get(name, name))], missing)

    return {
        "boto3": Client("boto3", lambda sts: [sys.executable, "-c",
                        "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])"],
                        lambda: None),
        "awscli-v1": Client("awscli-v1", lambda sts: [str(BIN / "aws"), "sts", "get-caller-identity", "--query",
                            "Arn", "--output", "text"], lambda: None),
        # 2.9 predates AWS_ENDPOINT_URL_STS: the endpoint goes on the command line.
        "awscli-v2": Client("awscli-v2", lambda sts: [str(AWS_CLI_V2), "sts", "get-caller-identity", "--query",
                            "Arn", "--output", "text", "--endpoint-url", sts], _absent(AWS_CLI_V2, "awscli")),
        "js-v3": Client("js-v3", lambda sts: ["node", str(JS_DIR / "caller_identity.mjs")],
                        _node_module("@aws-sdk/client-sts"),
                        {"AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED": "true"}, JS_DIR),
        "js-v2": Client("js-v2", lambda sts: ["node", str(JS_DIR / "caller_identity_v2.cjs")],
                        _node_module("aws-sdk"), cwd=JS_DIR),
        "go-v2": go_client("go_v2"),
        "go-v1": go_client("go_v1"),
        "ruby": Client("ruby", lambda sts: ["ruby", str(CLIENTS_DIR / "caller_identity.rb")],
                       lambda: None if shutil.which("ruby") and _ruby_sdk() else
                       "ruby-aws-sdk-core is not installed (apt-get install ruby-aws-sdk-core; CI does)"),
        "php": Client("php", lambda sts: ["php", str(CLIENTS_DIR / "caller_identity.php")],
                      lambda: None if shutil.which("php") and PHP_AUTOLOAD.exists() else
                      "php-async-aws-core is not installed (apt-get install php-cli php-async-aws-core; CI does)"),
    }


def _ruby_sdk() -> bool:
    # Where Debian's ruby-aws-sdk-core puts the gem.
    return any(Path("/usr/share/rubygems-integration/all/gems").glob("aws-sdk-core-*"))


CLIENT_NAMES = ["boto3", "awscli-v1", "awscli-v2", "js-v3", "js-v2", "go-v2", "go-v1", "ruby", "php"]
# They read only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: without the ECS port, nothing.
RELATIVE_ONLY = {"ruby", "php"}


def run_client(client: Client, environ: dict[str, str], sts: str, ns: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    reason = client.missing()
    if reason:
        pytest.skip(f"{client.name}: {reason}")
    env = {**environ, **client.env, "AWS_ENDPOINT_URL_STS": sts, "RB_STS_ENDPOINT": sts}
    argv = client.argv(sts)
    if ns is not None:
        assert IP is not None
        argv = [IP, "netns", "exec", ns, *argv]
    return subprocess.run(argv, env=env, cwd=client.cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=CLIENT_TIMEOUT)


def base_path() -> str:
    # node, ruby, php, the venv's python: whatever PATH the tests run with, plus the usual dirs.
    return os.pathsep.join([str(BIN), os.environ.get("PATH", ""), "/usr/local/bin", "/usr/bin", "/bin"])


def assert_dev(result: subprocess.CompletedProcess[str], name: str) -> None:
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip().startswith(DEV_ARN_PREFIX), f"{name}: {result.stdout!r}"


# ---- the namespaces: host (STS double + daemon on the ECS port) and container -------------------

@dataclass
class EcsNet:
    host: str
    container: str
    sts: str
    env: dict[str, str]  # for rolebroker commands in the host namespace
    home: Path


class Process:
    """A process in a namespace whose stderr or stdout is read line by line; stopped at close."""

    def __init__(self, argv: list[str], env: dict[str, str], watch: str = "stderr") -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        stream = self.proc.stderr if watch == "stderr" else self.proc.stdout
        other = self.proc.stdout if watch == "stderr" else self.proc.stderr
        assert stream is not None and other is not None
        self.lines, self.other = Lines(stream), Lines(other)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.lines.join(15)
        self.other.join(15)
        return self.proc.returncode


def start_daemon(ns: str, env: dict[str, str], *listen: str) -> Process:
    assert IP is not None
    args = [arg for address in listen for arg in ("--listen", address)]
    daemon = Process([IP, "netns", "exec", ns, str(ROLEBROKER), "serve", "--port", str(DAEMON_PORT), *args], env)
    daemon.lines.wait_for("serving", READY_TIMEOUT)
    deadline = time.monotonic() + READY_TIMEOUT
    while not (Path(env["ROLEBROKER_RUNTIME_DIR"]) / "daemon.json").exists():  # the CLI needs it
        assert daemon.proc.poll() is None and time.monotonic() < deadline, "".join(daemon.lines.seen)
        time.sleep(0.01)
    return daemon


def start_sts(ns: str, address: str, env: dict[str, str]) -> tuple[Process, str]:
    assert IP is not None
    sts = Process([IP, "netns", "exec", ns, sys.executable, "-c", STS_SERVER, address, str(STS_PORT)],
                  {**env, "PYTHONPATH": str(REPO)}, watch="stdout")
    line = sts.lines.wait_for("sts ready", READY_TIMEOUT)
    return sts, line.split()[-1]


def login(ns: str, env: dict[str, str]) -> None:
    # The double's clock is real time: the code an authenticator would show now.
    result = rolebroker(ns, env, "login", "dev", "--code", totp(MFA_SECRET, time.time()))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def ecs_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EcsNet]:
    if not ROLEBROKER.exists():
        pytest.skip(f"no rolebroker console script at {ROLEBROKER}: pip install -e .")
    if os.geteuid() != 0:
        pytest.skip("network namespaces and port 80 need root (run the tests as root, as CI does)")
    if IP is None:
        pytest.skip("the `ip` program is missing (apt-get install iproute2)")
    tmp = tmp_path_factory.mktemp("ecs-net")
    spaces = Namespaces()
    started: list[Process] = []
    try:
        host, container = spaces.add("host"), spaces.add("ctr")
        veth(host, f"{ECS}/24", container, f"{CONTAINER_ADDRESS}/24")
        env = isolated_env(tmp)
        sts_process, sts = start_sts(host, ECS, env)
        started.append(sts_process)
        # The guides' layout: Alice's keys in [default], the roles beside them (the case where
        # `env` must hide [default] and give a stand-in config).
        files = write_config(tmp, CREDENTIALS_LAYOUT, sts)
        env.update(AWS_CONFIG_FILE=files.config_file, AWS_SHARED_CREDENTIALS_FILE=files.credentials_file)
        # The ECS port itself: root may bind port 80 (a user gets it through `docker setup`'s redirect).
        started.append(start_daemon(host, env, f"{ECS}:80"))
        login(host, env)
        home = tmp / "home"
        home.mkdir()
        yield EcsNet(host, container, sts, env, home)
    finally:
        for process in started:
            process.stop()
        spaces.close()


@pytest.fixture(scope="module")
def host_env(ecs_net: EcsNet) -> tuple[dict[str, str], str]:
    """The environment after `eval "$(rolebroker env dev)"` in the host namespace, and env's stderr."""
    script = 'eval "$(rolebroker env dev)" || exit 90\n"$0" -c "import json, os; print(json.dumps(dict(os.environ)))"\n'
    env = {**ecs_net.env, "PATH": base_path(), "HOME": str(ecs_net.home)}
    result = in_ns(ecs_net.host, ["sh", "-c", script, sys.executable], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module")
def docker_env(ecs_net: EcsNet) -> tuple[dict[str, str], str]:
    printed = rolebroker(ecs_net.host, ecs_net.env, "env", "dev", "--format", "docker")
    assert printed.returncode == 0, printed.stderr
    return parse_docker_flags(printed.stdout), printed.stderr


# ---- what env prints ----------------------------------------------------------------------------

def test_host_env_with_the_ecs_port_sets_both_forms(host_env: tuple[dict[str, str], str]) -> None:
    after, stderr = host_env
    relative = after["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
    assert relative.startswith("/v1/credentials/dev/rbt_")
    # Go prefers FULL_URI and accepts loopback only; the others take the relative URI.
    assert after["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://127.0.0.1:{DAEMON_PORT}/v1/credentials/dev"
    assert relative.endswith(after["AWS_CONTAINER_AUTHORIZATION_TOKEN"])
    assert "get nothing" not in stderr, stderr


def test_docker_env_with_the_ecs_port_gives_the_relative_uri_only(docker_env: tuple[dict[str, str], str],
                                                                    ecs_net: EcsNet) -> None:
    values, stderr = docker_env
    assert set(values) >= {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "NO_PROXY", "AWS_REGION"}
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in values and "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in values
    assert ECS in values["NO_PROXY"].split(",")
    assert "get nothing" not in stderr, stderr
    # The token is in the 0600 env file, never on the command line.
    printed = rolebroker(ecs_net.host, ecs_net.env, "env", "dev", "--format", "docker")
    assert "rbt_" not in printed.stdout
    env_file = Path(printed.stdout.split("--env-file ", 1)[1].split()[0])
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text().startswith("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v1/credentials/dev/rbt_")


def test_token_file_output_leaves_out_the_relative_uri_and_says_so(ecs_net: EcsNet) -> None:
    token_file = ecs_net.home / "dev.token"
    printed = rolebroker(ecs_net.host, ecs_net.env, "env", "dev", "--format", "json", "--token-file",
                         str(token_file))
    assert printed.returncode == 0, printed.stderr
    values = json.loads(printed.stdout)
    # The ECS form would put the token in the environment, which --token-file is there to avoid.
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" not in values["set"]
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in values["unset"]
    assert values["set"]["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == str(token_file)
    assert "Ruby and PHP (async-aws) get nothing" in printed.stderr, printed.stderr


# ---- the matrix ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_on_the_host_with_the_ecs_port(name: str, ecs_net: EcsNet, host_env: tuple[dict[str, str], str],
                                       go_builds: GoBuilds) -> None:
    client = all_clients(go_builds)[name]
    assert_dev(run_client(client, host_env[0], ecs_net.sts, ecs_net.host), name)


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_in_a_bridged_container(name: str, ecs_net: EcsNet, docker_env: tuple[dict[str, str], str],
                                go_builds: GoBuilds) -> None:
    # Nothing of the host's: no files, no HOME of its own, only the printed variables.
    environ = {"PATH": base_path(), "HOME": str(ecs_net.home), **docker_env[0]}
    client = all_clients(go_builds)[name]
    assert_dev(run_client(client, environ, ecs_net.sts, ecs_net.container), name)


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_on_the_host_without_the_ecs_port(name: str, broker: Broker, go_builds: GoBuilds,
                                          tmp_path: Path) -> None:
    broker.login("dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_"))}
    env.update(PATH=base_path(), HOME=str(tmp_path), ROLEBROKER_RUNTIME_DIR=str(broker.daemon.settings.runtime_dir),
               AWS_CONFIG_FILE=broker.files.config_file, AWS_SHARED_CREDENTIALS_FILE=broker.files.credentials_file)
    script = 'eval "$(rolebroker env dev)" || exit 90\n"$0" -c "import json, os; print(json.dumps(dict(os.environ)))"\n'
    evaluated = subprocess.run(["sh", "-c", script, sys.executable], env=env, capture_output=True, text=True,
                               timeout=CLIENT_TIMEOUT)
    assert evaluated.returncode == 0, evaluated.stderr
    after = json.loads(evaluated.stdout)
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" not in after
    # env says whom it leaves out, and why.
    assert "Ruby (aws-sdk-core) and PHP (async-aws) get nothing" in evaluated.stderr, evaluated.stderr
    client = all_clients(go_builds)[name]
    result = run_client(client, after, broker.sts.endpoint_url)
    if name in RELATIVE_ONLY:
        assert result.returncode != 0 and DEV_ARN_PREFIX not in result.stdout, result
    else:
        assert_dev(result, name)


# ---- the redirect: an unprivileged daemon, port 80 through `docker setup` -----------------------

@pytest.mark.parametrize("name", ["boto3", "ruby"])
def test_docker_setup_redirects_the_ecs_port_to_an_unprivileged_listener(
        name: str, tmp_path: Path, go_builds: GoBuilds) -> None:
    if shutil.which("nft", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])) is None:
        pytest.skip("nft is not installed (apt-get install nftables; CI does)")
    client = all_clients(go_builds)[name]
    if client.missing():
        pytest.skip(f"{name}: {client.missing()}")
    if os.geteuid() != 0 or IP is None:
        pytest.skip("network namespaces need root and iproute2 (CI runs as root)")
    namespaces, processes = Namespaces(), list[Process]()
    try:
        redirect_scenario(client, namespaces, processes, tmp_path)
    finally:
        for process in processes:
            process.stop()
        namespaces.close()


def redirect_scenario(client: Client, namespaces: Namespaces, processes: list[Process], tmp_path: Path) -> None:
    assert IP is not None
    # As on a real host: the container reaches the host through its default gateway only.
    host, container = namespaces.add("host"), namespaces.add("ctr")
    veth(host, "172.30.0.1/24", container, "172.30.0.2/24")
    subprocess.run([IP, "-n", container, "route", "add", "default", "via", "172.30.0.1"], check=True, timeout=30)
    env = isolated_env(tmp_path)
    setup = rolebroker(host, env, "docker", "setup")
    assert setup.returncode == 0, setup.stderr
    assert f"nft: tcp {ECS}:80 -> {ECS}:{DAEMON_PORT}" in setup.stdout, setup.stdout
    again = rolebroker(host, env, "docker", "setup")
    assert again.stdout.startswith("Already set up"), again.stdout  # the redirect is not added twice
    status = rolebroker(host, env, "docker", "status")
    assert f"redirected to port {DAEMON_PORT}" in status.stdout, status.stdout

    sts_process, sts = start_sts(host, "172.30.0.1", env)
    processes.append(sts_process)
    files = write_config(tmp_path, CREDENTIALS_LAYOUT, sts)
    env.update(AWS_CONFIG_FILE=files.config_file, AWS_SHARED_CREDENTIALS_FILE=files.credentials_file)
    processes.append(start_daemon(host, env, f"{ECS}:{DAEMON_PORT}"))  # no privilege needed
    login(host, env)
    printed = rolebroker(host, env, "env", "dev", "--format", "docker")
    assert printed.returncode == 0, printed.stderr
    values = parse_docker_flags(printed.stdout)
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in values, (printed.stdout, printed.stderr)
    environ = {"PATH": base_path(), "HOME": str(tmp_path), **values}
    assert_dev(run_client(client, environ, sts, container), client.name)

    down = rolebroker(host, env, "docker", "teardown")
    assert down.returncode == 0 and "nft delete table ip rolebroker" in down.stdout, down.stdout
    assert subprocess.run([IP, "netns", "exec", host, "nft", "list", "table", "ip", "rolebroker"],
                          capture_output=True, timeout=30).returncode != 0
