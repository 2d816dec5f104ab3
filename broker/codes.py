"""MFA codes the daemon gets without a human (`mfa_process`), and the rule every code
obeys: STS takes a code once, so no code goes to it twice, whoever typed or printed it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .clock import Clock
from .plans import MfaSource
from .errors import MfaCodeNotReady
from .mfa import next_window, run_mfa_process

# Runs a blocking function off the event loop (the sessions' STS thread pool).
Runner = Callable[..., Awaitable[Any]]


class MfaCodes:
    def __init__(self, clock: Clock, run: Runner) -> None:
        self.clock = clock
        self._run = run
        # The last code each MFA device gave, and when its window ends: a code is good once.
        self._last: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def from_process(self, source: MfaSource, profile: str) -> str:
        """A fresh code from mfa_process, never one already given to STS."""
        serial = source.key.mfa_serial or ""
        lock = self._locks.setdefault(serial, asyncio.Lock())
        async with lock:  # concurrent renewals on one device must take turns, one code each
            assert source.mfa_process is not None
            code: str = await self._run(run_mfa_process, source.mfa_process, profile)
            self._claim(serial, code, profile)
            return code

    def _claim(self, serial: str, code: str, profile: str) -> None:
        last = self._last.get(serial)
        if last is not None and last[0] == code and self.clock.now() < last[1]:
            raise MfaCodeNotReady(f"profile {profile!r}: the MFA device's current code was just used; "
                                  "the next one comes within 30 seconds", retry_at=last[1])
        self.remember(serial, code)

    def remember(self, serial: str, code: str) -> None:
        """A code that went (or goes) to STS: mfa_process must not hand it over again."""
        self._last[serial] = (code, next_window(self.clock.now()))

    def __repr__(self) -> str:
        return f"MfaCodes({len(self._last)} devices)"  # never the codes
