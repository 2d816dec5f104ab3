"""Issue 10: what the daemon keeps on disk and what it reads from it, when the disk or the
files misbehave. A state directory on a real full file system, corrupt token files, and a
config file that is a FIFO, a device or far too large: each gets a clear error, nothing
is lost, and the daemon keeps serving."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolebroker.broker.offloop import CallTimedOut, OffLoopCall, StillRunning
from rolebroker.clients.status_view import render_status
from rolebroker.clients.daemon_client import DaemonClient, DaemonError
from tests.harness import Broker, start_broker
from tests.test_cli import rb

READER_THREAD = "rolebroker-config-reader"


# ---- helpers ----------------------------------------------------------------------------------

def token_names(broker: Broker) -> set[str]:
    return {row["name"] for row in broker.control().request("GET", "/v1/tokens")["tokens"]}


def refusal(call: Any) -> DaemonError:
    with pytest.raises(DaemonError) as raised:
        call()
    return raised.value


def fill(directory: Path) -> Path:
    """Fill the file system under `directory` to the last byte, as a disk that ran full does."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: no leftover bytes to fail at close
        try:
            for _ in range(4096):  # bounded: the mount is far smaller than 4096 * 4 KiB
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        else:
            raise AssertionError(f"{directory} never ran full")
    return filler


@pytest.fixture
def small_state_disk(tmp_path: Path) -> Iterator[Path]:
    """The daemon's state directory as a file system of its own, 256 KiB small."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(state)],
                             capture_output=True, text=True, timeout=10)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk (needs root): {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=10)


def timed_credentials(broker: Broker, profile: str, token: str, timeout: float) -> tuple[int, float]:
    """Status and seconds of one credentials request that gives up after `timeout`."""
    request = urllib.request.Request(broker.url(profile), headers={"Authorization": token})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        return response.status, time.monotonic() - started


def reader_threads_finish(timeout: float) -> bool:
    """No config read is left stuck on a thread (each one ends within `timeout`)."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == READER_THREAD:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True


# ---- finding 4: token state on a full disk ----------------------------------------------------

def test_on_a_full_disk_revoke_and_create_fail_clearly_and_change_nothing(
        tmp_path: Path, small_state_disk: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        control = broker.control()
        kept = control.request("POST", "/v1/tokens", {"profiles": ["dev"], "name": "kept"})["token"]
        broker.login("dev")
        filler = fill(small_state_disk)

        for attempt in ("first", "second"):  # the second revoke must not say "no token named"
            failed = refusal(lambda: control.request("DELETE", "/v1/tokens/kept"))
            assert (failed.status, failed.code) == (503, "StateNotSaved"), (attempt, failed.message)
            assert str(small_state_disk) in failed.message and "full" in failed.message
            assert "free some space" in failed.message and "nothing was changed" in failed.message
            assert token_names(broker) == {"kept"}
            assert timed_credentials(broker, "dev", kept, 10)[0] == 200  # the revoke did not happen

        cli = rb(broker, "token", "revoke", "kept")  # what the user sees
        assert cli.returncode == 1 and "free some space" in cli.stderr and "Revoked" not in cli.stdout

        failed = refusal(lambda: control.request("POST", "/v1/tokens", {"profiles": ["dev"], "name": "new"}))
        assert (failed.status, failed.code) == (503, "StateNotSaved")
        assert "free some space" in failed.message
        assert token_names(broker) == {"kept"}
        assert not [p for p in small_state_disk.iterdir() if p.name.startswith(".tokens.json.")]  # no debris
    finally:
        broker.stop()

    # After a restart on the same state directory the tokens are what the API said they were.
    broker = start_broker(tmp_path)
    try:
        assert token_names(broker) == {"kept"}
        status, _, body = broker.raw_get("dev", kept)
        assert (status, body["code"]) == (403, "LoginRequired")  # known token, new daemon: not a 401
        os.unlink(filler)
        assert broker.control().request("DELETE", "/v1/tokens/kept") == {"revoked": "kept"}
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        assert token_names(broker) == set()
        assert broker.raw_get("dev", kept)[0] == 401  # revoked for good
    finally:
        broker.stop()


# ---- finding 4: token files that cannot be read whole -----------------------------------------

def _asides(state: Path) -> list[Path]:
    return sorted(state.glob("tokens.json.corrupt-*"))


def test_a_corrupt_token_file_is_moved_aside_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    original = b'{"tokens": [{"name": "half-writ'
    (state / "tokens.json").write_bytes(original)
    broker = start_broker(tmp_path)
    try:
        asides = _asides(state)
        assert len(asides) == 1 and asides[0].read_bytes() == original
        assert stat.S_IMODE(asides[0].stat().st_mode) == 0o600
        status = broker.control().request("GET", "/v1/status")
        assert str(asides[0]) in status["tokens_error"] and "create new tokens" in status["tokens_error"]
        assert f"tokens: {status['tokens_error']}" in render_status(status)
        assert str(asides[0]) in rb(broker, "status").stdout  # what the user sees
        assert str(asides[0]) in caplog.text
        fresh = broker.control().request("POST", "/v1/tokens", {"profiles": ["dev"], "name": "fresh"})["token"]
        assert token_names(broker) == {"fresh"}
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        assert token_names(broker) == {"fresh"}
        assert broker.raw_get("dev", fresh)[2]["code"] == "LoginRequired"  # the token is known
        assert broker.control().request("GET", "/v1/status")["tokens_error"] is None
        assert _asides(state) == asides and asides[0].read_bytes() == original  # kept, never overwritten
    finally:
        broker.stop()


def _record(name: str, token: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "digest": hashlib.sha256(token.encode()).hexdigest(), "profiles": ["dev"],
            "created_at": 1_700_000_000.0, "expires_at": None, **fields}


def test_bad_records_are_skipped_one_by_one_and_the_good_ones_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    good, everything, tomorrow, untyped = "rbt_good-one", "rbt_good-two", "rbt_tomorrow", "rbt_untyped"
    records = [
        _record("good-one", good),
        _record("tomorrow", tomorrow, expires_at="tomorrow"),  # once a 500 on create, a traceback on list
        _record("good-two", everything, profiles=[], expires_at=4_000_000_000.0),
        _record("untyped", untyped, profiles="dev"),
        42,
        {"name": "no-digest", "profiles": ["dev"], "created_at": 1.0},
        _record("good-one", "rbt_another"),  # a second record under a name already taken
    ]
    original = json.dumps({"tokens": records}).encode()
    (state / "tokens.json").write_bytes(original)
    broker = start_broker(tmp_path)
    try:
        assert token_names(broker) == {"good-one", "good-two"}
        broker.login("dev")
        assert timed_credentials(broker, "dev", good, 10)[0] == 200
        assert timed_credentials(broker, "dev", everything, 10)[0] == 200
        assert broker.raw_get("dev", tomorrow)[0] == 401 and broker.raw_get("dev", untyped)[0] == 401
        broker.control().request("POST", "/v1/tokens", {"profiles": ["dev"], "name": "new"})
        assert token_names(broker) == {"good-one", "good-two", "new"}
        status = broker.control().request("GET", "/v1/status")
        (aside,) = _asides(state)
        assert aside.read_bytes() == original  # every record, the bad ones too, kept for the user
        assert str(aside) in status["tokens_error"] and "5 unreadable record(s)" in status["tokens_error"]
        for line in ("#2 ('tomorrow')", "expires_at is not a time", "#4 ('untyped')", "#5 ", "#6 ('no-digest')",
                     "#7 ('good-one')"):
            assert line in caplog.text
        for token in (good, everything, tomorrow, untyped):
            assert hashlib.sha256(token.encode()).hexdigest() not in caplog.text  # logs stay lean
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        assert token_names(broker) == {"good-one", "good-two", "new"}
        assert broker.control().request("GET", "/v1/status")["tokens_error"] is None  # a clean file again
    finally:
        broker.stop()


# ---- finding 7: config files that are not files -----------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_not_a_file_never_stalls_the_daemon(broker: Broker, kind: str) -> None:
    broker.login("dev")
    token = broker.token("dev")
    assert broker.get_settled("dev")[0] == 200  # a cached credential from now on
    config = Path(broker.files.config_file)
    config.unlink()
    if kind == "fifo":
        os.mkfifo(config)  # with no writer: a plain open() of it blocks forever
    else:
        config.symlink_to(os.devnull)  # a device: a read would never see a config
    reload_answer: list[Any] = []
    reloading = threading.Thread(target=lambda: reload_answer.append(
        DaemonClient(broker.daemon.settings.runtime_dir, timeout=5).request("POST", "/v1/reload")), daemon=True)
    try:
        reloading.start()
        status, seconds = timed_credentials(broker, "dev", token, timeout=1)
        assert status == 200 and seconds < 1
        started = time.monotonic()
        answer = DaemonClient(broker.daemon.settings.runtime_dir, timeout=1).request("GET", "/v1/status")
        assert time.monotonic() - started < 1 and answer["profiles"]
        reloading.join(5)
        (result,) = reload_answer
        expected = "a named pipe (FIFO)" if kind == "fifo" else "a device"
        assert not result["ok"]
        assert f"{config} is {expected}, not a regular file" in result["error"]
        status_now = broker.control().request("GET", "/v1/status")
        assert expected in status_now["config_error"] and "last good config" in status_now["config_error"]
        assert {row["profile"] for row in status_now["profiles"]} >= {"dev", "prod"}  # the last good config
        # The file watcher's own path: it reads off the loop too, and reports the change once.
        watched = broker.call(broker.daemon.reload_if_changed(), timeout=5)
        assert watched is None or not watched["ok"]
        assert timed_credentials(broker, "dev", token, timeout=1)[0] == 200
        assert reader_threads_finish(5)  # nothing is left blocked on the file
    finally:
        if kind == "fifo":  # let a reader that did open it (the code before this fix) go on
            try:
                os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


def test_an_oversized_config_is_refused_and_the_last_good_one_kept(broker: Broker) -> None:
    broker.login("dev")
    before = broker.get_settled("dev")[2]["AccessKeyId"]
    credentials = Path(broker.files.credentials_file)
    padding = ("#" + "x" * 1023 + "\n") * 1100  # valid INI (comments), just over 1 MiB
    credentials.write_text(credentials.read_text() + padding)
    result = broker.control().request("POST", "/v1/reload")
    assert not result["ok"]
    assert str(credentials) in result["error"] and "more than the 1024 KiB" in result["error"]
    status = broker.control().request("GET", "/v1/status")
    assert "1024 KiB" in status["config_error"]
    assert {row["profile"] for row in status["profiles"]} >= {"dev", "prod"}
    assert broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"] == before  # still served


def test_a_reload_that_takes_too_long_keeps_the_last_good_config(broker: Broker) -> None:
    broker.login("dev")
    before = broker.get_settled("dev")[2]["AccessKeyId"]
    Path(broker.files.credentials_file).write_text("[changed]\n")
    # The deadline a hung network mount would miss, made one no real read can meet.
    broker.daemon.config_read_timeout = 0
    result = broker.control().request("POST", "/v1/reload")
    assert not result["ok"] and "took longer than 0 s" in result["error"]
    assert "took longer" in broker.control().request("GET", "/v1/status")["config_error"]
    assert broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"] == before  # the last good config
    broker.daemon.config_read_timeout = 5
    assert reader_threads_finish(5)
    result = broker.control().request("POST", "/v1/reload")
    assert result["ok"] and "dev" in result["changed"]  # the same file, read in time, is applied
    assert broker.control().request("GET", "/v1/status")["config_error"] is None


def test_one_config_read_at_a_time() -> None:
    """A read that never returns holds its thread; the next one is refused, not stacked up."""
    release = threading.Event()
    name = READER_THREAD + "-test"
    reader: OffLoopCall[str] = OffLoopCall(name)

    async def scenario() -> None:
        with pytest.raises(CallTimedOut):
            await reader.run(lambda: str(release.wait(10)), timeout=0.05)
        with pytest.raises(StillRunning):
            await reader.run(lambda: "second", timeout=1)
        release.set()
        for thread in threading.enumerate():
            if thread.name == name:
                thread.join(5)
        assert await reader.run(lambda: "third", timeout=1) == "third"

    asyncio.run(scenario())
