"""`hand-mqtt firmware build` and `hand-mqtt firmware flash`: output, errors, exit codes.

Flashing needs no Uno: the stand-in `avrdude` of test_flash.py records its arguments and prints
a progress bar the way avrdude does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt.cli import app
from hand_mqtt.devtools.firmware import BuildResult

from .test_flash import install_fake_avrdude

pytestmark = pytest.mark.firmware


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fake_avrdude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in avrdude first on PATH; returns the file it records its arguments in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = install_fake_avrdude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


def test_build_prints_sizes_against_the_budget_and_the_paths(
    toolchain: None, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = cli.invoke(app, ["firmware", "build", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    sizes = next(line for line in lines if line.startswith("flash "))
    flash_used, flash_budget = (int(v) for v in sizes.split(",")[0].split()[1::2])
    ram_used, ram_budget = (int(v) for v in sizes.split(",")[1].split()[1::2])
    assert (flash_budget, ram_budget) == (5120, 384)
    assert 0 < flash_used <= flash_budget
    assert 0 < ram_used <= ram_budget
    assert f"ELF {out / 'hand.elf'}" in lines
    assert f"HEX {out / 'hand.hex'}" in lines
    assert (out / "hand.hex").read_text().startswith(":")


def test_build_without_the_toolchain_says_what_to_install(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = cli.invoke(app, ["firmware", "build", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "error: avr-gcc is not installed" in result.stderr
    assert "sudo apt-get install make gcc-avr avr-libc arduino-core-avr" in result.stderr
    assert "Traceback" not in result.output


def test_flash_runs_avrdude_and_shows_its_progress(
    cli: CliRunner, fake_avrdude: Path, port: str, tmp_path: Path
) -> None:
    image = tmp_path / "hand.hex"
    image.write_text(":00000001FF\n")
    result = cli.invoke(app, ["firmware", "flash", "--port", port, "--hex", str(image)])
    assert result.exit_code == 0, result.output
    args = fake_avrdude.read_text().split()
    assert args == [
        "-p", "atmega328p", "-c", "arduino", "-P", port, "-b", "115200",
        "-U", f"flash:w:{image}:i",
    ]  # fmt: skip
    assert "Writing | ### | 100%" in result.stdout
    assert "bytes of flash written" in result.stdout
    assert f"flashed {image} to {port}" in result.stdout


def test_flash_builds_first_without_hex(
    firmware_build: BuildResult, cli: CliRunner, fake_avrdude: Path, port: str
) -> None:
    result = cli.invoke(app, ["firmware", "flash", "--port", port])
    assert result.exit_code == 0, result.output
    assert "flash " in result.stdout
    assert "/ 5120 bytes" in result.stdout
    assert f"flash:w:{firmware_build.hex}:i" in fake_avrdude.read_text().split()


def test_flash_to_a_missing_port_fails_before_building(
    cli: CliRunner, fake_avrdude: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the stand-in avrdude on PATH: a build would fail on the missing toolchain, so the
    # port error proves nothing was built (or flashed) first.
    monkeypatch.setenv("PATH", str(fake_avrdude.parent))
    missing = tmp_path / "ttyACM9"
    result = cli.invoke(app, ["firmware", "flash", "--port", str(missing)])
    assert result.exit_code == 1
    assert f"error: the serial port {missing} does not exist; is the Uno plugged in?" in (
        result.stderr
    )
    assert not fake_avrdude.exists(), "avrdude ran"


def test_flash_without_avrdude_says_what_to_install(
    cli: CliRunner, port: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = cli.invoke(app, ["firmware", "flash", "--port", port])
    assert result.exit_code == 1
    assert "error: avrdude is not installed; on Debian/Ubuntu: sudo apt-get install avrdude" in (
        result.stderr
    )


def test_flash_failure_exits_1_and_quotes_avrdude(
    cli: CliRunner, tmp_path: Path, port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_avrdude(bin_dir, code=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    image = tmp_path / "hand.hex"
    image.write_text(":00000001FF\n")
    result = cli.invoke(app, ["firmware", "flash", "--port", port, "--hex", str(image)])
    assert result.exit_code == 1
    assert result.stderr == f"error: avrdude failed (exit 1) flashing {port}; see above\n"
    assert result.output.count("device initialized") == 1, "avrdude's output printed twice"
    assert "flashed" not in result.stdout


def test_flash_to_dev_null_says_it_is_not_a_serial_port(
    cli: CliRunner, fake_avrdude: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_avrdude.parent))  # a build would fail: none happens
    result = cli.invoke(app, ["firmware", "flash", "--port", "/dev/null"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: /dev/null is not a serial port; an Uno shows up as /dev/ttyACM0 or "
        "/dev/ttyUSB0 (see `ls /dev/ttyACM* /dev/ttyUSB*`)\n"
    )
    assert not fake_avrdude.exists(), "avrdude ran"


def test_flash_of_a_missing_image_is_a_clear_error(
    cli: CliRunner, fake_avrdude: Path, port: str, tmp_path: Path
) -> None:
    result = cli.invoke(
        app, ["firmware", "flash", "--port", port, "--hex", str(tmp_path / "nope.hex")]
    )
    assert result.exit_code == 1
    assert "does not exist; build it first" in result.stderr
