"""The CLI's side of the control channel: HTTP over the daemon's Unix socket (standard
library only, so `rolebroker env` and `credential-process` start fast).

The CLI talks to nothing else. A TCP port can be taken by any local user once the daemon is
gone (a crash, the OOM killer); a socket in a 0700 directory of ours cannot. Before a byte
is sent the client checks that the directory and the socket are this user's, and asks the
kernel who listens at the other end (SO_PEERCRED): an MFA code only ever goes to a process
of our own uid.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path
from urllib.parse import quote

# broker.runtime is standard library only: importing it keeps the CLI fast.
from ..broker.runtime import CONTROL_SOCKET, runtime_dir

# Not `from typing import TYPE_CHECKING`: importing typing costs `credential-process` about a
# tenth of an interpreter start, for names only the type checker reads (annotations are
# strings here). mypy and ruff treat a constant of this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# One request per connection, spoken by hand: http.client imports ssl and the email package,
# about as much CPU as the rest of a `credential-process` call. The daemon is uvicorn; every
# answer it gives carries a Content-Length (chunked is read too), and `Connection: close`
# makes the end of the stream the end of the answer.
MAX_ANSWER = 16 * 1024 * 1024

NOT_RUNNING = ("the rolebroker daemon is not running: start it with `rolebroker serve` "
               "(or `rolebroker service install` for a systemd user service)")


class DaemonError(Exception):
    def __init__(self, message: str, code: str = "DaemonError", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def check_private(path: Path, kind: str) -> None:
    """Trust only what this user owns and nobody else can touch ("dir" or "socket")."""
    info = os.lstat(path)
    wanted = stat.S_ISDIR if kind == "dir" else stat.S_ISSOCK
    if not wanted(info.st_mode):
        raise DaemonError(f"{path} is not a {'directory' if kind == 'dir' else 'socket'}: not trusted; "
                          "remove it and restart the daemon", "NotTrusted")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DaemonError(f"{path} belongs to another user or is open to others: not trusted; "
                          "remove it and restart the daemon (or set ROLEBROKER_RUNTIME_DIR)", "NotTrusted")


def connect_control(path: Path, timeout: float) -> socket.socket:
    """A connection to the control socket, refused unless a process of our own uid listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except BaseException:
        sock.close()
        raise
    if uid != os.getuid():
        sock.close()
        raise DaemonError(f"{path} is served by uid {uid}, not by you: not trusted", "NotTrusted")
    return sock


def exchange(sock: socket.socket, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request; return the status and the body of the answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: rolebroker\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise DaemonError("the daemon's answer is too large")
    return parse_answer(b"".join(chunks))


def parse_answer(raw: bytes) -> tuple[int, bytes]:
    header, separator, rest = raw.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise DaemonError("the daemon's answer is not HTTP")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        return int(parts[1]), _dechunk(rest)
    length = fields.get(b"content-length")
    if length is not None:
        if not length.isdigit() or int(length) > len(rest):
            raise DaemonError("the daemon's answer ended early")
        rest = rest[:int(length)]
    return int(parts[1]), rest


def _dechunk(data: bytes) -> bytes:
    body: list[bytes] = []
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise DaemonError("the daemon's answer is not HTTP") from None
        if not separator or len(data) < size:
            raise DaemonError("the daemon's answer ended early")
        if size == 0:
            return b"".join(body)
        body.append(data[:size])
        data = data[size + 2:]


def __getattr__(name: str) -> Any:
    # http.client's connection class over the control socket, for code that wants a whole
    # HTTP client (the tests); made on first use so the CLI never imports http.client.
    if name == "ControlConnection":
        from .control_connection import ControlConnection

        return ControlConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DaemonClient:
    def __init__(self, directory: Path | None = None, timeout: float = 30.0) -> None:
        self.directory = directory or runtime_dir()
        self.socket_path = self.directory / CONTROL_SOCKET
        try:
            os.lstat(self.socket_path)  # nothing there: not running (and nothing to distrust)
            check_private(self.directory, "dir")
            check_private(self.socket_path, "socket")
        except (FileNotFoundError, NotADirectoryError):
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except PermissionError:
            raise DaemonError(f"cannot read {self.directory}: it belongs to another user", "NotTrusted") from None
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        try:
            with connect_control(self.socket_path, self.timeout) as sock:
                status, raw = exchange(sock, method, path, payload)
        except (ConnectionRefusedError, FileNotFoundError):
            # A socket file with nobody behind it: the daemon was killed without cleaning up.
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except TimeoutError:
            raise DaemonError(f"the daemon did not answer within {self.timeout:g} s", "Timeout") from None
        except OSError as exc:
            raise DaemonError(f"cannot talk to the daemon at {self.socket_path}: {exc.strerror or exc}",
                              "NotRunning") from None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise DaemonError(f"the daemon answered {status} with a body that is not JSON") from None
        if status >= 400:
            message = data.get("message") or data.get("detail") or f"the daemon answered HTTP {status}"
            raise DaemonError(str(message), str(data.get("code", "Error")), status)
        return data

    def credentials(self, profile: str) -> Any:
        """A profile's credentials, as the endpoint serves them (no token: the channel is ours)."""
        return self.request("GET", f"/v1/credentials/{quote(profile, safe='')}")
