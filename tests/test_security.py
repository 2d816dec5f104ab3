"""Issue 6: the daemon's hardening, over real HTTP with every header under the test's control.

http.client is driven by hand (putrequest/putheader) so that Host, Origin and friends are
exactly what a DNS-rebinding page, a browser or a local guesser would send, and nothing more.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import logging
import os
import re
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rolebroker.broker.guard import MAX_BODY, MAX_HEADER_VALUE, FailureThrottle
from rolebroker.broker.runtime import CONTROL_SOCKET, DAEMON_FILE
from rolebroker.broker.tokens import TOKEN_PREFIX, new_token
from rolebroker.clients.env_cmds import write_token_file
from rolebroker.clients.daemon_client import ControlConnection, DaemonError
from tests.harness import ALICE_SECRET, Broker, start_broker

CREDENTIAL_FIELDS = ("AccessKeyId", "SecretAccessKey", "Token")
TOKEN_BODY = re.compile(r"^[A-Za-z0-9_-]+$")
_DEFAULT = object()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def send(broker: Broker, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None, host: object = _DEFAULT, source: str | None = None,
         control: bool = False) -> Reply:
    """One request on a fresh connection; Host defaults to what `rolebroker env` prints,
    `host=None` sends none at all. `source` picks the client's loopback address; `control`
    sends it on the control socket, as the CLI does, instead of TCP."""
    connection: http.client.HTTPConnection
    if control:
        connection = ControlConnection(broker.daemon.settings.runtime_dir / CONTROL_SOCKET, 15)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=15,
                                                source_address=(source, 0) if source else None)
    started = time.monotonic()
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is _DEFAULT:
            host = f"127.0.0.1:{broker.port}"
        if host is not None:
            connection.putheader("Host", str(host))
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, response.getheaders(), data, time.monotonic() - started)
    finally:
        connection.close()


def assert_no_credentials(broker: Broker, reply: Reply) -> None:
    """Nothing of any credential the STS double ever issued, nor the user's key, is in the reply."""
    text = reply.body.decode("latin-1")
    for field in CREDENTIAL_FIELDS:
        assert not re.search(rf'"{field}"\s*:', text), text
    assert ALICE_SECRET not in text
    for issued in broker.sts.issued():
        assert issued.secret_access_key not in text
        assert issued.session_token not in text
        assert issued.access_key_id not in text


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.header("Content-Type") == "application/json"
    body = reply.json()
    assert body["code"] == code and body["Code"] == code
    assert isinstance(body["message"], str) and body["message"] == body["Message"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
def logged_in(broker: Broker) -> Broker:
    broker.login("dev")
    return broker


# ---- DNS rebinding: the Host header --------------------------------------------------------

REBINDING_HOSTS = [
    "evil.example:{port}", "attacker.com", None, "127.0.0.1.evil.example:{port}", "localhost.:{port}",
    "127.0.0.1", "127.0.0.1:{other}", "localhost:{port}.evil.example", "169.254.170.2:{port}", "",
]


def test_a_rebinding_host_is_refused_and_nothing_leaks(logged_in: Broker) -> None:
    broker = logged_in
    token = broker.token("dev")
    for host in REBINDING_HOSTS:
        value = None if host is None else host.format(port=broker.port, other=broker.port + 1)
        reply = send(broker, "GET", "/v1/credentials/dev", {"Authorization": token}, host=value)
        assert_error(reply, 403, "BadHost")
        assert_no_credentials(broker, reply)
        # The control API's paths on TCP meet the same check first.
        control = send(broker, "GET", "/v1/status", {}, host=value)
        assert_error(control, 403, "BadHost")
        assert "config_files" not in control.body.decode()


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}"])
def test_the_daemons_own_names_are_accepted(logged_in: Broker, host: str) -> None:
    reply = send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": logged_in.token("dev")},
                 host=host.format(port=logged_in.port))
    assert reply.status == 200
    assert set(CREDENTIAL_FIELDS) <= set(reply.json())


# ---- browsers ------------------------------------------------------------------------------

BROWSER_HEADERS = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # a sandboxed iframe or a file:// page
    {"Origin": "http://127.0.0.1:{port}"},  # even a page served from this very host
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
]


def test_browser_requests_are_refused_even_with_a_valid_token(logged_in: Broker) -> None:
    broker = logged_in
    for headers in BROWSER_HEADERS:
        sent = {k: v.format(port=broker.port) for k, v in headers.items()}
        reply = send(broker, "GET", "/v1/credentials/dev", {"Authorization": broker.token("dev"), **sent})
        assert_error(reply, 403, "BrowserRequest")
        assert_no_credentials(broker, reply)
        control = send(broker, "GET", "/v1/status", sent, control=True)
        assert_error(control, 403, "BrowserRequest")


def test_sec_fetch_site_none_is_a_user_action_and_allowed(logged_in: Broker) -> None:
    reply = send(logged_in, "GET", "/v1/credentials/dev",
                 {"Authorization": logged_in.token("dev"), "Sec-Fetch-Site": "none"})
    assert reply.status == 200 and reply.json()["AccessKeyId"].startswith("ASIA")


def test_no_response_ever_grants_cors(logged_in: Broker) -> None:
    broker = logged_in
    token = broker.token("dev")
    origin = {"Origin": "https://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    replies = [
        send(broker, "GET", "/v1/credentials/dev", {"Authorization": token}),
        send(broker, "GET", "/v1/credentials/dev", {"Authorization": "nope"}),
        send(broker, "GET", "/v1/credentials/dev", {"Authorization": token, **origin}),
        send(broker, "GET", "/v1/status", {}, control=True),
        send(broker, "GET", "/v1/health", origin),
        send(broker, "GET", "/v1/no/such/route", {}),
        send(broker, "OPTIONS", "/v1/credentials/dev", preflight),
        send(broker, "OPTIONS", "/v1/status", preflight),
        send(broker, "OPTIONS", "/v1/login", preflight),
        send(broker, "OPTIONS", "/v1/credentials/dev", {"Access-Control-Request-Method": "GET"}),
        send(broker, "OPTIONS", "/v1/tokens", {"Access-Control-Request-Method": "POST"}),
    ]
    assert replies[0].status == 200  # the check looks at real answers, successful ones included
    for reply in replies:
        assert not [k for k, _ in reply.headers if k.lower().startswith("access-control-")], reply.headers
    for reply in replies[6:]:  # no preflight succeeds, so a browser never sends the real request
        assert not 200 <= reply.status < 300, reply.body
        assert_no_credentials(broker, reply)


# ---- tokens --------------------------------------------------------------------------------

def _refusals(broker: Broker, caplog: pytest.LogCaptureFixture, profile: str) -> list[logging.LogRecord]:
    async def flush() -> None:  # refusals are logged as a periodic summary: say it now
        broker.daemon.refusals.flush()

    broker.call(flush())
    return [r for r in caplog.records if r.name.startswith("rolebroker")
            and r.levelno >= logging.WARNING and profile in r.getMessage() and "refused" in r.getMessage()]


def _assert_never_logged(caplog: pytest.LogCaptureFixture, value: str) -> None:
    assert value not in caplog.text
    for record in caplog.records:
        assert value not in record.getMessage()
        assert value not in repr(record.args)


def test_missing_token_is_401(logged_in: Broker) -> None:
    reply = send(logged_in, "GET", "/v1/credentials/dev")
    assert_error(reply, 401, "MissingToken")
    assert_no_credentials(logged_in, reply)


def test_wrong_token_is_401_and_logged_without_the_value(logged_in: Broker,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = TOKEN_PREFIX + "GuessedGuessedGuessedGuessedGuessedGuessed0"
    reply = send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": wrong})
    assert_error(reply, 401, "InvalidToken")
    assert_no_credentials(logged_in, reply)
    assert wrong not in reply.body.decode()
    assert _refusals(logged_in, caplog, "dev")
    _assert_never_logged(caplog, wrong)


def test_token_for_another_profile_is_403(logged_in: Broker) -> None:
    reply = send(logged_in, "GET", "/v1/credentials/prod", {"Authorization": logged_in.token("dev")})
    body = assert_error(reply, 403, "ProfileNotAllowed")
    assert_no_credentials(logged_in, reply)
    assert logged_in.token("dev") not in body["message"]
    # ...while the same token still serves its own profile.
    assert send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": logged_in.token("dev")}).status == 200


def test_token_for_another_profile_is_logged(logged_in: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = logged_in.token("dev")
    assert send(logged_in, "GET", "/v1/credentials/prod", {"Authorization": token}).status == 403
    _assert_never_logged(caplog, token)
    assert _refusals(logged_in, caplog, "prod")


def test_revoked_token_is_401_and_logged_without_the_value(logged_in: Broker,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    control = logged_in.control()
    minted = control.request("POST", "/v1/tokens", {"profiles": ["dev"], "name": "to-revoke"})
    assert send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": minted["token"]}).status == 200
    assert control.request("DELETE", "/v1/tokens/to-revoke") == {"revoked": "to-revoke"}
    reply = send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": minted["token"]})
    assert_error(reply, 401, "InvalidToken")
    assert_no_credentials(logged_in, reply)
    assert "to-revoke" not in [t["name"] for t in control.request("GET", "/v1/tokens")["tokens"]]
    assert _refusals(logged_in, caplog, "dev")
    _assert_never_logged(caplog, minted["token"])


def test_a_token_for_every_profile_is_asked_for_by_name(logged_in: Broker) -> None:
    control = logged_in.control()
    before = [t["name"] for t in control.request("GET", "/v1/tokens")["tokens"]]
    for body in ({}, {"profiles": []}, {"name": "quiet"}, {"profiles": ["dev"], "all_profiles": True}):
        with pytest.raises(DaemonError) as raised:
            control.request("POST", "/v1/tokens", body)
        assert (raised.value.status, raised.value.code) == (400, "BadTokenRequest"), body
        assert '"all_profiles": true' in raised.value.message and "profiles" in raised.value.message
    assert [t["name"] for t in control.request("GET", "/v1/tokens")["tokens"]] == before  # none was made
    minted = control.request("POST", "/v1/tokens", {"all_profiles": True, "name": "everything"})
    assert minted["profiles"] == []
    logged_in.settle()  # login warms every profile of the MFA session in the background
    for profile in ("dev", "prod"):
        assert send(logged_in, "GET", f"/v1/credentials/{profile}", {"Authorization": minted["token"]}).status == 200


def test_expired_token_is_401_and_logged_without_the_value(logged_in: Broker,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    minted = logged_in.control().request("POST", "/v1/tokens", {"profiles": ["dev"], "ttl_seconds": 120})
    assert minted["expires_at"] == pytest.approx(logged_in.clock.now() + 120)
    logged_in.advance(119)
    assert send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": minted["token"]}).status == 200
    logged_in.advance(1)  # the expiry instant itself is already too late
    reply = send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": minted["token"]})
    assert_error(reply, 401, "InvalidToken")
    assert_no_credentials(logged_in, reply)
    assert _refusals(logged_in, caplog, "dev")
    _assert_never_logged(caplog, minted["token"])


def test_a_profile_name_cannot_forge_log_lines(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = send(broker, "GET", "/v1/credentials/dev%0D%0AINFO%20rolebroker%3A%20all%20good",
                 {"Authorization": "nope"})
    assert reply.status in (400, 401)
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\r" not in record.getMessage()


def test_the_control_api_answers_on_the_control_socket_only(logged_in: Broker) -> None:
    broker = logged_in
    client_token = broker.token("dev")
    calls = [("GET", "/v1/status", None), ("GET", "/v1/tokens", None), ("POST", "/v1/reload", b"{}"),
             ("POST", "/v1/tokens", b'{"profiles": []}'), ("POST", "/v1/logout", b"{}"),
             ("GET", "/v1/profiles/dev/env", None), ("DELETE", "/v1/tokens/x", None),
             ("POST", "/v1/login", b'{"profile": "dev", "code": "123456"}'), ("GET", "/v1/health", None),
             ("GET", "/openapi.json", None), ("GET", "/docs", None), ("GET", "/", None)]
    requests = [(method, path, {**({"Content-Type": "application/json"} if body else {}), **presented}, body)
                for method, path, body in calls
                for presented in ({}, {"Authorization": client_token}, {"Authorization": "Bearer x"})]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda r: send(broker, r[0], r[1], r[2], body=r[3]), requests))
    for reply in replies:
        body = assert_error(reply, 403, "ControlChannelOnly")
        assert "Unix socket" in body["message"]
        assert client_token not in reply.body.decode()
    # Nothing above reached the sessions: dev is still logged in and served.
    assert send(broker, "GET", "/v1/credentials/dev", {"Authorization": client_token}).status == 200
    status = send(broker, "GET", "/v1/status", control=True)
    assert status.status == 200 and "profiles" in status.json()
    schema = send(broker, "GET", "/openapi.json", control=True)
    assert schema.status == 200 and "/v1/login" in schema.json()["paths"]


# ---- oversized and malformed input ---------------------------------------------------------

def test_a_header_value_over_4096_bytes_is_431(logged_in: Broker) -> None:
    token = logged_in.token("dev")
    at_limit = send(logged_in, "GET", "/v1/credentials/dev",
                    {"Authorization": token, "X-Padding": "a" * MAX_HEADER_VALUE})
    assert at_limit.status == 200
    for headers in ({"Authorization": token, "X-Padding": "a" * (MAX_HEADER_VALUE + 1)},
                    {"Authorization": "b" * 100_000},
                    {"Authorization": token, "User-Agent": "c" * 10_000}):
        reply = send(logged_in, "GET", "/v1/credentials/dev", headers)
        assert_error(reply, 431, "HeaderTooLarge")
        assert_no_credentials(logged_in, reply)


def test_a_control_body_over_64_kib_is_413(broker: Broker) -> None:
    headers = {"Content-Type": "application/json"}
    # Exactly at the limit still reaches the API (an unknown profile there: 403, not 413).
    padding = MAX_BODY - len(json.dumps({"profile": "nosuch", "pad": ""}))
    at_limit = json.dumps({"profile": "nosuch", "pad": "x" * padding}).encode()
    assert len(at_limit) == MAX_BODY
    assert_error(send(broker, "POST", "/v1/login", headers, body=at_limit, control=True), 403, "UnknownProfile")
    over = json.dumps({"profile": "nosuch", "pad": "x" * (padding + 1)}).encode()
    assert len(over) == MAX_BODY + 1
    for path in ("/v1/login", "/v1/tokens", "/v1/logout", "/v1/reload"):
        assert_error(send(broker, "POST", path, headers, body=over, control=True), 413, "BodyTooLarge")
    # A declared length is refused before a byte of the body is read.
    assert_error(send(broker, "POST", "/v1/login", {**headers, "Content-Length": str(10**9)}, control=True),
                 413, "BodyTooLarge")


def _chunked(broker: Broker, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(str(broker.daemon.settings.runtime_dir / CONTROL_SOCKET))
        head = (f"POST {path} HTTP/1.1\r\nHost: rolebroker\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                          for i in range(0, len(body), 8192))
        sock.sendall(head + chunks + b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_a_small_chunked_body_is_read(broker: Broker) -> None:
    status, body = _chunked(broker, "/v1/tokens", b'{"profiles": ["dev"], "name": "chunked"}')
    assert status == 200 and body["name"] == "chunked"


def test_a_chunked_body_over_64_kib_is_413(broker: Broker) -> None:
    body = json.dumps({"profiles": ["dev"], "pad": "x" * (MAX_BODY + 1)}).encode()
    status, answer = _chunked(broker, "/v1/tokens", body)
    assert (status, answer.get("code")) == (413, "BodyTooLarge")


def test_profile_names_are_bounded(broker: Broker) -> None:
    for name in ("a" * 200, "a" * 129):
        assert_error(send(broker, "GET", f"/v1/credentials/{name}", control=True), 400, "BadProfileName")
    # 128 is the limit: such a name is looked up (and unknown).
    assert_error(send(broker, "GET", f"/v1/credentials/{'a' * 128}", control=True), 403, "UnknownProfile")
    login = send(broker, "POST", "/v1/login", {"Content-Type": "application/json"},
                 body=json.dumps({"profile": "a" * 200, "code": "123456"}).encode(), control=True)
    assert_error(login, 400, "BadRequest")
    assert_error(send(broker, "GET", "/v1/credentials/", control=True), 400, "BadProfileName")


TRAVERSALS = [
    "/v1/credentials/..%2F..%2Fetc%2Fpasswd",
    "/v1/credentials/../v1/status",
    "/v1/credentials/../../../../etc/passwd",
    "/v1/credentials/%2e%2e/%2e%2e/etc/passwd",
    "/v1/credentials/..%5C..%5Cetc%5Cpasswd",
    "/v1/credentials/dev/../../v1/status",
    "/v1/credentials/..",
    "/v1/credentials/%2e%2e",
    "/v1/credentials/dev%00",
    "/v1/credentials//etc/passwd",
    "/v1/profiles/..%2F..%2Fetc%2Fpasswd/env",
    "/../../etc/passwd",
    "/v1/../../etc/passwd",
]


def test_path_traversal_never_answers_200_nor_a_file(logged_in: Broker) -> None:
    broker = logged_in
    for path in TRAVERSALS:
        for token, control in ((broker.token("dev"), False), (None, True)):
            reply = send(broker, "GET", path, {"Authorization": token} if token else {}, control=control)
            assert 400 <= reply.status < 500, (path, reply.status, reply.body)
            text = reply.body.decode("latin-1")
            assert "root:" not in text and "/bin/" not in text
            assert reply.header("Content-Type") == "application/json"
            json.loads(reply.body)
            assert_no_credentials(broker, reply)


# ---- slowing down guessers -----------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_failure_throttle_penalties_grow_cap_and_reset() -> None:
    clock = FakeTime()
    throttle = FailureThrottle(clock)
    penalties = [throttle.record("127.0.0.1") for _ in range(60)]
    assert penalties[0] == 0.0  # one typo costs nothing
    assert penalties[1] == pytest.approx(0.05) and penalties[10] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(penalties, penalties[1:]))  # they only grow...
    assert max(penalties) == 2.0 and penalties[40:] == [2.0] * 20  # ...up to 2 s
    assert throttle.record("10.0.0.7") == 0.0  # peers are counted apart
    clock.now += 30
    assert throttle.record("127.0.0.1") == 2.0  # still within the window
    clock.now += 31  # all but the last failure have left the 60 s window
    assert throttle.record("127.0.0.1") == pytest.approx(0.05)
    clock.now += 61  # a quiet minute: back to zero
    assert throttle.record("127.0.0.1") == 0.0


def test_failure_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(FakeTime())
    for n in range(10_050):
        throttle.record(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(throttle._failures) <= 10_001


def _bad_token_burst(broker: Broker, count: int, source: str | None = None) -> list[Reply]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(send, broker, "GET", "/v1/credentials/dev", {"Authorization": f"bad-{n}"},
                               source=source) for n in range(count)]
        return [f.result() for f in futures]


def test_repeated_failures_are_slowed_but_valid_clients_are_not(logged_in: Broker) -> None:
    broker = logged_in
    token = broker.token("dev")
    burst = _bad_token_burst(broker, 20)  # concurrent: their penalties overlap
    statuses = [r.status for r in burst]
    # At most 8 answers are held at once per peer; the failures past them are answered 429.
    assert set(statuses) <= {401, 429} and statuses.count(401) >= 9
    assert max(r.seconds for r in burst) >= 0.35  # the 9th failure was held 8 x 50 ms
    slowed = send(broker, "GET", "/v1/credentials/dev", {"Authorization": "bad-21"})
    assert_error(slowed, 401, "InvalidToken")
    assert slowed.seconds >= 0.95  # 21st failure: held 20 x 50 ms
    valid = send(broker, "GET", "/v1/credentials/dev", {"Authorization": token})
    assert valid.status == 200
    assert valid.seconds < 1.0
    control = send(broker, "GET", "/v1/status", control=True)
    assert control.status == 200 and control.seconds < 1.0


def test_a_guesser_cannot_shed_its_penalty_by_changing_loopback_address(logged_in: Broker) -> None:
    _bad_token_burst(logged_in, 20, source="127.0.0.1")
    fresh_address = send(logged_in, "GET", "/v1/credentials/dev", {"Authorization": "bad-x"}, source="127.0.0.2")
    assert fresh_address.status == 401
    assert fresh_address.seconds >= 0.95


# ---- tokens and files ----------------------------------------------------------------------

def _assert_token_shape(token: str) -> None:
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX):]
    assert TOKEN_BODY.match(body)
    # base64url, 6 bits a character: at least 128 bits of randomness
    assert len(body) * 6 >= 128
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) >= 16


def test_tokens_carry_at_least_128_random_bits() -> None:
    tokens = [new_token() for _ in range(2000)]
    for token in tokens:
        _assert_token_shape(token)
    assert len(set(tokens)) == len(tokens)
    # Every position varies: no counter, timestamp or fixed filler hides in the token.
    bodies = [t[len(TOKEN_PREFIX):] for t in tokens]
    for position in range(len(bodies[0]) - 1):  # the last character carries only the padding bits' rest
        assert len({b[position] for b in bodies}) > 32
    raw = b"".join(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)) for b in bodies)
    ones = sum(bin(byte).count("1") for byte in raw)
    assert abs(ones / (len(raw) * 8) - 0.5) < 0.01  # unbiased bits


def test_minted_tokens_have_the_full_strength(broker: Broker) -> None:
    _assert_token_shape(broker.token("dev"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_runtime_and_state_files_are_private(broker: Broker) -> None:
    broker.token("dev")  # makes the daemon write its token digests
    runtime, state = broker.daemon.settings.runtime_dir, broker.daemon.settings.state_dir
    assert _mode(runtime) == 0o700 and _mode(state) == 0o700
    assert stat.S_ISSOCK((runtime / CONTROL_SOCKET).lstat().st_mode)
    for path in (runtime / CONTROL_SOCKET, runtime / DAEMON_FILE, runtime / "daemon.lock", state / "tokens.json"):
        assert _mode(path) == 0o600, path
        assert path.stat().st_uid == os.getuid()
    leftovers = [p.name for d in (runtime, state) for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temp files behind


def test_a_loose_runtime_directory_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "state").mkdir(mode=0o777)
    (tmp_path / "state").chmod(0o777)
    running = start_broker(tmp_path)
    try:
        running.control().request("GET", "/v1/health")  # serving (stop() needs a started server)
        assert _mode(tmp_path / "run") == 0o700
        assert _mode(tmp_path / "state") == 0o700
        assert _mode(tmp_path / "run" / CONTROL_SOCKET) == 0o600
    finally:
        running.stop()


def test_a_client_token_file_is_private_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old\n")
    path.chmod(0o644)  # replacing a world-readable file must not keep its mode
    token = new_token()
    write_token_file(str(path), token)
    assert _mode(path) == 0o600
    assert path.read_bytes() == token.encode()
