"""A byte relay from a loopback TCP port to the daemon's control socket, for HTTP clients
that speak only TCP (requests, schemathesis). It forwards bytes and nothing else: the daemon
sees a process of its own user on its Unix socket, as it does for the CLI."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import TracebackType


class ControlRelay:
    def __init__(self, control_socket: Path) -> None:
        self.target = str(control_socket)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ControlRelay:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.listener.close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink, True), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket, close: bool = False) -> None:
    """Copy bytes from `source` to `sink` until `source` ends, then tell `sink` no more is
    coming; with `close`, shut both down and close `source` (a relay owning its sockets)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        ends = (sink, source) if close else (sink,)
        for sock in ends:
            try:
                sock.shutdown(socket.SHUT_RDWR if close else socket.SHUT_WR)
            except OSError:
                pass
        if close:
            source.close()
