"""A small HTTP client for the daemon's control API (standard library only, so
`rolebroker env` and `credential-process` start fast)."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

DAEMON_FILE = "daemon.json"
CONTROL_TOKEN_FILE = "control-token"
NOT_RUNNING = ("the rolebroker daemon is not running: start it with `rolebroker serve` "
               "(or `systemctl --user start rolebroker.socket`)")


class DaemonError(Exception):
    def __init__(self, message: str, code: str = "DaemonError", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def runtime_dir() -> Path:
    # Mirrors broker.runtime.runtime_dir without importing the daemon's dependencies.
    explicit = os.environ.get("ROLEBROKER_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "rolebroker"
    import tempfile
    return Path(tempfile.gettempdir()) / f"rolebroker-{os.getuid()}"


class DaemonClient:
    def __init__(self, directory: Path | None = None, timeout: float = 30.0) -> None:
        directory = directory or runtime_dir()
        try:
            info = json.loads((directory / DAEMON_FILE).read_bytes())
            self.token = (directory / CONTROL_TOKEN_FILE).read_text()
        except FileNotFoundError:
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except PermissionError:
            raise DaemonError(f"cannot read {directory}: it belongs to another user", "NotRunning") from None
        self.port = int(info["port"])
        self.timeout = timeout

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"Authorization": token if token is not None else self.token}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except ConnectionRefusedError:
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except OSError as exc:
            raise DaemonError(f"cannot talk to the daemon on port {self.port}: {exc}", "NotRunning") from None
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

    def credentials(self, profile: str, token: str) -> Any:
        return self.request("GET", f"/v1/credentials/{quote(profile, safe='')}", token=token)
