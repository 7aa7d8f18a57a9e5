"""Broker failover in the clients, on two Mosquitto processes with no bridge between them.

Every service and client is given both brokers (``--broker A,B``). When A dies they all move
to B, subscribe again and publish their retained topics there: the arbiter its states, the
device service its availability and report. Nothing is shared between the brokers, so what
B knows afterwards it learnt from the clients alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from hand_mqtt import BrokerUrl, HandClient, HandState, Message, MqttClient, Topics, Will
from hand_mqtt.cli import app
from harness.brokers import MosquittoProcess, mosquitto_binary
from harness.waiting import wait_until
from tests.conftest import need
from tests.support.system import Recorder, System


@pytest.fixture
def pair() -> Iterator[tuple[MosquittoProcess, MosquittoProcess]]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    a, b = MosquittoProcess(), MosquittoProcess()
    a.start()
    b.start()
    yield a, b
    a.cleanup()
    b.cleanup()


def both(pair: tuple[MosquittoProcess, MosquittoProcess]) -> BrokerUrl:
    return BrokerUrl.parse(f"{pair[0].url},{pair[1].url}")


def test_a_client_takes_the_second_broker_when_the_first_is_down(
    pair: tuple[MosquittoProcess, MosquittoProcess],
) -> None:
    a, b = pair
    a.stop()
    client = MqttClient(both(pair), name="failover")
    try:
        client.connect(10)
        assert client.broker.port == b.port
    finally:
        client.stop()


def test_a_client_moves_on_when_its_broker_dies_and_subscribes_again(
    pair: tuple[MosquittoProcess, MosquittoProcess],
) -> None:
    a, b = pair
    got: list[Message] = []
    arrived = threading.Event()
    client = MqttClient(both(pair), name="failover")

    def keep(message: Message) -> None:
        got.append(message)
        arrived.set()

    client.subscribe("t/news", keep)
    client.connect(10)
    assert client.broker.port == a.port
    a.kill()
    wait_until(lambda: client.connected and client.broker.port == b.port, 15, "moved to B")
    try:
        publisher = MqttClient(BrokerUrl.parse(b.url), name="publisher")
        publisher.connect()

        # Subscribed again on B: a message published there arrives (sent until it does, since
        # the subscription is made on B at about the time the client is connected).
        def through_b() -> bool:
            if not arrived.is_set():
                publisher.publish("t/news", b"on B")
            return arrived.wait(0.2)

        wait_until(through_b, 15, "a message through B")
        assert got[-1].payload == b"on B"
        publisher.stop()
    finally:
        client.abort()


def test_a_will_is_published_by_the_broker_the_client_moved_to(
    pair: tuple[MosquittoProcess, MosquittoProcess],
) -> None:
    a, b = pair
    client = MqttClient(both(pair), name="failover", will=Will("t/will", b"gone"))
    client.connect(10)
    watcher = Recorder(BrokerUrl.parse(b.url), "t/will")
    try:
        a.kill()
        wait_until(lambda: client.connected and client.broker.port == b.port, 15, "moved to B")
        client.abort()
        wait_until(lambda: watcher.on("t/will"), 10, "the will on B")
        assert watcher.on("t/will")[-1].payload == b"gone"
    finally:
        watcher.close()


def test_the_hand_is_served_through_the_second_broker_after_the_first_dies(
    pair: tuple[MosquittoProcess, MosquittoProcess], topics: Topics
) -> None:
    a, b = pair
    system = System(both(pair), topics).start()
    try:
        with HandClient(both(pair), topics=topics) as hand:
            hand.pose("peace", wait="reported", timeout=15)
            before = hand.state
            assert before is not None
            t = topics.hand("hand1")
            on_b = Recorder(BrokerUrl.parse(b.url), t.state, t.availability, t.reported)
            a.kill()
            # The arbiter and the device service publish their retained topics on B: a
            # client that knows only B sees the hand as it was.
            wait_until(
                lambda: on_b.on(t.state) and on_b.on(t.availability) and on_b.on(t.reported),
                20,
                "state, availability and reported published on B",
            )
            on_b.close()
            with HandClient(b.url, topics=topics) as only_b:
                desired = only_b.state
                assert desired is not None
                assert desired.angles == before.angles
                assert desired.version == before.version
                assert only_b.online
            # The client that knew both moved too, and its next command is served.
            after: HandState = hand.pose("rockstar", wait="reported", timeout=20)
            assert after.version == before.version + 1
            system.wait_hand((180, 0, 0, 180, 180))
    finally:
        system.stop()


def test_the_cli_takes_a_list_and_uses_the_broker_that_answers(
    pair: tuple[MosquittoProcess, MosquittoProcess], topics: Topics
) -> None:
    a, b = pair
    system = System(BrokerUrl.parse(b.url), topics).start()
    try:
        a.stop()
        cli = CliRunner(env={"HAND_MQTT_BROKER": f"{a.url},{b.url}", "HAND_MQTT_BASE": topics.base})
        moved = cli.invoke(app, ["pose", "peace"])
        assert moved.exit_code == 0, moved.output
        shown = cli.invoke(app, ["state", "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["desired"]["pose"] == "peace"
    finally:
        system.stop()
