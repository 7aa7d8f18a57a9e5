"""The clustered broker: three Aedes nodes on one Redis, started afresh for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import AedesCluster, missing_parts
from tests.conftest import need


@pytest.fixture
def cluster() -> Iterator[AedesCluster]:
    missing = missing_parts()
    need(missing is None, missing or "")
    running = AedesCluster(3)
    running.start()
    yield running
    running.cleanup()
