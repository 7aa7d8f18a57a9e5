"""The arbiter on its own: several hands, every hand under a base, limits, poses."""

from __future__ import annotations

import json
from pathlib import Path

from hand_mqtt import Arbiter, BrokerUrl, MqttClient, PoseBook, Topics
from tests.support.system import Recorder, wait_until


def _arbiter(url: BrokerUrl, topics: Topics, **options: object) -> Arbiter:
    arbiter = Arbiter(MqttClient(url, name="arbiter"), topics=topics, **options)  # type: ignore[arg-type]
    arbiter.start()
    assert arbiter.wait_ready(10)
    return arbiter


def test_several_named_hands_are_independent(broker_url: BrokerUrl, topics: Topics) -> None:
    arbiter = _arbiter(broker_url, topics, hands=["left", "right"])
    recorder = Recorder(broker_url, f"{topics.base}/#")
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        client.publish(topics.hand("left").finger_set("index"), b"10")
        client.publish(topics.hand("right").pose_set, b"fist")
        client.publish(topics.hand("other").pose_set, b"fist")  # not served
        wait_until(lambda: arbiter.state("right").version == 1, 5)
        wait_until(lambda: arbiter.state("left").version == 1, 5)
        assert arbiter.state("left").angles == (10, 180, 180, 180, 180)
        assert arbiter.state("right").angles == (0, 0, 0, 0, 0)
        assert arbiter.hands == ["left", "right"]
        wait_until(lambda: recorder.on(topics.hand("right").state), 5)
        assert recorder.on(topics.hand("other").state) == []
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_all_hands_up_to_a_limit(broker_url: BrokerUrl, topics: Topics) -> None:
    arbiter = _arbiter(broker_url, topics, hands=None, max_hands=2)
    recorder = Recorder(broker_url, f"{topics.base}/+/error")
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        client.publish(topics.hand("a").finger_set("thumb"), b"1")
        client.publish(topics.hand("b").finger_set("thumb"), b"2")
        client.publish(topics.hand("c").finger_set("thumb"), b"3")
        wait_until(lambda: recorder.on(topics.hand("c").error), 5)
        assert (
            "already serves 2 hands"
            in json.loads(recorder.on(topics.hand("c").error)[0].payload)["error"]
        )
        assert arbiter.state("a").thumb == 1
        assert arbiter.state("b").thumb == 2
        assert arbiter.hands == ["a", "b"]
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_user_poses_are_served_and_published(
    broker_url: BrokerUrl, topics: Topics, tmp_path: Path
) -> None:
    path = tmp_path / "poses.toml"
    path.write_text("[poses]\nwave = [180, 90, 90, 90, 180]\n")
    arbiter = _arbiter(broker_url, topics, hands=["hand1"], poses=PoseBook.from_file(path))
    recorder = Recorder(broker_url, topics.bridge_poses)
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        poses = recorder.last_json(topics.bridge_poses)
        assert poses["wave"] == [180, 90, 90, 90, 180]
        assert poses["peace"] == [180, 180, 0, 0, 0]
        client.publish(topics.hand("hand1").pose_set, b"wave")
        wait_until(lambda: arbiter.state("hand1").pose == "wave", 5)
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_bridge_says_offline_on_a_clean_stop(broker_url: BrokerUrl, topics: Topics) -> None:
    arbiter = _arbiter(broker_url, topics)
    recorder = Recorder(broker_url, topics.bridge_state)
    wait_until(lambda: recorder.on(topics.bridge_state), 5)
    assert recorder.on(topics.bridge_state)[-1].payload == b"online"
    arbiter.stop()
    wait_until(lambda: recorder.on(topics.bridge_state)[-1].payload == b"offline", 5)
    recorder.close()
