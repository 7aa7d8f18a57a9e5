"""hand_mqtt.devtools.firmware.flash runs avrdude as documented and explains what is missing.

No Uno is needed: a stand-in `avrdude` script on PATH records its arguments and prints a
progress bar the way avrdude does (pieces separated by carriage returns).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hand_mqtt.devtools import firmware
from hand_mqtt.errors import FirmwareError

pytestmark = pytest.mark.firmware

FAKE_AVRDUDE = """#!/bin/sh
printf '%s\\n' "$@" > "{record}"
printf 'avrdude: AVR device initialized and ready to accept instructions\\n' >&2
printf 'Writing | ' >&2
for i in 1 2 3; do printf '#' >&2; done
printf ' | 100%% 0.50s\\r\\n' >&2
printf 'avrdude: 3846 bytes of flash written\\n'
exit {code}
"""


def install_fake_avrdude(folder: Path, code: int = 0) -> Path:
    record = folder / "avrdude-args.txt"
    script = folder / "avrdude"
    script.write_text(FAKE_AVRDUDE.format(record=record, code=code))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.fixture
def image(tmp_path: Path) -> Path:
    hex_file = tmp_path / "hand.hex"
    hex_file.write_text(":00000001FF\n")
    return hex_file


def test_flash_runs_avrdude_and_streams_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path, port: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = install_fake_avrdude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    lines: list[str] = []
    firmware.flash(port, image, lines.append)
    args = record.read_text().split()
    assert args == [
        "-p", "atmega328p", "-c", "arduino", "-P", port, "-b", "115200",
        "-U", f"flash:w:{image}:i",
    ]  # fmt: skip
    assert any("Writing | ### | 100%" in line for line in lines)
    assert any("bytes of flash written" in line for line in lines)


def test_flash_failure_quotes_avrdude(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path, port: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_avrdude(bin_dir, code=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    shown: list[str] = []
    with pytest.raises(FirmwareError, match=r"avrdude failed \(exit 1\)") as caught:
        firmware.flash(port, image, shown.append)
    # Shown once as it came; the error does not repeat it.
    assert any("device initialized" in line for line in shown)
    assert str(caught.value) == f"avrdude failed (exit 1) flashing {port}; see above"
    # Without a callback the output went to the log only, so the error quotes its end.
    with pytest.raises(FirmwareError) as caught:
        firmware.flash(port, image)
    assert "device initialized" in str(caught.value)


def test_flash_to_something_that_is_not_a_serial_port_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = install_fake_avrdude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    plain_file = tmp_path / "ttyACM0"
    plain_file.touch()
    for target in ("/dev/null", str(plain_file)):
        with pytest.raises(FirmwareError, match=f"^{target} is not a serial port; an Uno"):
            firmware.flash(target, image)
    assert not record.exists(), "avrdude ran"


def test_flash_without_avrdude_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path, port: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FirmwareError, match="apt-get install avrdude"):
        firmware.flash(port, image)


def test_flash_to_a_missing_port_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_avrdude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(FirmwareError, match="does not exist; is the Uno plugged in"):
        firmware.flash(str(tmp_path / "ttyACM9"), image)


def test_flash_of_a_missing_image_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_avrdude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(FirmwareError, match="build it first"):
        firmware.flash(port, tmp_path / "nope.hex")
