"""Issue 6: no secret leaves the daemon except where it is meant to go.

A full session (failed and good logins, token minting, credential fetches, refused guesses,
an STS hiccup during a refresh, revocation, expiry, logout, shutdown) runs with every
logger at DEBUG. Then every secret that existed (the user's long-term key, every
credential the STS double issued, every client token, the control token, every MFA code)
is looked for in the logs, on stdout/stderr, in every file the daemon wrote and in every
HTTP answer other than the one meant to carry it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from rolebroker.broker.main import configure_logging
from rolebroker.broker.runtime import CONTROL_SOCKET
from rolebroker.clients.daemon_client import ControlConnection
from tests.harness import ALICE_SECRET, DEV_ROLE, PROD_ROLE, Broker, start_broker


@dataclass
class Answer:
    label: str
    method: str
    path: str
    status: int
    body: str


# Sent on the control socket, as the CLI does, rather than with a token over TCP.
CONTROL = "<control channel>"


class Recorder:
    """Talks to the daemon over HTTP and keeps every answer."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.answers: list[Answer] = []

    def __call__(self, label: str, method: str, path: str, token: str | None = None,
                 body: Any = None) -> tuple[int, Any]:
        connection: http.client.HTTPConnection
        if token == CONTROL:
            connection = ControlConnection(self.broker.daemon.settings.runtime_dir / CONTROL_SOCKET, 15)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.broker.port, timeout=15)
        headers = {} if token in (None, CONTROL) else {"Authorization": token}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode("utf-8")
        finally:
            connection.close()
        self.answers.append(Answer(label, method, path, response.status, raw))
        return response.status, json.loads(raw) if raw else None


@pytest.fixture
def daemon_logging() -> Iterator[None]:
    """The daemon's own logging setup (`rolebroker serve --log-level debug`), undone afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    pinned = {name: logging.getLogger(name).level for name in ("botocore", "urllib3")}
    configure_logging("DEBUG")  # under pytest: adds no handler, but pins the chatty libraries
    assert logging.getLogger("botocore").getEffectiveLevel() >= logging.WARNING
    yield
    for name, previous in pinned.items():
        logging.getLogger(name).setLevel(previous)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _occurs(secret: str, text: str) -> bool:
    if secret.isdigit():  # an MFA code: only as a number of its own
        return re.search(rf"(?<![0-9]){secret}(?![0-9])", text) is not None
    return secret in text


def test_a_full_session_leaks_no_secret(tmp_path: Path, daemon_logging: None, caplog: pytest.LogCaptureFixture,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the STS double's included
    broker = start_broker(tmp_path)
    call = Recorder(broker)
    control = CONTROL
    codes: list[str] = []
    minted: dict[str, str] = {}  # label of the answer that carried it -> token
    files_while_running: dict[str, bytes] = {}
    try:
        call("health", "GET", "/v1/health", control)
        call("status before login", "GET", "/v1/status", control)
        call("login before any code", "POST", "/v1/login", control, {"profile": "dev"})
        wrong = broker.next_code()
        wrong = f"{(int(wrong) + 1) % 1_000_000:06d}"
        codes.append(wrong)
        status, _ = call("login with a wrong code", "POST", "/v1/login", control, {"profile": "dev", "code": wrong})
        assert status == 403
        code = broker.code()
        codes.append(code)
        status, _ = call("login", "POST", "/v1/login", control, {"profile": "dev", "code": code})
        assert status == 200
        status, _ = call("login again with the used code", "POST", "/v1/login", control,
                         {"profile": "dev", "code": code})
        assert status == 403

        for profile in ("dev", "prod"):
            status, body = call(f"mint {profile}", "POST", "/v1/tokens", control,
                                {"profiles": [profile], "name": f"leak-{profile}"})
            assert status == 200
            minted[f"mint {profile}"] = body["token"]
        status, body = call("mint short-lived", "POST", "/v1/tokens", control, {"profiles": ["dev"], "ttl_seconds": 60})
        minted["mint short-lived"] = short_lived = body["token"]
        dev_token, prod_token = minted["mint dev"], minted["mint prod"]

        assert call("credentials dev", "GET", "/v1/credentials/dev", dev_token)[0] == 200
        assert call("credentials prod", "GET", "/v1/credentials/prod", prod_token)[0] == 200
        assert call("credentials dev via the control channel", "GET", "/v1/credentials/dev", control)[0] == 200
        assert call("cross-profile", "GET", "/v1/credentials/prod", dev_token)[0] == 403
        assert call("missing token", "GET", "/v1/credentials/dev")[0] == 401
        for n, bad in enumerate([dev_token[:-1], dev_token + "x", "Bearer " + dev_token, dev_token.upper(),
                                 "rbt_" + "A" * 43]):
            assert call(f"bad token {n}", "GET", "/v1/credentials/dev", bad)[0] == 401
        assert call("control API with a client token", "GET", "/v1/status", dev_token)[0] == 403
        call("env", "GET", "/v1/profiles/dev/env", control)
        call("env docker", "GET", "/v1/profiles/prod/env?target=docker", control)
        call("token list", "GET", "/v1/tokens", control)
        call("status", "GET", "/v1/status", control)
        call("bad request", "POST", "/v1/tokens", control, {"profiles": "dev", "ttl_seconds": -1})
        call("unknown profile", "POST", "/v1/login", control, {"profile": "nosuch", "code": "000000"})

        # A refresh that STS throttles, then the retry that works.
        broker.sts.inject_fault("AssumeRole", "throttling", times=2)
        broker.advance(41 * 60)
        broker.advance(10 * 60)
        assert broker.sts.count("AssumeRole", ok=False) == 2
        assert call("credentials dev after the refresh", "GET", "/v1/credentials/dev", dev_token)[0] == 200
        call("status after the refresh", "GET", "/v1/status", control)
        call("reload", "POST", "/v1/reload", control)

        broker.advance(60)
        assert call("expired token", "GET", "/v1/credentials/dev", short_lived)[0] == 401
        assert call("revoke", "DELETE", "/v1/tokens/leak-dev", control)[0] == 200
        assert call("revoked token", "GET", "/v1/credentials/dev", dev_token)[0] == 401
        assert call("revoke unknown", "DELETE", "/v1/tokens/leak-dev", control)[0] == 400
        assert call("logout dev", "POST", "/v1/logout", control, {"profile": "dev"})[0] == 200
        assert call("prod after logout", "GET", "/v1/credentials/prod", prod_token)[0] == 403
        assert call("logout all", "POST", "/v1/logout", control, {})[0] == 200
        call("status at the end", "GET", "/v1/status", control)
        call("token list at the end", "GET", "/v1/tokens", control)
        files_while_running = _written_files(tmp_path)
    finally:
        broker.control().request("GET", "/v1/health")  # serving, so stop() finds the server
        broker.stop()
    files_after_stop = _written_files(tmp_path)
    captured = capfd.readouterr()

    # ---- what existed ---------------------------------------------------------------------
    issued = broker.sts.issued()
    sessions = [c for c in issued if c.kind == "session"]
    roles = {arn: [c for c in issued if c.role_arn == arn] for arn in (DEV_ROLE, PROD_ROLE)}
    assert len(sessions) == 1 and len(roles[DEV_ROLE]) >= 2 and len(roles[PROD_ROLE]) >= 2  # a refresh happened
    aws_secrets = {ALICE_SECRET} | {c.secret_access_key for c in issued} | {c.session_token for c in issued}
    tokens = set(minted.values())
    everything = aws_secrets | tokens | set(codes)
    assert len(everything) >= 14

    # ---- logs, stdout, stderr ---------------------------------------------------------------
    names = {r.name for r in caplog.records}
    assert {"rolebroker.sessions", "rolebroker.sts_double", "rolebroker.refused"} <= names, names
    log_text = "\n".join([caplog.text] + [r.getMessage() for r in caplog.records]
                         + [r.exc_text or "" for r in caplog.records] + [repr(r.args) for r in caplog.records])
    console = captured.out + captured.err
    for secret in everything:
        assert not _occurs(secret, log_text), f"a secret is in the logs ({_kind(secret, aws_secrets, tokens)})"
        assert not _occurs(secret, console), f"a secret is on stdout/stderr ({_kind(secret, aws_secrets, tokens)})"

    # ---- files the daemon wrote ---------------------------------------------------------------
    assert str(broker.daemon.settings.state_dir / "tokens.json") in files_after_stop
    for snapshot in (files_while_running, files_after_stop):
        for path, content in snapshot.items():
            text = content.decode("utf-8", "replace")
            for secret in everything:
                assert not _occurs(secret, text), f"{path} holds a secret ({_kind(secret, aws_secrets, tokens)})"
    stored = json.loads(files_after_stop[str(broker.daemon.settings.state_dir / "tokens.json")])
    digests = {record["digest"] for record in stored["tokens"]}
    assert hashlib.sha256(prod_token.encode()).hexdigest() in digests  # only digests, but the right ones
    assert hashlib.sha256(dev_token.encode()).hexdigest() not in digests  # revoked: gone from the file

    # ---- every HTTP answer ---------------------------------------------------------------------
    assert len(call.answers) >= 35
    credential_answers = [a for a in call.answers if a.path.startswith("/v1/credentials/") and a.status == 200]
    assert len(credential_answers) == 4
    for answer in call.answers:
        allowed: set[str] = set()
        if answer in credential_answers:
            body = json.loads(answer.body)
            role = DEV_ROLE if answer.path.endswith("/dev") else PROD_ROLE
            current = next(c for c in roles[role] if c.access_key_id == body["AccessKeyId"])
            assert (body["SecretAccessKey"], body["Token"]) == (current.secret_access_key, current.session_token)
            allowed = {current.secret_access_key, current.session_token}
        elif answer.label in minted:
            assert minted[answer.label] in answer.body
            allowed = {minted[answer.label]}
        for secret in everything - allowed:
            assert not _occurs(secret, answer.body), \
                f"the answer to {answer.label!r} holds a secret ({_kind(secret, aws_secrets, tokens)})"


def _written_files(root: Path) -> dict[str, bytes]:
    """Every file under the test's directory but the user's AWS files (the harness wrote those)."""
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and (root / "aws") not in path.parents}


def _kind(secret: str, aws_secrets: set[str], tokens: set[str]) -> str:
    """What a leaked secret is, without printing it into the test report."""
    if secret == ALICE_SECRET:
        return "the user's long-term secret key"
    if secret in aws_secrets:
        return "an STS credential"
    if secret in tokens:
        return "a client or control token"
    return "an MFA code"
