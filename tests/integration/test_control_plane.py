"""The whole path, client → broker → arbiter → broker → device service → pty → simulated hand.

Every test here runs against the embedded amqtt broker and against a real Mosquitto.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hand_mqtt import (
    BUILTIN_POSES,
    BrokerUrl,
    DeviceBusyError,
    DeviceService,
    HandState,
    MqttClient,
    Reported,
    Topics,
)
from harness.brokers import RunningBroker
from harness.waiting import wait_until
from tests.support.relay import HoldingRelay
from tests.support.system import Recorder, System


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


def test_plain_paho_client_moves_the_hand_and_sees_reported(
    system: System, broker: RunningBroker
) -> None:
    """Interoperability: nothing of ours on the client side, just paho."""
    t = system.hand_topics
    reported: list[dict[str, object]] = []
    got = threading.Event()

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        # amqtt 0.12 may also hand a new subscriber other retained topics: filter.
        if message.topic != t.reported:
            return
        data = json.loads(message.payload)
        reported.append(data)
        if data.get("index") == 90:
            got.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe(t.reported, qos=1)
    client.loop_start()
    try:
        client.publish(t.finger_set("index"), "90", qos=1).wait_for_publish(5)
        assert got.wait(10), f"no reported index 90; saw {reported[-3:]}"
    finally:
        client.loop_stop()
        client.disconnect()
    system.wait_hand((90, 180, 180, 180, 180))
    assert reported[-1]["link"] == "up"
    assert reported[-1]["version"] == system.state().version == 1


def test_retained_topics_follow_every_command(system: System) -> None:
    t = system.hand_topics
    client = system.client()
    try:
        client.publish(t.set, json.dumps({"pose": "rockstar", "transaction": "r1"}))
        system.wait_hand(BUILTIN_POSES["rockstar"])
    finally:
        client.stop()
    recorder = Recorder(system.url, f"{t.root}/#", system.topics.bridge_state)
    try:
        wait_until(lambda: recorder.on(t.state) and recorder.on(t.reported), 5)
        # The firmware takes the targets before the device service publishes their report.
        wait_until(
            lambda: (
                Reported.model_validate_json(recorder.on(t.reported)[-1].payload).angles
                == BUILTIN_POSES["rockstar"]
            ),
            5,
        )
        state = HandState.model_validate_json(recorder.on(t.state)[-1].payload)
        assert state.angles == BUILTIN_POSES["rockstar"]
        assert state.pose == "rockstar"
        assert state.transaction == "r1"
        assert recorder.on(t.state)[-1].retain
        for finger, angle in zip(
            ("index", "middle", "ring", "pinky", "thumb"), BUILTIN_POSES["rockstar"], strict=True
        ):
            assert recorder.on(t.finger(finger))[-1].payload == str(angle).encode()
        reported = Reported.model_validate_json(recorder.on(t.reported)[-1].payload)
        assert reported.angles == BUILTIN_POSES["rockstar"]
        assert recorder.on(t.availability)[-1].payload == b"online"
        assert recorder.on(system.topics.bridge_state)[-1].payload == b"online"
    finally:
        recorder.close()


def test_nudges_clamp(system: System) -> None:
    t = system.hand_topics
    client = system.client()
    try:
        client.publish(t.finger_set("thumb"), "+15")
        client.publish(t.finger_set("pinky"), "0")
        for _ in range(3):
            client.publish(t.finger_set("pinky"), "-15")
        client.publish(t.finger_set("ring"), json.dumps({"delta": -100}))
        client.publish(t.finger_set("ring"), json.dumps({"delta": -100}))
        system.wait_hand((180, 180, 0, 0, 180))
        assert system.state().version == 7
    finally:
        client.stop()


@pytest.mark.parametrize("pose", sorted(BUILTIN_POSES))
def test_every_pose_reaches_the_hand(system: System, pose: str) -> None:
    client = system.client()
    try:
        client.publish(system.hand_topics.pose_set, pose)
        system.wait_hand(BUILTIN_POSES[pose])
        reported = system.wait_reported(BUILTIN_POSES[pose])
        assert reported.link == "up"
        assert system.state().pose == pose
    finally:
        client.stop()


def test_partial_updates_leave_other_fingers(system: System) -> None:
    t = system.hand_topics
    client = system.client()
    try:
        client.publish(t.set, json.dumps({"angles": [10, 20, 30, 40, 50]}))
        system.wait_hand((10, 20, 30, 40, 50))
        client.publish(t.set, json.dumps({"angles": [None, 99, None, None, 1]}))
        system.wait_hand((10, 99, 30, 40, 1))
        client.publish(t.set, json.dumps({"ring": 100}))
        system.wait_hand((10, 99, 100, 40, 1))
        system.wait_reported((10, 99, 100, 40, 1))
    finally:
        client.stop()


def test_concurrent_clients_deltas_converge_on_the_sum(system: System) -> None:
    t = system.hand_topics
    setup = system.client()
    setup.publish(t.set, json.dumps({"angles": [0, 0, 0, 0, 0]}), wait=5)
    system.wait_hand((0, 0, 0, 0, 0))
    clients = [system.client(f"c{i}") for i in range(4)]
    per_client = 25

    def nudge(client: MqttClient, finger: str) -> None:
        for _ in range(per_client):
            client.publish(t.finger_set(finger), "+1")

    try:
        threads = [
            threading.Thread(target=nudge, args=(client, finger))
            for client in clients
            for finger in ("index", "thumb")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = len(clients) * per_client
        system.wait_hand((total, 0, 0, 0, total))
        wait_until(lambda: system.state().version == 1 + 2 * total, 10)
    finally:
        setup.stop()
        for client in clients:
            client.stop()


def test_malformed_payloads_get_errors_and_service_goes_on(system: System) -> None:
    t = system.hand_topics
    recorder = Recorder(system.url, t.error)
    client = system.client()
    bad = [
        (t.finger_set("index"), b"ninety"),
        (t.finger_set("index"), b"\xff\xfe"),
        (t.set, b'{"index": 999, "transaction": "bad-1"}'),
        (t.set, b"{" * 10),
        (t.pose_set, b"moonwalk"),
        (t.set, b""),
    ]
    try:
        for topic, payload in bad:
            client.publish(topic, payload)
        wait_until(lambda: len(recorder.on(t.error)) == len(bad), 10, "an error per command")
        errors = [json.loads(m.payload) for m in recorder.on(t.error)]
        assert [e["topic"] for e in errors] == [topic for topic, _ in bad]
        assert "expected an angle" in errors[0]["error"]
        assert "not UTF-8" in errors[1]["error"]
        assert errors[2]["transaction"] == "bad-1"
        assert "999" in errors[2]["error"]
        assert "unknown pose" in errors[4]["error"]
        assert "empty" in errors[5]["error"]
        client.publish(t.finger_set("middle"), b"45")
        system.wait_hand((180, 45, 180, 180, 180))
        assert system.state().version == 1
    finally:
        client.stop()
        recorder.close()


def test_retained_command_is_ignored(broker_url: BrokerUrl, topics: Topics) -> None:
    hand = topics.hand("hand1")
    client = MqttClient(broker_url, name="stale")
    client.connect()
    client.publish(hand.finger_set("index"), b"0", retain=True, wait=5)
    recorder = Recorder(broker_url, hand.error)
    system = System(broker_url, topics).start()
    try:
        wait_until(lambda: recorder.on(hand.error), 5, "an error about the retained command")
        assert "retained" in json.loads(recorder.on(hand.error)[-1].payload)["error"]
        system.wait_reported((180, 180, 180, 180, 180))
        assert system.state().version == 0
        assert system.sim.firmware.targets == (180, 180, 180, 180, 180)
    finally:
        client.publish(hand.finger_set("index"), b"", retain=True, wait=5)
        client.stop()
        recorder.close()
        system.stop()


def test_arbiter_restart_restores_state(system: System) -> None:
    t = system.hand_topics
    client = system.client()
    try:
        client.publish(t.set, json.dumps({"pose": "okay"}))
        client.publish(t.finger_set("ring"), b"-15")
        system.wait_hand((0, 180, 165, 180, 0))
        assert system.arbiter is not None
        system.arbiter.abort()  # dies without goodbye: the broker sends its wills
        bridge = Recorder(system.url, system.topics.bridge_state)
        wait_until(
            lambda: (
                bridge.on(system.topics.bridge_state)
                and bridge.on(system.topics.bridge_state)[-1].payload == b"offline"
            ),
            10,
        )
        restarted = system.start_arbiter()
        assert restarted.state("hand1").angles == (0, 180, 165, 180, 0)
        assert restarted.state("hand1").version == 2
        wait_until(lambda: bridge.on(system.topics.bridge_state)[-1].payload == b"online", 10)
        bridge.close()
        client.publish(t.finger_set("ring"), b"+15")
        system.wait_hand((0, 180, 180, 180, 0))
        assert restarted.state("hand1").version == 3
    finally:
        client.stop()


def test_device_survives_the_serial_port_vanishing(system: System) -> None:
    t = system.hand_topics
    device = system.device
    assert device is not None
    client = system.client()
    try:
        system.sim.unplug()
        wait_until(lambda: not device.link_up, 10, "link down")
        wait_until(lambda: device.reported.link == "down", 5)
        client.publish(t.set, json.dumps({"pose": "phone"}))
        client.publish(t.finger_set("index"), b"30")
        wait_until(lambda: system.state().version == 2, 5)
        system.sim.plug()
        wait_until(lambda: device.link_up, 10, "link up again")
        system.wait_hand((30, 0, 0, 180, 180))
        reported = system.wait_reported((30, 0, 0, 180, 180))
        assert reported.link == "up"
        assert reported.version == 2
    finally:
        client.stop()


def test_noise_from_the_hand_does_not_break_the_link(system: System) -> None:
    client = system.client()
    try:
        system.sim.inject(b"\xa5\x05\x82\x00garbage\xa5\xff\x00\x00" + bytes(range(256)))
        client.publish(system.hand_topics.finger_set("pinky"), b"12")
        system.wait_reported((180, 180, 180, 12, 180))
    finally:
        client.stop()


def test_second_device_service_is_refused_then_takeover(system: System) -> None:
    first = system.device
    assert first is not None
    second = system.new_device(serial=system.sim.path + "-other")
    with pytest.raises(DeviceBusyError, match="--takeover"):
        second.start()
    assert first.link_up
    # Take over on purpose: the first service steps down.
    third = system.new_device(takeover=True, serial=system.sim.path)
    third.start()
    try:
        wait_until(first.taken_over.is_set, 10, "first service stepping down")
        wait_until(lambda: third.link_up, 10, "new service linked")
        client = system.client()
        client.publish(system.hand_topics.finger_set("thumb"), b"5")
        system.wait_hand((180, 180, 180, 180, 5))
        wait_until(lambda: third.reported.angles == (180, 180, 180, 180, 5), 10)
        client.stop()
    finally:
        third.stop()


def test_a_device_service_that_learns_late_of_a_running_one_stops(
    system: System, broker: RunningBroker
) -> None:
    """As on a clustered broker: the second service gets no retained message before it starts
    (a relay holds them back), so it believes the hand free. Its claim, newer but made without
    --takeover, does not displace the first: the first answers live, and the second stops."""
    first = system.device
    assert first is not None
    relay = HoldingRelay(broker.port, lambda message: message.retain)
    late = DeviceService(
        MqttClient(BrokerUrl.parse(relay.url), name="device", sync_grace=0.05),
        system.sim.path + "-other",
        topics=system.topics,
        hand=system.hand_name,
        settings=system.settings,
    )
    try:
        late.start()  # no DeviceBusyError: it knows of nobody yet
        wait_until(late.taken_over.is_set, 10, "the late service stepping down")
        assert late.busy is not None
        assert "--takeover" in late.busy
        assert not first.taken_over.is_set()
        client = system.client()
        client.publish(system.hand_topics.finger_set("thumb"), b"7")
        system.wait_reported((180, 180, 180, 180, 7))
        wait_until(lambda: system.sim.firmware.targets == (180, 180, 180, 180, 7), 10)
        client.stop()
    finally:
        late.stop()
        relay.close()


def test_burst_of_10000_commands_ends_at_the_last(system: System) -> None:
    t = system.hand_topics
    client = system.client()
    frames_before = system.sim.frames_received
    started = time.monotonic()
    try:
        count = 10_000
        for i in range(count - 1):
            client.publish(t.finger_set("index"), str(i % 181).encode(), qos=0)
        client.publish(t.set, json.dumps({"angles": [7, 8, 9, 10, 11]}), qos=1, wait=30)
        wait_until(lambda: system.state().version == count, 60, "every command applied")
        system.wait_hand((7, 8, 9, 10, 11), timeout=30)
        system.wait_reported((7, 8, 9, 10, 11), timeout=30)
        frames = system.sim.frames_received - frames_before
        elapsed = time.monotonic() - started
        # Latest state wins: never more frames than the serial line could carry in the time
        # it took (the smallest frame, 7 bytes, plus its 12-byte ACK at 10 bits a byte).
        # How few frames a burst costs is a matter of speed: `make bench` reports it (flood).
        per_frame_s = (7 + 12) * 10 / 115_200
        assert frames <= elapsed / per_frame_s + 10, f"{frames} frames in {elapsed:.1f} s"
    finally:
        client.stop()
