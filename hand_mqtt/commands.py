"""Every accepted command form turned into a typed :class:`Command`, or a clear error.

Accepted forms (see docs/topics.md, whose example tables a test sends as written):

- ``<base>/<hand>/<finger>/set``: ``90`` (absolute), ``+15`` / ``-15`` (relative),
  ``{"angle": 90}``, ``{"delta": -15}``, each JSON form with an optional ``"transaction"``;
- ``<base>/<hand>/set``: a JSON object with finger names (a number, or ``{"angle": n}`` /
  ``{"delta": n}``), ``"pose"``, ``"angles"`` (five numbers or nulls) and ``"transaction"``;
  or ``{"relax": true}`` / ``{"relax": [finger, ...]}``; or ``{"lock": true}`` /
  ``{"lock": false}`` (the emergency stop);
- ``<base>/<hand>/pose/set``: a pose name, plain or as a JSON string or ``{"pose": name}``;
  a gesture's name there plays the gesture;
- ``<base>/<hand>/set`` with ``"gesture"`` (and ``"repeat"``): play a gesture.

Every JSON form that moves fingers to a pose or to angles may add ``"duration_ms"`` (0 to
60000): every finger that moves arrives at its target that many milliseconds later.

One rule for numbers, in every form: an angle or a delta is a whole number of degrees written
in decimal digits, with an optional sign and an optional fraction of zeros (``90``, ``-15``,
``+15``, ``90.0``), either as a JSON number or as text (a plain payload, or a JSON string).
Anything else is refused with a sentence: ``90.5``, ``1e2``, ``0x5A``, ``true``, ``NaN``.
A JSON number is what its key says (an angle for a finger name or ``angle``, a delta for
``delta``); in a finger's short form, its plain payload or a string given for a finger, a sign
makes the number a delta.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from hand_mqtt.errors import CommandError
from hand_mqtt.gestures import MAX_REPEAT
from hand_mqtt.model import (
    FINGERS,
    MAX_ANGLE,
    MIN_ANGLE,
    Angles,
    PoseBook,
    excerpt,
    is_angle,
)
from hand_mqtt.topics import CommandTopic

__all__ = [
    "MAX_DURATION_MS",
    "MAX_PAYLOAD_BYTES",
    "Command",
    "FingerChange",
    "parse_command",
    "read_angle",
    "read_delta",
]

MAX_PAYLOAD_BYTES: Final = 4096
MAX_TRANSACTION_CHARS: Final = 64
MAX_DURATION_MS: Final = 60_000
"""The longest timed move a command may ask for, in milliseconds."""
_FINGER_INDEX: Final = {finger: i for i, finger in enumerate(FINGERS)}
_MOTION_FIELDS: Final = frozenset((*FINGERS, "pose", "angles", "duration_ms"))
_HAND_FIELDS: Final = frozenset(("pose", "angles", "transaction", "duration_ms", "relax", "lock"))


@dataclass(frozen=True, slots=True)
class FingerChange:
    """Set a finger to an angle, or move it by a delta (clamped to 0-180)."""

    finger: int
    kind: Literal["angle", "delta"]
    value: int


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command: an optional pose, then finger changes applied in order (a motion,
    optionally timed); or fingers to relax; or the emergency stop's lock or unlock."""

    pose: str | None = None
    changes: tuple[FingerChange, ...] = ()
    transaction: str | int | None = None
    gesture: str | None = None
    """A gesture to play (then there is no pose and no change), ``repeat`` times."""
    repeat: int = 1
    duration_ms: int | None = None
    """A motion's duration: every finger that moves arrives this many milliseconds later."""
    relax: tuple[int, ...] = ()
    """Finger indexes to relax (no pulses until a command moves them)."""
    lock: bool | None = None
    """True: emergency stop (relax all, refuse motion until unlocked); False: unlock."""

    @property
    def moves(self) -> bool:
        """Whether this command sets or nudges fingers, or plays a pose or a gesture: a motion."""
        return self.pose is not None or bool(self.changes) or self.gesture is not None

    @property
    def driven(self) -> frozenset[int]:
        """The fingers this motion names (a pose or a gesture names all five): they are driven
        again even when relaxed, at the same angle or a new one."""
        if self.pose is not None or self.gesture is not None:
            return frozenset(range(len(FINGERS)))
        return frozenset(change.finger for change in self.changes)

    def apply(self, current: Angles, poses: PoseBook) -> Angles:
        """The angles after this command, starting from ``current``."""
        angles = list(poses[self.pose] if self.pose is not None else current)
        for change in self.changes:
            if change.kind == "angle":
                angles[change.finger] = change.value
            else:
                moved = angles[change.finger] + change.value
                angles[change.finger] = min(MAX_ANGLE, max(MIN_ANGLE, moved))
        return tuple(angles)  # type: ignore[return-value]


# A number as text: digits with an optional sign and an optional fraction of zeros.
_NUMBER_TEXT: Final = re.compile(r"[+-]?[0-9]+(?:\.0+)?")
_MAX_NUMBER_CHARS: Final = 16
# A JSON number with a fraction or an exponent; whole only when its fraction is all zeros.
_WHOLE_JSON_FRACTION: Final = re.compile(r"-?[0-9]+\.0+")


@dataclass(frozen=True, slots=True)
class _NotWhole:
    """A JSON number that is not written as a whole number (``90.5``, ``1e2``), as written."""

    text: str


def _json_fraction(text: str) -> int | _NotWhole:
    if _WHOLE_JSON_FRACTION.fullmatch(text):
        return int(text.partition(".")[0])
    return _NotWhole(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this hand understands")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_float=_json_fraction, parse_constant=_reject_constant)
    except RecursionError:
        raise CommandError("the JSON is nested too deeply") from None
    except ValueError as exc:
        raise CommandError(f"the payload is not valid JSON ({exc})") from None


def _shown(value: Any) -> str:
    """A value quoted in a sentence as the sender wrote it (JSON spelling: ``true``, ``null``,
    ``1e2``; a string in quotes), escaped and cut short: a payload can hold 4 kB of anything,
    and the answer to it stays a sentence."""
    if isinstance(value, _NotWhole):
        text = value.text
    elif isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (ValueError, RecursionError):  # too deep to print: say what it is
            text = type(value).__name__
    return excerpt(text, 40)


def _some_keys(keys: Iterable[str]) -> str:
    """The first three keys, quoted, and how many more: a payload may hold hundreds."""
    ordered = sorted(keys)
    named = ", ".join(_shown(key) for key in ordered[:3])
    return named + (f" and {len(ordered) - 3} more" if len(ordered) > 3 else "")


def _whole_number(value: Any, what: str, kind: str) -> int:
    """The one rule for numbers (see the module's docstring)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _MAX_NUMBER_CHARS and _NUMBER_TEXT.fullmatch(text):
            return int(text.partition(".")[0])
    raise CommandError(
        f"{what}: {kind} must be a whole number of degrees such as 90, not {_shown(value)}"
    )


def _angle(value: Any, what: str) -> int:
    number = _whole_number(value, what, "an angle")
    if not is_angle(number):
        raise CommandError(f"{what}: {_shown(number)} is out of range (an angle is 0 to 180)")
    return number


def _delta(value: Any, what: str) -> int:
    number = _whole_number(value, what, "a delta")
    if not -MAX_ANGLE <= number <= MAX_ANGLE:
        raise CommandError(f"{what}: a delta of {_shown(number)} is out of range (-180 to +180)")
    return number


def read_angle(text: str, what: str) -> int:
    """An angle written as text (``90``, ``90.0``), by the rule every command form follows.

    Raises :class:`CommandError` with a sentence that starts with ``what``.
    """
    return _angle(text, what)


def read_delta(text: str, what: str) -> int:
    """A delta written as text (``15``, ``+15``, ``-15``), by the same rule."""
    return _delta(text, what)


def _transaction(data: dict[str, Any]) -> str | int | None:
    if "transaction" not in data:
        return None
    value = data["transaction"]
    if isinstance(value, bool) or not isinstance(value, str | int) or value is None:
        raise CommandError("transaction must be a string or an integer")
    if isinstance(value, str) and not 0 < len(value) <= MAX_TRANSACTION_CHARS:
        raise CommandError(f"transaction must be 1 to {MAX_TRANSACTION_CHARS} characters")
    if isinstance(value, str) and any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        # It is echoed in the state: JSON parsers refuse a lone surrogate, and control
        # characters have no place in an identifier.
        raise CommandError("transaction must not hold control characters or lone surrogates")
    if isinstance(value, int) and not -(2**53) < value < 2**53:
        raise CommandError("transaction number is too large")
    return value


def _duration(data: dict[str, Any]) -> int | None:
    if "duration_ms" not in data:
        return None
    value = data["duration_ms"]
    try:  # the one rule for numbers, in milliseconds
        number: int | None = _whole_number(value, "duration_ms", "a duration")
    except CommandError:
        number = None
    if number is None or not 0 <= number <= MAX_DURATION_MS:
        raise CommandError(
            f"duration_ms must be a whole number of milliseconds from 0 to {MAX_DURATION_MS}, "
            f"not {_shown(value)}"
        )
    return number


def _relax_list(value: Any) -> tuple[int, ...]:
    if value is True:
        return tuple(range(len(FINGERS)))
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in _FINGER_INDEX]
        if unknown:
            raise CommandError(
                f"relax: unknown finger {_shown(unknown[0])}; fingers are {', '.join(FINGERS)}"
            )
        return tuple(sorted({_FINGER_INDEX[v] for v in value}))
    raise CommandError('relax must be true or a list of finger names such as ["index", "thumb"]')


def request_transaction(data: dict[str, Any]) -> str | int | None:
    """The ``transaction`` of a JSON request, checked as a command's; raises
    :class:`CommandError` when it is not valid."""
    return _transaction(data)


def _peek_transaction(data: dict[str, Any]) -> str | int | None:
    try:
        return _transaction(data)
    except CommandError:
        return None


def _finger_value(value: Any, finger: str) -> FingerChange:
    index = _FINGER_INDEX[finger]
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"angle"}:
            return FingerChange(index, "angle", _angle(value["angle"], finger))
        if keys == {"delta"}:
            return FingerChange(index, "delta", _delta(value["delta"], finger))
        raise CommandError(f'{finger}: give {{"angle": n}} or {{"delta": n}}')
    if isinstance(value, str):
        return _finger_text(value, finger)
    return FingerChange(index, "angle", _angle(value, finger))


def _finger_text(text: str, finger: str) -> FingerChange:
    """The short form: ``90`` is an angle, ``+15`` or ``-15`` a delta."""
    index = _FINGER_INDEX[finger]
    stripped = text.strip()
    if len(stripped) > _MAX_NUMBER_CHARS or not _NUMBER_TEXT.fullmatch(stripped):
        raise CommandError(
            f"{finger}: expected an angle (0 to 180) or a signed delta such as +15 or -15, "
            f"got {_shown(stripped)}"
        )
    if stripped[0] in "+-":
        return FingerChange(index, "delta", _delta(stripped, finger))
    return FingerChange(index, "angle", _angle(stripped, finger))


def _pose(value: Any, poses: PoseBook) -> str:
    if not isinstance(value, str):
        raise CommandError(f"pose must be a name, not {_shown(value)}")
    name = value.strip()
    if name in poses.gestures:
        raise CommandError(f'{_shown(name)} is a gesture, not a pose: send {{"gesture": "{name}"}}')
    if name not in poses:
        known = ", ".join(poses)
        raise CommandError(f"unknown pose {_shown(name)}; known poses: {known}")
    return name


def _named(name: Any, poses: PoseBook, transaction: str | int | None = None) -> Command:
    """A name on the pose topic: a pose, or a gesture to play."""
    if isinstance(name, str) and name.strip() in poses.gestures:
        return Command(gesture=name.strip(), transaction=transaction)
    if isinstance(name, str) and name.strip() not in poses and poses.gestures:
        raise CommandError(
            f"unknown pose {_shown(name.strip())}; known poses: {', '.join(poses)}; "
            f"gestures: {', '.join(poses.gestures)}"
        )
    return Command(pose=_pose(name, poses), transaction=transaction)


def _gesture_command(data: dict[str, Any], poses: PoseBook) -> Command:
    extra = set(data) - {"gesture", "repeat", "transaction"}
    if extra:
        raise CommandError(
            "a gesture is played on its own: give gesture, repeat and transaction only, not "
            + _some_keys(extra)
        )
    name = data["gesture"]
    if not isinstance(name, str) or name not in poses.gestures:
        raise CommandError(f"unknown gesture {_shown(name)}; gestures: {', '.join(poses.gestures)}")
    repeat = data.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise CommandError(f"repeat must be a whole number from 1 to {MAX_REPEAT}")
    return Command(gesture=name, repeat=repeat, transaction=_transaction(data))


def _finger_command(finger: str, text: str) -> Command:
    stripped = text.strip()
    if stripped.startswith("{"):
        data = _loads(stripped)
        if not isinstance(data, dict):
            raise CommandError(f"{finger}: expected a JSON object")
        transaction = _peek_transaction(data)
        try:
            _transaction(data)
            duration = _duration(data)
            body = {k: v for k, v in data.items() if k not in ("transaction", "duration_ms")}
            if not body:
                raise CommandError(f'{finger}: give {{"angle": n}} or {{"delta": n}}')
            change = _finger_value(body, finger)
            return Command(changes=(change,), transaction=transaction, duration_ms=duration)
        except CommandError as exc:
            raise CommandError(str(exc), transaction) from None
    return Command(changes=(_finger_text(stripped, finger),))


def _pose_command(text: str, poses: PoseBook) -> Command:
    stripped = text.strip()
    if stripped.startswith(("{", '"')):
        data = _loads(stripped)
        if isinstance(data, str):
            return _named(data, poses)
        if not isinstance(data, dict):
            raise CommandError('expected a pose name or {"pose": name}')
        transaction = _peek_transaction(data)
        try:
            _transaction(data)
            unknown = set(data) - {"pose", "transaction", "duration_ms"}
            if unknown or "pose" not in data:
                raise CommandError('expected a pose name or {"pose": name}')
            command = _named(data["pose"], poses, transaction)
            duration = _duration(data)
            if duration is not None and command.gesture is not None:
                raise CommandError(
                    "duration_ms times a pose, not a gesture (its steps have theirs)"
                )
            return replace(command, duration_ms=duration)
        except CommandError as exc:
            raise CommandError(str(exc), transaction) from None
    return _named(stripped, poses)


def _hand_command(text: str, poses: PoseBook) -> Command:
    data = _loads(text)
    if not isinstance(data, dict):
        raise CommandError(
            'expected a JSON object such as {"index": 90}, {"pose": "peace"} or '
            '{"angles": [180, null, 0, 0, 0]}'
        )
    transaction = _peek_transaction(data)
    try:
        _transaction(data)
        if "gesture" in data:
            return _gesture_command(data, poses)
        unknown = set(data) - set(FINGERS) - _HAND_FIELDS
        if unknown:
            raise CommandError(
                f"unknown field(s) {_some_keys(unknown)}; "
                "expected finger names, pose, angles, duration_ms, gesture, relax, lock or "
                "transaction"
            )
        motion = [key for key in data if key in _MOTION_FIELDS]
        if "lock" in data:
            if set(data) - {"lock", "transaction"}:
                raise CommandError("lock goes alone (with a transaction at most)")
            if not isinstance(data["lock"], bool):
                raise CommandError("lock must be true (emergency stop) or false (unlock)")
            return Command(lock=data["lock"], transaction=transaction)
        if "relax" in data:
            if motion:
                raise CommandError(
                    "relax cannot be combined with finger names, pose, angles or duration_ms"
                )
            return Command(relax=_relax_list(data["relax"]), transaction=transaction)
        duration = _duration(data)
        fingers = [finger for finger in FINGERS if finger in data]
        if "angles" in data and (fingers or "pose" in data):
            raise CommandError("give either angles or finger names and pose, not both")
        pose = _pose(data["pose"], poses) if "pose" in data else None
        changes: list[FingerChange] = []
        if "angles" in data:
            changes = _angles_list(data["angles"])
        else:
            bad: list[str] = []
            for finger in fingers:
                try:
                    changes.append(_finger_value(data[finger], finger))
                except CommandError as exc:
                    bad.append(str(exc))
            if bad:
                raise CommandError("; ".join(bad))
        if pose is None and not changes and "angles" not in data:
            if duration is not None:
                raise CommandError("duration_ms needs a pose, angles or finger names to time")
            raise CommandError("the command names no finger, pose, angles, relax or lock")
        return Command(
            pose=pose, changes=tuple(changes), transaction=transaction, duration_ms=duration
        )
    except CommandError as exc:
        raise CommandError(str(exc), transaction) from None


def _angles_list(value: Any) -> list[FingerChange]:
    if not isinstance(value, list) or len(value) != len(FINGERS):
        raise CommandError(
            "angles must be a list of five values (index, middle, ring, pinky, thumb), "
            "each 0 to 180 or null to leave the finger as it is"
        )
    changes: list[FingerChange] = []
    bad: list[str] = []
    for index, (finger, angle) in enumerate(zip(FINGERS, value, strict=True)):
        if angle is None:
            continue
        try:
            changes.append(FingerChange(index, "angle", _angle(angle, finger)))
        except CommandError as exc:
            bad.append(str(exc))
    if bad:
        raise CommandError("; ".join(bad))
    return changes


def parse_command(topic: CommandTopic, payload: bytes, poses: PoseBook) -> Command:
    """Turn a payload received on a command topic into a :class:`Command`.

    Raises :class:`CommandError` with a sentence a person understands, and the request's
    transaction when one could be read.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"the payload is {len(payload)} bytes; at most 4096 are accepted")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("the payload is not UTF-8 text") from None
    if not text.strip():
        raise CommandError("the payload is empty")
    if topic.target == "finger":
        assert topic.finger is not None
        return _finger_command(topic.finger, text)
    if topic.target == "pose":
        return _pose_command(text, poses)
    return _hand_command(text, poses)
