"""Fingers, angles, poses and the payloads that describe a hand.

A logical angle is a whole number of degrees from 0 (contracted) to 180 (extended). Fingers are
always listed in the order of :data:`FINGERS`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from hand_mqtt.errors import ConfigError

if TYPE_CHECKING:
    from hand_mqtt.gestures import Gesture

__all__ = [
    "BUILTIN_POSES",
    "DEFAULT_PINS",
    "FINGERS",
    "MAX_ANGLE",
    "MIN_ANGLE",
    "Angles",
    "BridgeResponse",
    "CalibrationInfo",
    "ErrorReport",
    "FirmwareInfo",
    "GestureProgress",
    "HandState",
    "PoseBook",
    "Reported",
    "ServedHands",
    "angles_of",
    "excerpt",
    "is_angle",
]

FINGERS: Final = ("index", "middle", "ring", "pinky", "thumb")
"""The five fingers, in the order used by every list of angles."""

DEFAULT_PINS: Final = (11, 10, 9, 6, 5)
"""Arduino Uno pins of the original wiring, in finger order."""

MIN_ANGLE: Final = 0
MAX_ANGLE: Final = 180

Angles = tuple[int, int, int, int, int]
Angle = Annotated[int, Field(ge=MIN_ANGLE, le=MAX_ANGLE)]
Finger = Literal["index", "middle", "ring", "pinky", "thumb"]

BUILTIN_POSES: Final[Mapping[str, Angles]] = {
    "open": (180, 180, 180, 180, 180),
    "fist": (0, 0, 0, 0, 0),
    "peace": (180, 180, 0, 0, 0),
    "rockstar": (180, 0, 0, 180, 180),
    "okay": (0, 180, 180, 180, 0),
    "point": (180, 0, 0, 0, 180),
    "phone": (0, 0, 0, 180, 180),
}

_POSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GestureProgress(_Frozen):
    """Which gesture the arbiter is playing, and where it is (steps and rounds count from 1)."""

    name: str
    step: int = Field(ge=1)
    steps: int = Field(ge=1)
    round: int = Field(default=1, ge=1)
    rounds: int = Field(default=1, ge=1)


class HandState(_Frozen):
    """The desired state of one hand, as the arbiter publishes it (retained)."""

    index: Angle = MAX_ANGLE
    middle: Angle = MAX_ANGLE
    ring: Angle = MAX_ANGLE
    pinky: Angle = MAX_ANGLE
    thumb: Angle = MAX_ANGLE
    pose: str | None = None
    version: int = Field(default=0, ge=0)
    transaction: str | int | None = None
    gesture: GestureProgress | None = None
    """The gesture being played, when this state is one of its steps."""
    relaxed: tuple[Finger, ...] = ()
    """The fingers relaxed by a command (in finger order): the device stops their pulses."""
    locked: bool = False
    """The emergency stop: every finger relaxed, motion commands refused until unlocked."""
    duration_ms: int | None = Field(default=None, ge=0)
    """The last motion's duration: the fingers it moves arrive together this much later."""
    answers: str | None = None
    """A digest of the command this state answers (see ``services.leases.command_digest``):
    an arbiter standing by learns from it that the command was served."""

    @property
    def angles(self) -> Angles:
        """The five angles in finger order."""
        return (self.index, self.middle, self.ring, self.pinky, self.thumb)

    def to_json(self) -> str:
        """The payload of the ``state`` topic; what ``model_dump_json`` gives, made faster
        because the arbiter writes one per command."""
        relaxed = ",".join(f'"{finger}"' for finger in self.relaxed)
        duration = "null" if self.duration_ms is None else str(self.duration_ms)
        return (
            f'{{"index":{self.index},"middle":{self.middle},"ring":{self.ring},'
            f'"pinky":{self.pinky},"thumb":{self.thumb},"pose":{json.dumps(self.pose)},'
            f'"version":{self.version},"transaction":{json.dumps(self.transaction)},'
            f'"gesture":{self.gesture.model_dump_json() if self.gesture else "null"},'
            f'"relaxed":[{relaxed}],"locked":{"true" if self.locked else "false"},'
            f'"duration_ms":{duration},"answers":{json.dumps(self.answers)}}}'
        )


class FirmwareInfo(_Frozen):
    """What the firmware said about itself in its handshake, and what it can do."""

    name: str = "hand-mqtt"
    version: str
    protocol: int | str
    """The bundled firmware's serial protocol version (``2``), or the protocol another firmware
    speaks (``"Firmata 2.4"``)."""
    fingers: int
    failsafe: bool = True
    """The firmware has a failsafe of its own. StandardFirmata has none: when the host falls
    silent its servos keep their last pulses forever."""
    relax: bool = True
    """The firmware can leave fingers limp."""
    timed_moves: bool = True
    """The firmware can bring the fingers of a move to their targets together
    (``duration_ms``); without, fingers move at once."""


class CalibrationInfo(_Frozen):
    """Which calibration is in force: the file it came from and a digest of its values."""

    file: str | None = None
    """The calibration file (None: the defaults, no file given)."""
    digest: str
    """A fingerprint of the values: equal for two files that calibrate the same way."""


class Reported(_Frozen):
    """What the device service last heard from the firmware (retained)."""

    index: Angle | None = None
    middle: Angle | None = None
    ring: Angle | None = None
    pinky: Angle | None = None
    thumb: Angle | None = None
    link: Literal["up", "down"] = "down"
    version: int | None = None
    """The desired-state version whose five angles are exactly these (None when the hand was
    never asked for them: a failsafe's safe pose, angles the firmware changed)."""
    failsafe: bool = False
    moving: bool = False
    mismatch: bool = False
    """The firmware confirmed other angles than it was sent (it clamps them, or is broken)."""
    relaxed: tuple[Finger, ...] = ()
    """The fingers the firmware says get no pulses (relaxed, or not driven since it started)."""
    hold_relaxed: tuple[Finger, ...] = ()
    """The fingers among them that the hold timeout relaxed (``--hold-timeout``)."""
    calibration: CalibrationInfo | None = None
    """The calibration the device service gives the firmware at every handshake."""
    firmware: FirmwareInfo | None = None
    serial: str | None = None
    owner: str | None = None
    """Identifies the device service instance that owns the hand."""
    claimed: float | None = None
    """When that instance claimed the hand (Unix time); the newest claim wins a takeover."""
    takeover: bool = False
    """The claim was made to take the hand over (``--takeover``). A newer claim without it
    never displaces a running owner: its service stops instead, however late it learnt of it."""

    @property
    def angles(self) -> tuple[int | None, ...]:
        """The five reported angles in finger order (None when not known)."""
        return (self.index, self.middle, self.ring, self.pinky, self.thumb)


def excerpt(text: str, limit: int) -> str:
    """``text`` made safe to quote: every unprintable character (control characters, lone
    surrogates, format characters such as a right-to-left override) shown as an escape such as
    ``\\x00`` or ``\\ud800``, and cut to ``limit`` characters, ending in ``…`` when cut."""
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = char if char.isprintable() else _escaped(char)
        if used + len(piece) > limit - 1:
            pieces.append("…")
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


ERROR_TOPIC_CHARS: Final = 100
ERROR_PAYLOAD_CHARS: Final = 100
ERROR_SENTENCE_CHARS: Final = 400


class BridgeResponse(_Frozen):
    """The arbiter's answer on ``<base>/bridge/response/<name>`` to a request it received on
    ``<base>/bridge/request/<name>``."""

    request: str
    status: Literal["ok", "error"]
    transaction: str | int | None = None
    error: str | None = None
    """Why the request was refused, when ``status`` is ``error``."""
    hand: str | None = None
    """The hand a ``retire`` request named."""
    session: str
    """A random id of this run of the arbiter: it is new after every restart."""
    started: float
    """When this run of the arbiter started (Unix time)."""


class ErrorReport(_Frozen):
    """The answer to a rejected command, published on the hand's ``error`` topic."""

    topic: str
    payload: str
    error: str
    transaction: str | int | None = None
    answers: str | None = None
    """A digest of the refused command (see ``HandState.answers``)."""

    @classmethod
    def about(
        cls,
        topic: str,
        payload: bytes,
        sentence: str,
        transaction: str | int | None = None,
        answers: str | None = None,
    ) -> ErrorReport:
        """The report on a rejected message, bounded whatever the message held: the topic and
        the start of the payload as short escaped excerpts (bytes that are not UTF-8 as
        ``\\xNN``), the sentence cut at :data:`ERROR_SENTENCE_CHARS` characters."""
        start = payload[: ERROR_PAYLOAD_CHARS * 4].decode("utf-8", "backslashreplace")
        return cls(
            topic=excerpt(topic, ERROR_TOPIC_CHARS),
            payload=excerpt(start, ERROR_PAYLOAD_CHARS),
            error=excerpt(sentence, ERROR_SENTENCE_CHARS),
            transaction=transaction,
            answers=answers,
        )


class ServedHands(BaseModel):
    """Which hands the arbiter serves, on ``<base>/bridge/hands`` (retained).

    Fields a newer arbiter may add are ignored, so older clients keep reading it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    hands: tuple[str, ...] = ()
    """The hands named with ``--hand`` (empty with ``--all-hands``)."""
    all_hands: bool = False
    """True with ``--all-hands``: any hand under the base topic is served."""

    def serves(self, hand: str) -> bool:
        return self.all_hands or hand in self.hands


def is_angle(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a logical angle: a whole number (not a bool) from 0 to 180.

    The one definition every check of an angle uses, so the parser, the pose and gesture files,
    the plot and the command line cannot come to disagree.
    """
    return type(value) is int and MIN_ANGLE <= value <= MAX_ANGLE


class Lease(_Frozen):
    """A message on a hand's lease topic, ``<base>/bridge/lease/<hand>``: which arbiter serves
    the hand (see :mod:`hand_mqtt.services.leases`)."""

    hand: str
    arbiter: str | None
    """The arbiter that serves (or claims) the hand; None once released."""
    epoch: int = Field(ge=0)
    """Grows by one with every change of arbiter; a message of an older epoch is stale."""
    status: Literal["claim", "serving", "handed", "released"]
    """``claim``: wants the hand (not retained); ``serving``: holds it (retained); ``handed``:
    the previous holder stood down for ``arbiter`` (not retained); ``released``: nobody holds
    it (retained)."""
    previous: str | None = None
    """The arbiter that held the hand before (for ``handed`` and ``released``: the one that
    stood down)."""


def angles_of(values: Iterable[int]) -> Angles:
    """Check and convert five angles into an :data:`Angles` tuple."""
    result = tuple(values)
    if len(result) != len(FINGERS):
        raise ValueError(f"expected {len(FINGERS)} angles, got {len(result)}")
    for finger, angle in zip(FINGERS, result, strict=True):
        if not is_angle(angle):
            raise ValueError(f"{finger}: {angle!r} is not an angle from 0 to 180")
    return result  # type: ignore[return-value]


class PoseBook(Mapping[str, Angles]):
    """The built-in poses and gestures plus any the user defined; read-only once made.

    A pose and a gesture never share a name (the pose topic and Home Assistant's select take
    either): a user's pose hides a built-in gesture of the same name.
    """

    def __init__(
        self,
        extra: Mapping[str, Angles] | None = None,
        gestures: Mapping[str, Gesture] | None = None,
    ) -> None:
        from hand_mqtt.gestures import BUILTIN_GESTURES, check_name

        poses = dict(BUILTIN_POSES)
        for name, angles in (extra or {}).items():
            if not _POSE_NAME.match(name):
                raise ConfigError(
                    f"pose name {name!r} must be 1-32 lowercase letters, digits, '-' or '_'"
                )
            try:
                poses[name] = angles_of(angles)
            except ValueError as exc:
                raise ConfigError(f"pose {name!r}: {exc}") from None
        self._poses = poses
        self._by_angles: dict[Angles, str] = {}
        for name, angles in poses.items():
            self._by_angles.setdefault(angles, name)
        for name in gestures or {}:
            check_name(name)
            if name in poses:
                raise ConfigError(f"gesture {name!r} has the name of a pose; rename one of them")
        self.gestures: Mapping[str, Gesture] = {
            **{n: g for n, g in BUILTIN_GESTURES.items() if n not in poses},
            **(gestures or {}),
        }
        """Every gesture the arbiter plays, by name."""

    def __getitem__(self, name: str) -> Angles:
        return self._poses[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._poses)

    def __len__(self) -> int:
        return len(self._poses)

    def name_of(self, angles: Angles) -> str | None:
        """The first pose whose angles are exactly these, if any."""
        return self._by_angles.get(angles)

    @classmethod
    def from_file(cls, path: Path) -> PoseBook:
        """Read user poses and gestures from a TOML file: a ``[poses]`` table, and
        ``[gestures]`` (see :mod:`hand_mqtt.gestures`).

        Each pose is either a list of five angles or a table of finger names (missing fingers
        default to 180, open)::

            [poses]
            wave = [180, 90, 90, 90, 180]
            thumbs-up = { thumb = 180, index = 0, middle = 0, ring = 0, pinky = 0 }
        """
        from hand_mqtt.gestures import parse_gestures

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read poses file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"poses file {path} is not valid TOML: {exc}") from None
        table = data.get("poses", {})
        if not isinstance(table, dict):
            raise ConfigError(f"poses file {path}: [poses] must be a table")
        extra: dict[str, Angles] = {}
        for name, value in table.items():
            if isinstance(value, list):
                angles = value
            elif isinstance(value, dict):
                unknown = set(value) - set(FINGERS)
                if unknown:
                    raise ConfigError(f"pose {name!r}: unknown finger(s) {sorted(unknown)}")
                angles = [value.get(finger, MAX_ANGLE) for finger in FINGERS]
            else:
                raise ConfigError(f"pose {name!r}: give a list of five angles or a finger table")
            try:
                extra[name] = angles_of(angles)
            except ValueError as exc:
                raise ConfigError(f"pose {name!r}: {exc}") from None
        poses = cls(extra)
        if "gestures" not in data:
            return poses
        return cls(extra, parse_gestures(data["gestures"], poses, str(path)))
