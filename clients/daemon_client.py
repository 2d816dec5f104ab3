"""A small HTTP client for the daemon's control API (standard library only, so
`rolebroker env` and `credential-process` start fast)."""

from __future__ import annotations

import http.client
import json
import os
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

# broker.runtime is standard library only: importing it keeps the CLI fast.
from broker.runtime import CONTROL_TOKEN_FILE, DAEMON_FILE, DEFAULT_PORT, runtime_dir


NOT_RUNNING = ("the rolebroker daemon is not running: start it with `rolebroker serve` "
               "(or `systemctl --user start rolebroker.socket`)")


class DaemonError(Exception):
    def __init__(self, message: str, code: str = "DaemonError", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def check_private(path: Path, directory: bool) -> None:
    """Trust only what this user owns and nobody else can touch: in a shared /tmp another
    user could plant a daemon.json pointing at their own server (and get our MFA codes)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or (stat.S_ISDIR(info.st_mode) != directory):
        raise DaemonError(f"{path} is not a plain {'directory' if directory else 'file'}: not trusted; "
                          "remove it and restart the daemon", "NotTrusted")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DaemonError(f"{path} belongs to another user or is open to others: not trusted; "
                          "remove it and restart the daemon (or set ROLEBROKER_RUNTIME_DIR)", "NotTrusted")


def wake_socket_activated_daemon(directory: Path, wait: float = 5.0) -> bool:
    """With systemd socket activation the daemon starts on the first connection, and only
    then writes its runtime files: knock on the default port and give it a moment."""
    port = int(os.environ.get("ROLEBROKER_PORT", DEFAULT_PORT))
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=wait)
        connection.request("GET", "/v1/health", headers={"Host": f"127.0.0.1:{port}"})
        connection.getresponse().read()
        connection.close()
    except OSError:
        return False  # nothing listens: not installed as a service, or stopped
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (directory / DAEMON_FILE).exists():
            return True
        time.sleep(0.05)
    return False


class DaemonClient:
    def __init__(self, directory: Path | None = None, timeout: float = 30.0) -> None:
        directory = directory or runtime_dir()
        self.directory = directory
        if not (directory / DAEMON_FILE).exists() and not wake_socket_activated_daemon(directory):
            raise DaemonError(NOT_RUNNING, "NotRunning")
        try:
            check_private(directory, directory=True)
            check_private(directory / DAEMON_FILE, directory=False)
            check_private(directory / CONTROL_TOKEN_FILE, directory=False)
            info = json.loads((directory / DAEMON_FILE).read_bytes())
            self.token = (directory / CONTROL_TOKEN_FILE).read_text()
            self.port = int(info["port"])
        except FileNotFoundError:
            raise DaemonError(NOT_RUNNING, "NotRunning") from None
        except PermissionError:
            raise DaemonError(f"cannot read {directory}: it belongs to another user", "NotRunning") from None
        except (ValueError, KeyError, TypeError):
            raise DaemonError(f"{directory / DAEMON_FILE} is damaged: restart the daemon", "NotRunning") from None
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
