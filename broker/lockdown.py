"""What the daemon does to its own process before it holds a secret.

Its memory holds MFA sessions and role credentials. Python cannot overwrite a string it
has dropped, so "wiped" means "no longer referenced": the bytes stay in freed memory
until reused. What can be closed is every way to read that memory from outside:
- no core dump (RLIMIT_CORE 0): a crash must not write the sessions to disk;
- not dumpable (PR_SET_DUMPABLE 0): besides suppressing cores, this makes the kernel refuse
  ptrace, /proc/PID/mem and /proc/PID/environ to other processes of the same user (only
  CAP_SYS_PTRACE, i.e. root, still gets in).
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys

log = logging.getLogger("rolebroker")

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_dumps() -> list[str]:
    """Apply both; return what could not be done (logged by the caller), [] when all held."""
    problems: list[str] = []
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        problems.append(f"core dumps stay allowed ({exc})")
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                problems.append(f"prctl(PR_SET_DUMPABLE) failed (errno {ctypes.get_errno()})")
        except (OSError, AttributeError) as exc:
            problems.append(f"prctl unavailable ({exc})")
    return problems


def is_dumpable() -> bool:
    libc = ctypes.CDLL(None)
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
