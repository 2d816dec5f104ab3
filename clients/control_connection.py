"""http.client's HTTPConnection over the daemon's control socket, refusing a listener of
another uid. The CLI speaks the few requests it needs by hand (clients/daemon_client.py);
this is for code that wants a whole HTTP client, such as the tests."""

from __future__ import annotations

import http.client
from pathlib import Path

from .daemon_client import connect_control


class ControlConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("rolebroker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = connect_control(self.socket_path, self.timeout if self.timeout is not None else 30.0)
