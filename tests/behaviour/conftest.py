"""One behavioural suite, two implementations of the firmware.

Every test in this package runs twice: against the Python simulator
(:class:`hand_mqtt.devtools.simulated_port.PtyHand`) and against the real firmware ELF in
simavr (:class:`hand_mqtt.devtools.emulator.EmulatedHand`, throttled to wall-clock time). Both
sit behind a pty, and the tests speak to them the same way, with pyserial and
``hand_mqtt.hardware.protocol``. The ``wire`` fixture hands over a freshly booted hand whose
boot HELLO has been read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hand_mqtt.devtools.emulator import EmulatedHand
from hand_mqtt.devtools.firmware import BuildResult
from hand_mqtt.devtools.simulated_port import PtyHand
from hand_mqtt.hardware import protocol as p
from tests.behaviour.wire import Wire
from tests.firmware.conftest import firmware_build, sim_runner, toolchain

__all__ = ["Target", "firmware_build", "sim_runner", "toolchain"]

BOOT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """A running hand behind a pty: which implementation, where, and how to open it."""

    kind: str
    path: str
    reboot: Callable[[Wire], None]
    """Called right after the port is opened: makes the hand boot (and say HELLO)."""

    def open(self) -> tuple[Wire, p.Hello]:
        """Open the port like a host does and return it with the boot HELLO."""
        wire = Wire(self.path)
        try:
            self.reboot(wire)
            hello = wire.expect(p.Hello, BOOT_TIMEOUT_S)
        except BaseException:
            wire.close()
            raise
        return wire, hello


@pytest.fixture(
    params=[
        "simulator",
        pytest.param("emulator", marks=[pytest.mark.firmware, pytest.mark.emulator]),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "simulator":
        simulated = PtyHand(tmp_path)
        simulated.start()

        def reboot(wire: Wire) -> None:
            # A real Uno resets when its port opens (DTR), and so does the emulated one. The
            # simulator booted at start: forget that HELLO and boot it again, now.
            time.sleep(0.02)
            wire.drain()
            simulated.inject(simulated.firmware.boot())

        try:
            yield Target("simulator", simulated.path, reboot)
        finally:
            simulated.stop()
        return
    build: BuildResult = request.getfixturevalue("firmware_build")
    runner: Path = request.getfixturevalue("sim_runner")
    # reset_on_open: the emulated Uno boots 100 ms after the port is opened.
    with EmulatedHand(build.elf, runner=runner, realtime=True, reset_on_open=True) as emulated:
        yield Target("emulator", emulated.path, lambda _wire: None)


@pytest.fixture
def booted(target: Target) -> Iterator[tuple[Wire, p.Hello]]:
    wire, hello = target.open()
    try:
        yield wire, hello
    finally:
        wire.close()


@pytest.fixture
def wire(booted: tuple[Wire, p.Hello]) -> Wire:
    """A freshly booted hand, its boot HELLO already read."""
    return booted[0]
