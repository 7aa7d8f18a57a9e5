"""Restore before serve: commands wait for the hand's retained state, on any broker's order.

Mosquitto and amqtt deliver retained messages before a client's own sync echo; a clustered
broker may not. A relay in front of the real broker holds back chosen messages to the arbiter
(its retained state, or its sync echo) so that every order is tried without timing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hand_mqtt import Arbiter, BrokerUrl, HandState, MqttClient, Topics
from harness.brokers import RunningBroker
from harness.waiting import wait_until
from tests.support.relay import Hold, HoldingRelay, Relayed
from tests.support.system import Recorder

NEVER = 3600.0
"""A sync grace that never ends within a test: only the retained state can restore the hand."""


class Scene:
    """A broker with retained data, an arbiter behind a relay, and a client that commands."""

    def __init__(self, broker: RunningBroker, topics: Topics) -> None:
        self.broker = broker
        self.url = BrokerUrl.parse(broker.url)
        self.topics = topics
        self.recorder = Recorder(self.url, f"{topics.base}/#")
        self.client = MqttClient(self.url, name="commander")
        self.client.connect()
        self.relay: HoldingRelay | None = None
        self.arbiter: Arbiter | None = None
        self._left: set[bytes] = set()

    def retain(self, hand: str, payload: bytes) -> None:
        """Leave a retained state for ``hand``, as an earlier arbiter (or something worse) did."""
        topic = self.topics.hand(hand).state
        self.client.publish(topic, payload, retain=True, wait=5)
        wait_until(lambda: any(m.payload == payload for m in self.recorder.on(topic)))
        self._left.add(payload)

    def start_arbiter(
        self,
        hold: Hold,
        *,
        hands: list[str] | None = None,
        grace: float = NEVER,
        max_held: int = 1000,
    ) -> Arbiter:
        self.relay = HoldingRelay(self.broker.port, hold)
        client = MqttClient(BrokerUrl.parse(self.relay.url), name="arbiter", sync_grace=grace)
        self.arbiter = Arbiter(
            client, topics=self.topics, hands=hands or ["hand1"], max_held=max_held
        )
        self.arbiter.start()
        return self.arbiter

    def subscribed(self) -> None:
        """Wait until the arbiter's sync echo reached the relay: it follows the subscriptions."""
        assert self.relay is not None
        relay = self.relay
        relay.wait(lambda: any(_sync_echo(m) for m in relay.relayed + relay.held))

    def command(self, hand: str, payload: dict[str, object]) -> None:
        self.client.publish(self.topics.hand(hand).set, json.dumps(payload), qos=1)

    def commands_relayed(self, count: int) -> None:
        """Wait until the relay has passed ``count`` commands to the arbiter."""
        assert self.relay is not None
        relay = self.relay
        relay.wait(lambda: sum(m.topic.endswith("/set") for m in relay.relayed) >= count)

    def states(self, hand: str) -> list[HandState]:
        """The states the arbiter published for ``hand`` (not the ones left for it)."""
        return [
            HandState.model_validate_json(m.payload)
            for m in self.recorder.on(self.topics.hand(hand).state)
            if m.payload not in self._left
        ]

    def errors(self, hand: str) -> list[dict[str, object]]:
        return [json.loads(m.payload) for m in self.recorder.on(self.topics.hand(hand).error)]

    def close(self) -> None:
        if self.arbiter is not None:
            self.arbiter.stop()
        if self.relay is not None:
            self.relay.close()
        self.client.stop()
        self.recorder.close()


@pytest.fixture
def scene(broker: RunningBroker, topics: Topics) -> Iterator[Scene]:
    made = Scene(broker, topics)
    yield made
    made.close()


def _retained(message: Relayed) -> bool:
    return message.retain


def _sync_echo(message: Relayed) -> bool:
    return "/bridge/sync/" in message.topic


def _state(angles: tuple[int, ...], version: int) -> bytes:
    fingers = dict(zip(("index", "middle", "ring", "pinky", "thumb"), angles, strict=True))
    return json.dumps({**fingers, "pose": None, "version": version}).encode()


def test_a_retained_state_that_comes_after_the_echo_is_restored_first(scene: Scene) -> None:
    scene.retain("hand1", _state((10, 20, 30, 40, 50), 7))
    scene.start_arbiter(_retained)
    relay = scene.relay
    assert relay is not None
    scene.subscribed()
    # The echo has overtaken the held retained state, as on a clustered broker.
    assert [m.topic for m in relay.relayed if _sync_echo(m)]
    assert [m.topic for m in relay.held] == [scene.topics.hand("hand1").state]
    scene.command("hand1", {"index": {"delta": 5}, "transaction": "a"})
    scene.command("hand1", {"thumb": 0, "transaction": "b"})
    scene.command("hand1", {"middle": {"delta": -20}, "transaction": "c"})
    scene.commands_relayed(3)
    assert scene.states("hand1") == []  # held: nothing served before the restore
    relay.release()
    wait_until(lambda: len(scene.states("hand1")) == 4, what="restored, then three commands")
    restored, *applied = scene.states("hand1")
    assert (restored.angles, restored.version) == ((10, 20, 30, 40, 50), 7)
    assert [(s.angles, s.version, s.transaction) for s in applied] == [
        ((15, 20, 30, 40, 50), 8, "a"),
        ((15, 20, 30, 40, 0), 9, "b"),
        ((15, 0, 30, 40, 0), 10, "c"),
    ]


def test_without_a_retained_state_held_commands_start_from_open(scene: Scene) -> None:
    arbiter = scene.start_arbiter(_sync_echo, grace=0.05)
    scene.subscribed()
    scene.command("hand1", {"index": {"delta": -30}, "transaction": "a"})
    scene.command("hand1", {"pose": "peace", "transaction": "b"})
    scene.commands_relayed(2)
    assert scene.relay is not None
    scene.relay.release()
    assert arbiter.wait_ready(10)
    wait_until(lambda: len(scene.states("hand1")) == 3, what="open, then two commands")
    assert [(s.angles, s.version) for s in scene.states("hand1")] == [
        ((180, 180, 180, 180, 180), 0),
        ((150, 180, 180, 180, 180), 1),
        ((180, 180, 0, 0, 0), 2),
    ]


def test_hands_are_restored_one_by_one(scene: Scene) -> None:
    """A hand whose state has arrived is served while another still waits for its own."""
    scene.retain("left", _state((1, 2, 3, 4, 5), 3))
    scene.retain("right", _state((6, 7, 8, 9, 10), 4))
    right = scene.topics.hand("right").state
    scene.start_arbiter(lambda m: m.topic == right, hands=["left", "right"])
    scene.subscribed()
    scene.command("left", {"index": 50})
    scene.command("right", {"index": 60})
    wait_until(lambda: len(scene.states("left")) == 2, what="left served")
    assert scene.states("right") == []
    assert scene.relay is not None
    scene.relay.release()
    wait_until(lambda: len(scene.states("right")) == 2, what="right served")
    assert [(s.index, s.version) for s in scene.states("left")] == [(1, 3), (50, 4)]
    assert [(s.index, s.version) for s in scene.states("right")] == [(6, 4), (60, 5)]


def test_commands_beyond_the_hold_limit_are_answered(scene: Scene) -> None:
    scene.start_arbiter(_sync_echo, grace=0.05, max_held=2)
    scene.subscribed()
    for n in range(3):
        scene.command("hand1", {"index": n, "transaction": f"t{n}"})
    wait_until(lambda: scene.errors("hand1"), what="the third command answered")
    [error] = scene.errors("hand1")
    assert error["transaction"] == "t2"
    assert "already holds 2 commands" in str(error["error"])
    assert scene.relay is not None
    scene.relay.release()
    wait_until(lambda: len(scene.states("hand1")) == 3, what="open, then the two held")
    assert [(s.index, s.version) for s in scene.states("hand1")] == [(180, 0), (0, 1), (1, 2)]


def test_an_unreadable_state_is_never_replaced_by_an_open_hand(scene: Scene) -> None:
    scene.retain("hand1", b'{"index": "not an angle", "version": 12}')
    arbiter = scene.start_arbiter(lambda _m: False, hands=["hand1", "hand2"], grace=0.05)
    assert arbiter.wait_ready(10)
    scene.command("hand1", {"pose": "fist", "transaction": "refused"})
    wait_until(lambda: len(scene.errors("hand1")) == 2, what="the state and the command refused")
    about_state, about_command = scene.errors("hand1")
    assert about_state["topic"] == scene.topics.hand("hand1").state
    assert "unreadable" in str(about_state["error"])
    assert about_command["transaction"] == "refused"
    assert "does not serve hand1" in str(about_command["error"])
    # The sentinel: hand2's command goes the same way after hand1's and is served.
    scene.command("hand2", {"pose": "fist"})
    wait_until(lambda: [s.version for s in scene.states("hand2")] == [0, 1])
    assert scene.states("hand1") == []  # hand1 never moved
    assert "hand1" not in arbiter.hands
    # An administrator retains a readable state: hand1 is served from it.
    scene.retain("hand1", _state((90, 90, 90, 90, 90), 12))
    scene.command("hand1", {"index": 0})
    wait_until(lambda: [s.version for s in scene.states("hand1")] == [12, 13])
    assert scene.states("hand1")[-1].angles == (0, 90, 90, 90, 90)


def test_a_state_with_an_unreadable_transaction_keeps_its_angles_and_version(
    scene: Scene,
) -> None:
    payload = _state((77, 180, 0, 0, 180), 41).replace(
        b'"version"', b'"transaction": "\\ud800", "version"'
    )
    scene.retain("hand1", payload)
    arbiter = scene.start_arbiter(lambda _m: False, grace=0.05)
    assert arbiter.wait_ready(10)
    scene.command("hand1", {"thumb": {"delta": -80}})
    wait_until(lambda: len(scene.states("hand1")) == 2)
    assert [(s.angles, s.version) for s in scene.states("hand1")] == [
        ((77, 180, 0, 0, 180), 41),
        ((77, 180, 0, 0, 100), 42),
    ]
    assert "unreadable parts" in str(scene.errors("hand1")[0]["error"])
