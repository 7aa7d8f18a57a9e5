"""The command line against a running system: exit codes, output, and what reaches the hand."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from hand_mqtt import BrokerUrl, MqttClient, Topics
from hand_mqtt.cli import app
from harness.brokers import RunningBroker, free_port
from tests.support.output import OutputLines
from tests.support.system import System


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


def test_rejected_command_exits_1_with_the_arbiters_sentence(
    system: System, cli: CliRunner
) -> None:
    result = cli.invoke(app, ["pose", "moonwalk"])
    assert result.exit_code == 1
    assert "error: unknown pose 'moonwalk'; known poses: open, fist" in result.output
    assert system.state().version == 0


def test_negative_numbers_are_values(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["nudge", "thumb", "-15"])
    assert result.exit_code == 0, result.output
    assert "thumb 165" in result.output
    result = cli.invoke(app, ["nudge", "--timeout", "5", "index", "-30", "-v"])
    assert result.exit_code == 0, result.output
    system.wait_hand((150, 180, 180, 180, 165))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "elbow", "90"], "error: unknown finger 'elbow'; fingers are index, middle"),
        (["set", "index", "-5"], "error: index: -5 is out of range (an angle is 0 to 180)"),
        (["set", "index", "200"], "error: index: 200 is out of range (an angle is 0 to 180)"),
        (["set", "index", "90.5"], "index: an angle must be a whole number of degrees"),
        (["set", "index", "-5", "--hand", "left"], "index: -5 is out of range"),
        (["nudge", "index", "lots"], "index: a delta must be a whole number of degrees"),
        (["nudge", "index", "-200"], "index: a delta of -200 is out of range (-180 to +180)"),
        (["angles", "1", "2", "3"], "error: give five values (index middle ring pinky thumb)"),
        (["angles", "-5", "2", "3", "4", "x"], "index: -5 is out of range"),
        (["angles", "1", "2", "3", "4", "x"], "thumb: an angle must be a whole number"),
        (["state", "--hand", "bad name"], "error: hand name 'bad name' must be 1-64 letters"),
        (["set", "index", "--brokr", "x", "5"], "No such option: --brokr"),
    ],
)
def test_usage_errors_exit_2_without_a_broker(args: list[str], message: str) -> None:
    """Checked before anything is sent: no broker runs here, and none is needed."""
    result = CliRunner().invoke(app, [*args, "--broker", "mqtt://127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_numbers_follow_the_rule_of_every_command_form(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["set", "index", "90.0"])
    assert result.exit_code == 0, result.output
    assert "index 90" in result.output
    result = cli.invoke(app, ["angles", "+10", "-", "0", "-", "180.00"])
    assert result.exit_code == 0, result.output
    system.wait_hand((10, 180, 0, 180, 180))


def test_a_hand_the_arbiter_does_not_serve_is_named_at_once(
    system: System, broker: RunningBroker, cli: CliRunner
) -> None:
    expected = f"error: the arbiter at {broker.url} serves hand1, not hand2"
    result = cli.invoke(app, ["state", "--hand", "hand2", "--timeout", "30"])
    assert result.exit_code == 3
    assert f"error: no state for {system.topics.base}/hand2 on the broker: " in result.output
    assert f"the arbiter at {broker.url} serves hand1, not hand2" in result.output
    result = cli.invoke(app, ["set", "index", "90", "--hand", "hand2", "--timeout", "30"])
    assert result.exit_code == 3
    assert expected in result.output
    assert "choose that hand with --hand" in result.output


def test_no_arbiter_is_said_at_once(broker: RunningBroker, cli: CliRunner) -> None:
    result = cli.invoke(app, ["pose", "peace", "--timeout", "30"])
    assert result.exit_code == 3
    assert "error: no arbiter is running for the base topic" in result.output
    assert "never started" in result.output
    assert "; start one with 'hand-mqtt up' or 'hand-mqtt arbiter'" in result.output


def test_stopped_arbiter_is_said_at_once(system: System, cli: CliRunner) -> None:
    assert system.arbiter is not None
    system.arbiter.stop()
    result = cli.invoke(app, ["pose", "peace", "--timeout", "30"])
    assert result.exit_code == 3
    assert "(its bridge/state: says offline)" in result.output


def test_an_arbiter_that_does_not_answer_times_out(
    broker: RunningBroker, topics: Topics, cli: CliRunner
) -> None:
    """An arbiter that says it is online but never answers: the timeout still applies."""
    client = MqttClient(BrokerUrl.parse(broker.url), name="fake-arbiter")
    client.connect()
    try:
        client.publish(topics.bridge_state, b"online", retain=True, wait=5)
        result = cli.invoke(app, ["pose", "peace", "--timeout", "2"])
        assert result.exit_code == 4
        assert "no answer from the arbiter within 2 s" in result.output
    finally:
        client.publish(topics.bridge_state, b"", retain=True, wait=5)
        client.stop()


def test_refused_connection_is_said_at_once_with_the_way_out() -> None:
    """With --timeout 30 the slow path would say 'no answer'; the refusal is known at once."""
    port = free_port()
    for args in (["state"], ["pose", "peace"], ["watch"], ["health", "arbiter"]):
        result = CliRunner().invoke(
            app, [*args, "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "30"]
        )
        code = 1 if args[0] == "health" else 4
        assert result.exit_code == code, (args, result.output)
        assert (
            f"error: could not connect to the broker at mqtt://127.0.0.1:{port}: nothing is "
            "listening there (connection refused); start the system with '"
        ) in result.output, args
        assert "(or 'make run' in a checkout), or give the broker's address with --broker" in (
            result.output
        )
        assert "Traceback" not in result.output


def test_a_broker_that_never_answers_gets_the_whole_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = CliRunner().invoke(
            app, ["state", "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "0.5"]
        )
    assert result.exit_code == 4
    assert f"could not connect to the broker at mqtt://127.0.0.1:{port}: no answer" in (
        result.output
    )


def test_verbose_shows_the_traceback_of_an_error() -> None:
    port = free_port()
    result = CliRunner().invoke(app, ["state", "-v", "--broker", f"mqtt://127.0.0.1:{port}"])
    assert result.exit_code == 4
    assert "Traceback (most recent call last)" in result.output
    assert "ConnectionRefusedError" in result.output


def test_state_json_names_the_hand(system: System, cli: CliRunner) -> None:
    result = cli.invoke(app, ["state", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["base"] == system.topics.base
    assert data["hand"] == "hand1"


def test_watch_starts_with_one_complete_line_and_shows_rejections(
    system: System, broker: RunningBroker
) -> None:
    """Not a terminal (a pipe): plain lines, one per change and one per rejection."""
    system.wait_reported((180, 180, 180, 180, 180))
    root = f"{system.topics.base}/hand1"
    with _watching(broker, system.topics, "watch") as watch:
        first = watch.line()
        assert first.endswith(
            f" {root} desired 180 180 180 180 180 open v0 | reported 180 180 180 180 180 "
            "link up | arbiter online, device online"
        ), first
        other = system.client("other")
        try:
            # Another client's commands while watch runs: one rejected, then one applied.
            other.publish(system.hand_topics.finger_set("index"), b"999")
            other.publish(system.hand_topics.finger_set("index"), b"90")
            rejection = watch.line()
            assert rejection.endswith(
                f" {root} rejected 999 on {root}/index/set: index: 999 is out of range "
                "(an angle is 0 to 180)"
            ), rejection
            # The rejection changed no state, so no state line repeats before the next one.
            assert " desired 90 180 180 180 180 v1 " in watch.line()
        finally:
            other.stop()


def test_watch_json_names_the_hand_and_reports_rejections(
    system: System, broker: RunningBroker
) -> None:
    with _watching(broker, system.topics, "watch", "--json") as watch:
        first = json.loads(watch.line())
        assert first["base"] == system.topics.base
        assert first["hand"] == "hand1"
        assert first["desired"]["version"] == 0
        other = system.client("other")
        try:
            other.publish(system.hand_topics.pose_set, b"moonwalk")
            line = json.loads(watch.line())
            while "error" not in line:  # the device may still report its first state
                line = json.loads(watch.line())
        finally:
            other.stop()
    assert line["hand"] == "hand1"
    assert line["error"]["error"].startswith("unknown pose 'moonwalk'")
    assert line["error"]["topic"] == system.hand_topics.pose_set


@contextmanager
def _watching(broker: RunningBroker, topics: Topics, *args: str) -> Iterator[OutputLines]:
    env = {**os.environ, "HAND_MQTT_BROKER": broker.url, "HAND_MQTT_BASE": topics.base}
    process = subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield OutputLines(process)
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


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


def test_watch_says_when_no_arbiter_serves_the_hand_and_watches_anyway(
    system: System, broker: RunningBroker, cli: CliRunner
) -> None:
    result = cli.invoke(app, ["watch", "--hand", "hand2", "--for", "0.2"])
    assert result.exit_code == 0
    assert f"note: the arbiter at {broker.url} serves hand1, not hand2" in result.stderr
    assert f"{system.topics.base}/hand2 desired - - - - -" in result.stdout
