"""`hand-mqtt up --emulate` as a user runs it: the whole system on the real firmware in simavr.

One process runs the embedded broker, the arbiter, the device service and the emulated Uno
(realtime, reset when its port opens); mosquitto_pub sends a command and `hand-mqtt state
--json` shows desired and reported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.brokers import free_port, wait_for_port
from tests.conftest import need

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

ROOT = Path(__file__).resolve().parents[2]


_QUIET = ("--no-live", "--no-web")  # no live view, no web page


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture
def up(sim_runner: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", "up", "--emulate", "--port", str(port), *_QUIET],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        wait_for_port(port, 30)
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _hand_mqtt(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hand_mqtt", *args],
        capture_output=True,
        text=True,
        env=_env(HAND_MQTT_BROKER=f"mqtt://127.0.0.1:{port}"),
        timeout=30,
        check=False,
    )


def _state(port: int) -> dict[str, Any]:
    done = _hand_mqtt(port, "state", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _wait_state(port: int, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = _state(port)
        if data and ready(data):
            return data
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last state: {data}")


def test_up_emulate_runs_the_real_firmware(up: tuple[subprocess.Popen[str], int]) -> None:
    process, port = up
    need(shutil.which("mosquitto_pub") is not None, "mosquitto_pub is not installed")
    # The broker listens before the emulated Uno has booted and shaken hands: commands are
    # never retained, so wait until the device service reports its link up, as a user would.
    _wait_state(port, lambda d: (d.get("reported") or {}).get("link") == "up", "the link up")
    angles = [10, 20, 30, 40, 50]
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", "hand/hand1/set", "-q", "1",
         "-m", json.dumps({"angles": angles})],
        check=True,
        timeout=10,
    )  # fmt: skip
    fingers = ("index", "middle", "ring", "pinky", "thumb")
    data = _wait_state(
        port,
        lambda d: [(d.get("reported") or {}).get(f) for f in fingers] == angles,
        f"reported {angles}",
    )
    assert [data["desired"][f] for f in fingers] == angles, data
    assert [data["reported"][f] for f in fingers] == angles, data
    assert data["reported"]["version"] == data["desired"]["version"]
    assert data["reported"]["link"] == "up"
    assert data["reported"]["failsafe"] is False
    # The HELLO came from the firmware ELF (the simulator would say the same: the version is
    # the firmware's config.h), over the emulator's pty.
    assert data["reported"]["firmware"]["version"] == "2.0.0"
    assert data["reported"]["serial"].startswith("/dev/pts/")
    assert data["device"] == "online"
    assert data["arbiter"] == "online"

    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output[-3000:]
    assert f"broker   mqtt://127.0.0.1:{port} (embedded)" in output
    assert "bundled firmware in the emulator on /dev/pts/" in output


def test_up_emulate_without_the_toolchain_says_what_to_install(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "hand_mqtt", "up", "--emulate", *_QUIET, "--port", str(port)],
        capture_output=True,
        text=True,
        env=_env(PATH=str(tmp_path)),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: avr-gcc is not installed" in done.stderr
    assert "sudo apt-get install make gcc-avr avr-libc arduino-core-avr" in done.stderr
    assert "Traceback" not in done.stderr
