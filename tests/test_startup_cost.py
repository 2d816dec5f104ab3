"""What a cold daemon and each CLI call load (issue 15): the credentials path imports neither
the control API nor botocore's client machinery, the CLI's fast paths neither http.client nor argparse,
and the pieces that replaced heavier ones (the config read, the control-socket HTTP client)
behave as what they replaced. Import lists are checked in real processes with
`-X importtime` (PYTHONPROFILEIMPORTTIME): what a process imports does not depend on load."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

from rolebroker.broker.config import read_full_config
from rolebroker.clients.daemon_client import DaemonError, parse_answer
from tests.harness import Broker
from tests.processes import ROLEBROKER, Serve, daemon_env, free_port, needs_rolebroker, rolebroker

KEYS = "aws_access_key_id = AKIAEXAMPLE000000001\naws_secret_access_key = not-a-real-secret\n"


def imported(log_lines: list[str]) -> set[str]:
    """Module names from `-X importtime` lines ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in log_lines if line.startswith("import time:") and "|" in line}


def get(port: int, path: str, token: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert match, answer
    return int(match.group(1))


@needs_rolebroker
def test_the_control_api_loads_with_the_first_control_request_and_botocore_with_the_first_sts_call(
        tmp_path: Path, started: list[Serve]) -> None:
    dead_sts = f"http://127.0.0.1:{free_port()}"  # nothing listens: the STS call fails fast
    env = daemon_env(tmp_path, PYTHONPROFILEIMPORTTIME="1")
    Path(env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(f"[alice]\n{KEYS}")
    Path(env["AWS_CONFIG_FILE"]).write_text(
        "[profile solo]\nrole_arn = arn:aws:iam::222222222222:role/solo\nsource_profile = alice\n"
        f"region = eu-west-1\nendpoint_url = {dead_sts}\n")
    port = free_port()
    daemon = Serve([str(ROLEBROKER), "serve", "--port", str(port)], env)
    started.append(daemon)
    daemon.log.wait_for(f"on http://127.0.0.1:{port}")

    # A credentials request, answered (401: unknown token). Refusals are logged as a periodic
    # summary, so a reload (SIGHUP) puts a line in the log after everything the answer imported.
    assert get(port, "/v1/credentials/solo", "rbt_unknownunknownunknown") == 401
    daemon.signal(signal.SIGHUP)
    daemon.log.wait_for("config reloaded")
    before_control = imported(daemon.log.seen)
    assert "rolebroker.broker.server" in before_control  # the log holds the daemon's imports
    assert not {"fastapi", "pydantic", "rolebroker.broker.api"} & before_control
    assert not {"botocore.session", "botocore.client"} & before_control
    # Entry-point scans (keyring's backends, websockets' version) read every installed
    # distribution's metadata: tens of milliseconds, more on a cold disk.
    assert not {"importlib.metadata", "keyring", "websockets"} & before_control

    # The CLI's first control request builds the control API.
    minted = rolebroker(env, "token", "create", "--profile", "solo")
    assert minted.returncode == 0, minted.stderr
    status = rolebroker(env, "status", "--json")
    assert '"running": true' in status.stdout, status.stderr
    # The first credentials request that needs STS imports botocore's client machinery; the
    # unreachable STS makes it a 503 that says so.
    assert get(port, "/v1/credentials/solo", minted.stdout.strip()) in (503,)
    daemon.log.wait_for("cannot reach STS")
    after = imported(daemon.log.seen)
    assert "rolebroker.broker.api" in after
    # The control API is the daemon's own router: no model library behind it (issue 15, memory).
    assert not {"fastapi", "pydantic", "starlette"} & after
    assert "botocore.session" in after


# Never on a CLI fast path: the daemon's stack, the client library's TLS and mail parsing,
# and entry-point scans (importlib.metadata; keyring loads its backends through them).
ALWAYS_FORBIDDEN = {"http.client", "ssl", "email.parser", "shutil", "importlib.metadata", "keyring",
                    "rolebroker.broker.server", "botocore"}


@needs_rolebroker
@pytest.mark.parametrize("args, forbidden", [
    # Run before every AWS call by IDE toolkits and Terraform: the standard library's bare minimum.
    (["credential-process", "dev"], {"argparse", "typing", "rolebroker.clients.cli", "subprocess", "tempfile"}),
    # env / status: argparse, but not another command's modules.
    (["status"], {"subprocess", "dataclasses", "rolebroker.clients.docker_link"}),
    (["env", "dev"], {"subprocess", "dataclasses", "rolebroker.clients.docker_link"}),
])
def test_cli_fast_paths_import_only_what_they_use(tmp_path: Path, args: list[str], forbidden: set[str]) -> None:
    env = daemon_env(tmp_path)  # no daemon: each command says so, after importing what it needs
    done = subprocess.run([sys.executable, "-X", "importtime", str(ROLEBROKER), *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert "not running" in done.stderr + done.stdout
    modules = imported(done.stderr.splitlines())
    assert "rolebroker.clients.daemon_client" in modules
    assert not (forbidden | ALWAYS_FORBIDDEN) & modules


@pytest.mark.parametrize("config, credentials", [
    ("", ""),
    ("[default]\nregion = eu-west-1\n[profile dev]\nrole_arn = arn:aws:iam::222222222222:role/dev\n"
     "source_profile = alice\n[profile alice]\nmfa_serial = arn:aws:iam::111111111111:mfa/alice\n"
     "s3 =\n  max_concurrent_requests = 20\n[sso-session corp]\nsso_region = eu-west-1\n"
     "[services local]\nsts =\n  endpoint_url = http://127.0.0.1:1\n",
     f"[alice]\n{KEYS}region = us-east-1\n[dev]\nrole_session_name = from-credentials\n[profile dev4]\n{KEYS}"),
])
def test_the_config_read_is_what_botocore_reads(tmp_path: Path, config: str, credentials: str) -> None:
    config_file, credentials_file = tmp_path / "config", tmp_path / "credentials"
    config_file.write_text(config)
    credentials_file.write_text(credentials)
    session = botocore.session.Session()
    session.set_config_variable("config_file", str(config_file))
    session.set_config_variable("credentials_file", str(credentials_file))
    assert read_full_config(str(config_file), str(credentials_file)) == session.full_config


def test_the_config_read_of_missing_files_is_what_botocore_reads(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    session = botocore.session.Session()
    session.set_config_variable("config_file", missing)
    session.set_config_variable("credentials_file", missing)
    assert read_full_config(missing, missing) == session.full_config == {"profiles": {}}


def test_control_answers_are_read_with_a_length_chunked_or_to_the_end() -> None:
    assert parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}") == (200, b"{}")
    assert parse_answer(b"HTTP/1.1 403 Forbidden\r\nContent-Type: x\r\n\r\n{\"a\": 1}") == (403, b'{"a": 1}')
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n"
    assert parse_answer(chunked) == (200, b'{"a": 1}')


@pytest.mark.parametrize("raw", [
    b"",                                                        # the daemon hung up
    b"SSH-2.0-OpenSSH\r\n\r\n",                                 # not HTTP
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",         # cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_broken_control_answers_are_refused_with_a_message(raw: bytes) -> None:
    with pytest.raises(DaemonError) as raised:
        parse_answer(raw)
    assert "answer" in raised.value.message


def test_control_api_is_built_once_for_concurrent_first_requests(broker: Broker) -> None:
    status, _, _ = broker.raw_get("dev", "rbt_unknownunknownunknown")
    assert status == 401
    assert not broker.daemon.control_api.loaded  # the credentials path did not build it
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: broker.control_call("GET", "/v1/status"), range(8)))
    assert [answer[0] for answer in answers] == [200] * 8
    assert broker.daemon.control_api.loaded
    assert broker.daemon.control_api.load() is broker.daemon.control_api.load()


@needs_rolebroker
def test_env_against_a_live_daemon_imports_only_what_it_uses(broker: Broker) -> None:
    """The whole `env` path, token and all: what a shell rc file pays at every start."""
    broker.login("dev")
    env = {**os.environ, "ROLEBROKER_RUNTIME_DIR": str(broker.daemon.settings.runtime_dir)}
    done = subprocess.run([sys.executable, "-X", "importtime", str(ROLEBROKER), "env", "dev"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0 and "AWS_CONTAINER_CREDENTIALS_FULL_URI" in done.stdout, done.stderr[-2000:]
    modules = imported(done.stderr.splitlines())
    found = ({"subprocess", "dataclasses", "hmac", "rolebroker.clients.docker_link"} | ALWAYS_FORBIDDEN) & modules
    assert not found, found
