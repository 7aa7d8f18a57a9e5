"""The clustered broker itself: what the other cluster tests rely on."""

from __future__ import annotations

import threading

from hand_mqtt import BrokerUrl, Message, MqttClient
from harness.cluster import AedesCluster


def _listen(url: str, topic: str) -> tuple[MqttClient, list[Message], threading.Event]:
    got: list[Message] = []
    arrived = threading.Event()

    def keep(message: Message) -> None:
        got.append(message)
        arrived.set()

    client = MqttClient(BrokerUrl.parse(url), name="listener")
    client.subscribe(topic, keep)
    client.connect()
    return client, got, arrived


def test_a_retained_message_on_one_node_reaches_a_new_subscriber_on_another(
    cluster: AedesCluster,
) -> None:
    a = MqttClient(BrokerUrl.parse(cluster.nodes[0].url), name="a")
    a.connect()
    a.publish("t/retained", b"kept", retain=True, wait=5)
    listener, got, arrived = _listen(cluster.nodes[1].url, "t/retained")
    try:
        assert arrived.wait(10)
        assert got[0].payload == b"kept"
        assert got[0].retain
    finally:
        listener.stop()
        a.stop()


def test_a_live_message_crosses_nodes(cluster: AedesCluster) -> None:
    listener, got, arrived = _listen(cluster.nodes[2].url, "t/live")
    a = MqttClient(BrokerUrl.parse(cluster.nodes[0].url), name="a")
    a.connect()
    try:
        # The subscription on node C is in place once its own echo comes back through Redis.
        echo = threading.Event()
        listener.subscribe("t/echo", lambda _m: echo.set(), wait=5)
        a.publish("t/echo", b"x")
        assert echo.wait(10)
        a.publish("t/live", b"hello", wait=5)
        assert arrived.wait(10)
        assert got[-1].payload == b"hello"
        assert not got[-1].retain
    finally:
        listener.stop()
        a.stop()
