from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator

import pytest

from tests.harness import Broker, start_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_broker(tmp_path)
    yield running
    running.stop()
