"""The programs in examples/ run as a user runs them, against Mosquitto, the arbiter, the device
service and the simulated hand."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hand_mqtt import BrokerUrl, Topics
from harness.brokers import MosquittoProcess
from tests.support.system import System

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def system(mosquitto_broker: MosquittoProcess, topics: Topics) -> Iterator[System]:
    running = System(BrokerUrl.parse(mosquitto_broker.url), topics).start()
    yield running
    running.stop()


def _env(system: System) -> dict[str, str]:
    return {
        **os.environ,
        "HAND_MQTT_BROKER": str(system.url),
        "HAND_MQTT_BASE": system.topics.base,
        "HAND_MQTT_HAND": system.hand_name,
        "PYTHONUNBUFFERED": "1",
    }


def _run(system: System, name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=_env(system),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    return done.stdout


def test_every_example_is_tested() -> None:
    tested = {"hello_hand.py", "async_hand.py", "follow_changes.py", "gestures.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_hello_hand(system: System) -> None:
    out = _run(system, "hello_hand.py")
    assert "refused: ring: 500 is out of range (an angle is 0 to 180)" in out
    assert "done at (180, 0, 0, 180, 180) online: True" in out
    system.wait_hand((180, 0, 0, 180, 180))


def test_async_hand(system: System) -> None:
    out = _run(system, "async_hand.py")
    assert out.splitlines()[-1] == "done at (180, 180, 0, 0, 0)"
    assert "desired (0, 0, 0, 0, 0) version 1" in out
    system.wait_hand((180, 180, 0, 0, 0))


def test_gestures(system: System) -> None:
    out = _run(system, "gestures.py").splitlines()
    assert out[0] == "gestures: count, wave"
    assert out[1:7] == [
        "step 1 of 5: (180, 180, 180, 180, 180)",
        "step 2 of 5: (90, 90, 90, 90, 180)",
        "step 3 of 5: (180, 180, 180, 180, 180)",
        "step 4 of 5: (90, 90, 90, 90, 180)",
        "step 5 of 5: (180, 180, 180, 180, 180)",
        "finished at (180, 180, 180, 180, 180)",
    ]
    assert out[7] == "count ended by a pose: peace None"
    assert out[8] == "count finished, reported (180, 180, 180, 180, 180)"


def test_follow_changes(system: System) -> None:
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "follow_changes.py"), "4"],
        env=_env(system),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline().startswith("following ")
            sender = system.client("sender")
            sender.publish(system.hand_topics.set, b'{"pose": "unknown"}')
            deadline = time.monotonic() + 30
            poses = ("fist", "open")
            sent = 0
            # Keep the hand moving until the follower has seen its four changes and exits.
            while follower.poll() is None and time.monotonic() < deadline:
                sender.publish(system.hand_topics.pose_set, poses[sent % 2].encode())
                sent += 1
                time.sleep(0.05)
            sender.stop()
            out, err = follower.communicate(timeout=10)
        finally:
            if follower.poll() is None:
                follower.kill()
    assert follower.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0] == "refused: unknown pose 'unknown'; known poses: " + ", ".join(
        ["open", "fist", "peace", "rockstar", "okay", "point", "phone"]
    )
    assert any(line.startswith("desired (0, 0, 0, 0, 0)") for line in lines)
