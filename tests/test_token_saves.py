"""Token saves while the daemon serves: the write (an fsync) runs off the event loop, one
change at a time, and a change is in effect only once it is on disk.

The file system is the one injected part: a writer that holds each save until the test lets
it go, then writes the real file with the real function.
"""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from rolebroker.broker.runtime import write_json
from rolebroker.broker.tokens import TokensNotSaved, TokenStore


class HeldWrites:
    """Each save waits for `release`; `started` is set once a save is waiting."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_with: OSError | None = None

    def __call__(self, path: Path, value: Any, durable: bool = False) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the save"
        if self.fail_with is not None:
            raise self.fail_with
        write_json(path, value, durable=durable)


def saved_names(path: Path) -> set[str]:
    return {record["name"] for record in json.loads(path.read_text())["tokens"]}


def store_with_kept_token(path: Path) -> tuple[TokenStore, HeldWrites, str]:
    """A store holding one token, "kept", saved at once; its saves go through HeldWrites."""
    writes = HeldWrites()
    writes.release.set()
    store = TokenStore(path, lambda: 1000.0, write=writes)
    kept, _ = store.create("kept", ("dev",), None)
    return store, writes, kept


def test_the_loop_serves_while_a_token_is_saved_and_changes_queue(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    old, _ = store.create("old", ("dev",), None)
    writes.release.clear()  # from here on, every save waits for the test
    writes.started.clear()

    async def scenario() -> None:
        creating = asyncio.ensure_future(store.create_async("new", ("prod",), None))
        await asyncio.to_thread(writes.started.wait, 10)
        # The save hangs on its thread; the loop still answers a credentials lookup.
        assert store.lookup(kept.encode()) is not None
        assert {r.name for r in store.records()} == {"kept", "old"}  # not in effect before it is saved
        revoking = asyncio.ensure_future(store.revoke_async("old"))
        await asyncio.sleep(0)  # revoking runs up to the lock, which the create holds
        assert not revoking.done()
        writes.release.set()
        new, _ = await creating
        assert await revoking is True
        assert store.lookup(new.encode()) is not None and store.lookup(old.encode()) is None

    asyncio.run(scenario())
    # Both changes reached the file: the revoke started from the created token's records.
    assert saved_names(path) == {"kept", "new"}


def test_a_save_that_fails_off_the_loop_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    writes.fail_with = OSError(errno.ENOSPC, "No space left on device")

    async def scenario() -> None:
        with pytest.raises(TokensNotSaved, match="disk .* is full"):
            await store.create_async("new", ("prod",), None)
        with pytest.raises(TokensNotSaved):
            await store.revoke_async("kept")

    asyncio.run(scenario())
    assert [r.name for r in store.records()] == ["kept"] and store.lookup(kept.encode()) is not None
    assert saved_names(path) == {"kept"}
