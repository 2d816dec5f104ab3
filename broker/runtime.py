"""Where the daemon keeps what its CLI needs: the runtime directory (the control socket,
the daemon's lock, a description for humans) and the state directory (client token
digests). Files are 0600, written atomically, and never hold an AWS credential."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

# Not `from typing import TYPE_CHECKING`: importing typing costs `credential-process` about a
# tenth of an interpreter start, for names only the type checker reads (annotations are
# strings here). mypy and ruff treat a constant of this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The documented default port on 127.0.0.1 (and the systemd socket unit's).
DEFAULT_PORT = 9911
# For humans and scripts only (pid, port, listeners): the CLI never trusts it for anything.
DAEMON_FILE = "daemon.json"
# The control channel: a Unix socket only this user can connect to (the daemon checks the
# peer's uid too). The CLI reaches the daemon through nothing else.
CONTROL_SOCKET = "control.sock"
# Held (flock) by the live daemon for as long as it runs: the kernel drops it when the
# process dies, however it dies, so a second daemon can tell a live owner from stale files.
LOCK_FILE = "daemon.lock"
RUNTIME_DIR_VARIABLES = "set XDG_RUNTIME_DIR (your login session's private directory) or ROLEBROKER_RUNTIME_DIR"


class RuntimeDirError(Exception):
    """The runtime directory cannot be trusted or made: the message names why and what to set."""


def configured_port() -> int:
    """The daemon's TCP port: ROLEBROKER_PORT, else the default. ValueError names a bad value."""
    text = os.environ.get("ROLEBROKER_PORT", "").strip()
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise ValueError(f"ROLEBROKER_PORT={text!r} is not a port number (0-65535): fix or unset it")
    return int(text)


def runtime_dir() -> Path:
    explicit = os.environ.get("ROLEBROKER_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "rolebroker"
    import tempfile  # here, not at the top: the CLI's fast paths import this module

    return Path(tempfile.gettempdir()) / f"rolebroker-{os.getuid()}"


def state_dir() -> Path:
    explicit = os.environ.get("ROLEBROKER_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "rolebroker"


def ensure_private_dir(path: Path) -> Path:
    """Make (or check) a 0700 directory of ours. In a shared /tmp another user may have put
    something at that name first: a link would make us write into its target, a directory of
    theirs would hand them our socket. Either is refused, naming the cause and the fix."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link: lstat below names it
    except PermissionError:
        raise RuntimeDirError(f"cannot create {path}: permission denied; {RUNTIME_DIR_VARIABLES}") from None
    try:
        info = path.lstat()
    except OSError as exc:
        raise RuntimeDirError(f"cannot use {path}: {exc.strerror}; {RUNTIME_DIR_VARIABLES}") from None
    owner = "you" if info.st_uid == os.getuid() else f"uid {info.st_uid}"
    if stat.S_ISLNK(info.st_mode):
        raise RuntimeDirError(f"{path} is a symbolic link (made by {owner}), not a directory: someone may be "
                              f"trying to take over rolebroker's files; {RUNTIME_DIR_VARIABLES}")
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"{path} is a file (made by {owner}), not a directory; remove it if it is yours, "
                              f"or {RUNTIME_DIR_VARIABLES}")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(f"{path} belongs to {owner}, not to you: in a shared directory another user "
                              f"made it first, and using it would hand them your sessions; {RUNTIME_DIR_VARIABLES}")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


class NotDurable(OSError):
    """The file was written and renamed into place, but the rename could not be synced: it
    holds the new content, which a power cut might still undo."""


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = False) -> None:
    """Write a file whole or not at all (a reader never sees half of it). The temporary file
    is 0600 from its first byte, so a secret is never readable by others, even for a moment.
    `durable`: on disk before this returns (a crash or power cut cannot undo it)."""
    # What tempfile.mkstemp does (a new name, O_EXCL, 0600), without its import (and shutil's),
    # which `rolebroker env` would pay at every shell start.
    temp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    if durable:
        try:
            directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)  # the rename itself
            finally:
                os.close(directory)
        except OSError as exc:
            raise NotDurable(exc.errno, exc.strerror) from exc


def write_private(path: Path, data: bytes) -> None:
    """A 0600 file in a private directory of ours."""
    ensure_private_dir(path.parent)
    write_atomic(path, data)


def write_json(path: Path, value: Any, durable: bool = False) -> None:
    ensure_private_dir(path.parent)
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode(), durable=durable)


def read_json(path: Path) -> Any:
    with open(path, "rb") as handle:
        return json.loads(handle.read())


class DaemonAlreadyRunning(Exception):
    """A live daemon holds the runtime directory's lock."""


def claim_runtime_dir(directory: Path) -> int:
    """Take the runtime directory for this daemon: its lock, held until the process ends
    (the returned descriptor; never inherited by children). A live owner is refused by name;
    a dead one's files are the caller's to replace."""
    import fcntl

    ensure_private_dir(directory)
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RuntimeDirError(f"cannot open {path}: {exc.strerror}; {RUNTIME_DIR_VARIABLES}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise DaemonAlreadyRunning(
            f"another rolebroker daemon{f' (pid {holder})' if holder.isdigit() else ''} is running with "
            f"{directory}: use it (`rolebroker status`), or stop it first; a second daemon needs its own "
            "ROLEBROKER_RUNTIME_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
