"""Resource exhaustion by another local user, replayed as that user acts: endless request
heads, idle and trickling sockets, guessing over many connections, WebSocket upgrades.

The attacks run as a real second uid (the `other_user` fixture) with stdlib-only scripts, against
the real daemon on real sockets: in a thread with short configured limits where time matters,
as a `rolebroker serve` child process where its memory is measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from rolebroker.broker.clock import ManualClock
from rolebroker.broker.guard import FailureThrottle, RequestGuard
from rolebroker.broker.fd_budget import OPEN_FILES_WANTED
from rolebroker.broker.limits import Limits
from rolebroker.broker.refresh import RefreshPolicy
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.broker.sts_double import StsDouble
from tests.attacker import OtherUser
from tests.harness import CREDENTIALS_LAYOUT, Broker, Lines, alice, serve_in_thread, standard_roles, write_config

ROLEBROKER = Path(sys.executable).parent / "rolebroker"


# ---- helpers ------------------------------------------------------------------------------

def start_limited_broker(tmp: Path, limits: Limits) -> Broker:
    """start_broker (tests/harness.py) with these limits in the daemon's settings."""
    clock = ManualClock(start=(time.time() // 30 + 1) * 30)
    sts = StsDouble([alice()], standard_roles(), now=clock.now).start()
    files = write_config(tmp, CREDENTIALS_LAYOUT, sts.endpoint_url)
    settings = DaemonSettings(files=files, runtime_dir=tmp / "run", state_dir=tmp / "state", port=0, limits=limits)
    daemon = Daemon(settings, clock=clock, policy=RefreshPolicy(tick=30))
    loop, thread = serve_in_thread(daemon)
    return Broker(tmp, clock, sts, daemon, loop, thread, files)


@pytest.fixture
def limited() -> Iterator[list[Broker]]:
    """Brokers a test starts, stopped at its end."""
    started: list[Broker] = []
    yield started
    for broker in started:
        broker.stop()


def logged_in_broker(tmp: Path, limits: Limits, started: list[Broker]) -> Broker:
    broker = start_limited_broker(tmp, limits)
    started.append(broker)
    broker.login("dev")
    assert broker.get_settled("dev")[0] == 200
    return broker


def timed_credentials(broker: Broker) -> tuple[float, str]:
    """botocore's own container provider, as an SDK would ask: seconds taken and the key id."""
    began = time.monotonic()
    credentials = broker.provider("dev").load()
    assert credentials is not None
    return time.monotonic() - began, credentials.access_key


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send raw bytes; return everything the daemon sends back and whether it then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received, True
            except TimeoutError:
                return received, False
            if not chunk:
                return received, True
            received += chunk
            if b"\r\n\r\n" in received:
                head, _, body = received.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    sock.settimeout(1.0)  # complete: does the daemon close the connection?
        return received, False


def status_and_json(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert re.search(rb"(?im)^content-type: application/json\r?$", head), head
    return status, json.loads(body)


def request_head(port: int, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_for_result(process: subprocess.Popen[str], lines: Lines, timeout: float) -> dict[str, Any]:
    """The attack script's report: one line of JSON at its end."""
    report: dict[str, Any] = json.loads(lines.wait_for('{"', timeout))
    assert process.wait(10) == 0, "".join(lines.seen)
    return report


# ---- 1. request heads are bounded while they are read -------------------------------------

def test_a_head_is_bounded_in_bytes_and_headers_as_it_is_read(tmp_path: Path, limited: list[Broker]) -> None:
    broker = logged_in_broker(tmp_path, Limits(), limited)
    token = broker.token("dev")
    path = "/v1/credentials/dev"

    def padded(total: int) -> bytes:  # a head of exactly `total` bytes (no header value over 4 KiB)
        base = request_head(broker.port, path, [("Authorization", token), ("X-Pad", "q" * 4000), ("X-More", "")])
        more = "p" * (total - len(base))
        return request_head(broker.port, path, [("Authorization", token), ("X-Pad", "q" * 4000), ("X-More", more)])

    at_limit = padded(Limits().max_head_bytes)
    assert len(at_limit) == 8192
    response, _ = raw_exchange(broker.port, at_limit)
    assert status_and_json(response)[0] == 200
    # One byte more, in one piece or byte by byte over several packets: 431, and closed.
    for pieces in (1, 3):
        over = padded(Limits().max_head_bytes + 1)
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
            step = len(over) // pieces + 1
            for start in range(0, len(over), step):
                sock.sendall(over[start:start + step])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        status, body = status_and_json(response)
        assert (status, body["code"], body["Code"]) == (431, "HeaderTooLarge", "HeaderTooLarge")
        assert "8192" in body["message"]
        assert b"AccessKeyId" not in response
    # 64 headers pass; 65 are refused, whatever their size.
    small = [("Authorization", token)] + [(f"X-{n}", "1") for n in range(Limits().max_headers - 2)]
    response, _ = raw_exchange(broker.port, request_head(broker.port, path, small))
    assert status_and_json(response)[0] == 200
    response, closed = raw_exchange(broker.port, request_head(broker.port, path, [*small, ("X-last", "1")]))
    status, body = status_and_json(response)
    assert (status, body["code"], closed) == (431, "TooManyHeaders", True)
    # A request line alone past the limit is cut off the same way.
    response, closed = raw_exchange(broker.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert status_and_json(response)[0] == 431 and closed
    assert timed_credentials(broker)[0] < 1.0


HEADER_FLOOD = r'''
import json, socket, sys, threading
port, header_conns, header_bytes, line_bytes = (int(a) for a in sys.argv[1:5])
results = []

def flood(kind, total):
    # Cut off, it connects again and goes on, until it has pushed `total` bytes.
    sent, statuses, connections = 0, set(), 0
    while sent < total and connections < 1000:
        connections += 1
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            if kind == "headers":  # many small headers, no token
                sock.sendall(b"GET /v1/credentials/dev HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
                chunk = b"".join(b"X-Pad-%05d: %s\r\n" % (i, b"v" * 40) for i in range(1300))
            else:  # one endless request line
                sock.sendall(b"GET /")
                chunk = b"a" * 65536
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n" if kind == "headers" else b" HTTP/1.1\r\n\r\n")
            statuses.add(sock.recv(200).split(b"\r\n")[0].decode())
            sock.close()
        except OSError as exc:
            statuses.add(type(exc).__name__)
    results.append({"kind": kind, "sent": sent, "connections": connections, "statuses": sorted(statuses)})

threads = [threading.Thread(target=flood, args=("headers", header_bytes)) for _ in range(header_conns)]
threads.append(threading.Thread(target=flood, args=("line", line_bytes)))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
'''


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def open_file_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, dict[str, str]]]:
    """`rolebroker serve --demo` as a child process started with systemd's default soft limit
    on open files (1024), logged in, with a token: (process, port, environment)."""
    if not ROLEBROKER.exists():
        pytest.skip(f"no rolebroker console script at {ROLEBROKER}: pip install -e .")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_", "LISTEN_"))
           and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env.update(ROLEBROKER_RUNTIME_DIR=str(tmp_path / "run"), ROLEBROKER_STATE_DIR=str(tmp_path / "state"),
               AWS_CONFIG_FILE=str(tmp_path / "aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "creds"),
               ROLEBROKER_PORT=str(port))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # the child inherits it
    try:
        process = subprocess.Popen([str(ROLEBROKER), "serve", "--demo", "--port", str(port)], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert process.stderr is not None
    log = Lines(process.stderr)
    try:
        deadline = time.monotonic() + 30
        while True:  # up once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the daemon did not start"
                time.sleep(0.05)
        for argv in (["login", "dev", "--code", "123456"], ["token", "create", "--profile", "dev"]):
            done = subprocess.run([str(ROLEBROKER), *argv], env=env, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
            assert done.returncode == 0, done.stderr
        env["TOKEN"] = done.stdout.strip()
        yield process, port, env
    finally:
        process.terminate()
        process.wait(15)
        log.join(15)


def get_credentials(port: int, token: str) -> tuple[int, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/credentials/dev", headers={"Authorization": token})
    began = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["AccessKeyId"]
            return response.status, time.monotonic() - began
    except urllib.error.HTTPError as error:
        return error.code, time.monotonic() - began


def test_serve_raises_its_open_file_limit(served: tuple[subprocess.Popen[str], int, dict[str, str]]) -> None:
    process, _, _ = served
    soft, hard = open_file_limit(process.pid)
    if hard <= 1024:
        pytest.skip(f"the hard limit on open files is {hard} here: nothing to raise the soft one to")
    assert soft == min(hard, OPEN_FILES_WANTED) > 1024


def test_a_flood_of_header_bytes_does_not_grow_the_daemon(
        served: tuple[subprocess.Popen[str], int, dict[str, str]], other_user: OtherUser) -> None:
    process, port, env = served
    # A small round first, so the refusal paths have run once before memory is measured.
    warm_up = other_user.run_python(HEADER_FLOOD, str(port), "1", str(256 * 1024), str(256 * 1024))
    assert warm_up.returncode == 0, warm_up.stderr
    before = memory_kib(process.pid)
    # 30 MB of small headers from three senders, and 20 MB of request line, with no token.
    attack = other_user.run_python(HEADER_FLOOD, str(port), "3", str(10 * 2**20), str(20 * 2**20), timeout=120)
    assert attack.returncode == 0, attack.stderr
    after = memory_kib(process.pid)
    results = json.loads(attack.stdout)
    growth = after["VmRSS"] - before["VmRSS"]
    peak = after["VmHWM"] - max(before["VmHWM"], before["VmRSS"])
    assert growth <= 4096 and peak <= 4096, (before, after, results)
    assert len(results) == 4
    for result in results:  # all of it was pushed, and cut off each time (431, or reset under the sender)
        assert result["sent"] >= (10 if result["kind"] == "headers" else 20) * 2**20, result
        assert not any(" 200 " in status or " 401 " in status for status in result["statuses"]), result
    status, seconds = get_credentials(port, env["TOKEN"])
    assert status == 200 and seconds < 1.0


# ---- 2. idle and trickling connections ----------------------------------------------------

IDLE_FLOOD = r'''
import json, resource, select, socket, sys, time
port, idle_count, slow_count, trickle, run_for = (float(a) for a in sys.argv[1:6])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sockets, failed = [], 0
poller = select.poll()
by_fd = {}

def watch(timeout_ms):
    """Note every socket the daemon has closed (EOF or reset) since the last look."""
    for fd, _ in poller.poll(timeout_ms):
        entry = by_fd[fd]
        try:
            data = entry["sock"].recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data and not entry["answer"]:
            entry["answer"] = data.split(b"\r\n")[0].decode()
        if not data:
            entry["closed"] = time.monotonic()
            poller.unregister(fd)

for n in range(int(idle_count) + int(slow_count)):
    try:
        sock = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    except OSError:
        failed += 1
        continue
    sock.setblocking(False)
    slow = n >= idle_count
    if slow:  # a request that never ends: one more header line every `trickle` seconds
        sock.send(b"GET /v1/credentials/dev HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % int(port))
    entry = {"sock": sock, "slow": slow, "opened": time.monotonic(), "closed": None, "lines": 0, "answer": ""}
    sockets.append(entry)
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    by_fd[sock.fileno()] = entry
    if n % 50 == 0:
        watch(0)
print("ready", flush=True)
end = time.monotonic() + run_for
next_line = time.monotonic() + trickle
while time.monotonic() < end and any(e["closed"] is None for e in sockets):
    watch(50)
    if time.monotonic() >= next_line:
        next_line += trickle
        for entry in sockets:
            if entry["slow"] and entry["closed"] is None:
                try:
                    entry["sock"].send(b"X-Still-Here-%d: yes\r\n" % entry["lines"])
                    entry["lines"] += 1
                except OSError:
                    pass
now = time.monotonic()
report = {"failed": failed}
for kind, slow in (("idle", False), ("slow", True)):
    group = [e for e in sockets if e["slow"] == slow]
    report[kind] = {"opened": len(group), "still_open": sum(e["closed"] is None for e in group),
                    "longest": max(((e["closed"] or now) - e["opened"] for e in group), default=0),
                    "lines": [e["lines"] for e in group], "answers": sorted({e["answer"] for e in group})}
print(json.dumps(report))
'''


@pytest.fixture
def systemd_default_open_files() -> Iterator[None]:
    """This process (and so the daemon thread in it) with systemd's default soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_sockets_and_slowloris_neither_lock_clients_out_nor_stay_open(
        tmp_path: Path, limited: list[Broker], other_user: OtherUser, systemd_default_open_files: None) -> None:
    limits = Limits(request_timeout=1.0)
    broker = logged_in_broker(tmp_path, limits, limited)
    _, key_id = timed_credentials(broker)
    attack = other_user.python_popen(IDLE_FLOOD, str(broker.port), "1100", "5", "0.25", "8",
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert attack.stdout is not None
    lines = Lines(attack.stdout)
    try:
        lines.wait_for("ready", timeout=60)
        # While the other user holds its sockets and trickles its heads: answered within a second.
        for _ in range(3):
            seconds, served_key = timed_credentials(broker)
            assert seconds < 1.0 and served_key == key_id
        status = broker.control().request("GET", "/v1/status")
        assert "profiles" in status
        report = wait_for_result(attack, lines, timeout=60)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait(10)
    assert report["idle"]["opened"] + report["failed"] >= 1100 and report["idle"]["opened"] >= 1000, report
    # Every idle socket was closed by the deadline (or earlier, to make room for new ones)...
    assert report["idle"]["still_open"] == 0 and report["idle"]["longest"] <= limits.request_timeout + 2, report
    # ...and so was every trickling one, though it kept sending, with a JSON 408 where it was timed out.
    slow = report["slow"]
    assert slow["opened"] == 5 and slow["still_open"] == 0, report
    assert slow["longest"] <= limits.request_timeout + 2, report
    assert set(slow["answers"]) <= {"", "HTTP/1.1 408 Request Timeout"}, report


# ---- 3. guessing over many connections ----------------------------------------------------

GUESSING = r'''
import base64, http.client, json, os, sys, threading, time
port, connections, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
counts, sample = {}, {}
lock = threading.Lock()
start = threading.Event()

def guess():
    start.wait()
    stop = time.monotonic() + seconds
    conn = None
    while time.monotonic() < stop:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            token = "rbt_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
            conn.request("GET", "/v1/credentials/dev", headers={"Authorization": token})
            response = conn.getresponse()
            body = response.read()
            key = str(response.status)
            with lock:
                sample.setdefault(key, body.decode())
        except (OSError, http.client.HTTPException) as exc:
            key = type(exc).__name__
            conn = None
        with lock:
            counts[key] = counts.get(key, 0) + 1

threads = [threading.Thread(target=guess) for _ in range(connections)]
for t in threads:
    t.start()
began = time.monotonic()
start.set()
for t in threads:
    t.join()
print(json.dumps({"counts": counts, "sample": sample, "seconds": time.monotonic() - began}))
'''


def test_guessing_over_many_connections_is_bounded_per_peer_and_summarised_in_the_log(
        tmp_path: Path, limited: list[Broker], other_user: OtherUser, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    limits = Limits(failing_requests_per_peer=4, summary_interval=1.0, connections_per_peer=1024)
    broker = logged_in_broker(tmp_path, limits, limited)
    throttle = FailureThrottle(time.monotonic)
    seconds = 3.0
    attack = other_user.python_popen(GUESSING, str(broker.port), "300", str(seconds),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert attack.stdout is not None
    lines = Lines(attack.stdout)
    try:
        # The owner shares the peer (loopback) with the guesser: a valid token is never delayed.
        valid: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(valid) < 5:
            valid.append(timed_credentials(broker)[0])
        report = wait_for_result(attack, lines, timeout=120)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait(10)
    assert valid and max(valid) < 1.0, valid
    counts = report["counts"]
    failures = counts.get("401", 0) + counts.get("429", 0)
    assert failures >= 300 and set(counts) <= {"401", "429"}, report
    # At most 4 slowed answers pending at once, each held up to 2 s once failures pile up: the 401s
    # (answers that took the guesser's time) are bounded however many connections it opens.
    bound = 1 + limits.failing_requests_per_peer * (report["seconds"] / throttle.cap + 2)
    assert counts.get("401", 0) <= bound, report
    refused = json.loads(report["sample"]["429"])
    assert refused["code"] == refused["Code"] == "TooManyFailedRequests"
    assert refused["message"] == refused["Message"] and "token" in refused["message"]
    assert set(refused) == {"code", "message", "Code", "Message"}

    async def flush() -> None:
        broker.daemon.refusals.flush()

    broker.call(flush())
    # A summary line per peer per interval, never one per failure; the counts add up.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= report["seconds"] / limits.summary_interval + 4, [r.getMessage() for r in warnings]
    summarised = sum(int(n) for r in warnings for n in re.findall(r"(\d+) requests with a bad token", r.getMessage()))
    assert summarised == failures, [r.getMessage() for r in warnings]
    assert all("loopback" in r.getMessage() for r in warnings if r.name == "rolebroker.refused")


# ---- 4. nothing but plain HTTP ------------------------------------------------------------

def test_a_websocket_upgrade_is_refused(tmp_path: Path, limited: list[Broker]) -> None:
    broker = logged_in_broker(tmp_path, Limits(), limited)
    token = broker.token("dev")
    upgrade = [("Authorization", token), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    response, closed = raw_exchange(broker.port, request_head(broker.port, "/v1/credentials/dev", upgrade))
    status, body = status_and_json(response)
    assert (status, body["code"], closed) == (400, "UpgradeRefused", True)
    assert b"AccessKeyId" not in response
    # Any other upgrade (h2c, as some HTTP/2 clients offer) is answered as HTTP/1.1, then closed.
    h2c = [("Authorization", token), ("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"),
           ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]
    response, closed = raw_exchange(broker.port, request_head(broker.port, "/v1/credentials/dev", h2c))
    status, body = status_and_json(response)
    assert status == 200 and body["AccessKeyId"] and closed


def test_the_guard_refuses_a_websocket_scope_a_server_hands_over() -> None:
    # Behind a server that does speak WebSocket, the guard still never lets one through.
    reached: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    guard = RequestGuard(app, lambda: frozenset({b"127.0.0.1:9911"}), FailureThrottle(time.monotonic))
    scope = {"type": "websocket", "path": "/v1/credentials/dev", "headers": [(b"host", b"127.0.0.1:9911")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 9911)}
    asyncio.run(guard(scope, receive, send))
    assert reached == []
    assert [m["type"] for m in sent] == ["websocket.close"]


# ---- 5. the h11 fallback ------------------------------------------------------------------

def test_without_httptools_the_h11_fallback_is_bounded_too(tmp_path: Path, limited: list[Broker],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a machine where httptools is not installed: `import httptools` fails.
    monkeypatch.setitem(sys.modules, "httptools", None)
    limits = Limits(request_timeout=1.0)
    broker = logged_in_broker(tmp_path, limits, limited)
    assert timed_credentials(broker)[0] < 1.0
    # h11 refuses a head past the limit itself (its own plain-text 400), and closes.
    response, closed = raw_exchange(broker.port, request_head(broker.port, "/v1/credentials/dev",
                                                              [(f"X-{n}", "v" * 1000) for n in range(20)]))
    assert response.startswith(b"HTTP/1.1 400 ") and closed
    # A connection that sends nothing, and one whose head never ends, are closed at the deadline.
    began = time.monotonic()
    response, closed = raw_exchange(broker.port, b"", timeout=limits.request_timeout + 3)
    assert (response, closed) == (b"", True) and time.monotonic() - began < limits.request_timeout + 2
    response, closed = raw_exchange(broker.port, b"GET /v1/credentials/dev HTTP/1.1\r\n",
                                    timeout=limits.request_timeout + 3)
    status, body = status_and_json(response)
    assert (status, body["code"], closed) == (408, "RequestTimeout", True)
