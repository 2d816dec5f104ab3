"""The CLI's side of the control channel: HTTP over the daemon's Unix socket (standard
library only, so `rolebroker env` and `credential-process` start fast).

The CLI talks to nothing else. A TCP port can be taken by any local user once the daemon is
gone (a crash, the OOM killer); a socket in a 0700 directory of ours cannot. Before a byte
is sent the client checks that the directory and the socket are this user's, and asks the
kernel who listens at the other end (SO_PEERCRED): an MFA code only ever goes to a process
of our own uid.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

# broker.runtime is standard library only: importing it keeps the CLI fast.
from broker.runtime import CONTROL_SOCKET, runtime_dir

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


class ControlConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the control socket, refusing a listener of another uid."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("rolebroker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except BaseException:
            sock.close()
            raise
        if uid != os.getuid():
            sock.close()
            raise DaemonError(f"{self.socket_path} is served by uid {uid}, not by you: not trusted", "NotTrusted")
        self.sock = sock


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
        connection = ControlConnection(self.socket_path, self.timeout)
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (ConnectionRefusedError, FileNotFoundError):
            # A socket file with nobody behind it: the daemon was killed without cleaning up.
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except TimeoutError:
            raise DaemonError(f"the daemon did not answer within {self.timeout:g} s", "Timeout") from None
        except OSError as exc:
            raise DaemonError(f"cannot talk to the daemon at {self.socket_path}: {exc.strerror or exc}",
                              "NotRunning") from None
        finally:
            connection.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise DaemonError(f"the daemon answered {response.status} with a body that is not JSON") from None
        if response.status >= 400:
            message = data.get("message") or data.get("detail") or f"the daemon answered HTTP {response.status}"
            raise DaemonError(str(message), str(data.get("code", "Error")), response.status)
        return data

    def credentials(self, profile: str) -> Any:
        """A profile's credentials, as the endpoint serves them (no token: the channel is ours)."""
        return self.request("GET", f"/v1/credentials/{quote(profile, safe='')}")
