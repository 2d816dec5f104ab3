"""Fallback HTTP load generator for bench/run.py when wrk is not installed.

N keep-alive connections, each sending one GET after another for a fixed time, with
the latency of every request recorded. It prints one JSON object in the same shape
bench/run.py reads from wrk. It is Python, so on a small machine the generator itself
competes with the server for CPU: its numbers are a pessimistic lower bound, fine for
a rough ratio between two servers measured the same way but not for absolute claims.
Install wrk for real numbers.

    python bench/pyload.py --url http://127.0.0.1:9911/v1/credentials/dev \
        --connections 32 --duration 5 --header 'Authorization: TOKEN'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    latencies_us: list[float] = field(default_factory=list)
    bytes_read: int = 0
    non_2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0


async def one_connection(host: str, port: int, request: bytes, deadline: float, tally: Tally) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.connect_errors += 1
        return
    try:
        # Bounded by the deadline: every iteration is one request-response.
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            tally.latencies_us.append((time.perf_counter() - started) * 1e6)
            tally.bytes_read += len(head) + len(body)
            if head[9:10] != b"2":  # "HTTP/1.1 200": the status's first digit
                tally.non_2xx += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        tally.read_errors += 1
    finally:
        writer.close()


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


async def run(url: str, connections: int, duration: float, headers: list[str]) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode("latin-1")
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration
    # A server that stops answering must not hang the run: the last reply gets 10 s of grace.
    tasks = [asyncio.ensure_future(one_connection(host, port, request, deadline, tally)) for _ in range(connections)]
    _, stuck = await asyncio.wait(tasks, timeout=duration + 10)
    for task in stuck:
        task.cancel()
        tally.read_errors += 1
    elapsed = time.perf_counter() - started
    ordered = sorted(tally.latencies_us)
    return {
        "requests": len(ordered), "duration_us": elapsed * 1e6, "bytes": tally.bytes_read,
        "p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "p999": percentile(ordered, 99.9),
        "max": ordered[-1] if ordered else 0.0, "mean": sum(ordered) / len(ordered) if ordered else 0.0,
        "connect": tally.connect_errors, "read": tally.read_errors, "write": 0, "timeout": 0,
        "status": tally.non_2xx,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="keep-alive HTTP load generator (wrk fallback)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    coroutine = run(args.url, args.connections, args.duration, args.header)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
