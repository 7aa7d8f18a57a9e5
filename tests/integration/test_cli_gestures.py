"""``hand-mqtt play`` and ``hand-mqtt record``: play a gesture, record one and play it back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt import BrokerUrl, HandClient, PoseBook, Topics
from hand_mqtt.cli import app
from hand_mqtt.gestures import Gesture, GestureStep, recorded_gesture
from harness.brokers import MosquittoProcess
from tests.support.system import System

QUICK = Gesture("quick", (GestureStep((0, 0, 0, 0, 0), 0, 100), GestureStep((90,) * 5, 0, 100)))


@pytest.fixture
def system(mosquitto_broker: MosquittoProcess, topics: Topics) -> Iterator[System]:
    poses = PoseBook(gestures={"quick": QUICK})
    running = System(BrokerUrl.parse(mosquitto_broker.url), topics, poses=poses).start()
    yield running
    running.stop()


@pytest.fixture
def cli(system: System) -> CliRunner:
    return CliRunner(
        env={"HAND_MQTT_BROKER": str(system.url), "HAND_MQTT_BASE": system.topics.base}
    )


def test_play(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["play", "quick", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    assert "playing quick (2 steps, 0.4 s); step 1 version 1" in result.output
    result = cli.invoke(app, ["play", "quick", "--wait"])
    assert result.exit_code == 0, result.output
    assert "played quick; index 90  middle 90  ring 90  pinky 90  thumb 90" in result.output
    system.wait_hand((90,) * 5)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["play", "salute"], 1, "unknown gesture 'salute'; gestures: count, wave, quick"),
        (["play", "count", "--repeat", "0"], 2, "--repeat"),
        (["play", "count", "--repeat", "101"], 2, "--repeat"),
        (["record", "x.toml"], 2, "--name"),
        (["record", "x.toml", "--name", "Bad Name"], 2, "gesture name 'Bad Name' must be"),
    ],
)
def test_gesture_command_errors(
    cli: CliRunner,
    args: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # back where it was after the test, for the tests that follow
    result = cli.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_record_refuses_a_name_the_file_has(cli: CliRunner, tmp_path: Path) -> None:
    file = tmp_path / "poses.toml"
    file.write_text("[poses]\nclaw = [90, 90, 90, 90, 90]\n")
    result = cli.invoke(app, ["record", str(file), "--name", "claw", "--for", "0"])
    assert result.exit_code == 2  # the file it names is wrong for that name
    assert "already has a pose or gesture called 'claw'" in result.output
    result = cli.invoke(app, ["record", str(file), "--name", "hi", "--for", "0"])
    assert result.exit_code == 1
    assert "nothing to record" in result.output
    assert file.read_text() == "[poses]\nclaw = [90, 90, 90, 90, 90]\n"


def test_record_then_play_back(system: System, tmp_path: Path) -> None:
    file = tmp_path / "poses.toml"
    file.write_text("# my poses\n[poses]\nclaw = [90, 90, 90, 90, 90]\n")
    env = {
        **os.environ,
        "HAND_MQTT_BROKER": str(system.url),
        "HAND_MQTT_BASE": system.topics.base,
        "PYTHONUNBUFFERED": "1",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", "record", str(file), "--name", "hi", "--steps", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as recorder:
        try:
            assert recorder.stderr is not None
            assert recorder.stderr.readline().startswith("recording ")
            with HandClient(str(system.url), base=system.topics.base) as hand:
                # The timing between the changes is what the gesture keeps.
                hand.pose("fist")
                time.sleep(0.2)
                hand.pose("peace")
                time.sleep(1.0)
                hand.angles([10, 20, 30, 40, 50])
            out, err = recorder.communicate(timeout=30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
    assert recorder.returncode == 0, err
    assert "saved 'hi': 3 steps" in out
    text = file.read_text()
    assert text.startswith("# my poses\n[poses]\nclaw = [90, 90, 90, 90, 90]\n\n# recorded from ")
    hi = PoseBook.from_file(file).gestures["hi"]
    assert [step.angles for step in hi.steps] == [
        (0, 0, 0, 0, 0),
        (180, 180, 0, 0, 0),
        (10, 20, 30, 40, 50),
    ]
    assert hi.steps[1].hold_ms > hi.steps[0].hold_ms  # a second against a fifth

    # Played back by an arbiter that reads the file.
    assert system.arbiter is not None
    system.arbiter.stop()
    system.poses = PoseBook.from_file(file)
    system.start_arbiter()
    with HandClient(str(system.url), base=system.topics.base) as hand:
        hand.pose("open")
        with hand.changes() as changes:
            ended = hand.play("hi", wait="reported")
            steps = {
                s.desired.version: s.desired.angles
                for s in changes.pending()
                if s.desired is not None and s.desired.gesture is not None
            }
    assert ended.angles == (10, 20, 30, 40, 50)
    assert [steps[version] for version in sorted(steps)] == [step.angles for step in hi.steps]
    system.wait_hand((10, 20, 30, 40, 50))


def test_recorded_timing_merges_and_bounds_steps() -> None:
    states = [
        (10.0, (1, 1, 1, 1, 1)),
        (10.5, (1, 1, 1, 1, 1)),  # the same angles again: the step goes on
        (11.0, (2, 2, 2, 2, 2)),
        (11.01, (3, 3, 3, 3, 3)),  # 10 ms later: the hand was on its way to 3
        (11.5, (4, 4, 4, 4, 4)),
        (200.0, (5, 5, 5, 5, 5)),
    ]
    gesture = recorded_gesture("g", states, ended=200.0)
    assert [(s.angles[0], s.move_ms, s.hold_ms) for s in gesture.steps] == [
        (1, 0, 1000),
        (3, 0, 500),
        (4, 0, 60000),  # at most a minute per step
        (5, 0, 50),  # the last step at least the shortest a step may be
    ]
    assert PoseBook(gestures={"g": gesture}).gestures["g"] == gesture
