"""Gestures played by the arbiter: the states on the wire, their timing, and what ends them.

Timing is checked the way a loaded machine cannot break: no step ever arrives before its time
(counted from before the command was sent), and the whole play ends within a generous bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hand_mqtt import BrokerUrl, HandState, Message, MqttClient, PoseBook, Topics
from hand_mqtt.gestures import BUILTIN_GESTURES, Gesture, GestureStep
from harness.waiting import wait_until
from tests.support.system import Recorder, System

QUICK = Gesture(
    "quick",
    (
        GestureStep((0, 0, 0, 0, 0), 0, 150, "fist"),
        GestureStep((180, 0, 0, 0, 0), 100, 100),
        GestureStep((180, 180, 0, 0, 0), 50, 150, "peace"),
        GestureStep((None, None, None, None, 90), 0, 200),
    ),
)
SLOW = Gesture(
    "slow",
    (
        GestureStep((10, 10, 10, 10, 10), 0, 400),
        GestureStep((20, 20, 20, 20, 20), 0, 400),
        GestureStep((30, 30, 30, 30, 30), 0, 400),
    ),
)
QUICK_ANGLES = [
    (0, 0, 0, 0, 0),
    (180, 0, 0, 0, 0),
    (180, 180, 0, 0, 0),
    (180, 180, 0, 0, 90),
]


@dataclass(frozen=True)
class Seen:
    at: float
    state: HandState


class StateLog:
    """Every state the arbiter publishes for one hand, with when it arrived here."""

    def __init__(self, url: BrokerUrl, topic: str) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.client = MqttClient(url, name="states")
        ready = threading.Event()
        self.client.subscribe(topic, self._keep)
        self.client.subscribe(f"{topic}/ready", lambda _m: ready.set())
        self.client.connect()
        self.client.publish(f"{topic}/ready", b"x")
        assert ready.wait(10)

    def _keep(self, message: Message) -> None:
        with self._lock:
            self.seen.append(Seen(time.monotonic(), HandState.model_validate_json(message.payload)))

    def of(self, transaction: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.state.transaction == transaction]

    def wait_for(self, transaction: str, *, ended: bool = True, timeout: float = 20) -> list[Seen]:
        """The states of ``transaction`` once one arrived (without a gesture, if ``ended``)."""
        wait_until(
            lambda: any(not ended or s.state.gesture is None for s in self.of(transaction)),
            timeout,
            f"a state of {transaction}",
        )
        return self.of(transaction)

    def close(self) -> None:
        self.client.stop()


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    poses = PoseBook(gestures={"quick": QUICK, "slow": SLOW})
    running = System(broker_url, topics, poses=poses).start()
    yield running
    running.stop()


@pytest.fixture
def states(system: System) -> Iterator[StateLog]:
    log = StateLog(system.url, system.hand_topics.state)
    yield log
    log.close()


def _send(system: System, payload: dict[str, object], topic: str | None = None) -> float:
    client = system.client("sender")
    sent = time.monotonic()
    client.publish(topic or system.hand_topics.set, json.dumps(payload), wait=5)
    client.stop()
    return sent


def test_every_step_is_an_ordinary_state_with_its_version(system: System, states: StateLog) -> None:
    before = system.state().version
    sent = _send(system, {"gesture": "quick", "repeat": 2, "transaction": "g"})
    seen = states.wait_for("g")
    played = [s.state for s in seen]
    assert [s.angles for s in played] == QUICK_ANGLES * 2 + [QUICK_ANGLES[-1]]
    assert [s.version for s in played] == list(range(before + 1, before + 10))
    assert [
        (g.name, g.step, g.steps, g.round, g.rounds) if (g := s.gesture) else None for s in played
    ] == [("quick", step, 4, rnd, 2) for rnd in (1, 2) for step in (1, 2, 3, 4)] + [None]
    assert [s.pose for s in played[:4]] == ["fist", None, "peace", None]
    # Each step's move is a timed move; the end moves nothing.
    assert [s.duration_ms for s in played] == [None, 100, 50, None] * 2 + [None]
    # The per-finger topics and the hand follow like after any command.
    system.wait_hand(QUICK_ANGLES[-1])
    assert system.state() == played[-1]
    # Timing: no step before its time, counted from before the command left; the steps are
    # due from the start of the play, so lateness does not pile up from step to step.
    due = [0.0, 0.15, 0.35, 0.55, 0.75, 0.9, 1.1, 1.3, 1.5]
    for arrived, at in zip(seen, due, strict=True):
        assert arrived.at - sent >= at
    assert seen[-1].at - sent < due[-1] + max(1.0, due[-1])


def test_the_builtin_count_plays_from_the_pose_topic(system: System, states: StateLog) -> None:
    """Home Assistant's select publishes a name on the pose topic: a gesture's name plays it."""
    sent = _send(system, {"pose": "count", "transaction": "c"}, system.hand_topics.pose_set)
    seen = states.wait_for("c")
    count = BUILTIN_GESTURES["count"]
    assert [s.state.angles for s in seen] == [step.angles for step in count.steps] + [
        count.steps[-1].angles
    ]
    assert seen[-1].at - sent >= count.duration_ms / 1000
    assert system.state().pose == "open"


def test_a_command_ends_the_gesture_at_once(system: System, states: StateLog) -> None:
    _send(system, {"gesture": "slow", "transaction": "s"})
    states.wait_for("s", ended=False)
    _send(system, {"pose": "okay", "transaction": "c"})
    okay = states.wait_for("c")[0].state
    assert okay.angles == (0, 180, 180, 180, 0)
    assert okay.gesture is None
    # Past the time the next steps were due, a sentinel on the same path: nothing came between.
    time.sleep(0.9)
    _send(system, {"pose": "phone", "transaction": "sentinel"})
    states.wait_for("sentinel")
    assert len(states.of("s")) == 1
    assert [s.state.transaction for s in states.seen[-2:]] == ["c", "sentinel"]


def test_an_emergency_stop_ends_the_gesture_and_refuses_new_ones(
    system: System, states: StateLog
) -> None:
    errors = Recorder(system.url, system.hand_topics.error)
    try:
        _send(system, {"gesture": "slow", "transaction": "s"})
        states.wait_for("s", ended=False)
        _send(system, {"lock": True, "transaction": "stop"})
        stopped = states.wait_for("stop")[0].state
        assert stopped.locked
        assert stopped.gesture is None
        assert stopped.angles == SLOW.steps[0].angles
        _send(system, {"gesture": "quick", "transaction": "refused"})
        wait_until(lambda: errors.on(system.hand_topics.error), what="the refusal")
        assert (
            "the hand is locked"
            in json.loads(errors.on(system.hand_topics.error)[0].payload)["error"]
        )
        # Past the time the next step was due, a sentinel: the stopped gesture stayed stopped.
        time.sleep(0.5)
        _send(system, {"lock": False, "transaction": "sentinel"})
        states.wait_for("sentinel")
        assert len(states.of("s")) == 1
        assert states.of("refused") == []
    finally:
        errors.close()


def test_a_refused_command_leaves_the_gesture_playing(system: System, states: StateLog) -> None:
    _send(system, {"gesture": "quick", "transaction": "q"})
    states.wait_for("q", ended=False)
    _send(system, {"pose": "salute"})
    assert [s.state.angles for s in states.wait_for("q")] == [*QUICK_ANGLES, QUICK_ANGLES[-1]]


def test_a_new_gesture_replaces_the_one_playing(system: System, states: StateLog) -> None:
    _send(system, {"gesture": "slow", "transaction": "first"})
    states.wait_for("first", ended=False)
    _send(system, {"gesture": "quick", "transaction": "second"})
    assert len(states.wait_for("second")) == 5
    assert len(states.of("first")) == 1


def test_an_arbiter_restart_does_not_resume_a_gesture(system: System, states: StateLog) -> None:
    _send(system, {"gesture": "slow", "transaction": "s"})
    first = states.wait_for("s", ended=False)[0].state
    assert system.arbiter is not None
    system.arbiter.stop()
    system.start_arbiter()
    # The restored state says no gesture is playing, at the step the old arbiter had reached.
    restored = states.wait_for("s")[-1].state
    assert restored.gesture is None
    assert restored.angles == first.angles
    time.sleep(0.9)
    _send(system, {"pose": "phone", "transaction": "sentinel"})
    states.wait_for("sentinel")
    assert [s.state.angles for s in states.of("s")] == [first.angles] * len(states.of("s"))


def test_gestures_are_announced_on_the_bridge(system: System) -> None:
    client = MqttClient(system.url, name="reader")
    found: list[bytes] = []
    got = threading.Event()

    def keep(message: Message) -> None:
        found.append(message.payload)
        got.set()

    client.subscribe(system.topics.bridge_gestures, keep)
    client.connect()
    try:
        assert got.wait(10)
    finally:
        client.stop()
    announced = json.loads(found[-1])
    assert set(announced) == {"count", "wave", "quick", "slow"}
    assert announced["quick"] == {
        "steps": [
            {"pose": "fist", "angles": [0, 0, 0, 0, 0], "move_ms": 0, "hold_ms": 150},
            {"pose": None, "angles": [180, 0, 0, 0, 0], "move_ms": 100, "hold_ms": 100},
            {"pose": "peace", "angles": [180, 180, 0, 0, 0], "move_ms": 50, "hold_ms": 150},
            {"pose": None, "angles": [None, None, None, None, 90], "move_ms": 0, "hold_ms": 200},
        ],
        "duration_ms": 750,
    }
