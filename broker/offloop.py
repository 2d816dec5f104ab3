"""One blocking call at a time, off the event loop, waited for with a deadline.

File reads can block for as long as the file system likes (a hung network mount, a
FUSE server that never answers): on the loop that would stop every request. The call
runs on a thread of its own, a daemon thread so that one that never returns cannot
hold up the daemon's exit, and not on the loop's default executor, whose few threads
the rest of the daemon needs. A call that misses its deadline keeps its thread; until
it returns, the next call is refused at once rather than stacking up threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class StillRunning(Exception):
    """The previous call has not returned yet."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the previous call has been running for {seconds:.0f} s")
        self.seconds = seconds


class CallTimedOut(Exception):
    pass


class _Outcome(Generic[T]):
    """What the thread's call produced, handed over once."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set: the call returned normally


class OffLoopCall(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: _Outcome[T] | None = None
        self._started = 0.0

    def busy(self) -> bool:
        # Whether the call has produced its outcome, not whether its thread has exited: a thread
        # is still alive for a moment after handing its result over, and the next call must not
        # be refused for that.
        return self._pending is not None and not self._pending.done.is_set()

    def _start(self, function: Callable[[], T], notify: Callable[[], None]) -> _Outcome[T]:
        if self.busy():
            raise StillRunning(time.monotonic() - self._started)
        outcome: _Outcome[T] = _Outcome()

        def work() -> None:
            try:
                outcome.result = function()
            except BaseException as exc:  # handed to the waiter, not lost on this thread
                outcome.error = exc
            outcome.done.set()
            notify()

        thread = threading.Thread(target=work, name=self.name, daemon=True)
        self._pending, self._started = outcome, time.monotonic()
        thread.start()
        return outcome

    async def run(self, function: Callable[[], T], timeout: float) -> T:
        """`function()`'s result or exception; CallTimedOut after `timeout` seconds,
        StillRunning when an earlier call has not returned."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def notify() -> None:
            try:
                loop.call_soon_threadsafe(finished.set)
            except RuntimeError:
                pass  # the loop is closed: the daemon stopped while this call was blocked

        outcome = self._start(function, notify)
        try:
            await asyncio.wait_for(finished.wait(), timeout)
        except TimeoutError:
            raise CallTimedOut(f"no answer within {timeout:g} s") from None
        return outcome.get()

    def run_sync(self, function: Callable[[], T], timeout: float) -> T:
        """The same, for a caller with no event loop (the daemon starting up)."""
        outcome = self._start(function, lambda: None)
        if not outcome.done.wait(timeout):
            raise CallTimedOut(f"no answer within {timeout:g} s")
        return outcome.get()
