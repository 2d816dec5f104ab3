"""Desktop notifications: the freedesktop Notifications API on the user's session bus
(Linux, through jeepney's asyncio D-Bus client), `osascript` on macOS.

Showing a notification never waits: `show` queues it and returns, a task on the loop
delivers it. No notification server (a headless machine, a service without a session
bus) is logged once and otherwise ignored. A notification may carry a "Log in" action
for a profile; where the server supports actions, clicking it calls `on_login(profile)`.
Texts hold profile names, MFA device ARNs, times and commands: never a code or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable

from jeepney import DBusAddress, HeaderFields, MatchRule, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusRouter, open_dbus_connection

log = logging.getLogger("rolebroker.notify")

APP_NAME = "rolebroker"
BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
LOGIN_ACTION = "login"
# Connecting and each call: a bus that does not answer within this is treated as absent.
CALL_TIMEOUT = 5.0
QUEUE_SIZE = 32
EXPIRE_MS = -1  # the server's default


@dataclass(frozen=True)
class Notice:
    # Notices with the same key replace each other on screen (one per MFA device and kind).
    key: str
    title: str
    body: str
    # Offer a "Log in" action that opens the desktop dialog for this profile.
    login_profile: str | None = None
    urgent: bool = False


class Notifier(Protocol):
    def show(self, notice: Notice) -> None:
        """Queue a notice; returns at once, never raises."""

    async def flush(self) -> None:
        """Return once everything shown so far was delivered or given up on."""

    async def close(self) -> None:
        """Stop delivering and let go of the bus."""


OnLogin = Callable[[str], None]


def desktop_notifier(on_login: OnLogin) -> Notifier:
    """The notifier for this platform: the one place that chooses."""
    if sys.platform == "darwin":
        return OsascriptNotifier()
    return DbusNotifier(on_login)


class _Unavailable(Exception):
    pass


class DbusNotifier:
    def __init__(self, on_login: OnLogin, address: str | None = None) -> None:
        self.on_login = on_login
        self._address = address
        self._queue: asyncio.Queue[Notice] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._router: Any = None
        self._actions = False
        self._markup = False
        # Server-side ids: by our key (to replace a notice) and back (to route an action).
        self._ids: dict[str, int] = {}
        self._login_by_id: dict[int, str] = {}
        self._reported = False

    # ---- the caller's side ------------------------------------------------------------

    def show(self, notice: Notice) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._worker = asyncio.ensure_future(self._deliver_all())
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            log.debug("notification dropped: too many queued")

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        for task in (self._worker, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._disconnect()

    # ---- delivery ---------------------------------------------------------------------

    async def _deliver_all(self) -> None:
        assert self._queue is not None
        while True:
            notice = await self._queue.get()
            try:
                await self._deliver(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no bus, no server, a server that errs: never the daemon's problem
                self._report(exc)
                await self._disconnect()
            finally:
                self._queue.task_done()

    def _report(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        if not self._reported:
            self._reported = True
            log.warning("desktop notifications are off: %s (the daemon works on without them)", reason)
        else:
            log.debug("desktop notification not shown: %s", reason)

    async def _deliver(self, notice: Notice) -> None:
        await self._connect()
        actions = [LOGIN_ACTION, "Log in"] if notice.login_profile and self._actions else []
        body = html.escape(notice.body, quote=False) if self._markup else notice.body
        hints = {"urgency": ("y", 2 if notice.urgent else 1)}
        target = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=BUS_NAME)
        message = new_method_call(target, "Notify", "susssasa{sv}i", (
            APP_NAME, self._ids.get(notice.key, 0), "dialog-password", notice.title, body, actions, hints,
            EXPIRE_MS))
        (notification_id,) = await self._call(message)
        self._ids[notice.key] = notification_id
        if notice.login_profile and actions:
            self._login_by_id[notification_id] = notice.login_profile
        else:
            self._login_by_id.pop(notification_id, None)
        if self._reported:
            log.info("desktop notifications are on again")
            self._reported = False

    async def _call(self, message: Any) -> Any:
        reply = await asyncio.wait_for(self._router.send_and_get_reply(message), CALL_TIMEOUT)
        if reply.header.message_type == MessageType.error:
            error = reply.header.fields.get(HeaderFields.error_name, "an error")
            raise _Unavailable(f"the notification server answered {error}")
        return reply.body

    async def _connect(self) -> None:
        if self._router is not None:
            return
        address = self._address or session_bus_address()
        if address is None:
            raise _Unavailable("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        try:
            self._conn = await asyncio.wait_for(open_dbus_connection(address), CALL_TIMEOUT)
        except (OSError, EOFError, RuntimeError, ValueError) as exc:
            raise _Unavailable(f"cannot reach the session bus ({exc})") from None
        self._router = DBusRouter(self._conn)
        target = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=BUS_NAME)
        (capabilities,) = await self._call(new_method_call(target, "GetCapabilities"))
        self._actions = "actions" in capabilities
        self._markup = "body-markup" in capabilities
        if self._actions:
            rule = MatchRule(type="signal", interface=BUS_NAME, path=OBJECT_PATH)
            await self._call(message_bus.AddMatch(rule))
            self._listener = asyncio.ensure_future(self._listen(self._router.filter(rule, bufsize=16)))

    async def _listen(self, handle: Any) -> None:
        with handle as queue:
            while True:
                message = await queue.get()
                if message.header.fields.get(HeaderFields.member) != "ActionInvoked":
                    continue
                notification_id, action = message.body
                profile = self._login_by_id.get(notification_id)
                if action == LOGIN_ACTION and profile is not None:
                    try:
                        self.on_login(profile)
                    except Exception:
                        log.exception("the notification's Log in action failed")

    async def _disconnect(self) -> None:
        if self._listener is not None and self._listener is not asyncio.current_task():
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        self._listener = None
        if self._router is not None:
            with contextlib.suppress(Exception):
                await self._router.__aexit__(None, None, None)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._router = self._conn = None
        self._ids.clear()
        self._login_by_id.clear()


def session_bus_address() -> str | None:
    """Where the session bus is: the variable, else systemd's per-user bus socket."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


# Texts go in as arguments, never spliced into the script: nothing to escape, nothing to inject.
OSASCRIPT_NOTIFY = ["-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                    "-e", "end run"]


class OsascriptNotifier:
    """macOS: Notification Center through osascript (no actions there)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported = False

    def show(self, notice: Notice) -> None:
        task = asyncio.ensure_future(self._run(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, notice: Notice) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                "osascript", *OSASCRIPT_NOTIFY, notice.title, notice.body,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await asyncio.wait_for(process.wait(), CALL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if not self._reported:
                self._reported = True
                log.warning("desktop notifications are off: osascript failed (%s)", exc)

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
