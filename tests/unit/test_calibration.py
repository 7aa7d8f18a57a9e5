"""Per-finger calibration: the two linear maps, the file contract and its error sentences, the
table in docs/calibration.md, and editing a file without losing its comments."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hand_mqtt.cli import app
from hand_mqtt.errors import ConfigError
from hand_mqtt.hardware import protocol
from hand_mqtt.hardware.calibration import (
    KEYS,
    MAX_PULSE_US,
    MIN_PULSE_US,
    Calibration,
    FingerCalibration,
    save_finger,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "calibration.md").read_text(encoding="utf-8")
VECTORS: dict[str, Any] = json.loads((ROOT / "protocol" / "vectors.json").read_text())


def doc_example() -> str:
    match = re.search(r"```toml\n(.*?)```", DOC, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_documented_example_maps_as_the_document_says() -> None:
    calibration = Calibration.from_toml(doc_example())
    index = calibration["index"]
    assert index == FingerCalibration(160, 20, 500, 2500)
    assert index.inverted
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \|$", DOC, re.MULTILINE)
    assert len(rows) == 3
    for logical, servo, pulse in rows:
        assert index.servo_degrees(int(logical)) == pytest.approx(int(servo))
        assert round(index.pulse_us(int(logical))) == int(pulse)
    assert index.pulse_range_us == (2278, 722)
    # The other fingers keep the defaults.
    assert calibration["thumb"] == FingerCalibration()
    assert calibration.pulse_ranges_us[1:] == ((544, 2400),) * 4


def test_defaults_are_arduinos() -> None:
    calibration = Calibration()
    assert calibration.is_default
    assert list(calibration) == ["index", "middle", "ring", "pinky", "thumb"]
    assert calibration.source is None
    assert calibration.pulse_ranges_us == ((544, 2400),) * 5
    assert Calibration.from_toml("") == calibration
    assert Calibration.from_toml("[fingers.index]\n").is_default


def test_the_maps_invert_each_other() -> None:
    finger = FingerCalibration(servo_min=150, servo_max=30, pulse_min_us=1000, pulse_max_us=2000)
    for logical in (0, 1, 45, 90, 179, 180):
        assert finger.logical(finger.servo_degrees(logical)) == pytest.approx(logical)
    assert finger.servo_pulse_us(0) == 1000
    assert finger.servo_pulse_us(180) == 2000
    assert finger.pulse_us(0) == pytest.approx(1000 + 1000 * 150 / 180)


def test_the_limits_are_the_protocols() -> None:
    assert (MIN_PULSE_US, MAX_PULSE_US) == (protocol.MIN_PULSE_US, protocol.MAX_PULSE_US)


@pytest.mark.parametrize(
    "case",
    # A file cannot give equal widths; the firmware takes them (a finger held at one width).
    [c for c in VECTORS["pulses"] if c["pulse_at_0_us"] != c["pulse_at_180_us"]],
    ids=lambda c: str(tuple(c.values())),
)
def test_the_firmwares_pulse_width_is_the_calibrations_to_half_a_microsecond(
    case: dict[str, Any],
) -> None:
    # A finger whose servo range is identity and whose pulse range is the vector's: the
    # firmware's integer arithmetic and the float map agree within its half-microsecond step.
    at_0, at_180 = case["pulse_at_0_us"], case["pulse_at_180_us"]
    if at_0 < at_180:
        finger = FingerCalibration(0, 180, at_0, at_180)
    else:
        finger = FingerCalibration(180, 0, at_180, at_0)
    assert abs(finger.pulse_us(case["angle"]) - case["half_us"] / 2) <= 0.25


def test_digest_follows_the_values_not_the_text() -> None:
    one = Calibration.from_toml("[fingers.ring]\nservo_min = 10 # comment\n")
    two = Calibration.from_toml("[fingers]\nring = { servo_min = 10 }\n")
    assert one.digest == two.digest
    assert one.digest != Calibration().digest
    assert len(one.digest) == 12


def test_with_finger_checks_the_new_values() -> None:
    calibration = Calibration().with_finger("thumb", servo_min=30)
    assert calibration["thumb"].servo_min == 30
    with pytest.raises(ValueError, match="must differ"):
        calibration.with_finger("thumb", servo_max=30)
    with pytest.raises(ValueError, match="400-2600"):
        calibration.with_finger("thumb", pulse_min_us=399)


def doc_error_rows() -> list[tuple[str, str]]:
    section = DOC.split("## Bad files are refused at start", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`.*?) \| `(.*)` \|$", section, re.MULTILINE)
    assert len(rows) >= 8
    return rows


def toml_of(cell: str) -> str:
    """The documented file: each `code` span of the cell on a line of its own."""
    return "\n".join(re.findall(r"`([^`]*)`", cell)) + "\n"


@pytest.mark.parametrize(("cell", "sentence"), doc_error_rows())
def test_every_documented_bad_file_gets_its_sentence(
    cell: str, sentence: str, tmp_path: Path
) -> None:
    path = tmp_path / "hand.toml"
    path.write_text(toml_of(cell), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Calibration.from_file(path)
    assert str(info.value) == f"{path}: {sentence}"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("fingers = 3", "fingers must be a table"),
        ("[fingers]\nindex = 3", "fingers.index must be a table"),
        ("[fingers.index]\nservo_min = true", "servo_min must be a whole number"),
        ("[fingers.index]\nservo_min = -1", "= -1 is outside 0-180 degrees"),
        ("[fingers.index]\npulse_min_us = 2601", "outside 400-2600 microseconds"),
        ("[fingers.index\n", "is not valid TOML"),
        ("[fingers.index]\nservo_min = 180\nservo_max = 180", "both 180"),
    ],
)
def test_more_bad_files(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Calibration.from_toml(text)


def test_an_unreadable_file_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the calibration file"):
        Calibration.from_file(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Calibration.from_file(binary)


def test_save_finger_keeps_comments_and_other_fingers(tmp_path: Path) -> None:
    path = tmp_path / "hand.toml"
    path.write_text("# my hand\n" + doc_example(), encoding="utf-8")
    saved = save_finger(path, "index", {"servo_min": 150})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my hand\n")
    assert "servo_min = 150        # servo degrees at logical 0" in text
    assert saved["index"] == FingerCalibration(150, 20, 500, 2500)
    saved = save_finger(path, "thumb", {"servo_min": 10, "servo_max": 170})
    assert Calibration.from_file(path) == saved
    assert saved["thumb"] == FingerCalibration(servo_min=10, servo_max=170)
    assert "[fingers.thumb]" in path.read_text(encoding="utf-8")


def test_save_finger_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    saved = save_finger(path, "ring", dict(zip(KEYS, (5, 175, 500, 2500), strict=True)))
    assert saved["ring"] == FingerCalibration(5, 175, 500, 2500)
    assert Calibration.from_file(path)["ring"] == saved["ring"]


def test_save_finger_refuses_bad_values_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "hand.toml"
    path.write_text("[fingers.index]\nservo_max = 100\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="both 100"):
        save_finger(path, "index", {"servo_min": 100})
    assert path.read_text(encoding="utf-8") == "[fingers.index]\nservo_max = 100\n"
    path.write_text("[fingers.fnger]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown finger"):
        save_finger(path, "index", {"servo_min": 10})


def test_the_documented_digest_is_the_examples() -> None:
    digest = Calibration.from_toml(doc_example()).digest
    assert f'"digest": "{digest}"' in DOC
    assert Calibration.from_toml(doc_example()).info.model_dump() == {
        "file": None,
        "digest": digest,
    }


@pytest.mark.parametrize("command", ["device", "up"])
def test_a_bad_file_stops_the_service_before_it_starts(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "hand.toml"
    bad.write_text("[fingers.thumb]\npulse_max_us = 2700\n", encoding="utf-8")
    args = [command, "--calibration", str(bad)]
    if command == "device":
        args += ["--serial", "loop://"]
    else:
        args += ["--port", "0", "--no-live"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{bad}: fingers.thumb.pulse_max_us = 2700 is outside 400-2600 microseconds" in (
        result.output
    )
    assert "Traceback" not in result.output
