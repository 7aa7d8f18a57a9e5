"""`hand-mqtt up` as a user runs it: one process, then mosquitto_pub and `hand-mqtt state`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hand_mqtt import BrokerUrl, HandClient, Reported, Stack, StackSettings, Topics
from harness.brokers import RunningBroker
from harness.waiting import wait_until
from tests.conftest import need
from tests.support.output import OutputLines, banner_port


@pytest.fixture
def up() -> Iterator[tuple[subprocess.Popen[str], int, str, OutputLines]]:
    with _up([sys.executable, "-m", "hand_mqtt"]) as running:
        yield running


@contextmanager
def _up(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], int, str, OutputLines]]:
    # Port 0: the broker takes a free port and the banner says which (no race for a port).
    process = subprocess.Popen(
        [*command, "up", "--port", "0", "--no-live", "--no-web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = OutputLines(process)
    try:
        # The broker listens before the arbiter has subscribed: wait for the banner, which
        # is printed once every part is serving, as a person would.
        banner = output.until("Ctrl-C stops everything.", 30)
        yield process, banner_port(banner), banner, output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _hand_mqtt(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAND_MQTT_BROKER": f"mqtt://127.0.0.1:{port}"}
    return subprocess.run(
        [sys.executable, "-m", "hand_mqtt", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_up_then_mosquitto_pub_moves_the_simulated_hand(
    up: tuple[subprocess.Popen[str], int, str, OutputLines],
) -> None:
    process, port, banner, output = up
    need(shutil.which("mosquitto_pub") is not None, "mosquitto_pub is not installed")
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", "hand/hand1/index/set", "-m", "90", "-q", "1"],
        check=True,
        timeout=10,
    )
    deadline = time.monotonic() + 15
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = _hand_mqtt(port, "state", "--json")
        if done.returncode == 0:
            data = json.loads(done.stdout)
            if data["reported"] and data["reported"]["index"] == 90:
                break
        time.sleep(0.2)
    assert data["desired"]["index"] == 90
    assert data["reported"]["index"] == 90
    assert data["reported"]["link"] == "up"
    assert data["device"] == "online"
    assert data["arbiter"] == "online"
    table = _hand_mqtt(port, "state")
    assert "index" in table.stdout
    process.send_signal(signal.SIGINT)
    said = banner + output.rest()  # to the end: the process has stopped
    assert process.wait(20) == 0
    assert f"broker   mqtt://127.0.0.1:{port} (embedded)" in said
    assert f"-m hand_mqtt pose peace --broker mqtt://127.0.0.1:{port}\n" in said
    assert said.endswith("Ctrl-C stops everything.\n\nstopping…\n")


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_the_banner_commands_work_as_printed(how: str) -> None:
    """Every suggested command, run exactly as printed, from the folder up was started in."""
    script = Path(sys.executable).parent / "hand-mqtt"
    if how == "console script":
        need(script.exists(), "the hand-mqtt console script is not installed")
    command = [str(script)] if how == "console script" else [sys.executable, "-m", "hand_mqtt"]
    with _up(command) as (_process, port, banner, _output):
        tries = banner.split("Try, in another terminal", 1)[1].splitlines()[1:]
        suggested = [line.strip() for line in tries if line.startswith("  ")]
        assert len(suggested) >= 6, banner
        for line in suggested:
            if line.startswith("mosquitto_pub") and shutil.which("mosquitto_pub") is None:
                continue
            assert f"mqtt://127.0.0.1:{port}" in line or f"-p {port}" in line, line
            args = shlex.split(line)
            if "watch" in args:
                args.insert(args.index("watch") + 1, "--for=0.2")
            done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
            assert done.returncode == 0, (line, done.stdout, done.stderr)


def test_a_taken_port_is_one_sentence_with_the_way_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("up", "--port", str(port))
        verbose = _run("up", "--port", str(port), "-v")
        broker = _run("broker", "--port", str(port))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"error: port {port} on 127.0.0.1 is already taken (by another broker, or a second "
        f"hand-mqtt up?): start on another port with --port {port + 1} (make run ARGS='--port "
        f"{port + 1}'), or use the broker that is there with --broker mqtt://127.0.0.1:{port}\n"
    )
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "Errno 98" in verbose.stderr
    assert broker.returncode == 1
    assert broker.stderr.endswith(
        "already taken (by another broker, or a second hand-mqtt up?): "
        "use --port to choose another\n"
    )
    assert "Traceback" not in broker.stderr


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hand_mqtt", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stack_on_an_external_broker(broker: RunningBroker, topics: Topics) -> None:
    """`hand-mqtt up --broker URL`: the same parts, on a broker we did not start."""
    stack = Stack(StackSettings(broker=broker.url, base=topics.base, hand="left"))
    stack.start()
    try:
        assert stack.broker is None
        client = HandClient(BrokerUrl.parse(broker.url), topics=topics, hand="left")
        client.connect(5.0)
        try:
            state = client.pose("okay")
            assert state.pose == "okay"
            wait_until(lambda: (client.snapshot().reported or Reported()).angles == state.angles)
            assert client.snapshot().device == "online"
        finally:
            client.close()
    finally:
        stack.stop()
