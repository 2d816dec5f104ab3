"""systemd integration without libsystemd or python-systemd (as gunicorn's systemd.py):
socket activation (the sd_listen_fds protocol) and service notification (sd_notify).

Both are no-ops without systemd, so `rolebroker serve` runs unchanged in a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger("rolebroker.systemd")

# The first file descriptor systemd passes (after stdin, stdout, stderr); sd-daemon(3).
SD_LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The listening sockets systemd passed to this process, or [] when not socket-activated.

    Like sd_listen_fds(3): the variables count only when LISTEN_PID is this process (a
    parent's variables are not ours), and they are removed so that the children the daemon
    starts (credential_process helpers) never mistake themselves for the activated service.
    """
    pid_text = os.environ.get("LISTEN_PID", "")
    count_text = os.environ.get("LISTEN_FDS", "")
    if unset_environment:
        for name in ACTIVATION_VARIABLES:
            os.environ.pop(name, None)
    try:
        pid, count = int(pid_text), int(count_text)
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    sockets: list[socket.socket] = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        # systemd hands them over inheritable; a credential_process helper must not hold
        # the broker's port open after the broker exits (sd_listen_fds sets FD_CLOEXEC too).
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))  # family and type are read from the fd
    log.debug("socket activation: %d socket(s) from systemd", len(sockets))
    return sockets


def notify(state: str) -> bool:
    """Send a state such as "READY=1" to the service manager; False when there is none.

    NOTIFY_SOCKET is kept in the environment: the daemon notifies again when it stops, and
    messages from its children are ignored by systemd anyway (NotifyAccess=main).
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        log.debug("NOTIFY_SOCKET %r is neither a path nor an abstract socket; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        # Readiness is advisory for a daemon that is already serving; never fail over it.
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


async def notify_when(ready: Callable[[], bool], state: str = "READY=1", interval: float = 0.01) -> bool:
    """Send `state` once `ready()` turns true: for servers (uvicorn) that expose a flag but
    offer no callback. Returns at once when there is no service manager to tell, and runs
    until cancelled otherwise, so the caller cancels it when serving ends."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    while not ready():
        await asyncio.sleep(interval)
    return notify(state)
