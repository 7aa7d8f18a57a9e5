"""Home Assistant MQTT discovery, against amqtt and Mosquitto, with the whole system running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from hand_mqtt import BUILTIN_POSES, FINGERS, BrokerUrl, PoseBook, Topics, __version__
from hand_mqtt.cli import app
from hand_mqtt.clients.homeassistant import Discovery, discovery_configs
from harness.brokers import RunningBroker
from harness.waiting import wait_until
from tests.support.system import Recorder, System


@pytest.fixture
def prefix() -> str:
    """A discovery prefix of its own, so tests sharing a broker never see each other's configs."""
    return f"ha{uuid.uuid4().hex[:10]}"


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


@pytest.fixture
def discovery(system: System, prefix: str) -> Iterator[Discovery]:
    assert system.arbiter is not None
    attached = Discovery(
        system.arbiter.client, topics=system.topics, hands=["hand1"], prefix=prefix
    )
    attached.start()
    yield attached
    attached.stop()


def _configs(url: BrokerUrl, prefix: str, count: int = 9) -> tuple[Recorder, dict[str, Any]]:
    """A fresh subscriber's view of the retained configs (non-empty ones only)."""
    recorder = Recorder(url, f"{prefix}/#")
    wait_until(
        lambda: len({m.topic for m in recorder.messages if m.payload}) >= count,
        5,
        f"{count} configs under {prefix}/",
    )
    latest: dict[str, Any] = {}
    for message in recorder.messages:
        if message.topic.endswith("/config") and message.payload:
            latest[message.topic] = json.loads(message.payload)
    return recorder, latest


def _expected_availability(topics: Topics) -> list[dict[str, str]]:
    t = topics.hand("hand1")
    return [
        {
            "topic": f"{topics.base}/bridge/state",
            "payload_available": "online",
            "payload_not_available": "offline",
        },
        {
            "topic": f"{t.root}/availability",
            "payload_available": "online",
            "payload_not_available": "offline",
        },
        {
            "topic": f"{t.root}/reported",
            "value_template": "{{ 'online' if value_json.link == 'up' else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        },
    ]


def test_discovery_payloads_are_exact_and_retained(
    system: System, discovery: Discovery, prefix: str
) -> None:
    base = system.topics.base
    root = f"{base}/hand1"
    device = {
        "identifiers": [f"hand_mqtt_{base}_hand1_hand"],
        "name": f"Robotic hand {root}",
        "manufacturer": "hand-mqtt",
        "model": "5-servo robotic hand",
        "sw_version": __version__,
    }
    common = {
        "availability": _expected_availability(system.topics),
        "availability_mode": "all",
        "device": device,
        "origin": {"name": "hand-mqtt", "sw_version": __version__},
        "qos": 1,
    }
    expected: dict[str, Any] = {
        f"{prefix}/number/{base}_hand1_{finger}/config": {
            "name": finger.capitalize(),
            "unique_id": f"hand_mqtt_{base}_hand1_{finger}",
            "default_entity_id": f"number.{base}_hand1_{finger}",
            "command_topic": f"{root}/{finger}/set",
            "command_template": "{{ value | int }}",
            "state_topic": f"{root}/{finger}",
            "min": 0,
            "max": 180,
            "step": 1,
            "mode": "slider",
            "unit_of_measurement": "°",
            **common,
        }
        for finger in FINGERS
    }
    expected[f"{prefix}/select/{base}_hand1_pose/config"] = {
        "name": "Pose",
        "unique_id": f"hand_mqtt_{base}_hand1_pose",
        "default_entity_id": f"select.{base}_hand1_pose",
        "command_topic": f"{root}/pose/set",
        "state_topic": f"{root}/state",
        "value_template": (
            "{{ value_json.gesture.name if value_json.gesture "
            "else (value_json.pose if value_json.pose else 'None') }}"
        ),
        "options": [*BUILTIN_POSES, "count", "wave"],
        **common,
    }
    for suffix, name, press in (
        ("relax", "Relax", '{"relax": true}'),
        ("stop", "Stop", '{"lock": true}'),
        ("unlock", "Unlock", '{"lock": false}'),
    ):
        expected[f"{prefix}/button/{base}_hand1_{suffix}/config"] = {
            "name": name,
            "unique_id": f"hand_mqtt_{base}_hand1_{suffix}",
            "default_entity_id": f"button.{base}_hand1_{suffix}",
            "command_topic": f"{root}/set",
            "payload_press": press,
            **common,
            # A stop needs only the arbiter: it must work while the device is away.
            "availability": _expected_availability(system.topics)[:1],
        }
    assert discovery_configs(system.topics, "hand1", PoseBook(), prefix=prefix) == expected

    recorder, seen = _configs(system.url, prefix)
    recorder.close()
    assert seen == expected
    # Published before this subscriber came: it can only have them because they are retained.
    fresh, again = _configs(system.url, prefix)
    try:
        assert again == expected
        assert {m.topic for m in fresh.messages if m.retain} == set(expected)
    finally:
        fresh.close()


def test_advertised_command_topics_move_the_hand(
    system: System, discovery: Discovery, prefix: str
) -> None:
    base = system.topics.base
    recorder, seen = _configs(system.url, prefix)
    recorder.close()
    number = seen[f"{prefix}/number/{base}_hand1_ring/config"]
    select = seen[f"{prefix}/select/{base}_hand1_pose/config"]
    watcher = Recorder(system.url, number["state_topic"], select["state_topic"])
    client = system.client("home-assistant")
    try:
        # What Home Assistant sends for a slider at 42 after the command_template.
        client.publish(number["command_topic"], "42")
        system.wait_hand((180, 180, 42, 180, 180))
        wait_until(lambda: any(m.payload == b"42" for m in watcher.on(number["state_topic"])))

        assert "rockstar" in select["options"]
        client.publish(select["command_topic"], "rockstar")
        system.wait_hand(BUILTIN_POSES["rockstar"])
        wait_until(
            lambda: (watcher.last_json(select["state_topic"]) or {}).get("pose") == "rockstar"
        )
    finally:
        client.stop()
        watcher.close()


def test_the_pose_select_plays_gestures(system: System, discovery: Discovery, prefix: str) -> None:
    recorder, seen = _configs(system.url, prefix)
    recorder.close()
    select = seen[f"{prefix}/select/{system.topics.base}_hand1_pose/config"]
    assert select["options"][-2:] == ["count", "wave"]
    watcher = Recorder(system.url, select["state_topic"])
    client = system.client("home-assistant")
    try:
        client.publish(select["command_topic"], "wave")
        # While it plays the state names the gesture (what the template shows), then the pose.
        wait_until(
            lambda: any(
                (json.loads(m.payload).get("gesture") or {}).get("name") == "wave"
                for m in watcher.on(select["state_topic"])
            )
        )
        wait_until(
            lambda: (
                (watcher.last_json(select["state_topic"]) or {}).get("gesture") is None
                and watcher.last_json(select["state_topic"]).get("pose") == "open"
            )
        )
    finally:
        client.stop()
        watcher.close()


def test_the_buttons_relax_stop_and_unlock(
    system: System, discovery: Discovery, prefix: str
) -> None:
    arbiter = system.arbiter
    assert arbiter is not None
    base = system.topics.base
    recorder, seen = _configs(system.url, prefix)
    recorder.close()
    client = system.client("home-assistant")

    def press(suffix: str) -> None:
        button = seen[f"{prefix}/button/{base}_hand1_{suffix}/config"]
        client.publish(button["command_topic"], button["payload_press"])

    try:
        press("relax")
        wait_until(lambda: len(arbiter.state("hand1").relaxed) == 5, 5, "relaxed")
        press("stop")
        wait_until(lambda: arbiter.state("hand1").locked, 5, "locked")
        press("unlock")
        wait_until(lambda: not arbiter.state("hand1").locked, 5, "unlocked")
    finally:
        client.stop()


def test_home_assistant_birth_republishes(
    system: System, discovery: Discovery, prefix: str
) -> None:
    topic = f"{prefix}/select/{system.topics.base}_hand1_pose/config"
    recorder, _seen = _configs(system.url, prefix)
    client = system.client("home-assistant")
    try:
        before = len(recorder.on(topic))
        published = discovery.published
        client.publish(f"{prefix}/status", "offline")
        client.publish(f"{prefix}/status", "online")
        wait_until(lambda: len(recorder.on(topic)) > before, 5, "configs published again")
        assert discovery.published == published + 1
        assert all(len(recorder.on(t)) > 0 for t in discovery.configs())
    finally:
        client.stop()
        recorder.close()


def test_removal_leaves_no_retained_config(
    system: System, discovery: Discovery, prefix: str, broker: RunningBroker
) -> None:
    recorder, seen = _configs(system.url, prefix)
    recorder.close()
    assert len(seen) == 9
    discovery.stop()

    result = CliRunner().invoke(
        app,
        [
            "homeassistant",
            "remove",
            "--broker",
            broker.url,
            "--base",
            system.topics.base,
            "--discovery-prefix",
            prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(line.split()[-1] for line in result.output.splitlines()) == sorted(seen)

    fresh = Recorder(system.url, f"{prefix}/#")
    try:
        # The recorder's own marker arrived, so any retained message would have too.
        assert [m.topic for m in fresh.messages if m.topic.endswith("/config")] == []
    finally:
        fresh.close()


def test_show_prints_the_configs(topics: Topics) -> None:
    result = CliRunner().invoke(
        app, ["homeassistant", "show", "--base", topics.base, "--hand", "left"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown == discovery_configs(topics, "left", PoseBook())


def test_arbiter_command_announces_hands(
    mosquitto_broker: RunningBroker, topics: Topics, prefix: str
) -> None:
    """``hand-mqtt arbiter --homeassistant`` as a user runs it, in its own process."""
    url = BrokerUrl.parse(mosquitto_broker.url)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hand_mqtt",
            "arbiter",
            "--homeassistant",
            "--discovery-prefix",
            prefix,
            "--hand",
            "left",
            "--hand",
            "right",
        ],
        env={**os.environ, "HAND_MQTT_BROKER": mosquitto_broker.url, "HAND_MQTT_BASE": topics.base},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        recorder, seen = _configs(url, prefix, count=18)
        recorder.close()
        assert sorted(seen) == sorted(
            [*discovery_configs(topics, "left", PoseBook(), prefix=prefix),
             *discovery_configs(topics, "right", PoseBook(), prefix=prefix)]
        )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, err


def test_hands_that_appear_later_are_announced(system: System, prefix: str) -> None:
    """For an arbiter serving every hand: ``refresh`` announces hands as they appear."""
    assert system.arbiter is not None
    hands = ["hand1"]
    attached = Discovery(
        system.arbiter.client, topics=system.topics, hands=lambda: list(hands), prefix=prefix
    )
    attached.start()
    recorder, seen = _configs(system.url, prefix)
    try:
        assert len(seen) == 9
        hands.append("hand2")
        attached.refresh()
        wait_until(
            lambda: len({m.topic for m in recorder.messages if m.payload}) == 18,
            5,
            "the second hand's configs",
        )
        assert f"{prefix}/select/{system.topics.base}_hand2_pose/config" in {
            m.topic for m in recorder.messages
        }
    finally:
        recorder.close()
        attached.stop()
