"""Test harness: a real daemon on a real socket (in a thread, with an injected clock),
the strict STS double on another, and the user's AWS config written to temp files.

Nothing of the broker is mocked; the clock is the only thing the tests control.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from collections.abc import Coroutine

import botocore.credentials
import botocore.session

from rolebroker.broker.clock import ManualClock
from rolebroker.broker.config import ConfigFiles
from rolebroker.broker.refresh import RefreshPolicy
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.broker.sts_double import StsDouble
from rolebroker.broker.sts_world import IamUser, MfaDevice, Role, totp
from rolebroker.broker.runtime import CONTROL_SOCKET
from rolebroker.clients.daemon_client import ControlConnection, DaemonClient
from rolebroker.clients.envvars import variables_for

T = TypeVar("T")

ALICE_KEY = "AKIAALICE00000000001"
ALICE_SECRET = "alice-secret-key-000000000000000000000000"
MFA_SERIAL = "arn:aws:iam::111111111111:mfa/alice"
MFA_SECRET = b"alice-totp-seed-0001"
DEV_ROLE = "arn:aws:iam::222222222222:role/dev"
PROD_ROLE = "arn:aws:iam::333333333333:role/prod"
OPEN_ROLE = "arn:aws:iam::444444444444:role/open"

# The layout many guides use: role profiles straight in the credentials file.
CREDENTIALS_LAYOUT = {
    "credentials": f"""
[default]
aws_access_key_id = {ALICE_KEY}
aws_secret_access_key = {ALICE_SECRET}

[dev]
role_arn = {DEV_ROLE}
source_profile = default
mfa_serial = {MFA_SERIAL}

[prod]
role_arn = {PROD_ROLE}
source_profile = default
mfa_serial = {MFA_SERIAL}
duration_seconds = 7200
""",
    "config": """
[default]
region = us-east-1

[profile dev]
region = eu-west-1
""",
}

# The layout the AWS CLI documents: keys in credentials, roles in config.
CONFIG_LAYOUT = {
    "credentials": f"""
[alice]
aws_access_key_id = {ALICE_KEY}
aws_secret_access_key = {ALICE_SECRET}
""",
    "config": f"""
[profile alice]
region = us-east-1
mfa_serial = {MFA_SERIAL}

[profile dev]
role_arn = {DEV_ROLE}
source_profile = alice
region = eu-west-1

[profile prod]
role_arn = {PROD_ROLE}
source_profile = alice
""",
}


def alice(with_mfa: bool = True) -> IamUser:
    device = MfaDevice(MFA_SERIAL, MFA_SECRET) if with_mfa else None
    return IamUser(ALICE_KEY, ALICE_SECRET, "arn:aws:iam::111111111111:user/alice", device)


def standard_roles() -> list[Role]:
    return [Role(DEV_ROLE, require_mfa=True), Role(PROD_ROLE, require_mfa=True),
            Role(OPEN_ROLE, max_session_duration=43200)]


@dataclass
class Broker:
    """A running daemon with its STS double, clock and files."""

    tmp: Path
    clock: ManualClock
    sts: StsDouble
    daemon: Daemon
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    files: ConfigFiles
    tokens: dict[str, str] = field(default_factory=dict)

    # ---- control ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.daemon.port

    def control(self) -> DaemonClient:
        return DaemonClient(self.daemon.settings.runtime_dir)

    def control_call(self, method: str, path: str, body: Any = None,
                     headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A raw request on the control socket, as the CLI sends it: (status, headers, body).
        `body` is sent as JSON, or as it is when it is bytes."""
        connection = ControlConnection(self.daemon.settings.runtime_dir / CONTROL_SOCKET, 30)
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            connection.request(method, path, body=payload, headers={
                **({"Content-Type": "application/json"} if payload is not None else {}), **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.headers), response.read()
        finally:
            connection.close()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def advance(self, seconds: float) -> None:
        """Move the clock and let the daemon finish whatever became due."""
        self.clock.advance(seconds)
        self.call(self.daemon.sessions.refresh_due())

    def settle(self) -> None:
        self.call(self.daemon.sessions.settle())

    def code(self) -> str:
        """The MFA device's current code, as the user's authenticator app would show it."""
        return totp(MFA_SECRET, self.clock.now())

    def next_code(self) -> str:
        """Step to the next 30 s TOTP window and return its code (codes are single-use)."""
        self.clock.advance(30 - self.clock.now() % 30)
        return self.code()

    def login(self, profile: str, code: str | None = None) -> dict[str, Any]:
        return self.control().request("POST", "/v1/login", {"profile": profile, "code": code or self.next_code()})

    def token(self, profile: str) -> str:
        if profile not in self.tokens:
            minted = self.control().request("POST", "/v1/tokens", {"profiles": [profile]})
            self.tokens[profile] = minted["token"]
        return self.tokens[profile]

    # ---- clients ---------------------------------------------------------------------
    def url(self, profile: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials/{profile}"

    def raw_get(self, profile: str, token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
        request = urllib.request.Request(self.url(profile), headers=headers or {})
        if token is not None:
            request.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def get_settled(self, profile: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        """A cold request may get the retryable 503 if STS is slow (a busy CI machine); an SDK
        retries, and so does this, once the in-flight call has landed."""
        answer = self.raw_get(profile, self.token(profile))
        if answer[0] == 503 and answer[2].get("code") == "CredentialsPending":
            self.settle()
            answer = self.raw_get(profile, self.token(profile))
        return answer

    def provider(self, profile: str) -> botocore.credentials.ContainerProvider:
        """botocore's own container credential provider, configured as `env` would."""
        environ = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url(profile),
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.token(profile)}
        return botocore.credentials.ContainerProvider(environ=environ)

    def client_environment(self, profile: str) -> dict[str, str]:
        described = self.control().request("GET", f"/v1/profiles/{profile}/env")
        set_vars, unset = variables_for(described, self.token(profile))
        environment = {k: v for k, v in os.environ.items() if k not in unset}
        environment.update(set_vars)
        environment["AWS_ENDPOINT_URL_STS"] = self.sts.endpoint_url
        return environment

    def caller_arn(self, profile: str) -> str:
        """GetCallerIdentity from a fresh Python process whose boto3 resolves its default
        credential chain with the environment `rolebroker env` gives it."""
        result = subprocess.run(
            [sys.executable, "-c", "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])"],
            env=self.client_environment(profile), capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(10)
        self.loop.close()
        self.sts.stop()


def write_config(tmp: Path, layout: dict[str, str], sts_url: str) -> ConfigFiles:
    directory = tmp / "aws"
    directory.mkdir(exist_ok=True)
    files = ConfigFiles(str(directory / "config"), str(directory / "credentials"))
    # The endpoint comes from a `services` section, the way boto3 finds STS-compatible
    # endpoints; every profile of either file gets it.
    config = layout["config"]
    names = re.findall(r"^\[(?:profile )?([^\]]+)\]", layout["credentials"] + "\n" + config, re.M)
    for name in dict.fromkeys(names):
        header = "[default]" if name == "default" else f"[profile {name}]"
        if header in config:
            config = config.replace(header + "\n", header + "\nservices = test-sts\n", 1)
        else:
            config += f"\n{header}\nservices = test-sts\n"
    config += f"\n[services test-sts]\nsts =\n  endpoint_url = {sts_url}\n"
    Path(files.config_file).write_text(config)
    Path(files.credentials_file).write_text(layout["credentials"])
    return files


def start_broker(tmp: Path, layout: dict[str, str] | None = None, users: list[IamUser] | None = None,
                 roles: list[Role] | None = None, policy: RefreshPolicy | None = None,
                 clock: ManualClock | None = None) -> Broker:
    # Real time, rounded to a TOTP window: client processes compare expirations with real time.
    clock = clock or ManualClock(start=(time.time() // 30 + 1) * 30)
    sts = StsDouble(users or [alice()], roles or standard_roles(), now=clock.now).start()
    files = write_config(tmp, layout or CREDENTIALS_LAYOUT, sts.endpoint_url)
    settings = DaemonSettings(files=files, runtime_dir=tmp / "run", state_dir=tmp / "state", port=0)
    daemon = Daemon(settings, clock=clock, policy=policy or RefreshPolicy(tick=30))
    loop, thread = serve_in_thread(daemon)
    return Broker(tmp, clock, sts, daemon, loop, thread, files)


def serve_in_thread(daemon: Daemon) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run a daemon on its own event loop in a thread, on a real loopback socket and its
    control socket."""
    daemon.claim()
    sockets = [daemon.bind(), daemon.bind_control()]  # listening already: requests queue until the loop runs
    daemon.prepare(sockets)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_until_complete(daemon.serve(sockets))

    thread = threading.Thread(target=run, name="daemon", daemon=True)
    thread.start()
    ready.wait(10)
    return loop, thread


class Lines:
    """A pipe read line by line on a thread, so a test can wait for one line with a timeout
    (a bounded wait on an event, never a fixed sleep)."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:  # closed at EOF, so no pipe outlives its process
            for line in stream:
                self._queue.put(line)
        self._queue.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {text!r} within {timeout} s; got:\n{''.join(self.seen)}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the stream ended before a line with {text!r}; got:\n{''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line
