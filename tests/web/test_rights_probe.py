"""The page's rights probe on <base>/bridge/set costs nothing: the arbiter ignores it, whether it
serves named hands or every hand (docs/topics.md, "Knowing whether you may send commands")."""

from __future__ import annotations

import pytest

from hand_mqtt import Arbiter, BrokerUrl, MqttClient, Topics
from harness.waiting import wait_until
from tests.support.system import Recorder


@pytest.mark.parametrize("hands", [["hand1"], None], ids=["named hands", "every hand"])
def test_the_arbiter_ignores_the_rights_probe(
    broker_url: BrokerUrl, topics: Topics, hands: list[str] | None
) -> None:
    arbiter = Arbiter(MqttClient(broker_url, name="arbiter"), topics=topics, hands=hands)
    arbiter.start()
    recorder = Recorder(broker_url, f"{topics.base}/#")
    client = MqttClient(broker_url, name="probe")
    client.connect()
    try:
        assert arbiter.wait_ready(10)
        client.publish(f"{topics.base}/bridge/set", b"hand-web-1234 1", qos=1)
        # Sentinel: a bad command after the probe; its error is the only one.
        hand = topics.hand("hand1")
        client.publish(hand.finger_set("index"), b"999", qos=1)
        wait_until(lambda: recorder.on(hand.error), 10, "the sentinel's error")
        errors = [m for m in recorder.messages if m.topic.endswith("/error")]
        assert [m.topic for m in errors] == [hand.error]
        assert arbiter.rejected == 1
        assert arbiter.accepted == 0
        assert "bridge" not in arbiter.hands
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()
