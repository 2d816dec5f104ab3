"""Opening the user's AWS config files safely: plain files only, bounded in size, UTF-8.

The files are the user's, but what sits at their paths is not always a file: a FIFO
(process substitution, a mistaken `mkfifo`) blocks any reader until a writer comes,
a device may never end, a directory cannot be read. Each of those is refused with a
message naming the file, without ever blocking: the path is checked with stat, opened
with O_NONBLOCK (an open of a FIFO would block), and the opened descriptor checked
again (the path may have been swapped in between).

botocore's loader then parses the very file that was checked: on Linux it is handed
/proc/self/fd/N of the open descriptor, never the path, so nothing swapped in later can
reach it. Elsewhere it gets the path, which botocore itself opens only if it is a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

# Real AWS config files are a few KiB; a file this large is a mistake (a log, an image).
MAX_CONFIG_BYTES = 1 << 20
# botocore treats a path that is not a file as a missing file: what a missing file becomes.
MISSING = os.devnull


class ConfigFileError(Exception):
    """A whole file could not be read or parsed."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_a_file(path: str, mode: int) -> ConfigFileError:
    return ConfigFileError(
        f"{path} is {_kind(mode)}, not a regular file: rolebroker reads only plain files there; "
        "replace it with the file itself (or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at one)"
    )


def _too_large(path: str, size: int) -> ConfigFileError:
    return ConfigFileError(
        f"{path} is {size} bytes, more than the {MAX_CONFIG_BYTES // 1024} KiB an AWS config file may be "
        "here: check that the path names your AWS config, not another file"
    )


def open_checked(path: str) -> int | None:
    """An open descriptor of `path` after the checks in the module docstring, or None when
    nothing is there (a missing file is normal: many users keep everything in one)."""
    try:
        info = os.stat(path)  # follows links: a dotfile manager's link to a file is fine
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_file(path, info.st_mode)
    if info.st_size > MAX_CONFIG_BYTES:
        raise _too_large(path, info.st_size)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigFileError(
            f"cannot read {path}: {exc.strerror}; it must be a file you can read (check its permissions)"
        ) from None
    try:
        info = os.fstat(fd)  # what was opened, not what the path named a moment ago
        if not stat.S_ISREG(info.st_mode):
            raise _not_a_file(path, info.st_mode)
        _check_content(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_content(path: str, fd: int) -> None:
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_CONFIG_BYTES:  # read one byte past the cap: a file may grow after fstat
            chunk = os.pread(fd, MAX_CONFIG_BYTES + 1 - size, size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}; check the file and its disk") from None
    if size > MAX_CONFIG_BYTES:
        raise _too_large(path, size)
    data = b"".join(chunks)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid UTF-8 (byte {exc.start}): re-save it as UTF-8") from None


@contextmanager
def checked_paths(paths: Sequence[str]) -> Iterator[list[str]]:
    """Paths for botocore's loader, one per given path, valid inside the `with` block:
    the checked descriptor's /proc/self/fd entry, os.devnull for a missing file (botocore
    reads it as missing), or the path itself where /proc is not available."""
    with ExitStack() as stack:
        safe: list[str] = []
        for path in paths:
            fd = open_checked(path)
            if fd is None:
                safe.append(MISSING)
                continue
            stack.callback(os.close, fd)
            via_proc = f"/proc/self/fd/{fd}"
            safe.append(via_proc if os.path.exists(via_proc) else path)
        yield safe
