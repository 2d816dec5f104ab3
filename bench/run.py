#!/usr/bin/env python3
"""One command for rolebroker's performance numbers (issues 7 and 15).

    python bench/run.py [--quick] [--out bench/results.md]

It drives the real CLI in subprocesses, one server under load at a time, and measures:

1. the credentials endpoint (`rolebroker serve --demo`, logged in, a client token):
   req/s and p50 / p99 / p99.9 latency at 1, 32 and 256 keep-alive clients;
2. the same for a bare uvicorn baseline (bench/baseline_app.py) answering a constant
   JSON body of the same byte size with the same server settings, and the ratio;
3. resident memory of a daemon right after start and with 50 logged-in profiles (its own
   STS double);
4. `rolebroker credential-process`, `env` and `status` wall time against `python -c pass`
   on the interpreter the console script runs on, in alternating rounds;
5. time from exec of `rolebroker serve` to the first answer on the credentials endpoint;
6. socket-activated cold start: systemd-socket-activate holds the TCP and control sockets
   and starts the daemon on the first connection, as systemd does; time from that connect
   to the first answer (403: no session yet), and to a first 200 for a profile that needs
   no human (one AssumeRole with an IAM user's keys).

It prints a markdown table and writes it (with the machine description) to --out.
Run it with the Python that has rolebroker installed: it imports rolebroker.broker.sts_double.
See bench/README.md for how to read the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CONCURRENCY = (1, 32, 256)
PROFILE_COUNT = 50
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0   # seconds a server may take to answer its first request
POLL_INTERVAL = 0.002    # between connection attempts while a server starts
STOP_TIMEOUT = 10.0
WARMUP_SECONDS = 1.0
# Targets from issues 7 and 15, checked in the summary table.
TARGET_RATIO_AT_32 = 0.80
TARGET_P99_MS_AT_32 = 3.0
TARGET_STARTUP_S = 1.0
TARGET_COLD_ANSWER_MEDIAN_S = 0.30   # socket-activated: first connect to first answer
TARGET_COLD_ANSWER_WORST_S = 0.45
TARGET_COLD_200_MEDIAN_S = 0.50      # ... to a first 200 (one AssumeRole)
TARGET_RSS_IDLE_MIB = 40.0
TARGET_RSS_MIB = 55.0                # 50 profiles logged in
# CLI wall time / `python -c pass` on the same interpreter.
TARGET_CLI_FACTORS = {"credential-process": 2.0, "env": 2.5, "status": 2.5}
# Anything that could point the CLI or the daemon somewhere other than our temp files.
SCRUBBED_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
    "ROLEBROKER_PORT", "XDG_RUNTIME_DIR", "XDG_STATE_HOME",
    # With it, every process compiles each module whose .pyc is missing or stale, on every run:
    # the CLI timings would measure the compiler (an installed package has its .pyc files).
    "PYTHONDONTWRITEBYTECODE",
)
# wrk's done() hook: one machine-readable line. Latencies are microseconds. Defining only
# done() (no request/response hooks) keeps wrk on its fast path.
WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50":%.1f,"p99":%.1f,"p999":%.1f,' ..
    '"max":%.1f,"mean":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""
WRK_INSTALL_HINT = ("wrk is not installed; install it for real numbers: `apt-get install -y wrk` "
                    "(Debian/Ubuntu), `brew install wrk` (macOS), or build https://github.com/wg/wrk")


class BenchError(Exception):
    """A step that the rest of the run depends on failed."""


def note(message: str) -> None:
    # Progress goes to stderr so stdout carries only the table.
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---- processes ------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the daemon wipes its sessions on it), then SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def running(name: str, command: list[str], env: dict[str, str], port: int, log_dir: Path) -> Iterator[Server]:
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        # A file, not a pipe: a pipe nobody reads would fill and stall the server.
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield Server(name, process, port, log_path)
    finally:
        stop_process(process)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Other processes busier than this during a load point make its numbers suspect.
OTHER_CPU_WARNING = 0.15
MEASURE_ATTEMPTS = 3


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent in processes (all cores), from /proc/stat.

    irq and softirq are left out: loopback TCP is processed in softirq, is charged to no
    process, and is the benchmark's own traffic (about 0.3 cores at full load here).
    Steal stays in: a hypervisor taking the CPU away distorts the numbers too.
    """
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / CLOCK_TICKS


def process_seconds(pid: int) -> float:
    """CPU seconds one process (all its threads) has used: utime + stime."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_seconds() -> float:
    # Covers the load generator once subprocess.run has reaped it.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Disturbance:
    other_cores: float = 0.0  # mean CPU, in cores, used by processes this script did not start


@contextlib.contextmanager
def watching_other_cpu() -> Iterator[Disturbance]:
    """For phases whose processes are all reaped by the end (CLI runs, short-lived
    daemons): every CPU second not spent by this process or its children is someone else's."""
    def own() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    result = Disturbance()
    started = (time.perf_counter(), busy_seconds(), own())
    try:
        yield result
    finally:
        wall, busy, mine = (b - a for a, b in zip(started, (time.perf_counter(), busy_seconds(), own())))
        result.other_cores = max(0.0, busy - mine) / wall if wall > 0 else 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def first_answer(server: Server, path: str, token: str | None, timeout: float = STARTUP_TIMEOUT) -> int:
    """Block until the server answers one GET; return its HTTP status.

    The daemon binds its socket before uvicorn starts, so a connection can be accepted
    by the kernel early: what counts is the status line coming back, not the connect.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
    if token:
        request += f"Authorization: {token}\r\n"
    payload = (request + "Connection: close\r\n\r\n").encode()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.process.returncode} before answering:\n"
                             f"{server.log_tail()}")
        try:
            with socket.create_connection((HOST, server.port), timeout=0.05) as conn:
                conn.settimeout(max(0.05, deadline - time.perf_counter()))
                conn.sendall(payload)
                received = b""
                while b"\r\n" not in received and len(received) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    received += chunk
        except OSError:
            time.sleep(POLL_INTERVAL)  # not listening yet: the polling interval
            continue
        match = re.match(rb"HTTP/1\.[01] (\d{3})", received)
        if match:
            return int(match.group(1))
        time.sleep(POLL_INTERVAL)  # closed without an answer: still starting
    raise BenchError(f"{server.name} did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def http_get(port: int, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": token} if token else {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# ---- the CLI --------------------------------------------------------------------------

@dataclass
class Cli:
    executable: str
    interpreter: str  # the Python the console script runs on, for the `-c pass` baseline

    def run(self, args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.executable, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def check(self, args: list[str], env: dict[str, str]) -> str:
        done = self.run(args, env)
        if done.returncode != 0:
            raise BenchError(f"`rolebroker {shlex.join(args)}` failed ({done.returncode}): "
                             f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout


def find_cli() -> Cli:
    # Prefer the console script beside this interpreter (a venv), then PATH.
    beside = Path(sys.executable).parent / "rolebroker"
    found = str(beside) if beside.exists() else shutil.which("rolebroker")
    if not found:
        raise BenchError("no `rolebroker` command: install the project (pip install -e .) and run this "
                         "script with that environment's python")
    interpreter = sys.executable
    try:
        first = Path(found).read_text(errors="replace").splitlines()[0]
        if first.startswith("#!") and Path(first[2:].strip().split()[0]).exists():
            interpreter = first[2:].strip().split()[0]
    except (OSError, IndexError):
        pass
    return Cli(found, interpreter)


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env["ROLEBROKER_RUNTIME_DIR"] = str(root / "run")
    env["ROLEBROKER_STATE_DIR"] = str(root / "state")
    env.update(extra)
    return env


# ---- load generation ------------------------------------------------------------------

@dataclass
class Load:
    server: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cores: float  # CPU the server used, in cores: about 1.0 when it is the bottleneck
    other_cores: float   # CPU used by everything but server and load generator, in cores
    attempts: int = 1    # how many measurements it took to get one that nobody disturbed
    rounds: int = 1      # measurements combined into this row (medians)
    rounds_run: int = 1  # rounds measured, including disturbed ones left out of the medians
    rps_spread: float = 0.0  # (max - min) / median of req/s over the rounds


def combine(measured: list[Load]) -> Load:
    """One row from several rounds: medians, except errors (summed over every round, so
    none hides) and max (the max). Rounds that other processes disturbed are left out of
    the medians when at least one undisturbed round exists."""
    loads = [load for load in measured if load.other_cores <= OTHER_CPU_WARNING] or measured

    def median(attr: str) -> float:
        return float(statistics.median(getattr(load, attr) for load in loads))

    rates = [load.rps for load in loads]
    rps = statistics.median(rates)
    return Load(
        server=loads[0].server, clients=loads[0].clients, rps=rps, p50_ms=median("p50_ms"),
        p99_ms=median("p99_ms"), p999_ms=median("p999_ms"), max_ms=max(load.max_ms for load in loads),
        requests=sum(load.requests for load in loads), non_2xx=sum(load.non_2xx for load in measured),
        socket_errors=sum(load.socket_errors for load in measured), server_cores=median("server_cores"),
        other_cores=max(load.other_cores for load in loads), attempts=max(load.attempts for load in measured),
        rounds=len(loads), rounds_run=len(measured), rps_spread=(max(rates) - min(rates)) / rps if rps else 0.0,
    )


@dataclass
class LoadGenerator:
    kind: str  # "wrk" or "python"
    lua_path: Path
    version: str

    def measure(self, server: Server, url: str, clients: int, seconds: float, token: str) -> Load:
        header = f"Authorization: {token}"
        if self.kind == "wrk":
            # One wrk thread at every client count: it drives 256 connections at the server's
            # full rate with the second core to itself. With -t2 at 256 clients the three busy
            # threads share 2 cores, and replies wait in socket buffers while a descheduled wrk
            # thread is off-CPU: measured here, p99 rose from ~20 ms to ~600 ms at equal req/s.
            command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency",
                       "-s", str(self.lua_path), "-H", header, url]
        else:
            command = [sys.executable, str(BENCH_DIR / "pyload.py"), "--url", url, "--connections",
                       str(clients), "--duration", f"{seconds:g}", "--header", header]
        # Who else used the CPU meanwhile: on a 2-core machine another busy process
        # distorts the numbers, and the report says so instead of hiding it.
        before = (time.perf_counter(), busy_seconds(), process_seconds(server.process.pid), children_seconds())
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                              stdin=subprocess.DEVNULL, check=False)
        after = (time.perf_counter(), busy_seconds(), process_seconds(server.process.pid), children_seconds())
        wall, busy, server_cpu, loadgen_cpu = (b - a for a, b in zip(before, after))
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(("BENCH_JSON ", "{"))), None)
        if done.returncode != 0 or line is None:
            raise BenchError(f"{self.kind} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        raw: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
        seconds_taken = raw["duration_us"] / 1e6
        return Load(
            server=server.name, clients=clients,
            rps=raw["requests"] / seconds_taken if seconds_taken else 0.0,
            p50_ms=raw["p50"] / 1000, p99_ms=raw["p99"] / 1000, p999_ms=raw["p999"] / 1000,
            max_ms=raw["max"] / 1000, requests=int(raw["requests"]),
            # wrk counts responses with status >= 400 here (its "Non-2xx or 3xx responses").
            non_2xx=int(raw["status"]),
            socket_errors=int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
            server_cores=server_cpu / wall, other_cores=max(0.0, busy - server_cpu - loadgen_cpu) / wall,
        )

    def measure_quietly(self, server: Server, url: str, clients: int, seconds: float, token: str) -> Load:
        """Measure; when another process competed for the CPU, measure again (at most
        MEASURE_ATTEMPTS times in all) and keep the least disturbed attempt."""
        best: Load | None = None
        for attempt in range(1, MEASURE_ATTEMPTS + 1):
            load = self.measure(server, url, clients, seconds, token)
            load.attempts = attempt
            if best is None or load.other_cores < best.other_cores:
                best = load
            if load.other_cores <= OTHER_CPU_WARNING:
                break
            note(f"  {server.name} {clients} clients: other processes used {load.other_cores:.2f} cores, "
                 + ("measuring again" if attempt < MEASURE_ATTEMPTS else "keeping the least disturbed attempt"))
        assert best is not None
        best.attempts = attempt
        return best

    def warm_up(self, server: Server, url: str, token: str) -> None:
        # A short discarded run first: the first requests pay for lazy imports and allocation.
        self.measure(server, url, 32, WARMUP_SECONDS, token)


def pick_load_generator(choice: str, workdir: Path) -> LoadGenerator:
    lua_path = workdir / "percentiles.lua"
    lua_path.write_text(WRK_LUA)
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise BenchError(WRK_INSTALL_HINT)
    if wrk and choice != "python":
        version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        first = (version.stdout or version.stderr).splitlines()[0] if (version.stdout or version.stderr) else "wrk"
        return LoadGenerator("wrk", lua_path, " ".join(first.split()[:2]))
    if choice == "auto":
        note(WRK_INSTALL_HINT)
        note("falling back to bench/pyload.py: a Python load generator competes with the server for CPU, "
             "so its numbers are a pessimistic lower bound")
    return LoadGenerator("python", lua_path, "bench/pyload.py (Python fallback)")


# ---- the phases -----------------------------------------------------------------------

@dataclass
class UnderTest:
    server: Server
    url: str
    token: str


@dataclass
class LoadRun:
    endpoint: list[Load]  # one combined row per client count, in CONCURRENCY order
    baseline: list[Load]
    body_bytes: int
    rounds: int


def start_endpoint(cli: Cli, work: Path, logs: Path, stack: contextlib.ExitStack) -> tuple[UnderTest, int]:
    note("endpoint: rolebroker serve --demo, login, client token")
    env = isolated_env(work / "demo")
    port = free_port()
    command = [cli.executable, "serve", "--demo", "--port", str(port)]
    server = stack.enter_context(running("endpoint", command, env, port, logs))
    first_answer(server, "/v1/credentials/dev", None)
    cli.check(["login", "dev", "--code", "123456"], env)
    token = cli.check(["token", "create", "--profile", "dev"], env).strip()
    path = "/v1/credentials/dev"
    status, _, body = http_get(port, path, token)
    if status != 200:
        raise BenchError(f"the endpoint answered {status} before the load test: {body[:200]!r}")
    return UnderTest(server, f"http://{HOST}:{port}{path}", token), len(body)


def start_baseline(body_bytes: int, logs: Path, stack: contextlib.ExitStack) -> UnderTest:
    note(f"baseline: bare uvicorn app, constant {body_bytes}-byte JSON body")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env["BENCH_BODY_BYTES"] = str(body_bytes)
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "baseline_app.py"), "--port", str(port)]
    server = stack.enter_context(running("baseline", command, env, port, logs))
    first_answer(server, "/", None)
    status, _, body = http_get(port, "/", None)
    if status != 200 or len(body) != body_bytes:
        raise BenchError(f"the baseline answered {status} with {len(body)} bytes, expected 200 / {body_bytes}")
    # The same path and header as the endpoint, so both parse the same request bytes.
    return UnderTest(server, f"http://{HOST}:{port}/v1/credentials/dev", "unused-token")


def bench_load(cli: Cli, gen: LoadGenerator, seconds: float, rounds: int, work: Path, logs: Path) -> LoadRun:
    """Both servers stay up, but only one is under load at any moment (the load generator
    needs the other core). Points alternate endpoint/baseline, in swapped order each round,
    so a machine that speeds up or slows down during the run affects both alike; each row
    is the median of the rounds."""
    with contextlib.ExitStack() as stack:
        endpoint, body_bytes = start_endpoint(cli, work, logs, stack)
        baseline = start_baseline(body_bytes, logs, stack)
        for target in (endpoint, baseline):
            gen.warm_up(target.server, target.url, target.token)
        samples: dict[tuple[str, int], list[Load]] = {}
        for round_number in range(1, rounds + 1):
            note(f"load: round {round_number} of {rounds}")
            for clients in CONCURRENCY:
                order = (endpoint, baseline) if round_number % 2 else (baseline, endpoint)
                for target in order:
                    load = gen.measure_quietly(target.server, target.url, clients, seconds, target.token)
                    note(f"  {target.server.name:8} {clients:3} clients: {load.rps:9.0f} req/s  "
                         f"p50 {load.p50_ms:.3f} ms  p99 {load.p99_ms:.3f} ms  p99.9 {load.p999_ms:.3f} ms  "
                         f"non-2xx {load.non_2xx}  socket errors {load.socket_errors}  "
                         f"server CPU {load.server_cores:.2f}  other CPU {load.other_cores:.2f}")
                    samples.setdefault((target.server.name, clients), []).append(load)
    return LoadRun(
        endpoint=[combine(samples[("endpoint", c)]) for c in CONCURRENCY],
        baseline=[combine(samples[("baseline", c)]) for c in CONCURRENCY],
        body_bytes=body_bytes, rounds=rounds,
    )


@dataclass
class CliTiming:
    name: str      # "credential-process", "env", "status": the keys of TARGET_CLI_FACTORS
    label: str     # the command line, for the report
    seconds: float  # median wall time
    exit_code: int


@dataclass
class FiftyProfiles:
    files_env: dict[str, str]
    rss_idle_mib: float
    rss_mib: float
    hwm_mib: float
    served: int
    token: str  # reads p00 and the no-MFA profile
    cli: list[CliTiming]
    python_s: float
    timer: str
    disturbance: Disturbance


BENCH_ACCOUNT = "111111111111"
# A role the bench user's keys assume without MFA: a profile that needs no human, so a
# cold daemon's first request for it is answered 200 after one AssumeRole.
SOLO_PROFILE = "solo"
SOLO_ROLE = "arn:aws:iam::299999999999:role/bench-solo"
BENCH_SERIAL = f"arn:aws:iam::{BENCH_ACCOUNT}:mfa/bench-user"
# Fake keys for the bench's own STS double: they open nothing anywhere else.
BENCH_KEY_ID, BENCH_SECRET = "AKIABENCH00000000001", "bench/secret/that/only/the/bench/sts/knows"


def fifty_profile_identities() -> tuple[list[Any], list[Any]]:
    """One IAM user behind a demo MFA device (any 6-digit code, once), 50 MFA roles, and
    one role without MFA (the last)."""
    from rolebroker.broker.sts_world import IamUser, MfaDevice, Role

    user = IamUser(BENCH_KEY_ID, BENCH_SECRET, f"arn:aws:iam::{BENCH_ACCOUNT}:user/bench-user",
                   MfaDevice(BENCH_SERIAL, totp_secret=None))
    roles = [Role(f"arn:aws:iam::{200000000000 + i}:role/bench-{i:02d}", require_mfa=True)
             for i in range(PROFILE_COUNT)]
    return [user], [*roles, Role(SOLO_ROLE, require_mfa=False)]


def write_fifty_profile_config(directory: Path, sts_url: str, roles: list[Any]) -> tuple[Path, Path]:
    # The demo's layout (broker/demo.py): roles in the credentials file, STS from a services section.
    credentials = [f"[bench-user]\naws_access_key_id = {BENCH_KEY_ID}\naws_secret_access_key = {BENCH_SECRET}\n"]
    config = ["[profile bench-user]\nregion = us-east-1\nservices = bench-sts\n"]
    for i, role in enumerate(roles[:PROFILE_COUNT]):
        credentials.append(f"[p{i:02d}]\nrole_arn = {role.arn}\nsource_profile = bench-user\n"
                           f"mfa_serial = {BENCH_SERIAL}\n")
        config.append(f"[profile p{i:02d}]\nregion = eu-west-1\nservices = bench-sts\n")
    # No mfa_serial anywhere on its way: AssumeRole signed with the user's keys, no login.
    config.append(f"[profile {SOLO_PROFILE}]\nrole_arn = {SOLO_ROLE}\nsource_profile = bench-user\n"
                  "region = eu-west-1\nservices = bench-sts\n")
    config.append(f"[services bench-sts]\nsts =\n  endpoint_url = {sts_url}\n")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path, credentials_path = directory / "config", directory / "credentials"
    credentials_path.touch(mode=0o600)  # created private before the keys go in
    credentials_path.write_text("\n".join(credentials))
    config_path.write_text("\n".join(config))
    return config_path, credentials_path


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def time_commands(commands: list[list[str]], env: dict[str, str], runs: int) -> tuple[list[float], str]:
    """Median wall time of each command, in seconds, from rounds that run every command once
    in turn (the order rotating each round): a machine that speeds up or slows down during the
    phase affects all of them alike, as the issue's "alternating runs" asks. Each run is
    posix_spawn to waitpid, output to /dev/null."""
    def once(command: list[str]) -> float:
        started = time.perf_counter()
        pid = os.posix_spawn(command[0], command, env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        os.waitpid(pid, 0)
        return time.perf_counter() - started

    for command in commands:
        for _ in range(3):  # warm-up: page cache and .pyc files
            once(command)
    samples: list[list[float]] = [[] for _ in commands]
    for round_number in range(runs):
        shift = round_number % len(commands)
        for index in [*range(shift, len(commands)), *range(shift)]:
            samples[index].append(once(commands[index]))
    return ([statistics.median(s) for s in samples],
            f"median of {runs} alternating rounds after 3 warm-ups each (posix_spawn to waitpid)")


def bench_fifty_profiles(cli: Cli, runs: int, work: Path, logs: Path, stack: contextlib.ExitStack) -> FiftyProfiles:
    note(f"memory: {PROFILE_COUNT} profiles behind one MFA session, own STS double")
    with watching_other_cpu() as disturbance:
        result = _bench_fifty_profiles(cli, runs, work, logs, stack)
    result.disturbance = disturbance
    return result


def _bench_fifty_profiles(cli: Cli, runs: int, work: Path, logs: Path, stack: contextlib.ExitStack) -> FiftyProfiles:
    from rolebroker.broker.sts_double import StsDouble

    directory = work / "fifty"
    users, roles = fifty_profile_identities()
    # In this process, on its own threads: it is idle while the daemon is measured.
    sts = StsDouble(users, roles).start()
    stack.callback(sts.stop)
    config_path, credentials_path = write_fifty_profile_config(directory / "aws", sts.endpoint_url, roles)
    env = isolated_env(directory, AWS_CONFIG_FILE=str(config_path), AWS_SHARED_CREDENTIALS_FILE=str(credentials_path))
    port = free_port()
    with running("daemon-50", [cli.executable, "serve", "--port", str(port)], env, port, logs) as server:
        first_answer(server, "/v1/credentials/p00", None)
        pid = int(json.loads((directory / "run" / "daemon.json").read_text())["pid"])
        idle = memory_kib(pid)
        cli.check(["login", "p00", "--code", "123456"], env)
        # Login warms the other profiles in the background: poll until all hold credentials.
        served, deadline = 0, time.perf_counter() + 60
        while time.perf_counter() < deadline:
            profiles = json.loads(cli.check(["status", "--json"], env))["profiles"]
            served = sum(1 for p in profiles if p["credentials_expire_at"])
            if served >= PROFILE_COUNT:
                break
            time.sleep(0.1)  # polling interval while the warm-up finishes
        if served < PROFILE_COUNT:
            raise BenchError(f"only {served} of {PROFILE_COUNT} profiles got credentials:\n{server.log_tail()}")
        loaded = memory_kib(pid)
        token = cli.check(["token", "create", "--profile", f"p00,{SOLO_PROFILE}"], env).strip()

        note("CLI: credential-process, env, status against python -c pass, alternating")
        commands = {"credential-process": ["credential-process", "p00"], "env": ["env", "p00"], "status": ["status"]}
        exit_codes = {}
        for name, args in commands.items():
            exit_codes[name] = cli.run(args, env).returncode
            if name != "status" and exit_codes[name] != 0:  # status exits 1 while anything needs a login
                raise BenchError(f"`rolebroker {shlex.join(args)}` failed ({exit_codes[name]}): {cli.run(args, env).stderr}")
        (*cli_s, python_s), timer = time_commands(
            [*([cli.executable, *args] for args in commands.values()), [cli.interpreter, "-c", "pass"]], env, runs)
        timings = [CliTiming(name, f"`rolebroker {shlex.join(args)}`", seconds, exit_codes[name])
                   for (name, args), seconds in zip(commands.items(), cli_s)]
    return FiftyProfiles(
        files_env={k: env[k] for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                                       "ROLEBROKER_RUNTIME_DIR", "ROLEBROKER_STATE_DIR")},
        rss_idle_mib=idle["VmRSS"] / 1024, rss_mib=loaded["VmRSS"] / 1024, hwm_mib=loaded["VmHWM"] / 1024,
        served=served, token=token, cli=timings, python_s=python_s, timer=timer,
        disturbance=Disturbance(),  # filled in by the caller, which watches the whole phase
    )


@dataclass
class Startup:
    seconds: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    disturbance: Disturbance = field(default_factory=Disturbance)


def bench_startup(cli: Cli, fifty: FiftyProfiles, runs: int, logs: Path) -> Startup:
    """Exec of `rolebroker serve` (50-profile config) to the first answer from the
    credentials endpoint. A fresh daemon holds no session, so with a valid client token
    the answer is 403 LoginRequired: that is a served request through the whole path."""
    note(f"startup: exec to first served request, {runs} runs")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env.update(fifty.files_env)
    result = Startup()
    with watching_other_cpu() as result.disturbance:
        for _ in range(runs):
            port = free_port()
            started = time.perf_counter()
            with running("daemon-startup", [cli.executable, "serve", "--port", str(port)], env, port, logs) as server:
                status = first_answer(server, "/v1/credentials/p00", fifty.token)
                result.seconds.append(time.perf_counter() - started)
                result.statuses.append(status)
    return result


SOCKET_ACTIVATE_HINT = ("systemd-socket-activate is not installed: `apt-get install -y systemd` (Debian/Ubuntu) "
                        "for the socket-activated cold start")


@dataclass
class ColdStart:
    """Socket activation: the activator holds the sockets; the first connection starts the
    daemon. `answer`: that connect to the status line of the first answer (403, no session
    yet); `ok`: to a first 200 for a profile that needs no human (one AssumeRole)."""

    answer: list[float] = field(default_factory=list)
    ok: list[float] = field(default_factory=list)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    disturbance: Disturbance = field(default_factory=Disturbance)
    missing: str = ""  # why it was not measured


def first_request_timed(port: int, path: str, token: str, timeout: float = STARTUP_TIMEOUT) -> tuple[float, int]:
    """One connect (queued by the kernel on the activator's socket) and one GET: seconds from
    just before the connect to the status line, and the status."""
    payload = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: {token}\r\n"
               "Connection: close\r\n\r\n").encode()
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(payload)
        received = b""
        while b"\r\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
        elapsed = time.perf_counter() - started
    match = re.match(rb"HTTP/1\.[01] (\d{3})", received)
    if not match:
        raise BenchError(f"the socket-activated daemon closed the first connection without an answer: {received[:200]!r}")
    return elapsed, int(match.group(1))


def bench_cold_start(cli: Cli, fifty: FiftyProfiles, runs: int, logs: Path) -> ColdStart:
    """`systemd-socket-activate -l 127.0.0.1:PORT -l RUNTIME/control.sock rolebroker serve`
    (the sockets rolebroker.socket lists), then one request: the activator execs the daemon
    on that first connection, which waits in the listen queue meanwhile. Runs alternate
    between the two kinds of first request; each starts a fresh daemon."""
    result = ColdStart()
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        note(SOCKET_ACTIVATE_HINT)
        result.missing = SOCKET_ACTIVATE_HINT
        return result
    note(f"cold start under socket activation: {runs} runs of each kind, alternating")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env.update(fifty.files_env)
    runtime = Path(fifty.files_env["ROLEBROKER_RUNTIME_DIR"])
    # The activator hands its child a minimal environment: -E passes ours on.
    passed = [arg for name in fifty.files_env for arg in ("-E", name)]
    kinds = (("answer", "/v1/credentials/p00", result.answer), ("ok", f"/v1/credentials/{SOLO_PROFILE}", result.ok))
    with watching_other_cpu() as result.disturbance:
        for index in range(2 * runs):
            kind, path, seconds = kinds[(index + index // 2) % 2]  # answer, ok, ok, answer, ...
            port = free_port()
            control = runtime / "control.sock"
            control.unlink(missing_ok=True)  # a socket file the last daemon left is systemd's now
            command = [activate, "-l", f"{HOST}:{port}", "-l", str(control), *passed, cli.executable, "serve"]
            with running(f"activated-{kind}", command, env, port, logs) as server:
                deadline = time.perf_counter() + STARTUP_TIMEOUT
                while "Listening on" not in server.log_tail() or not control.exists():
                    if server.process.poll() is not None or time.perf_counter() > deadline:
                        raise BenchError(f"systemd-socket-activate did not listen:\n{server.log_tail()}")
                    time.sleep(POLL_INTERVAL)  # polling interval while the activator binds
                elapsed, status = first_request_timed(port, path, fifty.token)
                seconds.append(elapsed)
                result.statuses.setdefault(kind, []).append(status)
    for kind, wanted in (("answer", 403), ("ok", 200)):
        if any(status != wanted for status in result.statuses.get(kind, [])):
            raise BenchError(f"socket-activated first requests ({kind}) got HTTP {result.statuses[kind]}, "
                             f"expected {wanted}; see the logs")
    return result


# ---- the report -----------------------------------------------------------------------

def load_average() -> str:
    with contextlib.suppress(OSError, IndexError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "unknown"


def machine_description(gen: LoadGenerator, cli: Cli, load_at_start: str) -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True,
                              timeout=10, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017 - 3.11 has both
    return [
        f"- Date: {now}; commit {commit}{dirty}",
        (f"- Machine: {cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}; "
         f"1-minute load average at start {load_at_start}"),
        (f"- Python {platform.python_version()} ({cli.interpreter}); uvicorn {version('uvicorn')}, "
         f"uvloop {version('uvloop')}, httptools {version('httptools')}"),
        f"- Load generator: {gen.version}; systemd-socket-activate: {shutil.which('systemd-socket-activate') or 'absent'}",
    ]


def fmt_ms(value: float) -> str:
    return f"{value:.3f}"


def mib(value: float) -> str:
    # Both units: "80 MB" in the issue could mean either, and they differ by 5%.
    return f"{value:.2f} MiB ({value * 1.048576:.1f} MB)"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def verdict(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def render_targets(loads: LoadRun, fifty: FiftyProfiles, startup: Startup, cold: ColdStart) -> list[str]:
    e32 = next(load for load in loads.endpoint if load.clients == 32)
    b32 = next(load for load in loads.baseline if load.clients == 32)
    ratio32 = e32.rps / b32.rps if b32.rps else 0.0
    startup_median = statistics.median(startup.seconds)
    errors = sum(load.non_2xx + load.socket_errors for load in loads.endpoint)
    lines = [
        "## Targets (issues 7 and 15)", "",
        row("check", "measured", "target", "result"), row("---", "---", "---", "---"),
        row("endpoint req/s / baseline req/s, 32 clients", f"{ratio32:.3f}", f">= {TARGET_RATIO_AT_32:.2f}",
            verdict(ratio32 >= TARGET_RATIO_AT_32)),
        row("endpoint p99, 32 clients", f"{fmt_ms(e32.p99_ms)} ms", f"< {TARGET_P99_MS_AT_32:g} ms",
            verdict(e32.p99_ms < TARGET_P99_MS_AT_32)),
    ]
    if cold.answer and cold.ok:
        answer, ok = statistics.median(cold.answer), statistics.median(cold.ok)
        lines += [
            row(f"socket-activated: first connect to first answer, median of {len(cold.answer)}", f"{answer:.3f} s",
                f"<= {TARGET_COLD_ANSWER_MEDIAN_S:.2f} s", verdict(answer <= TARGET_COLD_ANSWER_MEDIAN_S)),
            row("socket-activated: first connect to first answer, worst", f"{max(cold.answer):.3f} s",
                f"<= {TARGET_COLD_ANSWER_WORST_S:.2f} s", verdict(max(cold.answer) <= TARGET_COLD_ANSWER_WORST_S)),
            row(f"socket-activated: first connect to first 200 (one AssumeRole), median of {len(cold.ok)}",
                f"{ok:.3f} s", f"<= {TARGET_COLD_200_MEDIAN_S:.2f} s", verdict(ok <= TARGET_COLD_200_MEDIAN_S)),
        ]
    else:
        lines.append(row("socket-activated cold start", "not measured", f"<= {TARGET_COLD_ANSWER_MEDIAN_S:.2f} s",
                         "**FAIL** (not measured)"))
    lines += [
        row(f"exec to first served request (median of {len(startup.seconds)})", f"{startup_median:.3f} s",
            f"< {TARGET_STARTUP_S:g} s", verdict(startup_median < TARGET_STARTUP_S)),
        row("daemon RSS after start (none logged in)", mib(fifty.rss_idle_mib), f"<= {TARGET_RSS_IDLE_MIB:g} MiB",
            verdict(fifty.rss_idle_mib <= TARGET_RSS_IDLE_MIB)),
        row(f"daemon RSS, {fifty.served} profiles logged in", mib(fifty.rss_mib),
            f"<= {TARGET_RSS_MIB:g} MiB", verdict(fifty.rss_mib <= TARGET_RSS_MIB)),
    ]
    for timing in fifty.cli:
        factor = timing.seconds / fifty.python_s if fifty.python_s else 0.0
        target = TARGET_CLI_FACTORS[timing.name]
        lines.append(row(f"{timing.label} / `python -c pass`", f"{factor:.2f}x", f"<= {target:g}x",
                         verdict(factor <= target)))
    lines += [row("endpoint non-2xx + socket errors under load", errors, 0, verdict(errors == 0)), ""]
    return lines


def render_load(seconds: float, loads: LoadRun) -> list[str]:
    rounds = f"median of {loads.rounds} rounds" if loads.rounds > 1 else "one round"
    lines = [
        f"## Credentials endpoint vs bare uvicorn baseline ({seconds:g} s per point, {rounds}, keep-alive)", "",
        row("clients", "server", "req/s", "req/s spread", "rounds", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
            "non-2xx", "socket errors", "server CPU", "other CPU"),
        row("---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]
    for clients in CONCURRENCY:
        e = next(load for load in loads.endpoint if load.clients == clients)
        b = next(load for load in loads.baseline if load.clients == clients)
        for load in (e, b):
            spread = f"{load.rps_spread:.0%}" if load.rounds > 1 else "-"
            lines.append(row(clients, load.server, f"{load.rps:,.0f}", spread, f"{load.rounds}/{load.rounds_run}",
                             fmt_ms(load.p50_ms),
                             fmt_ms(load.p99_ms), fmt_ms(load.p999_ms), fmt_ms(load.max_ms), load.non_2xx,
                             load.socket_errors, f"{load.server_cores:.2f}", f"{load.other_cores:.2f}"))
        lines.append(row(clients, "*endpoint / baseline*", ratio(e.rps, b.rps), "", "", ratio(e.p50_ms, b.p50_ms),
                         ratio(e.p99_ms, b.p99_ms), ratio(e.p999_ms, b.p999_ms), ratio(e.max_ms, b.max_ms),
                         "", "", "", ""))
    lines += [
        "",
        (f"Both servers send a {loads.body_bytes}-byte JSON body with the same headers. The baseline is "
         "bench/baseline_app.py: a bare ASGI app under uvicorn with the daemon's settings. Points alternate "
         "between the two servers; each row is the median over its undisturbed rounds (*rounds*: used / run; "
         "max ms: the largest; errors: the sum over all rounds), and *req/s spread* is (max - min) / median "
         "over the rounds used. CPU columns are in cores: *server CPU* near 1.0 means the single-threaded "
         "server was the bottleneck; *other CPU* (the worst round used) is what the rest of the machine's "
         "processes used meanwhile, which should be near 0."),
        "",
    ]
    return lines


def render_other(fifty: FiftyProfiles, startup: Startup, cold: ColdStart) -> list[str]:
    median = statistics.median(startup.seconds)
    statuses = ", ".join(sorted({str(s) for s in startup.statuses}))
    lines = [
        "## Startup, memory, CLI", "",
        row("measurement", "value", "notes"), row("---", "---", "---"),
    ]
    for seconds, what in ((cold.answer, "first answer (HTTP 403: a fresh daemon holds no session)"),
                          (cold.ok, f"first 200 for `{SOLO_PROFILE}` (one AssumeRole, no MFA)")):
        if seconds:
            lines.append(row(f"socket-activated: first connect to {what.split(' (')[0]}",
                             f"median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f})",
                             (f"{len(seconds)} runs alternating with the other kind; systemd-socket-activate holds "
                              f"127.0.0.1:PORT and control.sock, the connect starts `rolebroker serve`; {what}; other "
                              f"processes used {cold.disturbance.other_cores:.2f} cores meanwhile")))
    lines += [
        row("exec `rolebroker serve` to first served request",
            f"median {median:.3f} s (min {min(startup.seconds):.3f}, max {max(startup.seconds):.3f})",
            (f"{len(startup.seconds)} runs, {PROFILE_COUNT}-profile config; the first answer is HTTP {statuses} "
             "(a fresh daemon holds no session: 403 LoginRequired is a served request); other processes used "
             f"{startup.disturbance.other_cores:.2f} cores meanwhile")),
        row("daemon RSS after start", mib(fifty.rss_idle_mib),
            f"{PROFILE_COUNT} profiles configured, none logged in, one credentials request answered"),
        row(f"daemon RSS, {fifty.served} profiles with credentials",
            f"{mib(fifty.rss_mib)}; peak {mib(fifty.hwm_mib)}",
            "after one `rolebroker login` and `status` calls; VmRSS / VmHWM from /proc"),
    ]
    for timing in fifty.cli:
        exit_note = f", exits {timing.exit_code}" if timing.exit_code else ""
        lines.append(row(timing.label, f"{timing.seconds * 1000:.1f} ms",
                         (f"against the 50-profile daemon{exit_note}; {fifty.timer}; other processes used "
                          f"{fifty.disturbance.other_cores:.2f} cores during this phase")))
    lines += [row("`python -c pass`", f"{fifty.python_s * 1000:.1f} ms", "the interpreter the CLI runs on, in the same rounds"),
              ""]
    return lines


def render_notes(loads: LoadRun, fifty: FiftyProfiles, startup: Startup, cold: ColdStart,
                 gen: LoadGenerator) -> list[str]:
    notes = []
    for load in loads.endpoint + loads.baseline:
        if load.non_2xx or load.socket_errors:
            notes.append(f"{load.server} at {load.clients} clients: {load.non_2xx} non-2xx responses, "
                         f"{load.socket_errors} socket errors")
        if load.other_cores > OTHER_CPU_WARNING:
            notes.append(f"{load.server} at {load.clients} clients: other processes used up to "
                         f"{load.other_cores:.2f} cores meanwhile in every round, even in the best of "
                         f"{MEASURE_ATTEMPTS} attempts; that row is disturbed, rerun on a quiet machine")
        elif load.rounds < load.rounds_run:
            notes.append(f"{load.server} at {load.clients} clients: {load.rounds_run - load.rounds} of "
                         f"{load.rounds_run} rounds were disturbed by other processes and left out")
    if gen.kind != "wrk":
        why = WRK_INSTALL_HINT if not shutil.which("wrk") else "chosen with --loadgen python"
        notes.append(f"load from the Python fallback generator: absolute numbers are a lower bound ({why})")
    for phase, disturbance in (("the memory and CLI phase", fifty.disturbance),
                               ("the startup runs", startup.disturbance),
                               ("the socket-activated cold starts", cold.disturbance)):
        if disturbance.other_cores > OTHER_CPU_WARNING:
            notes.append(f"other processes used {disturbance.other_cores:.2f} cores on average during {phase}: "
                         "its timings are disturbed, rerun on a quiet machine")
    if cold.missing:
        notes.append(cold.missing)
    if any(s >= 500 for s in startup.statuses):
        notes.append(f"the startup probe got HTTP {sorted(set(startup.statuses))}")
    lines = ["## Notes", ""]
    lines += [f"- {n}" for n in notes] or ["- nothing unusual: no non-2xx responses, no socket errors"]
    lines.append('- "non-2xx" is what wrk counts as "Non-2xx or 3xx responses" (statuses >= 400); '
                 "neither server sends 1xx or 3xx.")
    return lines


def render(machine: list[str], seconds: float, loads: LoadRun, fifty: FiftyProfiles, startup: Startup,
           cold: ColdStart, gen: LoadGenerator) -> str:
    lines = ["# rolebroker benchmark", "", *machine, ""]
    lines += render_targets(loads, fifty, startup, cold)
    lines += render_load(seconds, loads)
    lines += render_other(fifty, startup, cold)
    lines += render_notes(loads, fifty, startup, cold, gen)
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, report: str) -> None:
    """Put the report between the README's markers, headings two levels down so they
    nest under its "Latest results" section."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise BenchError(f"{readme} has no {README_START} ... {README_END} markers")
    nested = "\n".join("##" + line if line.startswith("#") else line for line in report.splitlines())
    readme.write_text(text[:start + len(README_START)] + "\n" + nested + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rolebroker benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="2 s per load point and one round instead of 5 s and three, fewer repetitions")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.md", help="markdown file to write")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                        help="auto: wrk when installed, else the Python fallback")
    parser.add_argument("--update-readme", action="store_true",
                        help="also put the report into bench/README.md's 'Latest results' section")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else 5.0
    startup_runs = 3 if args.quick else 7
    cold_runs = 3 if args.quick else 9  # of each kind
    cli_runs = 10 if args.quick else 20
    load_rounds = 1 if args.quick else 3
    load_at_start = load_average()
    # SIGTERM would end Python without running `finally`, orphaning the servers: make it
    # unwind like Ctrl-C, through every context manager that stops a process.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        cli = find_cli()
        with tempfile.TemporaryDirectory(prefix="rolebroker-bench-") as temp, contextlib.ExitStack() as stack:
            work = Path(temp)
            logs = work / "logs"
            logs.mkdir()
            gen = pick_load_generator(args.loadgen, work)
            loads = bench_load(cli, gen, seconds, load_rounds, work, logs)
            fifty = bench_fifty_profiles(cli, cli_runs, work, logs, stack)
            startup = bench_startup(cli, fifty, startup_runs, logs)
            cold = bench_cold_start(cli, fifty, cold_runs, logs)
            machine = machine_description(gen, cli, load_at_start)
            report = render(machine, seconds, loads, fifty, startup, cold, gen)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    note(f"wrote {args.out}")
    if args.update_readme:
        try:
            update_readme(BENCH_DIR / "README.md", report)
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        note(f"updated {BENCH_DIR / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
