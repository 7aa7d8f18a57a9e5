"""What only the StandardFirmata hand has, on the real StandardFirmata 2.4 in simavr.

The device service runs as a user runs it (``hand-mqtt device --firmata``, in a process of its
own) or inside ``hand-mqtt up --emulate --firmata``. It must say in one sentence when the port
does not speak Firmata (the bundled firmware, a silent port), publish that the board has no
failsafe (its servos hold their last pulses when the service stops), relax every finger on a
clean stop when asked to, and move at once when a command asks for a timed move.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hand_mqtt import Arbiter, BrokerUrl, DeviceService, DeviceSettings, MqttClient, Topics
from hand_mqtt.devtools.emulator import EmulatedHand
from hand_mqtt.devtools.firmware import BuildResult
from hand_mqtt.hardware.calibration import Calibration
from harness.brokers import MosquittoProcess, free_port, wait_for_port
from harness.waiting import wait_until
from tests.conftest import need
from tests.firmware.test_end_to_end import (
    FINGERS,
    PlainClient,
    command,
    wait_pins,
)
from tests.integration.test_calibrate import Terminal

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

ROOT = Path(__file__).resolve().parents[2]
# What reported.firmware says of StandardFirmata, as docs/firmata.md shows it.
STANDARD_FIRMATA: dict[str, Any] = json.loads(
    re.search(  # type: ignore[union-attr]
        r"^```json\n(.*?)^```",
        (ROOT / "docs" / "firmata.md").read_text(encoding="utf-8"),
        re.MULTILINE | re.DOTALL,
    ).group(1)
)["firmware"]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class Process:
    """A hand-mqtt command in a process of its own, its stderr collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hand_mqtt", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._bytes = b""

    @property
    def output(self) -> str:
        return self._bytes.decode("utf-8", "replace")

    def read(self) -> str:
        """Everything it wrote so far."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._bytes += chunk
        return self.output

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.read(), timeout, f"{text!r} in:\n{self.output[-3000:]}")

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.read()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture
def firmata_hand(
    standard_firmata_elf: Path, sim_runner: Path, tmp_path: Path
) -> Iterator[EmulatedHand]:
    with EmulatedHand(
        standard_firmata_elf, runner=sim_runner, realtime=True, vcd=tmp_path / "servos.vcd"
    ) as emulated:
        yield emulated


@pytest.fixture
def url(mosquitto_broker: MosquittoProcess) -> BrokerUrl:
    return BrokerUrl.parse(mosquitto_broker.url)


@pytest.fixture
def arbiter(url: BrokerUrl, topics: Topics) -> Iterator[Arbiter]:
    service = Arbiter(MqttClient(url, name="arbiter"), topics=topics, hands=["hand1"])
    service.start()
    assert service.wait_ready(10)
    yield service
    service.stop()


@pytest.fixture
def plain(mosquitto_broker: MosquittoProcess, topics: Topics) -> Iterator[PlainClient]:
    client = PlainClient(mosquitto_broker.port, topics.hand("hand1").reported)
    yield client
    client.close()


def device_process(serial: str, broker: MosquittoProcess, topics: Topics, *options: str) -> Process:
    return Process(
        "device", "--serial", serial, "--firmata", "--broker", broker.url,
        "--base", topics.base, *options,
    )  # fmt: skip


def no_pulse_after(hand: EmulatedHand, mark: float, span: float = 0.3) -> dict[str, int]:
    """Pulses per finger that start after ``mark`` (emulated seconds), once the trace has gone
    ``span`` seconds past it (the runner stamps its clock into the trace at every flush)."""
    wait_until(lambda: hand.trace_time() > mark + span, 10, "the emulator's clock")
    pulses = hand.pulses()
    return {f: sum(1 for p in pulses[f] if p.start_s > mark) for f in FINGERS}


# -- not Firmata -------------------------------------------------------------------------------


def test_the_bundled_firmware_is_named_not_taken_for_firmata(
    firmware_build: BuildResult,
    sim_runner: Path,
    mosquitto_broker: MosquittoProcess,
    plain: PlainClient,
    topics: Topics,
) -> None:
    with EmulatedHand(firmware_build.elf, runner=sim_runner, realtime=True) as bundled:
        device = device_process(bundled.path, mosquitto_broker, topics)
        try:
            device.wait_output(
                f"no Firmata answer on {bundled.path} at 57600 baud: hand-mqtt's bundled "
                "firmware answers there; start without --firmata"
            )
            assert plain.last().get("link") == "down"
            assert plain.last().get("index") is None
        finally:
            code = device.interrupt()
    assert code == 0, device.output[-3000:]
    assert "Traceback" not in device.output


def test_a_silent_port_gets_one_sentence(
    mosquitto_broker: MosquittoProcess, plain: PlainClient, topics: Topics
) -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    device = device_process(path, mosquitto_broker, topics)
    try:
        device.wait_output(
            f"no Firmata answer on {path} at 57600 baud: is StandardFirmata flashed? Without "
            "--firmata, hand-mqtt expects its bundled firmware"
        )
        assert plain.last().get("link") == "down"
    finally:
        code = device.interrupt()
        os.close(master)
        os.close(slave)
    assert code == 0, device.output[-3000:]
    assert "Traceback" not in device.output


# -- no failsafe, relax on exit ----------------------------------------------------------------


def test_without_a_failsafe_the_servos_hold_after_the_service_stops(
    firmata_hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    mosquitto_broker: MosquittoProcess,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    device = device_process(firmata_hand.path, mosquitto_broker, topics)
    try:
        wait_until(lambda: plain.last().get("link") == "up", 30, "the link up")
        assert plain.last()["firmware"] == STANDARD_FIRMATA
        peace = command(plain, firmata_hand, arbiter, t.pose_set, "peace")
        device.wait_output("StandardFirmata.ino has no failsafe: if this service stops")
    finally:
        code = device.interrupt()
    assert code == 0, device.output[-3000:]
    assert plain.last()["link"] == "down"
    # Nothing tells the board that its host is gone: the fingers keep their angles.
    mark = firmata_hand.trace_time() + 0.02
    counts = no_pulse_after(firmata_hand, mark, span=0.5)
    assert min(counts.values()) >= 20, counts
    wait_pins(firmata_hand, peace)


def test_relax_on_exit_leaves_every_finger_limp_and_says_so(
    firmata_hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    mosquitto_broker: MosquittoProcess,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    device = device_process(firmata_hand.path, mosquitto_broker, topics, "--relax-on-exit")
    try:
        wait_until(lambda: plain.last().get("link") == "up", 30, "the link up")
        command(plain, firmata_hand, arbiter, t.pose_set, "rockstar")
    finally:
        code = device.interrupt()
    assert code == 0, device.output[-3000:]
    assert "every finger relaxed" in device.output
    last = plain.last()
    assert last["link"] == "down"
    assert last["relaxed"] == list(FINGERS)
    assert last["version"] is None  # the hand is not in the desired state any more
    mark = firmata_hand.trace_time() + 0.02
    assert no_pulse_after(firmata_hand, mark) == dict.fromkeys(FINGERS, 0)
    assert firmata_hand.pin_levels() == dict.fromkeys(FINGERS, 0)


# -- timed moves -------------------------------------------------------------------------------


def test_a_timed_move_happens_at_once_and_is_said_once(
    firmata_hand: EmulatedHand,
    url: BrokerUrl,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = topics.hand("hand1")
    service = DeviceService(
        MqttClient(url, name="device"),
        firmata_hand.path,
        topics=topics,
        settings=DeviceSettings(firmata=True),
    )
    service.start()
    try:
        wait_until(lambda: service.link_up, 20, "the handshake")
        with caplog.at_level(logging.WARNING, logger="hand_mqtt"):
            for pose in ("fist", "point"):
                got = command(
                    plain,
                    firmata_hand,
                    arbiter,
                    t.set,
                    json.dumps({"pose": pose, "duration_ms": 800}),
                )
                assert arbiter.state("hand1").duration_ms == 800
                assert got == arbiter.state("hand1").angles
    finally:
        service.stop()
    said = [r.getMessage() for r in caplog.records if "cannot time moves" in r.getMessage()]
    assert said == [
        "device: StandardFirmata.ino cannot time moves: the fingers move at once "
        "(duration_ms is ignored on this firmware)"
    ]


# -- hand-mqtt up --emulate --firmata ----------------------------------------------------------


def _state(port: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "hand_mqtt", "state", "--json"],
        capture_output=True,
        text=True,
        env=_env(HAND_MQTT_BROKER=f"mqtt://127.0.0.1:{port}"),
        timeout=30,
        check=False,
    )
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


def test_up_emulate_firmata_runs_the_whole_system_on_standard_firmata(
    standard_firmata_elf: Path, sim_runner: Path
) -> None:
    need(shutil.which("mosquitto_pub") is not None, "mosquitto_pub is missing")
    port = free_port()
    up = Process("up", "--emulate", "--firmata", "--port", str(port), "--no-live")
    try:
        wait_for_port(port, 30)
        _wait_state(port, lambda d: (d.get("reported") or {}).get("link") == "up", "the link up")
        angles = [170, 10, 160, 20, 90]
        subprocess.run(
            ["mosquitto_pub", "-p", str(port), "-t", "hand/hand1/set", "-q", "1",
             "-m", json.dumps({"angles": angles})],
            check=True,
            timeout=10,
        )  # fmt: skip
        data = _wait_state(
            port,
            lambda d: [(d.get("reported") or {}).get(f) for f in FINGERS] == angles,
            f"reported {angles}",
        )
        assert data["reported"]["version"] == data["desired"]["version"]
        assert data["reported"]["firmware"] == STANDARD_FIRMATA
        assert data["reported"]["relaxed"] == []
    finally:
        code = up.interrupt()
    assert code == 0, up.output[-3000:]
    assert "StandardFirmata in the emulator on /dev/pts/" in up.output
    assert "Traceback" not in up.output


# -- a board that stops answering, a pin that cannot drive a servo ------------------------------


def test_a_board_that_stops_answering_takes_the_link_down_until_it_is_back(
    firmata_hand: EmulatedHand,
    url: BrokerUrl,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    service = DeviceService(
        MqttClient(url, name="device"),
        firmata_hand.path,
        topics=topics,
        settings=DeviceSettings(firmata=True),
    )
    service.start()
    try:
        wait_until(lambda: service.link_up, 20, "the handshake")
        angles = command(plain, firmata_hand, arbiter, t.pose_set, "phone")
        runner = firmata_hand.pid
        # The board hangs: nothing answers the driver's read-back any more.
        os.kill(runner, signal.SIGSTOP)
        try:
            wait_until(lambda: plain.last().get("link") == "down", 20, "reported link down")
        finally:
            os.kill(runner, signal.SIGCONT)
        # The device service opens the port again, which resets the Uno, and drives it back.
        wait_until(
            lambda: (
                plain.last().get("link") == "up"
                and plain.last().get("version") == arbiter.state("hand1").version
            ),
            30,
            f"the hand back (last reported: {plain.last()})",
        )
        wait_pins(firmata_hand, angles)
    finally:
        service.stop()


def test_a_pin_that_cannot_drive_a_servo_is_named(
    firmata_hand: EmulatedHand, mosquitto_broker: MosquittoProcess, topics: Topics
) -> None:
    device = device_process(firmata_hand.path, mosquitto_broker, topics, "--pins", "1,10,9,6,5")
    try:
        device.wait_output(
            f"pin 1 (index) cannot drive a servo with StandardFirmata.ino on {firmata_hand.path}; "
            "its servo pins are 2, 3, 4"
        )
    finally:
        code = device.interrupt()
    assert code == 0, device.output[-3000:]
    assert "Traceback" not in device.output


# -- hand-mqtt calibrate --firmata -------------------------------------------------------------


def test_calibrate_finds_a_fingers_stops_on_standard_firmata(
    firmata_hand: EmulatedHand, tmp_path: Path
) -> None:
    path = tmp_path / "hand.toml"
    path.write_text("[fingers.ring]\npulse_min_us = 500\npulse_max_us = 2500\n")
    term = Terminal(
        [
            "calibrate",
            "ring",
            "--serial",
            firmata_hand.path,
            "--firmata",
            "--calibration",
            "hand.toml",
        ],
        tmp_path,
    )
    try:

        def ring_at(degrees: int) -> None:
            # Only the ring is driven, by servo degrees, with the file's pulse range.
            width = 500 + 2000 * degrees / 180
            wait_until(
                lambda: (
                    [round(q.width_us) for q in firmata_hand.pulses()["ring"][-3:]]
                    in ([round(width)] * 3, [round(width) - 1] * 3, [round(width) + 1] * 3)
                ),
                10,
                f"the ring at {degrees} degrees ({width:.0f} us)",
            )

        term.expect("1/2 Move the ring to where it is fully contracted", timeout=30)
        term.expect("servo  90 degrees")
        ring_at(90)
        for key in ("[", "[", "-"):
            term.press(key)
        term.expect("servo  69 degrees")
        ring_at(69)
        term.press("\r")
        term.expect("2/2 Move the ring to where it is fully extended")
        term.press("]")
        term.expect("servo 100 degrees")
        ring_at(100)
        term.press("\r")
        term.expect("saved [fingers.ring] servo_min = 69, servo_max = 100")
        assert term.wait() == 0, term.output
        mark = firmata_hand.trace_time() + 0.02
        assert no_pulse_after(firmata_hand, mark) == dict.fromkeys(FINGERS, 0)
    finally:
        term.close()
    assert "Traceback" not in term.output
    saved = Calibration.from_file(path)["ring"]
    assert (saved.servo_min, saved.servo_max, saved.pulse_min_us, saved.pulse_max_us) == (
        69, 100, 500, 2500,
    )  # fmt: skip
