"""Per-finger calibration: logical angle → servo degrees → pulse width.

Logical angles are the same everywhere on MQTT: 0 (contracted) to 180 (extended). A printed
finger reaches its stops at servo angles of its own, a servo may be mounted mirrored, and servos
differ in pulse range. One finger's calibration is two linear maps (``docs/calibration.md``):

- logical → servo degrees, from ``servo_min`` (at logical 0) to ``servo_max`` (at logical 180);
  ``servo_min > servo_max`` inverts the finger;
- servo degrees → pulse, from ``pulse_min_us`` (at servo 0°) to ``pulse_max_us`` (at 180°).

Any driver can use it: the bundled firmware receives the composed map as the pulse widths at
logical 0 and 180 (:attr:`FingerCalibration.pulse_range_us`); a driver that writes servo degrees
with a pulse range of its own (StandardFirmata's SERVO_CONFIG) uses
:meth:`FingerCalibration.servo_degrees` and the ``pulse_min_us``/``pulse_max_us`` pair.

The file (``hand-mqtt device --calibration hand.toml``)::

    [fingers.index]
    servo_min = 160
    servo_max = 20
    pulse_min_us = 500
    pulse_max_us = 2500

Missing fingers and keys keep the defaults (0, 180, 544, 2400: Arduino's Servo library). A bad
file is refused with one sentence that names the key (:class:`~hand_mqtt.errors.ConfigError`).
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS, MAX_ANGLE, CalibrationInfo

__all__ = [
    "KEYS",
    "MAX_PULSE_US",
    "MIN_PULSE_US",
    "Calibration",
    "FingerCalibration",
    "save_finger",
]

MIN_PULSE_US: Final = 400
"""The shortest pulse width a calibration may give, in microseconds."""
MAX_PULSE_US: Final = 2600
"""The longest pulse width a calibration may give, in microseconds."""
KEYS: Final = ("servo_min", "servo_max", "pulse_min_us", "pulse_max_us")
"""The keys of a finger's table, in the order the documentation lists them."""
_SERVO_RANGE: Final = 180  # servo degrees


def _round(value: float) -> int:
    """Half away from zero, as a person rounds (2277.78 → 2278, 722.5 → 723)."""
    return math.floor(value + 0.5)


@dataclass(frozen=True, slots=True)
class FingerCalibration:
    """One finger's two linear maps; construction checks the values (``ValueError``)."""

    servo_min: int = 0
    """Servo degrees at logical 0 (contracted)."""
    servo_max: int = 180
    """Servo degrees at logical 180 (extended)."""
    pulse_min_us: int = 544
    """Pulse width at servo 0 degrees."""
    pulse_max_us: int = 2400
    """Pulse width at servo 180 degrees."""

    def __post_init__(self) -> None:
        for key in ("servo_min", "servo_max"):
            value = getattr(self, key)
            if type(value) is not int or not 0 <= value <= _SERVO_RANGE:
                raise ValueError(f"{key} must be a whole number of degrees from 0 to 180")
        for key in ("pulse_min_us", "pulse_max_us"):
            value = getattr(self, key)
            if type(value) is not int or not MIN_PULSE_US <= value <= MAX_PULSE_US:
                raise ValueError(f"{key} must be {MIN_PULSE_US}-{MAX_PULSE_US} microseconds")
        if self.servo_min == self.servo_max:
            raise ValueError("servo_min and servo_max must differ")
        if self.pulse_min_us == self.pulse_max_us:
            raise ValueError("pulse_min_us and pulse_max_us must differ")

    @property
    def inverted(self) -> bool:
        """Whether the servo turns the other way (``servo_min > servo_max``)."""
        return self.servo_min > self.servo_max

    def servo_degrees(self, logical: float) -> float:
        """The servo angle for a logical angle."""
        return self.servo_min + (self.servo_max - self.servo_min) * logical / MAX_ANGLE

    def logical(self, servo_degrees: float) -> float:
        """The logical angle for a servo angle (the inverse of :meth:`servo_degrees`)."""
        return (servo_degrees - self.servo_min) * MAX_ANGLE / (self.servo_max - self.servo_min)

    def servo_pulse_us(self, servo_degrees: float) -> float:
        """The pulse width for a servo angle."""
        span = self.pulse_max_us - self.pulse_min_us
        return self.pulse_min_us + span * servo_degrees / _SERVO_RANGE

    def pulse_us(self, logical: float) -> float:
        """The pulse width for a logical angle (both maps)."""
        return self.servo_pulse_us(self.servo_degrees(logical))

    @property
    def pulse_range_us(self) -> tuple[int, int]:
        """The pulse widths at logical 0 and at logical 180, rounded to whole microseconds:
        the one linear map the bundled firmware needs (the first is the longer one when the
        servo is mirrored)."""
        return _round(self.pulse_us(0)), _round(self.pulse_us(MAX_ANGLE))


_DEFAULT: Final = FingerCalibration()


class Calibration(Mapping[str, FingerCalibration]):
    """The five fingers' calibrations, by finger name, and the file they came from."""

    def __init__(
        self,
        fingers: Mapping[str, FingerCalibration] | None = None,
        *,
        source: Path | None = None,
    ) -> None:
        given = dict(fingers or {})
        unknown = set(given) - set(FINGERS)
        if unknown:
            raise ValueError(f"unknown finger(s) {sorted(unknown)}")
        self._fingers = {finger: given.get(finger, _DEFAULT) for finger in FINGERS}
        self.source = source
        """The file this calibration was read from; None for the defaults."""

    def __getitem__(self, finger: str) -> FingerCalibration:
        return self._fingers[finger]

    def __iter__(self) -> Iterator[str]:
        return iter(FINGERS)

    def __len__(self) -> int:
        return len(FINGERS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return self._fingers == other._fingers

    def __hash__(self) -> int:
        return hash(tuple(self._fingers.values()))

    def __repr__(self) -> str:
        return f"Calibration({self._fingers!r}, source={self.source!r})"

    @property
    def is_default(self) -> bool:
        """Whether every finger has the default calibration."""
        return all(value == _DEFAULT for value in self._fingers.values())

    @property
    def digest(self) -> str:
        """A short fingerprint of the values (not of the file's text): two files that
        calibrate the same way have the same digest."""
        values = {finger: asdict(value) for finger, value in self._fingers.items()}
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def info(self) -> CalibrationInfo:
        """What ``reported.calibration`` says: the file and the digest of the values."""
        return CalibrationInfo(
            file=str(self.source) if self.source is not None else None, digest=self.digest
        )

    @property
    def pulse_ranges_us(self) -> tuple[tuple[int, int], ...]:
        """Each finger's pulse widths at logical 0 and 180, in finger order."""
        return tuple(value.pulse_range_us for value in self._fingers.values())

    def with_finger(self, finger: str, **changes: int) -> Calibration:
        """A copy with some of ``finger``'s keys changed (``ValueError`` for bad values)."""
        fingers = dict(self._fingers)
        fingers[finger] = replace(fingers[finger], **changes)
        return Calibration(fingers, source=self.source)

    # -- files ---------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path | str) -> Calibration:
        """Read a calibration file; :class:`ConfigError` names the offending key."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the calibration file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"the calibration file {path} is not UTF-8 text") from None
        return cls.from_toml(text, source=path)

    @classmethod
    def from_toml(cls, text: str, *, source: Path | None = None) -> Calibration:
        """Parse the text of a calibration file (``source`` names it in errors)."""
        where = str(source) if source is not None else "the calibration"
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from None
        return cls(_read_fingers(data, where), source=source)


def _read_fingers(data: Mapping[str, Any], where: str) -> dict[str, FingerCalibration]:
    finger_list = ", ".join(FINGERS)
    for key in data:
        if key != "fingers":
            raise ConfigError(
                f"{where}: unknown key {key!r}; a calibration file holds only "
                "[fingers.<finger>] tables"
            )
    tables = data.get("fingers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: fingers must be a table of [fingers.<finger>] tables")
    fingers: dict[str, FingerCalibration] = {}
    for finger, table in tables.items():
        if finger not in FINGERS:
            raise ConfigError(
                f"{where}: unknown finger {finger[:32]!r} in [fingers.{finger[:32]}]; "
                f"the fingers are {finger_list}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: fingers.{finger} must be a table of {', '.join(KEYS)}")
        fingers[finger] = _read_finger(finger, table, where)
    return fingers


def _read_finger(finger: str, table: Mapping[str, Any], where: str) -> FingerCalibration:
    values: dict[str, int] = {}
    for key, value in table.items():
        name = f"fingers.{finger}.{key[:32]}"
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {name}; the keys are {', '.join(KEYS)}")
        values[key] = _whole(value, name, where, key.startswith("pulse"))
    merged = {**asdict(_DEFAULT), **values}
    for low, high in (("servo_min", "servo_max"), ("pulse_min_us", "pulse_max_us")):
        if merged[low] == merged[high]:
            named = high if high in values else low
            raise ConfigError(
                f"{where}: fingers.{finger}.{named} makes {low} and {high} both "
                f"{merged[low]}; they must differ"
            )
    return FingerCalibration(**merged)


def _whole(value: Any, name: str, where: str, pulse: bool) -> int:
    number: int | None = None
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    low, high, unit = (MIN_PULSE_US, MAX_PULSE_US, "microseconds") if pulse else (0, 180, "degrees")
    if number is None:
        raise ConfigError(
            f"{where}: {name} must be a whole number of {unit} from {low} to {high}, "
            f"not {value!r:.40}"
        )
    if not low <= number <= high:
        raise ConfigError(f"{where}: {name} = {number} is outside {low}-{high} {unit}")
    return number


def save_finger(path: Path | str, finger: str, values: Mapping[str, int]) -> Calibration:
    """Write ``values`` (some of :data:`KEYS`) into ``finger``'s table of the file at ``path``,
    creating the file or the table if needed and keeping everything else in it as it was,
    comments included. The result is checked like any file before it is written, and
    returned."""
    import tomlkit  # only the calibration helper writes files: services never load it
    import tomlkit.exceptions

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the calibration file {path}: {exc}") from None
    Calibration.from_toml(text, source=path)  # refuse to edit a file that is already bad
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:  # pragma: no cover - tomllib said it is fine
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    fingers = document.setdefault("fingers", tomlkit.table(is_super_table=True))
    table = fingers.setdefault(finger, tomlkit.table())
    for key in KEYS:
        if key in values:
            table[key] = values[key]
    new_text = tomlkit.dumps(document)
    calibration = Calibration.from_toml(new_text, source=path)
    try:
        path.write_text(new_text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the calibration file {path}: {exc.strerror}") from None
    return calibration
