"""The arbiter on its own: several hands, every hand under a base, limits, poses."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hand_mqtt import (
    Arbiter,
    BridgeResponse,
    BrokerUrl,
    MqttClient,
    PoseBook,
    ServedHands,
    Topics,
)
from hand_mqtt.cli import app
from harness.waiting import wait_until
from tests.support.system import Recorder


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
        # The answers of different hands come in no set order: a and b wait for their leases.
        wait_until(lambda: arbiter.state("b").version == 1, 5, "b served")
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


def test_relax_lock_and_unlock(broker_url: BrokerUrl, topics: Topics) -> None:
    hand = topics.hand("hand1")
    arbiter = _arbiter(broker_url, topics)
    recorder = Recorder(broker_url, hand.error)
    client = MqttClient(broker_url, name="t")
    client.connect()

    def send(payload: str, version: int) -> None:
        client.publish(hand.set, payload.encode(), qos=1)
        wait_until(lambda: arbiter.state("hand1").version == version, 5)

    try:
        send('{"pose": "fist", "duration_ms": 800}', 1)
        assert arbiter.state("hand1").duration_ms == 800
        send('{"relax": ["thumb", "index"]}', 2)
        state = arbiter.state("hand1")
        assert (state.relaxed, state.angles, state.duration_ms) == (
            ("index", "thumb"),
            (0,) * 5,
            None,
        )
        # Moving a finger drives it again; the others stay relaxed.
        send('{"index": 10}', 3)
        assert arbiter.state("hand1").relaxed == ("thumb",)
        send('{"lock": true, "transaction": "stop"}', 4)
        state = arbiter.state("hand1")
        assert state.locked
        assert state.relaxed == ("index", "middle", "ring", "pinky", "thumb")
        assert state.transaction == "stop"
        # Every motion is refused while locked, on every command topic.
        client.publish(hand.set, b'{"pose": "open", "transaction": "m1"}', qos=1)
        client.publish(hand.pose_set, b"peace", qos=1)
        client.publish(hand.finger_set("ring"), b"+15", qos=1)
        wait_until(lambda: len(recorder.on(hand.error)) == 3, 5)
        errors = [json.loads(m.payload) for m in recorder.on(hand.error)]
        assert {e["error"] for e in errors} == {
            "the hand is locked (emergency stop) and refuses to move; "
            'send {"lock": false} to unlock it'
        }
        assert errors[0]["transaction"] == "m1"
        assert arbiter.state("hand1").version == 4
        # Unlocking moves nothing: the fingers stay relaxed until a command moves them.
        send('{"lock": false}', 5)
        state = arbiter.state("hand1")
        assert not state.locked
        assert len(state.relaxed) == 5
        send('{"pose": "open"}', 6)
        assert arbiter.state("hand1").relaxed == ()
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_a_lock_survives_an_arbiter_restart(broker_url: BrokerUrl, topics: Topics) -> None:
    hand = topics.hand("hand1")
    arbiter = _arbiter(broker_url, topics)
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        client.publish(hand.set, b'{"lock": true}', qos=1)
        wait_until(lambda: arbiter.state("hand1").locked, 5)
        arbiter.stop()
        arbiter = _arbiter(broker_url, topics)
        assert arbiter.state("hand1").locked
        assert arbiter.state("hand1").version == 1
        client.publish(hand.pose_set, b"fist", qos=1)
        client.publish(hand.set, b'{"lock": false}', qos=1)
        wait_until(lambda: arbiter.state("hand1").version == 2, 5)
        assert arbiter.state("hand1").angles == (180,) * 5  # the fist was refused
    finally:
        client.stop()
        arbiter.stop()


def test_a_stop_ends_a_gesture_and_refuses_the_next(broker_url: BrokerUrl, topics: Topics) -> None:
    hand = topics.hand("hand1")
    arbiter = _arbiter(broker_url, topics)
    recorder = Recorder(broker_url, hand.error)
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        client.publish(hand.set, b'{"relax": ["ring"]}', qos=1)
        client.publish(hand.set, b'{"gesture": "count", "repeat": 100}', qos=1)
        wait_until(lambda: arbiter.state("hand1").gesture is not None, 5, "the gesture to play")
        assert arbiter.state("hand1").relaxed == ()  # a gesture drives every finger
        client.publish(hand.set, b'{"lock": true}', qos=1)
        wait_until(lambda: arbiter.state("hand1").locked, 5, "the lock")
        locked = arbiter.state("hand1")
        assert locked.gesture is None
        client.publish(hand.pose_set, b"wave", qos=1)  # a gesture by name is a motion too
        wait_until(lambda: recorder.on(hand.error), 5, "the refusal")
        assert "locked" in json.loads(recorder.on(hand.error)[0].payload)["error"]
        # Nothing of the gesture comes after the lock: send a sentinel and compare.
        client.publish(hand.set, b'{"relax": true, "transaction": "sentinel"}', qos=1)
        wait_until(lambda: arbiter.state("hand1").transaction == "sentinel", 5, "the sentinel")
        assert arbiter.state("hand1").version == locked.version + 1
        assert arbiter.state("hand1").angles == locked.angles
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_refused_commands_hold_no_slot_and_a_retired_hand_frees_one(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    """Commands to any number of made-up hands that are all refused take no slot; an operator
    retires a hand to free its slot, and a restart does not bring it back."""
    arbiter = _arbiter(broker_url, topics, hands=None, max_hands=2)
    recorder = Recorder(broker_url, f"{topics.base}/#")
    client = MqttClient(broker_url, name="t")
    client.connect()
    cli = CliRunner()
    where = ["--broker", str(broker_url), "--base", topics.base]
    try:
        for n in range(30):
            client.publish(topics.hand(f"ghost{n}").set, b'{"index": 999}')
        wait_until(lambda: len(recorder.on(topics.hand("ghost29").error)) == 1, 10)
        client.publish(topics.hand("left").set, b'{"index": 1}')
        client.publish(topics.hand("right").set, b'{"index": 2}')
        client.publish(topics.hand("third").set, b'{"index": 3}')
        wait_until(lambda: recorder.on(topics.hand("third").error), 10)
        wait_until(lambda: arbiter.hands == ["left", "right"], 10, "left and right served")
        assert "retire one" in recorder.last_json(topics.hand("third").error)["error"]

        retired = cli.invoke(app, ["retire", "left", *where])
        assert retired.exit_code == 0, retired.output
        assert f"{topics.base}/left: retired" in retired.output
        assert arbiter.hands == ["right"]
        # Its retained topics are cleared (an empty retained message deletes one).
        wait_until(lambda: recorder.on(topics.hand("left").finger("index"))[-1].payload == b"")
        assert recorder.on(topics.hand("left").state)[-1].payload == b""
        client.publish(topics.hand("third").set, b'{"index": 3}')
        wait_until(lambda: arbiter.state("third").version == 1, 10)

        unknown = cli.invoke(app, ["retire", "ghost3", *where])
        assert unknown.exit_code == 1
        assert "holds no slot" in unknown.output
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()
    again = _arbiter(broker_url, topics, hands=None, max_hands=2)
    try:
        assert again.hands == ["right", "third"]
    finally:
        again.stop()


def test_an_arbiter_answers_a_ping_and_refuses_to_retire_named_hands(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    arbiter = _arbiter(broker_url, topics, hands=["left"])
    recorder = Recorder(broker_url, topics.bridge_response("+"))
    client = MqttClient(broker_url, name="t")
    client.connect()
    try:
        client.publish(topics.bridge_request("ping"), b'{"transaction": 7}')
        client.publish(topics.bridge_request("retire"), b'{"hand": "left", "transaction": "r"}')
        client.publish(topics.bridge_request("ping"), b"[]")
        wait_until(lambda: len(recorder.on(topics.bridge_response("ping"))) == 2, 10)
        pong = BridgeResponse.model_validate_json(
            recorder.on(topics.bridge_response("ping"))[0].payload
        )
        assert (pong.status, pong.transaction, pong.session) == ("ok", 7, arbiter.session)
        refused = recorder.last_json(topics.bridge_response("ping"))
        assert (refused["status"], refused["transaction"]) == ("error", None)
        retire = recorder.last_json(topics.bridge_response("retire"))
        assert (retire["status"], retire["transaction"]) == ("error", "r")
        assert "by name" in retire["error"]
        assert arbiter.hands == ["left"]
    finally:
        client.stop()
        recorder.close()
        arbiter.stop()


def test_bridge_hands_says_which_hands_are_served(broker_url: BrokerUrl, topics: Topics) -> None:
    named = _arbiter(broker_url, topics, hands=["left", "right"])
    recorder = Recorder(broker_url, topics.bridge_hands)
    try:
        wait_until(lambda: recorder.on(topics.bridge_hands), 5)
        message = recorder.on(topics.bridge_hands)[-1]
        assert message.retain  # retained: a client that connects later learns it at once
        served = ServedHands.model_validate_json(message.payload)
        assert served == ServedHands(hands=("left", "right"), all_hands=False)
        assert served.serves("left")
        assert not served.serves("hand1")
    finally:
        recorder.close()
        named.stop()
    every = _arbiter(broker_url, topics, hands=None)
    recorder = Recorder(broker_url, topics.bridge_hands)
    try:
        wait_until(lambda: recorder.on(topics.bridge_hands), 5)
        assert json.loads(recorder.on(topics.bridge_hands)[-1].payload) == {
            "hands": [],
            "all_hands": True,
        }
    finally:
        recorder.close()
        every.stop()
