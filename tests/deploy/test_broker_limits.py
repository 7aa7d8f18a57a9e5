"""What one client may cost a broker: packet size and keep-alive on both brokers (Mosquitto with
the shipped configuration), and the embedded broker's own limits (BrokerLimits): CONNECT timeout,
connection limit and the backlog of a client that does not read.

Each test waits for an event the broker causes (it closes our socket, it publishes a will), never
for a length of time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hand_mqtt import BrokerUrl, EmbeddedBroker, MqttClient, Topics
from hand_mqtt.broker.embedded import BrokerLimits
from harness.brokers import free_port
from harness.waiting import wait_until as eventually
from tests.deploy.conftest import SecuredBroker
from tests.deploy.support import Watcher
from tests.support.raw_mqtt import (
    CONNACK_ACCEPTED,
    RawClient,
    RawWill,
    remaining_length,
    string,
    subscribe_packet,
)

TOPICS = Topics("hand")


def unique_hand() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


@pytest.fixture
def embedded(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """An anonymous embedded broker with the limits the test passes as its parameter."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), limits=request.param)
    broker.start()
    yield broker
    broker.stop()


def limits(**changes: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("embedded", [BrokerLimits(**changes)], indirect=True)


# -- both brokers --------------------------------------------------------------------------------


def test_a_packet_above_the_size_limit_is_refused_from_its_header(secured: SecuredBroker) -> None:
    """A viewer announces a 32 MiB publish: the broker closes the connection without waiting
    for the body (Mosquitto: max_packet_size 65536 in the shipped configuration)."""
    t = TOPICS.hand(unique_hand())
    with RawClient(secured.port) as viewer:
        code = viewer.connect(
            f"big-{uuid.uuid4().hex}", username="viewer", password=secured.passwords["viewer"]
        )
        assert code == CONNACK_ACCEPTED
        body_size = 32 * 1024 * 1024
        viewer.send(bytes([0x30]) + remaining_length(body_size) + string(t.set) + b"x" * 1024)
        assert viewer.closed_by_broker()
    # Anything below the limit still goes through.
    watcher = Watcher(secured.url("viewer"), t.set)
    operator = MqttClient(BrokerUrl.parse(secured.url("operator")), name="operator")
    try:
        operator.connect()
        big = b"9" * 60_000
        operator.publish(t.set, big, wait=5)
        eventually(lambda: watcher.payloads(t.set) == [big], 10, "a 60 kB command")
    finally:
        operator.stop()
        watcher.close()


def test_a_silent_client_is_disconnected_after_its_keepalive(secured: SecuredBroker) -> None:
    """MQTT: one and a half keep-alive periods without a packet end the connection, and the
    will is published. Mosquitto does it; amqtt 0.12 kept such a connection forever."""
    t = TOPICS.hand(unique_hand())
    watcher = Watcher(secured.url("viewer"), t.set)
    try:
        with RawClient(secured.port, timeout=60) as silent:
            code = silent.connect(
                f"silent-{uuid.uuid4().hex}",
                username="operator",
                password=secured.passwords["operator"],
                keepalive=1,
                will=RawWill(t.set, b"went silent"),
            )
            assert code == CONNACK_ACCEPTED
            assert silent.closed_by_broker()
        eventually(lambda: watcher.payloads(t.set) == [b"went silent"], 10, "the will")
    finally:
        watcher.close()


# -- the embedded broker -------------------------------------------------------------------------


@limits(connect_timeout=0.5)
def test_a_connection_that_never_sends_connect_is_closed(embedded: EmbeddedBroker) -> None:
    with RawClient(embedded.port, timeout=60) as idle:
        assert idle.closed_by_broker()


@limits(max_connections=3, connect_timeout=60)
def test_connections_above_the_limit_are_closed_at_once(embedded: EmbeddedBroker) -> None:
    idle = [RawClient(embedded.port) for _ in range(3)]
    try:
        with RawClient(embedded.port, timeout=60) as one_too_many:
            assert one_too_many.closed_by_broker()
    finally:
        for sock in idle:
            sock.close()
    # The slots are free again once the broker sees those sockets close.
    client = MqttClient(BrokerUrl.parse(embedded.url), name="after")
    try:
        client.connect(30)
    finally:
        client.stop()


@limits(max_connections=3, connect_timeout=0.5)
def test_idle_sockets_cannot_lock_a_real_client_out(embedded: EmbeddedBroker) -> None:
    idle = [RawClient(embedded.port, timeout=60) for _ in range(3)]
    try:
        assert all(sock.closed_by_broker() for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    client = MqttClient(BrokerUrl.parse(embedded.url), name="operator")
    try:
        client.connect(10)
    finally:
        client.stop()


@limits(max_queued_messages=50)
def test_a_client_that_does_not_read_is_disconnected_not_buffered(
    embedded: EmbeddedBroker,
) -> None:
    """A subscriber that never reads: once 50 messages wait for it, the broker lets it go (and
    publishes its will) instead of holding an ever-growing backlog."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}")
    flood, gone = f"{topics.base}/flood", f"{topics.base}/gone"
    watcher = Watcher(embedded.url, gone)
    stuck = RawClient(embedded.port, timeout=60)
    publisher = MqttClient(BrokerUrl.parse(embedded.url), name="publisher")
    try:
        assert stuck.connect("stuck", will=RawWill(gone, b"stuck")) == CONNACK_ACCEPTED
        stuck.send(subscribe_packet(1, flood))
        stuck.read_exactly(5)  # SUBACK; from here on it reads nothing
        publisher.connect()
        payload = b"x" * 16_384
        for _ in range(4000):  # 64 MB: far more than the socket buffers hold
            publisher.publish(flood, payload, qos=0)
            if watcher.last(gone) is not None:
                break
        eventually(lambda: watcher.last(gone) == b"stuck", 30, "the stuck client's will")
    finally:
        publisher.stop()
        stuck.close()
        watcher.close()
