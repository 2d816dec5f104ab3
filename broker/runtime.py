"""Where the daemon keeps what its CLI needs: the runtime directory (port, control
token) and the state directory (client token digests). Files are 0600, written
atomically, and never hold an AWS credential."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

# The documented default port on 127.0.0.1 (and the systemd socket unit's).
DEFAULT_PORT = 9911
DAEMON_FILE = "daemon.json"
CONTROL_TOKEN_FILE = "control-token"


def runtime_dir() -> Path:
    explicit = os.environ.get("ROLEBROKER_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "rolebroker"
    return Path(tempfile.gettempdir()) / f"rolebroker-{os.getuid()}"


def state_dir() -> Path:
    explicit = os.environ.get("ROLEBROKER_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "rolebroker"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        # In a shared /tmp a planted link would make us chmod and write into its target.
        raise PermissionError(f"{path} is a symbolic link; set ROLEBROKER_RUNTIME_DIR to a private directory")
    if info.st_uid != os.getuid():
        # Someone else created it first (a shared /tmp): using it would hand them our tokens.
        raise PermissionError(f"{path} belongs to another user; set ROLEBROKER_RUNTIME_DIR to a private directory")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = False) -> None:
    """Write a file whole or not at all (a reader never sees half of it). The temporary file
    is 0600 from its first byte, so a secret is never readable by others, even for a moment.
    `durable`: on disk before this returns (a crash or power cut cannot undo it)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the rename itself
        finally:
            os.close(directory)


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
