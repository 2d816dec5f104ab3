"""An ASGI app built on its first request, off the event loop.

The control API (broker.api) is small now, but it still imports the console sign-in, the
token leases and its request checks: about 8 ms a socket-activated daemon need not spend
before its first answer to an SDK, and a daemon only SDKs talk to never spends. The first
control request (the CLI) waits while a worker thread imports and builds it; the loop
keeps serving credentials meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from .endpoint import ASGIApp, Receive, Scope, Send
from .gcfreeze import freeze_long_lived


class LazyApp:
    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()  # load() may be called from a test's thread too
        self._loading: asyncio.Future[ASGIApp] | None = None

    @property
    def loaded(self) -> bool:
        return self._app is not None

    def load(self) -> ASGIApp:
        """The app, built now on this thread if it was not yet."""
        with self._lock:
            if self._app is None:
                app = self._build()
                freeze_long_lived()  # its modules and the app live as long as the daemon
                self._app = app
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            if self._loading is None:  # one build, however many requests wait for it
                self._loading = asyncio.get_running_loop().run_in_executor(None, self.load)
            try:
                app = await asyncio.shield(self._loading)
            except BaseException:
                if self._loading.done() and not self._loading.cancelled() and self._loading.exception():
                    self._loading = None  # a failed build is tried again by the next request
                raise
        await app(scope, receive, send)
