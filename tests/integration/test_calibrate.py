"""`hand-mqtt calibrate FINGER` as a person uses it: in a terminal (a real pty), pressing keys,
against the simulated firmware on a pty of its own; the servo's position is read from the
simulated firmware and the result from the file."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hand_mqtt import PtyHand
from hand_mqtt.hardware.calibration import Calibration, FingerCalibration
from hand_mqtt.hardware.link import SerialLink
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
UP, DOWN, PAGE_UP, PAGE_DOWN = "\x1b[A", "\x1b[B", "\x1b[5~", "\x1b[6~"


class Terminal:
    """A command running with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, slave = os.openpty()
        self.master = master
        self.output = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hand_mqtt", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        os.close(slave)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 4096).decode("utf-8", "replace")
            except OSError:  # the command has exited and closed its side
                time.sleep(timeout)

    def expect(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.output}")
            self._read(0.05)

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        code = self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        self._read(0.05)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def hand(tmp_path: Path) -> Iterator[PtyHand]:
    (tmp_path / "pty").mkdir()
    with PtyHand(tmp_path / "pty") as simulated:
        yield simulated


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def calibrate(terminals: list[Terminal], tmp_path: Path, *args: str) -> Terminal:
    terminals.append(Terminal(["calibrate", *args], tmp_path))
    return terminals[-1]


def test_nudging_to_both_stops_saves_them(
    hand: PtyHand, tmp_path: Path, terminals: list[Terminal]
) -> None:
    path = tmp_path / "hand.toml"
    path.write_text("# my hand\n[fingers.index]\npulse_min_us = 500 # its own range\n")
    firmware = hand.firmware
    term = calibrate(terminals, tmp_path, "index", "--serial", hand.path)

    def servo_at(degrees: int) -> None:
        # Driven: at power-on the targets are 90 too, with no finger driven.
        wait_until(
            lambda: firmware.targets[0] == degrees and firmware.driven == 0b00001,
            10,
            f"the index at {degrees}",
        )

    term.expect("1/2 Move the index to where it is fully contracted")
    servo_at(90)  # from the middle of its travel, only the finger being calibrated driven
    assert firmware.pulse_widths[0] == 1450.0  # its range from the file: 500-2400 us
    for key, degrees in (("-", 89), (PAGE_DOWN, 79), ("[", 69), (DOWN, 68), ("+", 69)):
        term.press(key)
        servo_at(degrees)
        term.expect(f"servo  {degrees} degrees")
    term.press("\r")
    term.expect("2/2 Move the index to where it is fully extended")
    servo_at(90)
    for key, degrees in (("]", 100), (PAGE_UP, 110), (UP, 111), ("=", 112)):
        term.press(key)
        servo_at(degrees)
    term.press("\r")
    term.expect("saved [fingers.index] servo_min = 69, servo_max = 112")
    assert term.wait() == 0, term.output
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my hand\n")
    assert "pulse_min_us = 500 # its own range" in text
    assert Calibration.from_file(path)["index"] == FingerCalibration(69, 112, 500, 2400)
    wait_until(lambda: firmware.driven == 0, 5, "the finger relaxed at the end")


def test_an_inverted_finger_and_a_new_file(
    hand: PtyHand, tmp_path: Path, terminals: list[Terminal]
) -> None:
    term = calibrate(
        terminals, tmp_path, "thumb", "--serial", hand.path, "--calibration", "new.toml"
    )
    term.expect("1/2")
    wait_until(
        lambda: hand.firmware.targets[4] == 90 and hand.firmware.driven == 0b10000,
        10,
        "the thumb in the middle",
    )
    term.press("]")
    wait_until(lambda: hand.firmware.targets[4] == 100, 10, "the thumb at 100")
    term.press("\n")
    term.expect("2/2")
    term.press("[")
    wait_until(lambda: hand.firmware.targets[4] == 80, 10, "the thumb at 80")
    term.press("\r")
    term.expect("servo_min = 100, servo_max = 80 (inverted)")
    assert term.wait() == 0, term.output
    saved = Calibration.from_file(tmp_path / "new.toml")
    assert saved["thumb"] == FingerCalibration(100, 80)
    assert saved["thumb"].inverted


def test_quitting_saves_nothing(hand: PtyHand, tmp_path: Path, terminals: list[Terminal]) -> None:
    term = calibrate(terminals, tmp_path, "ring", "--serial", hand.path)
    term.expect("1/2")
    wait_until(
        lambda: hand.firmware.targets[2] == 90 and hand.firmware.driven == 0b00100,
        10,
        "the ring in the middle",
    )
    term.press("q")
    term.expect("quit: nothing saved")
    assert term.wait() == 0, term.output
    assert not (tmp_path / "hand.toml").exists()


def test_clear_errors(hand: PtyHand, tmp_path: Path, terminals: list[Terminal]) -> None:
    term = calibrate(terminals, tmp_path, "elbow", "--serial", hand.path)
    assert term.wait() == 2
    assert "unknown finger 'elbow'; fingers are index, middle, ring, pinky, thumb" in term.output
    (tmp_path / "bad.toml").write_text("[fingers.index]\npulse_min_us = 300\n")
    term = calibrate(
        terminals, tmp_path, "index", "--serial", hand.path, "--calibration", "bad.toml"
    )
    assert term.wait() == 2  # a file the command line names is wrong
    assert "fingers.index.pulse_min_us = 300 is outside 400-2600 microseconds" in term.output
    # The port is the device service's while it runs: refused with a sentence.
    busy = SerialLink(hand.path)
    busy.open()
    try:
        term = calibrate(terminals, tmp_path, "index", "--serial", hand.path)
        assert term.wait() == 1
        assert "error:" in term.output
    finally:
        busy.close()
    for terminal in terminals:
        assert "Traceback" not in terminal.output
    # Without a terminal it says so instead of waiting for keys.
    done = subprocess.run(
        [sys.executable, "-m", "hand_mqtt", "calibrate", "index", "--serial", hand.path],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "run it in a terminal" in done.stderr
