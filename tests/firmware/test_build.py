"""The firmware builds with plain make + avr-gcc and stays inside its size budget."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hand_mqtt.devtools import firmware
from hand_mqtt.errors import FirmwareError

from .conftest import FIRMWARE_DIR

pytestmark = pytest.mark.firmware

FLASH_BUDGET = 5120
RAM_BUDGET = 384


def test_clean_build_fits_the_budget(toolchain: None, tmp_path: Path) -> None:
    started = time.monotonic()
    result = firmware.build(tmp_path / "build")
    elapsed = time.monotonic() - started
    print(f"clean build {elapsed:.2f} s: {result.flash_bytes} B flash, {result.ram_bytes} B RAM")
    assert result.elf.is_file()
    assert result.hex.read_text().startswith(":")
    assert 0 < result.flash_bytes <= FLASH_BUDGET
    assert 0 < result.ram_bytes <= RAM_BUDGET


def test_make_prints_size_and_budget(toolchain: None, tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-C", str(FIRMWARE_DIR), f"BUILD_DIR={tmp_path}", "all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "text" in done.stdout
    assert "data" in done.stdout
    assert f"/ {FLASH_BUDGET} bytes" in done.stdout
    assert f"/ {RAM_BUDGET} bytes" in done.stdout
    assert "warning" not in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize(
    ("variable", "message"),
    [("FLASH_BUDGET=1024", "flash budget exceeded"), ("RAM_BUDGET=64", "RAM budget exceeded")],
)
def test_size_gate_fails_past_the_budget(
    toolchain: None, tmp_path: Path, variable: str, message: str
) -> None:
    done = subprocess.run(
        ["make", "-C", str(FIRMWARE_DIR), f"BUILD_DIR={tmp_path}", variable, "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_build_raises_over_budget(toolchain: None, tmp_path: Path) -> None:
    with pytest.raises(FirmwareError, match="size budget"):
        firmware.build(tmp_path, flash_budget=512)


def test_missing_toolchain_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FirmwareError, match=r"apt-get install .*gcc-avr"):
        firmware.build(tmp_path / "out")


def test_missing_sources_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAND_MQTT_FIRMWARE_DIR", str(tmp_path))
    with pytest.raises(FirmwareError, match="firmware sources are not at"):
        firmware.firmware_dir()
