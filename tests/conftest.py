from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator

import pytest

from tests.attacker import OtherUser, make_other_user
from tests.desktop import display, notifications, session_bus  # noqa: F401  (fixtures for the desktop tests)
from tests.harness import Broker, start_broker
from tests.processes import Serve


@pytest.fixture(autouse=True)
def no_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons under test never reach the developer's own desktop: no session bus, no display
    (the desktop tests set up a private bus and an Xvfb display of their own)."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/rolebroker-tests-have-no-bus")
    monkeypatch.delenv("DISPLAY", raising=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_broker(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def other_user() -> Iterator[OtherUser]:
    """A second local user (created if missing; root only), with a private scratch directory
    under the system temp dir (pytest's own tmp_path is closed to other users)."""
    scratch = Path(tempfile.mkdtemp(prefix="rolebroker-attack-"))
    scratch.chmod(0o711)
    try:
        made = make_other_user(scratch)
        if isinstance(made, str):
            pytest.skip(made)
        yield made
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[list[Serve]]:
    """Daemons a test starts; killed if the test failed before stopping them."""
    processes: list[Serve] = []
    yield processes
    for process in processes:
        process.kill()
