"""The desktop as the daemon meets it, for tests: a private D-Bus session bus with a
recording notification server (written here with jeepney, as a real server on the bus),
an Xvfb display, and a pseudo-terminal a CLI can prompt on.

Nothing of rolebroker is faked: these are the outside world's parts, real ones.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import DBusNameFlags, message_bus
from jeepney.io.blocking import open_dbus_connection

BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"


def needs(*programs: str) -> pytest.MarkDecorator:
    missing = [p for p in programs if shutil.which(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (.ci/run installs them)")


@dataclass
class Shown:
    """One Notify call as the server received it."""

    id: int
    app: str
    replaces: int
    title: str
    body: str
    actions: list[str]


@dataclass
class NotificationServer:
    """org.freedesktop.Notifications on a bus, recording every notification."""

    address: str
    capabilities: tuple[str, ...] = ("actions", "body")
    shown: list[Shown] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._conn = open_dbus_connection(self.address)
        reply = self._conn.send_and_get_reply(message_bus.RequestName(BUS_NAME, DBusNameFlags.do_not_queue))
        assert reply.body == (1,), reply.body  # 1: we are the primary owner
        self._changed = threading.Condition()
        self._outbox: list[Any] = []
        self._stop = False
        self._next_id = 0
        self._thread = threading.Thread(target=self._serve, name="notification-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            with self._changed:
                outbox, self._outbox = self._outbox, []
            for message in outbox:
                self._conn.send(message)
            try:
                message = self._conn.receive(timeout=0.05)
            except TimeoutError:
                continue
            if message.header.message_type != MessageType.method_call:
                continue
            member = message.header.fields.get(HeaderFields.member)
            if member == "Notify":
                app, replaces, _icon, title, body, actions, _hints, _timeout = message.body
                with self._changed:
                    self._next_id += 1
                    number = replaces or self._next_id
                    self.shown.append(Shown(number, app, replaces, title, body, list(actions)))
                    self._changed.notify_all()
                self._conn.send(new_method_return(message, "u", (number,)))
            elif member == "GetCapabilities":
                self._conn.send(new_method_return(message, "as", (list(self.capabilities),)))
            elif member == "GetServerInformation":
                self._conn.send(new_method_return(message, "ssss", ("recorder", "tests", "1", "1.2")))
            elif member == "CloseNotification":
                self._conn.send(new_method_return(message))
            else:
                self._conn.send(new_error(message, "org.freedesktop.DBus.Error.UnknownMethod"))

    def wait_for(self, predicate: Callable[[Shown], bool], timeout: float = 20.0) -> Shown:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for shown in self.shown:
                    if predicate(shown):
                        return shown
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification within {timeout} s; shown: {self.shown}")
                self._changed.wait(left)

    def invoke(self, shown: Shown, action: str) -> None:
        """The user clicks an action button of a notification."""
        signal = new_signal(DBusAddress(OBJECT_PATH, interface=BUS_NAME), "ActionInvoked", "us", (shown.id, action))
        with self._changed:
            self._outbox.append(signal)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._conn.close()


@dataclass
class SessionBus:
    address: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_session_bus() -> SessionBus:
    process = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    address = process.stdout.readline().strip()  # printed once it listens
    assert address.startswith("unix:"), address
    return SessionBus(address, process)


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionBus]:
    bus = start_session_bus()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
def notifications(session_bus: SessionBus) -> Iterator[NotificationServer]:
    server = NotificationServer(session_bus.address)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Display:
    name: str
    process: subprocess.Popen[bytes]

    def run(self, *argv: str, timeout: float = 30) -> str:
        result = subprocess.run(list(argv), env={**os.environ, "DISPLAY": self.name}, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, (argv, result.stderr)
        return result.stdout

    def wait_for_window(self, name: str, timeout: float = 30) -> str:
        """The id of a window titled `name`, once it is mapped (xdotool waits for it)."""
        return self.run("xdotool", "search", "--sync", "--onlyvisible", "--name", name, timeout=timeout).split()[0]

    def windows(self, name: str) -> list[str]:
        result = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name],
                                env={**os.environ, "DISPLAY": self.name}, capture_output=True, text=True, timeout=30)
        return result.stdout.split()

    def screenshot(self, window: str, path: Path) -> None:
        self.run("import", "-window", window, str(path))

    def type_into(self, window: str, text: str) -> None:
        self.run("xdotool", "windowfocus", "--sync", window)
        self.run("xdotool", "type", "--delay", "40", text)
        self.run("xdotool", "key", "Return")

    def press(self, window: str, key: str) -> None:
        self.run("xdotool", "windowfocus", "--sync", window)
        self.run("xdotool", "key", key)


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[Display]:
    read, write = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                               pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()  # written once the server accepts clients
    assert number.isdigit(), "Xvfb did not start"
    name = f":{number}"
    monkeypatch.setenv("DISPLAY", name)
    monkeypatch.setenv("NO_AT_BRIDGE", "1")  # GTK's accessibility bus: not part of this
    try:
        yield Display(name, process)
    finally:
        process.kill()
        process.wait(10)


# ---- a pseudo-terminal ------------------------------------------------------------------------

# The child makes the terminal its controlling one, so Ctrl-C typed there is a SIGINT, as in a shell.
CONTROLLING_TTY = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


class Terminal:
    """A command on a pseudo-terminal: what it prints, and keys typed into it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        attributes = termios.tcgetattr(slave)
        attributes[3] |= termios.ECHO | termios.ICANON | termios.ISIG
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
        self.process = subprocess.Popen([sys.executable, "-c", CONTROLLING_TTY, *argv], stdin=slave, stdout=slave,
                                        stderr=slave, env=env, close_fds=True)
        os.close(slave)
        flags = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        self.output = ""
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every holder of the terminal's other end has gone
                chunk = b""
            with self._changed:
                if not chunk:
                    self._ended = True
                    self._changed.notify_all()
                    return
                self.output += chunk.decode(errors="replace")
                self._changed.notify_all()

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in self.output:
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    raise AssertionError(f"{text!r} not shown (within {timeout} s); the terminal shows:\n{self.output}")
                self._changed.wait(left)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
