"""Open-file descriptors: the limit the daemon raises at start, and how many client connections
and what listen backlog fit below it (the rest of the connection bounds are in limits.py)."""

from __future__ import annotations

import resource
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .limits import Limits

# Descriptors kept for everything but client connections: listeners, STS connections, the
# config and token files, credential_process pipes, the event loop's own.
RESERVED_FILES = 128
# The listen backlog when descriptors are plentiful. The event loop accepts every queued
# connection at once, before any protocol runs, and a connection closed to make room frees its
# descriptor an iteration later: so up to about two backlogs of descriptors are in flight on
# top of the open connections, and the budget keeps room for three.
MAX_BACKLOG = 1024
# What the daemon asks for at start-up (and what the systemd unit sets): enough for
# `max_connections` plus the reserve. Not more: helpers inherit the limit, and some programs
# walk every possible descriptor when they start.
OPEN_FILES_WANTED = 8192



def raise_open_file_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise the soft limit on open files towards the hard one, at most to `wanted` (systemd
    starts services with a soft limit of 1024, too few for a daemon many clients connect to).
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a sandbox that forbids it: the connection budget follows the lower limit
    return soft


@dataclass(frozen=True)
class Budget:
    connections: int  # open client connections, all peers together
    backlog: int  # the listen backlog, so accepting a full queue cannot run out of descriptors


def connection_budget(limits: Limits) -> Budget:
    """What fits below the open-file limit: connections (at most `max_connections`) and backlog."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return Budget(limits.max_connections, MAX_BACKLOG)
    usable = max(64, soft - RESERVED_FILES)
    backlog = max(8, min(MAX_BACKLOG, usable // 8))
    return Budget(max(16, min(limits.max_connections, usable - 3 * backlog)), backlog)
