"""Token saves while the daemon serves: the write (an fsync) runs off the event loop, one
change at a time, and a change is in effect only once it is on disk.

The file system is the one injected part: a writer that holds each save until the test lets
it go, then writes the real file with the real function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rolebroker.broker.runtime import write_json
from rolebroker.broker.tokens import TokensNotSaved, TokenStore
from tests.harness import Broker


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
    kept, _ = asyncio.run(store.create_async("kept", ("dev",), None))
    return store, writes, kept


def test_the_loop_serves_while_a_token_is_saved_and_changes_queue(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    old, _ = asyncio.run(store.create_async("old", ("dev",), None))
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


def test_a_caller_that_stops_waiting_leaves_memory_and_file_together(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    victim, _ = asyncio.run(store.create_async("victim", ("dev",), None))
    writes.release.clear()
    writes.started.clear()

    async def scenario() -> None:
        revoking = asyncio.ensure_future(store.revoke_async("victim"))
        await asyncio.to_thread(writes.started.wait, 10)
        revoking.cancel()  # the caller goes away (a shutdown) while the write is on the disk
        with pytest.raises(asyncio.CancelledError):
            await revoking
        creating = asyncio.ensure_future(store.create_async("other", ("prod",), None))
        writes.release.set()
        await creating

    asyncio.run(scenario())
    # The cancelled revoke still took effect, in memory and on disk, before the next change.
    assert store.lookup(victim.encode()) is None
    assert saved_names(path) == {"kept", "other"}


def test_a_hung_disk_is_an_error_after_a_deadline_and_the_change_lands_later(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    writes.release.clear()
    store.save_timeout = 0.2  # real seconds: the save is on a thread, which no clock can move

    async def scenario() -> None:
        with pytest.raises(TokensNotSaved, match="not confirmed"):
            await store.create_async("late", ("dev",), None)
        assert [r.name for r in store.records()] == ["kept"]
        writes.release.set()  # the disk answers after all
        await store.create_async("next", ("dev",), None)  # queued behind the late write

    asyncio.run(scenario())
    assert saved_names(path) == {"kept", "late", "next"}
    assert {r.name for r in store.records()} == {"kept", "late", "next"}


def test_a_revoke_by_digest_spares_a_newer_token_of_the_same_name(tmp_path: Path) -> None:
    store, _, _ = store_with_kept_token(tmp_path / "tokens.json")
    _, old = asyncio.run(store.create_async("exec-1", ("dev",), None))
    assert asyncio.run(store.revoke_async("exec-1"))
    newer, _ = asyncio.run(store.create_async("exec-1", ("dev",), None))
    assert asyncio.run(store.revoke_async("exec-1", old.digest)) is False
    assert store.lookup(newer.encode()) is not None


def test_a_state_directory_that_is_not_ours_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = TokenStore(state / "tokens.json", lambda: 1000.0)
    state.symlink_to(tmp_path / "elsewhere")  # replaced by a symlink after the daemon started
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(TokensNotSaved, match="nothing was changed"):
        asyncio.run(store.create_async("t", ("dev",), None))
    assert store.records() == []


def test_shells_asking_at_once_share_one_reusable_token(broker: Broker) -> None:
    """Three `env` calls at once (tmux panes opening) while the first save is on the disk."""
    writes = HeldWrites()
    broker.daemon.tokens.write_file = writes  # the daemon's file system, from here on
    ask = {"profiles": ["dev"], "reuse": "env-host", "ttl_seconds": 3600}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(broker.control_call, "POST", "/v1/tokens", ask)
        assert writes.started.wait(10)
        others = [pool.submit(broker.control_call, "POST", "/v1/tokens", ask) for _ in range(2)]
        lock = broker.daemon.leases.minting("env-host", ("dev",))
        # Test synchronisation only: both later requests are inside the daemon, queued behind
        # the first, before its save is let go.
        deadline = time.monotonic() + 10
        while len(getattr(lock, "_waiters", None) or ()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        writes.release.set()
        answers = [json.loads(f.result()[2]) for f in [first, *others]]
    assert len({a["token"] for a in answers}) == 1
    assert [a["reused"] for a in answers] == [False, True, True]
    assert len(broker.daemon.tokens.records()) == 1


def test_a_change_still_queued_when_its_caller_gives_up_is_never_made(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store, writes, kept = store_with_kept_token(path)
    writes.release.clear()
    writes.started.clear()
    store.save_timeout = 0.3  # real seconds: the save is on a thread, which no clock can move

    async def scenario() -> None:
        first = asyncio.ensure_future(store.create_async("first", ("dev",), None))
        await asyncio.to_thread(writes.started.wait, 10)  # its write is on the (hung) disk
        with pytest.raises(TokensNotSaved, match="nothing was changed"):
            await store.revoke_async("kept")  # queued behind it the whole time
        queued = asyncio.ensure_future(store.create_async("cancelled", ("dev",), None))
        await asyncio.sleep(0)  # up to the lock
        queued.cancel()  # its caller goes away (a shutdown, a client that hung up)
        with pytest.raises(TokensNotSaved, match="not confirmed"):
            await first  # first's own deadline passes while its write still hangs
        writes.release.set()
        await store.create_async("after", ("dev",), None)

    asyncio.run(scenario())
    # The write in flight landed; the changes whose callers gave up before they started did not.
    assert saved_names(path) == {"kept", "first", "after"}
    assert store.lookup(kept.encode()) is not None


def test_a_rename_that_could_not_be_synced_still_takes_effect(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from rolebroker.broker.runtime import NotDurable

    path = tmp_path / "tokens.json"

    def write_then_fail_the_directory_sync(target: Path, value: Any, durable: bool = False) -> None:
        write_json(target, value)  # the file is in place ...
        raise NotDurable(errno.EIO, "Input/output error")  # ... but the directory's fsync failed

    store = TokenStore(path, lambda: 1000.0, write=write_then_fail_the_directory_sync)
    token, _ = asyncio.run(store.create_async("t", ("dev",), None))
    assert store.lookup(token.encode()) is not None and saved_names(path) == {"t"}  # memory follows the file
    assert "power cut" in caplog.text
