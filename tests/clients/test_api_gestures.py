"""Gestures through the Python API: play, wait for the end or for the device, and interruption."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from hand_mqtt import (
    AsyncHandClient,
    BrokerUrl,
    CommandError,
    HandClient,
    HandState,
    NoAnswerError,
    PoseBook,
    Topics,
)
from hand_mqtt.gestures import Gesture, GestureStep
from harness.brokers import MosquittoProcess
from tests.support.system import System

QUICK = Gesture(
    "quick",
    (
        GestureStep((0, 0, 0, 0, 0), 0, 100),
        GestureStep((180, 0, 0, 0, 0), 0, 100),
        GestureStep((180, 180, 0, 0, 0), 0, 100),
    ),
)
SLOW = Gesture("slow", (GestureStep((10, 10, 10, 10, 10), 0, 3000), QUICK.steps[0]))


@pytest.fixture
def system(mosquitto_broker: MosquittoProcess, topics: Topics) -> Iterator[System]:
    poses = PoseBook(gestures={"quick": QUICK, "slow": SLOW})
    running = System(BrokerUrl.parse(mosquitto_broker.url), topics, poses=poses).start()
    yield running
    running.stop()


@pytest.fixture
def hand(system: System) -> Iterator[HandClient]:
    with HandClient(str(system.url), base=system.topics.base) as client:
        yield client


def test_the_client_knows_the_gestures(hand: HandClient) -> None:
    assert set(hand.gestures) == {"count", "wave", "quick", "slow"}
    assert hand.gestures["quick"] == QUICK
    assert hand.gestures["quick"].duration_ms == 300


def test_play_returns_the_first_step(hand: HandClient) -> None:
    first = hand.play("quick", repeat=2)
    assert first.angles == (0, 0, 0, 0, 0)
    assert first.gesture is not None
    assert (first.gesture.name, first.gesture.step, first.gesture.rounds) == ("quick", 1, 2)


def test_play_waits_for_the_end_and_for_the_device(hand: HandClient, system: System) -> None:
    start = hand.state
    assert start is not None
    ended = hand.play("quick", repeat=2, wait="finished")
    assert ended.gesture is None
    assert ended.angles == (180, 180, 0, 0, 0)
    assert ended.version == start.version + 7
    there = hand.play("quick", wait="reported")
    assert hand.reported is not None
    assert hand.reported.angles == there.angles == (180, 180, 0, 0, 0)
    assert hand.reported.version is not None
    assert hand.reported.version >= there.version
    system.wait_hand((180, 180, 0, 0, 0))


@pytest.mark.parametrize("ending", ["pose", "stop"])
def test_a_command_ends_a_gesture_waited_for(hand: HandClient, system: System, ending: str) -> None:
    outcome: list[HandState | Exception] = []

    def play() -> None:
        try:
            outcome.append(hand.play("slow", wait="finished"))
        except CommandError as exc:
            outcome.append(exc)

    with hand.changes() as changes:
        player = threading.Thread(target=play)
        player.start()
        for snapshot in changes:  # the first step is on the wire: now end it
            if snapshot.desired is not None and snapshot.desired.gesture is not None:
                break
        with HandClient(str(system.url), base=system.topics.base, name="other") as other:
            if ending == "pose":
                other.pose("okay")
            else:
                other.stop()
        player.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], CommandError)
    assert "the gesture 'slow' was ended by another command" in str(outcome[0])
    if ending == "stop":
        with pytest.raises(CommandError, match=r"the hand is locked \(emergency stop\)"):
            hand.play("quick")
        assert hand.unlock().locked is False
        assert hand.play("quick", wait="finished").gesture is None


def test_play_refusals_and_timeouts(hand: HandClient) -> None:
    with pytest.raises(CommandError, match="unknown gesture 'salute'; gestures: count, wave"):
        hand.play("salute")
    with pytest.raises(CommandError, match="repeat must be a whole number from 1 to 100"):
        hand.play("quick", repeat=0)
    with pytest.raises(NoAnswerError, match=r"'slow' started at version .* had not finished"):
        hand.play("slow", wait="finished", timeout=0.5)
    with pytest.raises(ValueError, match="wait must be one of"):
        hand.pose("fist", wait="finished")  # type: ignore[arg-type]


def test_async_play(system: System) -> None:
    async def main() -> tuple[HandState, HandState]:
        async with AsyncHandClient(str(system.url), base=system.topics.base) as hand:
            first = await hand.play("quick")
            ended = await hand.play("quick", repeat=3, wait="reported")
            return first, ended

    first, ended = asyncio.run(main())
    assert first.gesture is not None
    assert ended.gesture is None
    assert ended.angles == (180, 180, 0, 0, 0)
