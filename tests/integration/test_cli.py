"""The command line against a running system: exit codes, output, and what reaches the hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from hand_mqtt import BrokerUrl, Topics
from hand_mqtt.cli import app
from tests.support.brokers import RunningBroker
from tests.support.system import System


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


@pytest.fixture
def cli(broker: RunningBroker, topics: Topics) -> CliRunner:
    return CliRunner(env={"HAND_MQTT_BROKER": broker.url, "HAND_MQTT_BASE": topics.base})


def test_set_nudge_pose_angles(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["set", "index", "90"])
    assert result.exit_code == 0, result.output
    assert "index 90" in result.output
    system.wait_hand((90, 180, 180, 180, 180))

    result = cli.invoke(app, ["nudge", "index", "-15"])
    assert result.exit_code == 0, result.output
    system.wait_hand((75, 180, 180, 180, 180))

    result = cli.invoke(app, ["nudge", "thumb", "+15"])
    assert result.exit_code == 0, result.output
    assert "thumb 180" in result.output  # clamped

    result = cli.invoke(app, ["pose", "peace"])
    assert result.exit_code == 0, result.output
    assert "pose peace" in result.output
    system.wait_hand((180, 180, 0, 0, 0))

    result = cli.invoke(app, ["angles", "10", "-", "20", "-", "30"])
    assert result.exit_code == 0, result.output
    system.wait_hand((10, 180, 20, 0, 30))
    system.wait_reported((10, 180, 20, 0, 30))


def test_state_shows_desired_and_reported(system: System, cli: CliRunner) -> None:
    assert cli.invoke(app, ["pose", "point"]).exit_code == 0
    system.wait_reported((180, 0, 0, 0, 180))
    result = cli.invoke(app, ["state", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["desired"]["pose"] == "point"
    assert data["reported"]["index"] == 180
    assert data["reported"]["link"] == "up"
    assert data["device"] == "online"
    assert data["arbiter"] == "online"
    table = cli.invoke(app, ["state"])
    assert table.exit_code == 0
    assert "device: online (link up" in table.output
    assert "pose point" in table.output


def test_rejected_command_exits_non_zero_with_the_sentence(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["set", "index", "200"])
    assert result.exit_code == 1
    assert "index: 200 is out of range" in result.output
    result = cli.invoke(app, ["pose", "moonwalk"])
    assert result.exit_code == 1
    assert "unknown pose 'moonwalk'" in result.output
    assert system.state().version == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "elbow", "90"], "unknown finger 'elbow'"),
        (["nudge", "index", "lots"], "not a whole number"),
        (["angles", "1", "2", "3"], "give five values"),
        (["angles", "1", "2", "3", "4", "x"], "thumb: 'x' is not an angle"),
    ],
)
def test_usage_errors(cli: CliRunner, args: list[str], message: str) -> None:
    result = cli.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_no_arbiter_times_out(broker: RunningBroker, cli: CliRunner) -> None:
    result = cli.invoke(app, ["pose", "peace", "--timeout", "0.5"])
    assert result.exit_code == 1
    assert "no answer from the arbiter" in result.output


def test_unreachable_broker(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["pose", "peace", "--broker", "mqtt://127.0.0.1:1", "--timeout", "0.5"]
    )
    assert result.exit_code == 1
    assert "could not connect" in result.output


def test_watch_prints_changes(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["watch", "--for", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.output.splitlines()[0])
    assert first["desired"]["version"] == 0


def test_console_entry_point(system: System, broker: RunningBroker, topics: Topics) -> None:
    env = {**os.environ, "HAND_MQTT_BROKER": broker.url, "HAND_MQTT_BASE": topics.base}
    done = subprocess.run(
        [sys.executable, "-m", "hand_mqtt", "pose", "rockstar"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    system.wait_hand((180, 0, 0, 180, 180))


def test_relax_stop_unlock_and_timed_poses(system: System, cli: CliRunner) -> None:
    arbiter = system.arbiter
    assert arbiter is not None
    result = cli.invoke(app, ["pose", "fist", "--duration", "0.8"])
    assert result.exit_code == 0, result.output
    assert arbiter.state("hand1").duration_ms == 800
    result = cli.invoke(app, ["relax", "thumb", "index", "thumb"])
    assert result.exit_code == 0, result.output
    assert "relaxed index,thumb" in result.output
    result = cli.invoke(app, ["relax", "elbow"])
    assert result.exit_code == 2
    assert "unknown finger 'elbow'" in result.output
    result = cli.invoke(app, ["stop"])
    assert result.exit_code == 0, result.output
    assert "relaxed index,middle,ring,pinky,thumb  LOCKED" in result.output
    result = cli.invoke(app, ["pose", "open"])
    assert result.exit_code == 1
    assert "the hand is locked (emergency stop)" in result.output
    result = cli.invoke(app, ["unlock"])
    assert result.exit_code == 0, result.output
    assert "LOCKED" not in result.output
    result = cli.invoke(app, ["angles", "0", "-", "-", "-", "0", "--duration", "0"])
    assert result.exit_code == 0, result.output
    assert "relaxed middle,ring,pinky" in result.output
    result = cli.invoke(app, ["relax"])
    assert result.exit_code == 0, result.output
    assert "relaxed index,middle,ring,pinky,thumb" in result.output
    result = cli.invoke(app, ["pose", "fist", "--duration", "61"])
    assert result.exit_code == 2
