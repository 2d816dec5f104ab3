"""The control channel: HTTP on a Unix socket in the private runtime directory.

The CLI reaches the daemon through this socket and nothing else. Another user can neither
connect to it (the directory is 0700, the socket 0600) nor stand in for it: unlike a TCP
port, the socket's path cannot be taken over while it lies in a directory only we can
write. The daemon also asks the kernel who is at the other end (SO_PEERCRED) and hangs up
on any uid but its own before reading a byte, so root's or a confused ACL's connections
are refused too, and each request's scope says which process sent it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runtime import RuntimeDirError

log = logging.getLogger("rolebroker.channel")

# The ASGI scope key under which a control-channel request carries its peer. TCP requests
# (the credentials endpoint) have none.
PEER_KEY = "rolebroker.peer"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_SOCKET_PATH = 108  # sun_path on Linux, with its terminating NUL


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a control-channel connection, as the kernel says."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: Any) -> Peer | None:
    """The credentials of a connected Unix socket's peer (Linux SO_PEERCRED), or None."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid)


def is_control(scope: Any) -> bool:
    """Whether a request came through the control channel from a process of our own user."""
    peer = scope.get(PEER_KEY)
    return peer is not None and peer.uid == os.getuid()


def bind_control_socket(path: Path) -> socket.socket:
    """Listen on `path` (a 0600 socket in a 0700 directory of ours; a stale one is replaced:
    the caller holds the runtime lock, so no live daemon owns it)."""
    if len(os.fsencode(path)) >= MAX_SOCKET_PATH:
        raise RuntimeDirError(f"{path} is too long for a Unix socket ({MAX_SOCKET_PATH - 1} bytes at most): "
                              "set ROLEBROKER_RUNTIME_DIR to a shorter directory")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # the 0700 directory already keeps others out in between
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def is_unix(sock: socket.socket) -> bool:
    return sock.family == socket.AF_UNIX


class PeerCredentials:
    """Mixed in before a uvicorn protocol class (httptools or h11): on Unix sockets, a peer of
    another uid is disconnected on arrival, and the app this connection runs sees the peer in
    every request's scope (PEER_KEY). TCP connections are left exactly as they were."""

    app: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        peer = peer_of(sock)
        if peer is None or peer.uid != os.getuid():
            # Only root can get here (the socket is 0600 in a 0700 directory): still not ours.
            log.warning("control channel: refused a connection from uid %s", peer.uid if peer else "unknown")
            transport.close()
            return
        self.app = _carrying_peer(self.app, peer)  # uvicorn runs self.app for each request


def _carrying_peer(app: Any, peer: Peer) -> Any:
    async def with_peer(scope: Any, receive: Any, send: Any) -> None:
        scope[PEER_KEY] = peer
        await app(scope, receive, send)

    return with_peer


def with_peer_credentials(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """`protocol` (uvicorn's HTTP protocol, or one derived from it) knowing its Unix-socket peers."""
    return type(f"PeerChecked{protocol.__name__}", (PeerCredentials, protocol), {})

