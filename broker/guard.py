"""The first thing every request meets: refuse what no legitimate local client sends.

- a `Host` that is not one of the daemon's own addresses (DNS rebinding: a web page
  whose name suddenly resolves to 127.0.0.1 still sends its own name);
- browser headers (`Origin`, `Sec-Fetch-Site` other than `none`): no web page may read
  credentials, and there is no CORS;
- oversized headers or bodies.
Failed token checks are slowed down per peer address without delaying valid clients.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, MutableMapping

from broker.channel import is_control
from broker.endpoint import CREDENTIALS_PREFIX, ASGIApp, Receive, Scope, Send
from broker.wire import JSON_TYPE, error_body

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


@dataclass
class FailureThrottle:
    """Delays failed authentications from one peer: 50 ms per recent failure, at most 2 s.
    A guesser is slowed to a crawl; a client with a valid token never waits."""

    now: Callable[[], float]
    window: float = 60.0
    step: float = 0.05
    cap: float = 2.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    async def hold(self, scope: Scope) -> None:
        """Record a failed authentication and hold its answer as long as the policy says."""
        delay = self.record(_peer_key(scope))
        if delay:
            await asyncio.sleep(delay)

    def record(self, peer: str) -> float:
        """Note a failure; return how long its answer should be held."""
        now = self.now()
        recent = self._failures.setdefault(peer, deque())
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
            await self.app(scope, receive, send)
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
        peer = _peer_key(scope)
        body = await _read_body(receive)
        if body is None:
            await _reply(send, 413, "BodyTooLarge", f"request bodies are limited to {MAX_BODY} bytes")
            return

        async def send_throttled(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                delay = self.throttle.record(peer)
                if delay:
                    await asyncio.sleep(delay)
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


@functools.lru_cache(maxsize=64)
def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _peer_key(scope: Scope) -> str:
    """Whom to count failures against. Every local process can pick any 127.x.y.z source
    address, so all of loopback counts as one guesser."""
    address = scope["client"][0] if scope.get("client") else "-"
    return "loopback" if _is_loopback(address) else address


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


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
