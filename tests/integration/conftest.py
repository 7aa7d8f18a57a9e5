"""Fixtures of the integration tests: the whole system on each broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hand_mqtt import BrokerUrl, Topics
from tests.support.system import System


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    """Arbiter, device service and a simulated hand, under a base topic of their own."""
    running = System(broker_url, topics).start()
    yield running
    running.stop()
