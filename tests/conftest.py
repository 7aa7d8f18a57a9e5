"""Shared fixtures: real brokers on free loopback ports, one base topic per test."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator

import pytest

from hand_mqtt import BrokerUrl, Topics
from harness.brokers import (
    AmqttBroker,
    MosquittoProcess,
    RunningBroker,
    free_port,
    mosquitto_binary,
)

IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip when something optional is missing locally; in CI a missing part is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (CI must have it)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoProcess]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    broker = MosquittoProcess(websockets_port=free_port())
    broker.start()
    yield broker
    broker.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    # amqtt 0.12 sometimes leaves a server-side socket for the garbage collector; that is the
    # broker's leak, not ours, so only sockets on the embedded broker's own ports are forgiven
    # (see amqtt_broker). asyncio streams are used by nothing but the embedded broker here.
    config.addinivalue_line("filterwarnings", "ignore:unclosed <StreamWriter:ResourceWarning")
    config.addinivalue_line("filterwarnings", "ignore:loop is closed:ResourceWarning")
    config.addinivalue_line(
        "filterwarnings", "ignore:unclosed transport <_SelectorSocketTransport:ResourceWarning"
    )


@pytest.fixture(scope="session", autouse=True)
def collect_leftovers_while_warnings_are_filtered() -> Iterator[None]:
    """Collect garbage once every session fixture has stopped, inside the last test's teardown.

    Set up first, so torn down last. What amqtt leaves to the garbage collector is then
    collected while the filters above apply; at pytest's own final collection, after the
    session, they no longer do, and each leftover would fail the run.
    """
    yield
    gc.collect()


@pytest.fixture(scope="session")
def amqtt_broker(pytestconfig: pytest.Config) -> Iterator[AmqttBroker]:
    # The ports are the ones the broker gets when it binds: chosen earlier, a port could be
    # taken meanwhile by another program's connection on this shared machine.
    broker = AmqttBroker(0, websockets_port=0)
    broker.start()
    for port in (broker.port, broker.websockets_port):
        # Read by pytest for every later test phase.
        pytestconfig.addinivalue_line(
            "filterwarnings",
            rf"ignore:unclosed <socket\.socket .*laddr=\('127\.0\.0\.1', {port}\)"
            ":ResourceWarning",
        )
    yield broker
    broker.cleanup()


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> RunningBroker:
    """Each test using this runs once against amqtt and once against Mosquitto."""
    name = "amqtt_broker" if request.param == "amqtt" else "mosquitto_broker"
    found: RunningBroker = request.getfixturevalue(name)
    return found


@pytest.fixture
def broker_url(broker: RunningBroker) -> BrokerUrl:
    return BrokerUrl.parse(broker.url)


@pytest.fixture
def topics() -> Topics:
    """A base topic of its own, so tests sharing a broker never see each other's retained data."""
    return Topics(f"t{uuid.uuid4().hex[:12]}")
