"""The baseline for bench/run.py: the cheapest response uvicorn can give.

A bare ASGI callable (no framework, no routing, no token check) answering every
request with one constant JSON body. The body has the byte size of a real credential
response (BENCH_BODY_BYTES) and the same three headers the credentials endpoint sends,
so both servers put the same bytes on the wire. It is served exactly as the daemon
serves (broker/server.py `Daemon.bind`/`Daemon.serve`, broker/main.py `run`): our own
listening socket with backlog 1024, the same uvicorn.Config options, under uvloop.
Whatever the endpoint costs on top of this is the broker's own overhead.

    BENCH_BODY_BYTES=481 python bench/baseline_app.py --port 19000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Framing of the constant body: {"pad":"xxx...x"} is valid JSON of any length >= 10.
_PREFIX = b'{"pad":"'
_SUFFIX = b'"}'


def constant_body(size: int) -> bytes:
    if size < len(_PREFIX) + len(_SUFFIX):
        raise ValueError(f"body size {size} is too small for a JSON object")
    return _PREFIX + b"x" * (size - len(_PREFIX) - len(_SUFFIX)) + _SUFFIX


def build_app(body: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    # Built once, as the endpoint builds its body once when credentials are issued.
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    }
    message = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(start)
        await send(message)

    return app


def bind(host: str, port: int) -> socket.socket:
    # Mirrors Daemon.bind: the daemon hands uvicorn a socket it bound itself.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(app: Callable[[Scope, Receive, Send], Awaitable[None]], sock: socket.socket) -> None:
    # The same options as Daemon.serve, so the two servers differ only in the app.
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False,
        date_header=False, timeout_graceful_shutdown=5, loop="none",
    )
    await uvicorn.Server(config).serve(sockets=[sock])


def run(coroutine: Any) -> None:
    # Mirrors broker.main.run: uvloop when installed, else the stock loop.
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        size = int(os.environ["BENCH_BODY_BYTES"])
        body = constant_body(size)
    except (KeyError, ValueError) as exc:
        print(f"baseline_app: set BENCH_BODY_BYTES to the body size in bytes ({exc})", file=sys.stderr)
        return 2
    sock = bind(args.host, args.port)
    print(f"baseline: {len(body)}-byte body on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    run(serve(build_app(body), sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
