"""The first thing every request meets: refuse what no legitimate local client sends.

- a `Host` that is not one of the daemon's own addresses (DNS rebinding: a web page
  whose name suddenly resolves to 127.0.0.1 still sends its own name);
- browser headers (`Origin`, `Sec-Fetch-Site` other than `none`): no web page may read
  credentials, and there is no CORS;
- oversized headers or bodies;
- anything but plain HTTP (a WebSocket scope, should a server ever hand one over).
Failed token checks are slowed down per peer address without delaying valid clients, and
only a few at a time per peer are held: the rest are answered 429 at once, so neither
connections nor memory pile up behind a guesser. Bytes and connections are bounded before
this, while requests are read (`limits.py`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, MutableMapping

from .channel import is_control
from .endpoint import CREDENTIALS_PREFIX, ASGIApp, Receive, Scope, Send
from .peers import RefusalLog, scope_peer
from .wire import JSON_TYPE, error_body

MAX_BODY = 64 * 1024
LINK_LOCAL_HOSTS = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")
MAX_HEADER_VALUE = 4096


def allowed_hosts(listeners: list[tuple[str, int]]) -> frozenset[bytes]:
    """Every Host header value that names this daemon."""
    hosts: set[str] = set()
    for address, port in listeners:
        ip = ipaddress.ip_address(address)
        names = [f"[{address}]" if ip.version == 6 else address]
        if ip.is_loopback:
            names += ["localhost", "127.0.0.1", "[::1]"]
        for name in names:
            hosts.add(f"{name}:{port}")
            if port == 80 or address in LINK_LOCAL_HOSTS:
                # Link-local: port 80 may be redirected to this listener (`rolebroker docker setup`),
                # and the SDKs then send the bare address; an IP literal cannot be rebound.
                hosts.add(name)
    return frozenset(h.encode() for h in hosts)


TOO_MANY_FAILURES = (429, error_body(
    "TooManyFailedRequests",
    "too many requests with a bad token from this address at once: fix the token "
    "(`rolebroker env PROFILE` prints a new one) and retry",
))


@dataclass
class FailureThrottle:
    """Delays failed authentications from one peer: 50 ms per recent failure, at most 2 s.
    At most `max_held` delayed answers per peer are pending at once; failures beyond that are
    answered 429 at once, so a guesser's rate of slowed answers is bounded whatever the number
    of its connections. A client with a valid token never waits."""

    now: Callable[[], float]
    refusals: RefusalLog = field(default_factory=RefusalLog)
    max_held: int = 8
    window: float = 60.0
    step: float = 0.05
    cap: float = 2.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    async def hold(self, scope: Scope) -> tuple[int, bytes] | None:
        """Record a failed authentication and hold its answer as long as the policy says; or,
        with this peer's quota of held answers taken, return the answer to send instead."""
        return await self.hold_peer(scope_peer(scope), _describe(scope))

    async def hold_peer(self, peer: str, request: str = "") -> tuple[int, bytes] | None:
        delay = self.record(peer)
        held = self._held.get(peer, 0)
        if held >= self.max_held:
            self.refusals.note(peer, "requests with a bad token answered 429 (too many at once)", request)
            return TOO_MANY_FAILURES
        self.refusals.note(peer, "requests with a bad token", request)
        if delay:
            self._held[peer] = held + 1
            try:
                await asyncio.sleep(delay)
            finally:
                if self._held[peer] > 1:
                    self._held[peer] -= 1
                else:
                    del self._held[peer]
        return None

    def record(self, peer: str) -> float:
        """Note a failure; return how long its answer should be held."""
        now = self.now()
        recent = self._failures.get(peer)
        if recent is None:
            # Past the cap more entries would change nothing: keep just enough to reach it.
            recent = self._failures[peer] = deque(maxlen=int(self.cap / self.step) + 1)
        while recent and recent[0] < now - self.window:
            recent.popleft()
        recent.append(now)
        if len(self._failures) > 10_000:  # bounded memory whatever the peers
            self._failures = {peer: recent}
        return min(self.cap, self.step * (len(recent) - 1))


class RequestGuard:
    def __init__(self, app: ASGIApp, hosts: Callable[[], frozenset[bytes]], throttle: FailureThrottle) -> None:
        self.app = app
        self.hosts = hosts
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _refuse_other(scope, receive, send)
            return
        problem = self.check(scope)
        if problem is not None:
            status, code, message = problem
            await _reply(send, status, code, message)
            return
        if scope["path"].startswith(CREDENTIALS_PREFIX):
            # The hot path: the endpoint reads no body and throttles its own 401s, so no wrappers.
            await self.app(scope, receive, send)
            return
        peer = scope_peer(scope)
        body = await _read_body(receive)
        if body is None:
            await _reply(send, 413, "BodyTooLarge", f"request bodies are limited to {MAX_BODY} bytes")
            return

        refused = False

        async def send_throttled(message: MutableMapping[str, Any]) -> None:
            nonlocal refused
            if refused:
                return  # the app's own answer was replaced by the throttle's
            if message["type"] == "http.response.start" and message["status"] == 401:
                instead = await self.throttle.hold_peer(peer, _describe(scope))
                if instead is not None:
                    refused = True
                    await _reply(send, instead[0], body=instead[1])
                    return
            await send(message)

        await self.app(scope, _replay(body, receive), send_throttled)

    def check(self, scope: Scope) -> tuple[int, str, str] | None:
        host = None
        for name, value in scope["headers"]:
            if len(value) > MAX_HEADER_VALUE:
                return 431, "HeaderTooLarge", f"the {name.decode('latin-1')} header is too large"
            if name == b"host":
                host = value
            elif name == b"origin":
                return 403, "BrowserRequest", "requests from web pages are refused: no page may read credentials"
            elif name == b"sec-fetch-site" and value != b"none":
                return 403, "BrowserRequest", "requests from web pages are refused: no page may read credentials"
            elif name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                return 413, "BodyTooLarge", f"request bodies are limited to {MAX_BODY} bytes"
        if is_control(scope):
            return None  # the user's own process on the Unix socket: no browser or rebinding can get here
        if host is None or host.lower() not in self.hosts():
            return 403, "BadHost", ("the Host header does not name this daemon (a DNS rebinding attempt?); "
                                    "use http://127.0.0.1:PORT as `rolebroker env` prints")
        if not scope["path"].startswith(CREDENTIALS_PREFIX[:-1]):
            # TCP serves credentials only: anyone on this machine (or in a container) can reach it.
            return 403, "ControlChannelOnly", ("this address serves only /v1/credentials/PROFILE; the rest of "
                                               "the API answers on the daemon's Unix socket, through the CLI")
        return None


def _describe(scope: Scope) -> str:
    # For the log: repr() escapes CR/LF, so a path cannot forge log lines; never a header value.
    return f"{scope['method']} {scope['path'][:128]!r}"


async def _refuse_other(scope: Scope, receive: Receive, send: Send) -> None:
    """Only plain HTTP is served: a WebSocket is closed before it is accepted (the server
    answers the handshake with 403), and nothing else (lifespan) needs the app."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": "plain HTTP only"})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole (small) control API body, or None past the limit, chunked or not."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)  # type: ignore[arg-type]
        if size > MAX_BODY:
            return None
        chunks.append(chunk)  # type: ignore[arg-type]
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: waits for the disconnect, as ASGI expects

    return replay


async def _reply(send: Send, status: int, code: str = "", message: str = "", body: bytes | None = None) -> None:
    body = error_body(code, message) if body is None else body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
