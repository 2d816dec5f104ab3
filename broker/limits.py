"""Bounds on what a connection and a peer may hold, enforced while the bytes arrive.

uvicorn reads a whole request head before the app (and so `guard.py`) sees it, and keeps a
connection that sends nothing open for ever. Another local user, or a compromised container,
could therefore fill the daemon's memory with endless headers, or its file descriptors with
idle sockets, and every SDK would then fail. This module is the HTTP protocol uvicorn runs for
the daemon: uvicorn's own (httptools, or h11 where httptools is missing) with

- the request head (request line and headers) bounded in bytes and in header count while it
  is read: past the limit the connection is answered 431 and closed;
- a deadline for each request to arrive in full: from the connection's start for its first
  request, from a request's first byte for later ones (idle keep-alive time is uvicorn's own
  `timeout_keep_alive`);
- a bound on open connections per peer (all of loopback is one peer) and in all: a new
  connection past it closes the oldest idle connection (one with no request in progress),
  so a flood of idle sockets can never lock a real client out;
- WebSocket upgrades refused before any WebSocket code runs.

Everything refused is counted in the `RefusalLog`, never logged one line per request. The
request path of a well-behaved client only gains a few attribute checks per request.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any, ClassVar

from .fd_budget import connection_budget
from .peers import LOCAL_SOCKET, RefusalLog, peer_of
from .wire import JSON_TYPE, error_body

@dataclass(frozen=True)
class Limits:
    # The request line and headers of one request. SDKs send well under 1 KiB.
    max_head_bytes: int = 8192
    max_headers: int = 64
    # Seconds for a request to arrive in full: a connection's first request from the moment it
    # is accepted, a later one from its first byte.
    request_timeout: float = 5.0
    # Open connections of one peer, and of all peers together (also kept below the open-file
    # limit). Loopback is one peer for all local clients: room for a benchmark's 256 keep-alive
    # clients and then some, since only idle connections are ever closed to make room.
    connections_per_peer: int = 1024
    max_connections: int = 4096
    # Failed token checks whose (slowed) answers one peer may have pending at once; past it
    # they are answered 429 at once (guard.FailureThrottle).
    failing_requests_per_peer: int = 8
    # How often refusals are summarised in the log, one line per peer.
    summary_interval: float = 60.0


class ConnectionTable:
    """The open connections, oldest first, per peer and in all."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._all: dict[_Bounded, None] = {}
        self._by_peer: dict[str, dict[_Bounded, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def admit(self, connection: _Bounded) -> bool:
        """Take a new connection in, closing the oldest idle one of its peer (or of all) when a
        limit is reached. False when every candidate is busy: the new one must be refused."""
        mine = self._by_peer.get(connection.peer)
        if mine is None:
            mine = self._by_peer[connection.peer] = {}
        if len(mine) >= self.per_peer:
            full: dict[_Bounded, None] | None = mine
        elif len(self._all) >= self.total:
            full = self._all
        else:
            full = None
        if full is not None:
            victim = next((c for c in full if c.idle()), None)
            if victim is None:
                if not mine:
                    del self._by_peer[connection.peer]
                return False
            self.remove(victim)
            victim.evict()
            mine = self._by_peer.setdefault(connection.peer, mine)  # the victim may have been its last
        mine[connection] = None
        self._all[connection] = None
        return True

    def remove(self, connection: _Bounded) -> None:
        if self._all.pop(connection, 0) is None:
            mine = self._by_peer[connection.peer]
            del mine[connection]
            if not mine:
                del self._by_peer[connection.peer]


# Where a connection is in its current request: bytes received in HEAD (a head, or the wait
# for one) count against the head limit; BODY bytes are uvicorn's (flow control) and the
# app's (body limit); after CLOSING nothing more is read.
HEAD, BODY, CLOSING = 0, 1, 2


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that was just refused."""


class _Bounded:
    """What both protocols share: the connection table, the request deadline, refusals.
    Mixed in before uvicorn's protocol class; the class attributes are set by `http_protocol`."""

    limits: ClassVar[Limits]
    table: ClassVar[ConnectionTable]
    refusals: ClassVar[RefusalLog]

    # uvicorn's protocol attributes used here
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    cycle: Any

    peer: str = LOCAL_SOCKET
    _phase: int = HEAD
    _deadline: asyncio.TimerHandle | None = None

    def _admit(self) -> bool:
        self.peer = peer_of(self.client)
        if not self.table.admit(self):
            self._phase = CLOSING
            self.refusals.note(self.peer, "connections refused: all of this peer's connections were busy")
            self.transport.close()
            return False
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._deadline_passed)
        return True

    def _forget(self) -> None:
        self.table.remove(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm_deadline(self) -> None:
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def idle(self) -> bool:
        """No request is being received or answered: closing it loses no work."""
        return self._phase != BODY and not self._request_in_progress()

    def evict(self) -> None:
        if self._phase != CLOSING:
            self.refusals.note(self.peer, "idle connections closed to make room for new ones")
        self._phase = CLOSING
        self._cancel_deadline()
        self.transport.close()

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._phase == CLOSING:
            return
        if self._nothing_received():
            self._phase = CLOSING
            self.refusals.note(self.peer, "connections closed for sending no request")
            self.transport.close()
            return
        # A body that never arrives in full holds its request open, and the app waits for it:
        # that connection closes now. A late pipelined head waits for the answer before it.
        self._refuse(408, "RequestTimeout",
                     f"the request did not arrive in full within {self.limits.request_timeout:g} s",
                     f"requests not received in full within {self.limits.request_timeout:g} s",
                     now=self._phase == BODY)

    def _nothing_received(self) -> bool:
        raise NotImplementedError

    def _refuse(self, status: int, code: str, message: str, what: str, now: bool = False) -> None:
        """Answer with a JSON error (the shape of every other error) and close. If an earlier
        request of this connection is still being answered, that answer goes out first and the
        connection closes after it, unless `now`."""
        self._phase = CLOSING
        self._cancel_deadline()
        self.refusals.note(self.peer, what)
        cycle = self.cycle
        if cycle is not None and not now and not cycle.response_complete:
            cycle.keep_alive = False
            return
        if cycle is not None and now and cycle.response_started:
            self.transport.close()  # this request has (part of) an answer already: no second one
            return
        body = error_body(code, message)
        self.transport.write(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
            b"content-type: ", JSON_TYPE, b"\r\ncontent-length: ", str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n", body,
        ]))
        self.transport.close()


def _httptools_protocol() -> type[asyncio.Protocol]:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    # Called directly rather than through super(): these run for every request.
    base_headers_complete = HttpToolsProtocol.on_headers_complete
    base_message_complete = HttpToolsProtocol.on_message_complete

    class BoundedHttpToolsProtocol(_Bounded, HttpToolsProtocol):
        # Bytes received outside a body since the last request ended: the head being read.
        # Bytes after a request's end in the same read are not counted, which is why reads
        # past the limit are handed over in pieces (at most one uncounted piece per head).
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._max_head = self.limits.max_head_bytes
            self._admit()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # uvicorn's data_received, plus the head count, minus its log line per bad request.
            phase = self._phase
            if phase == HEAD:
                if len(data) > self._max_head - self._head_bytes:
                    self._receive_in_pieces(data)
                    return
                self._head_bytes += len(data)
            elif phase == CLOSING:
                return
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            if self._feed(data) and self._deadline is None and (self._phase == BODY or self._head_bytes):
                self._arm_deadline()  # a request has begun and not fully arrived

        def _feed(self, data: bytes) -> bool:
            """Hand bytes to the parser; False when the connection is done with (refused)."""
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._upgrade_ignored()
                return False
            except httptools.HttpParserError:
                self._parse_failed()
                return False
            return True

        def _receive_in_pieces(self, data: bytes) -> None:
            """Hand the parser no more than the head may still take, so what it buffers for one
            head never exceeds the limit by more than one piece; refuse the head past it."""
            while data and self._phase != CLOSING:
                if self._phase == BODY:
                    piece = data[:self._max_head]
                else:
                    room = self._max_head - self._head_bytes
                    if room <= 0:
                        self._refuse(431, "HeaderTooLarge",
                                     f"the request line and headers are limited to {self._max_head} bytes",
                                     f"request heads over {self._max_head} bytes")
                        return
                    piece = data[:room]
                    self._head_bytes += len(piece)
                data = data[len(piece):]
                self._unset_keepalive_if_required()
                if not self._feed(piece):
                    return
            if self._phase != CLOSING and self._deadline is None and (self._phase == BODY or self._head_bytes):
                self._arm_deadline()

        def _parse_failed(self) -> None:
            if self._phase != CLOSING:  # else it was refused in a callback, and answered
                self._refuse(400, "BadRequest", "the request is not valid HTTP/1.1", "malformed requests")

        def _nothing_received(self) -> bool:
            return self._phase == HEAD and not self._head_bytes

        def _upgrade_ignored(self) -> None:
            # An upgrade other than WebSocket (h2c, CONNECT) is answered as plain HTTP/1.1; the
            # parser stops after it, so the connection closes once the answer is out.
            self._phase = CLOSING
            self._cancel_deadline()
            if self._request_in_progress():
                self.cycle.keep_alive = False
            else:
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._phase = BODY
            if len(self.headers) > self.limits.max_headers or self.parser.should_upgrade():
                self._check_head()
            base_headers_complete(self)

        def _check_head(self) -> None:
            if len(self.headers) > self.limits.max_headers:
                self._refuse(431, "TooManyHeaders",
                             f"requests are limited to {self.limits.max_headers} headers",
                             f"requests with over {self.limits.max_headers} headers")
                raise _Refused
            if self._get_upgrade() == b"websocket":
                self._refuse(400, "UpgradeRefused", "this daemon speaks plain HTTP/1.1: WebSocket is refused",
                             "WebSocket upgrade requests")
                raise _Refused

        def on_message_complete(self) -> None:
            if self._phase == CLOSING:
                return
            self._phase = HEAD
            self._head_bytes = 0
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            base_message_complete(self)

    return BoundedHttpToolsProtocol


def _h11_protocol() -> type[asyncio.Protocol]:
    """The fallback where httptools is missing: h11 bounds the head itself
    (`h11_max_incomplete_event_size`, set from the same limit); deadlines and the connection
    table are the same. Its refusals are uvicorn's own (a plain-text 400 and a log line each),
    and it neither counts headers nor refuses WebSocket (no WebSocket protocol is loaded, so an
    upgrade is answered as plain HTTP)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(_Bounded, H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._admit()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # h11 checks its bound only on a head still incomplete after a read: handed over in
            # pieces no longer than the limit, no head grows much past it.
            step = self.limits.max_head_bytes
            while data and self._phase != CLOSING and not self.transport.is_closing():
                super().data_received(data[:step])
                data = data[step:]
            if self._phase == CLOSING:
                return
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._phase = HEAD
                self._cancel_deadline()  # the request arrived in full
            else:
                self._phase = BODY if self.conn.their_state is h11.SEND_BODY else HEAD
                if self._deadline is None:
                    self._arm_deadline()

        def _nothing_received(self) -> bool:
            return self._phase == HEAD and not self.conn.trailing_data[0]

    return BoundedH11Protocol


def http_protocol(limits: Limits, refusals: RefusalLog, connections: int) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bound to these limits and to a
    connection table of its own (one per daemon)."""
    try:
        base = _httptools_protocol()
    except ImportError:
        base = _h11_protocol()
    table = ConnectionTable(limits.connections_per_peer, connections)
    attributes = {"limits": limits, "table": table, "refusals": refusals}
    return type(base.__name__, (base,), attributes)


def uvicorn_options(limits: Limits, refusals: RefusalLog) -> dict[str, Any]:
    """`uvicorn.Config` arguments that put these limits in force. Call it once the open-file
    limit is what it will be (`raise_open_file_limit`): the budget follows it."""
    budget = connection_budget(limits)
    return {
        "http": http_protocol(limits, refusals, budget.connections),
        "backlog": budget.backlog,
        "ws": "none",  # no WebSocket protocol at all: an upgrade request is refused (or served as HTTP/1.1)
        "h11_max_incomplete_event_size": limits.max_head_bytes,  # if h11 is ever the protocol
    }
