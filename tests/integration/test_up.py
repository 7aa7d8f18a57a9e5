"""`hand-mqtt up` as a user runs it: one process, then mosquitto_pub and `hand-mqtt state`."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hand_mqtt import BrokerUrl, HandClient, Reported, Stack, StackSettings, Topics
from tests.conftest import need
from tests.support.brokers import RunningBroker, free_port, wait_for_port
from tests.support.system import wait_until


@pytest.fixture
def up() -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", "up", "--port", str(port), "--no-live", "--no-web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, 20)
        # The broker listens before the arbiter has subscribed: wait for the banner, which
        # is printed once every part is serving, as a person would.
        banner = _read_until(process, "hand-mqtt is up", 30)
        yield process, port, banner
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_until(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return "".join(seen)
    raise AssertionError(f"hand-mqtt up never said {text!r}: {''.join(seen)}")


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
    up: tuple[subprocess.Popen[str], int, str],
) -> None:
    process, port, banner = up
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
    assert process.stdout is not None
    output = banner + process.stdout.read()  # to the end: the process has stopped
    assert process.wait(20) == 0
    assert f"broker   mqtt://127.0.0.1:{port} (embedded)" in output
    assert "hand-mqtt pose peace" in output


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
