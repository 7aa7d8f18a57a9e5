"""The StandardFirmata options of the command line, and the commands docs/firmata.md shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt import ConfigError, DeviceSettings
from hand_mqtt.cli import app
from hand_mqtt.cli.common import parse_pins
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.firmata import FIRMATA_BAUDRATE, FirmataDriver
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import DEFAULT_BAUDRATE
from hand_mqtt.services.device import hand_driver

DOC = Path(__file__).resolve().parents[2] / "docs" / "firmata.md"
SHELL = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_commands() -> list[list[str]]:
    lines = [
        line.split("  #")[0].strip()
        for block in SHELL.findall(DOC.read_text(encoding="utf-8"))
        for line in block.splitlines()
    ]
    return [shlex.split(line)[1:] for line in lines if line.startswith("hand-mqtt ")]


def test_the_doc_shows_commands() -> None:
    assert len(doc_commands()) >= 4


@pytest.mark.parametrize("args", doc_commands(), ids=" ".join)
def test_every_command_in_the_doc_parses(args: list[str]) -> None:
    # --help after the printed options: click parses them all (an unknown one is an error)
    # before it prints the help.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    if "--pins" in args:
        parse_pins(args[args.index("--pins") + 1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("11,10,9,6", "--pins takes 5 pin numbers"),
        ("11,10,9,6,x", "--pins takes 5 pin numbers"),
        ("11,10,9,6,-5", "--pins takes 5 pin numbers"),
        ("11,10,9,6,11", "--pins names a pin twice"),
    ],
)
def test_bad_pins_are_refused_with_a_sentence(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pins(text)
    assert parse_pins(" 3, 5,6 ,9,10") == (3, 5, 6, 9, 10)


def test_device_with_bad_pins_exits_with_the_sentence() -> None:
    result = CliRunner().invoke(
        app, ["device", "--serial", "/dev/null", "--firmata", "--pins", "1,2,3"]
    )
    assert result.exit_code == 2  # a wrong option: a usage error
    assert "--pins takes 5 pin numbers" in result.output
    assert "Traceback" not in result.output


def test_up_firmata_needs_a_serial_port_or_the_emulator() -> None:
    result = CliRunner().invoke(app, ["up", "--firmata", "--no-live", "--port", "0"])
    assert result.exit_code == 2  # a wrong option: a usage error
    assert "--firmata needs --serial PORT or --emulate" in result.output


def test_the_settings_choose_the_driver_and_its_speed() -> None:
    firmata = hand_driver("loop://", DeviceSettings(firmata=True, pins=(3, 5, 6, 9, 10)))
    assert isinstance(firmata, FirmataDriver)
    assert firmata.link.baudrate == FIRMATA_BAUDRATE
    assert firmata.pins == (3, 5, 6, 9, 10)
    framed = hand_driver("loop://", DeviceSettings())
    assert isinstance(framed, FramedDriver)
    assert framed.link.baudrate == DEFAULT_BAUDRATE
    faster = hand_driver("loop://", DeviceSettings(firmata=True, baudrate=115200))
    assert isinstance(faster, FirmataDriver)
    assert faster.link.baudrate == 115200


def test_a_driver_refuses_pins_it_cannot_address() -> None:
    with pytest.raises(ConfigError, match="not a Firmata pin"):
        hand_driver("loop://", DeviceSettings(firmata=True, pins=(11, 10, 9, 6, 128)))
    with pytest.raises(ConfigError, match="5 different pins"):
        hand_driver("loop://", DeviceSettings(firmata=True, pins=(11, 10, 9, 6, 6)))


def test_a_calibration_standard_firmata_cannot_take_is_refused_before_the_port_opens(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "hand.toml"
    bad.write_text("[fingers.pinky]\npulse_min_us = 1100\n")
    result = CliRunner().invoke(
        app, ["device", "--serial", "/dev/null", "--firmata", "--calibration", str(bad)]
    )
    assert result.exit_code == 2
    assert (
        "pinky: StandardFirmata drives a servo from a pulse of at most 1056 µs at 0 degrees to "
        "one of at least 1892 µs at 180 degrees, not 1100-2400 µs"
    ) in result.output
    # The bundled firmware takes it.
    framed = hand_driver("loop://", DeviceSettings(calibration=Calibration.from_file(bad)))
    assert isinstance(framed, FramedDriver)
