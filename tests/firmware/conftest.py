"""Fixtures for the firmware tests: the AVR toolchain, one shared build, the simavr runner, and
the real StandardFirmata from the npm registry.

Locally a missing toolchain skips these tests with the apt-get line to fix it; in CI
(``CI=true``) it fails them instead. An npm registry that cannot be reached skips the
StandardFirmata tests with the reason, in CI too: everything else still runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hand_mqtt.devtools import firmware
from hand_mqtt.devtools.firmware import BuildResult
from hand_mqtt.devtools.standard_firmata import standard_firmata
from hand_mqtt.errors import FirmwareError
from tests.conftest import need

__all__ = ["BUILD_TOOLS", "FIRMWARE_DIR", "SIMAVR_HEADER", "missing", "need"]

BUILD_TOOLS = ("make", "avr-gcc", "avr-g++", "avr-gcc-ar", "avr-objcopy", "avr-size")
SIMAVR_HEADER = Path("/usr/include/simavr/sim_avr.h")
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"


def missing(tools: tuple[str, ...]) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


@pytest.fixture(scope="session")
def toolchain() -> None:
    absent = missing(BUILD_TOOLS)
    need(
        not absent,
        f"AVR toolchain missing ({', '.join(absent)}): "
        f"sudo apt-get install {firmware.BUILD_PACKAGES}",
    )
    need(
        Path("/usr/share/arduino/hardware/arduino/avr/cores/arduino/main.cpp").is_file(),
        f"Arduino AVR core missing: sudo apt-get install {firmware.BUILD_PACKAGES}",
    )


@pytest.fixture(scope="session")
def firmware_build(toolchain: None) -> BuildResult:
    """The firmware built once per session in firmware/build (as `make` does)."""
    return firmware.build()


@pytest.fixture(scope="session")
def sim_runner(firmware_build: BuildResult) -> Path:
    absent = missing(("gcc",))
    need(
        not absent and SIMAVR_HEADER.is_file(),
        f"simavr development files missing: sudo apt-get install {firmware.SIM_PACKAGES}",
    )
    return firmware.build_simulator()


def _registry_unreachable() -> str | None:
    """Why the npm registry cannot be reached, or None when it answers."""
    try:
        done = subprocess.run(
            ["npm", "ping"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"npm ping exited {done.returncode}"


@pytest.fixture(scope="session")
def standard_firmata_elf(toolchain: None) -> Path:
    """The real StandardFirmata 2.4 for the Uno, fetched from npm into the cache folder once."""
    need(shutil.which("npm") is not None, "npm is missing: sudo apt-get install npm")
    try:
        return standard_firmata()
    except FirmwareError as exc:
        unreachable = _registry_unreachable()
        if unreachable is None:
            raise
        pytest.skip(f"the npm registry cannot be reached ({unreachable}): {exc}")


@pytest.fixture
def port() -> Iterator[str]:
    """A terminal device for avrdude's -P, as every serial port is: a pty's far end."""
    controller, device = os.openpty()
    try:
        yield os.ttyname(device)
    finally:
        os.close(device)
        os.close(controller)
