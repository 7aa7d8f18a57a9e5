"""MqttClient on real brokers: its one retained-topics barrier, and stopping cleanly."""

from __future__ import annotations

import threading

from hand_mqtt import BrokerUrl, Message, MqttClient, Topics, Will
from harness.brokers import RunningBroker
from harness.waiting import wait_until
from tests.support.relay import HoldingRelay


def _retain(url: BrokerUrl, topic: str, payload: bytes) -> None:
    client = MqttClient(url, name="setup")
    client.connect()
    try:
        client.publish(topic, payload, retain=True, wait=5)
    finally:
        client.stop()


def test_when_synced_calls_back_on_the_network_thread_after_the_retained_messages(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    topic = f"{topics.base}/hand1/state"
    _retain(broker_url, topic, b"kept")
    seen: list[bytes] = []
    threads: list[str] = []
    done = threading.Event()
    client = MqttClient(broker_url, name="synced", sync_grace=0.05)
    client.subscribe(topic, lambda m: seen.append(m.payload))

    def synced() -> None:
        threads.append(threading.current_thread().name)
        done.set()

    client.on_connect(lambda: client.when_synced(topics.sync(client.client_id), synced))
    client.connect()
    try:
        assert done.wait(10)
        assert seen == [b"kept"]
        assert threads[0].startswith("paho-mqtt-client")
    finally:
        client.stop()


def test_wait_synced_waits_for_a_retained_message_that_comes_after_the_echo(
    broker: RunningBroker, topics: Topics
) -> None:
    """As on a clustered broker: the retained message is held back until after the echo."""
    topic = f"{topics.base}/hand1/availability"
    _retain(BrokerUrl.parse(broker.url), topic, b"online")
    relay = HoldingRelay(broker.port, lambda m: m.retain)
    seen: dict[str, bytes] = {}
    client = MqttClient(BrokerUrl.parse(relay.url), name="late", sync_grace=3600)

    def keep(message: Message) -> None:
        seen[message.topic] = message.payload

    client.subscribe(topic, keep)
    result: list[bool] = []
    try:
        client.connect()
        waiter = threading.Thread(
            target=lambda: result.append(
                client.wait_synced(
                    topics.sync(client.client_id), 30, have_all=lambda: topic in seen
                )
            )
        )
        waiter.start()
        relay.wait(lambda: any("/bridge/sync/" in m.topic for m in relay.relayed))
        assert result == []  # echoed, but the grace is not over and the message is missing
        relay.release()
        waiter.join(30)
        assert result == [True]
        assert seen == {topic: b"online"}
    finally:
        client.stop()
        relay.close()


def test_wait_synced_ends_after_the_grace_when_nothing_is_retained(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    client = MqttClient(broker_url, name="empty", sync_grace=0.05)
    seen: list[Message] = []
    client.subscribe(f"{topics.base}/nothing/here", seen.append)
    client.connect()
    try:
        assert client.wait_synced(topics.sync(client.client_id), 10, have_all=lambda: False)
        assert seen == []
    finally:
        client.stop()


def test_a_clean_stop_never_publishes_the_will_even_with_messages_in_flight(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    """Closing with unread data sends a TCP reset, which can overtake the DISCONNECT."""
    will_topic = f"{topics.base}/hand1/availability"
    watcher = MqttClient(broker_url, name="watcher")
    wills: list[bytes] = []
    watcher.subscribe(will_topic, lambda m: wills.append(m.payload), wait=5)
    watcher.connect()
    try:
        for round_ in range(5):
            client = MqttClient(broker_url, name="busy", will=Will(will_topic, b"offline"))
            echo = f"{topics.base}/echo/{round_}"
            client.subscribe(echo, lambda _m: None)
            client.connect()
            client.subscribe(echo, lambda _m: None, wait=5)
            for n in range(200):
                client.publish(echo, str(n), qos=1)
            client.stop()  # with echoes and acknowledgements still on their way
        # The sentinel, on the same topic: once it is here, any will would have been too.
        watcher.publish(will_topic, b"sentinel", qos=1)
        wait_until(lambda: b"sentinel" in wills)
        assert wills == [b"sentinel"]
    finally:
        watcher.stop()
