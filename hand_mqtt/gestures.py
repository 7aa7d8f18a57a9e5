"""Gestures: named lists of timed steps that the arbiter plays (docs/topics.md, "Gestures").

A step is a pose, five angles or some fingers (the others stay), reached in ``move_ms`` and
then held for ``hold_ms``. Gestures live in the arbiter's poses file next to the poses::

    [gestures.hello]
    steps = [
      { pose = "open", move_ms = 300, hold_ms = 200 },
      { angles = [90, 90, 90, 90, 180], move_ms = 300, hold_ms = 200 },
      { pose = "open", index = 0, move_ms = 200, hold_ms = 400 },
    ]

Pose names are resolved when the file is read, so a step always knows its angles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS, is_angle

__all__ = [
    "BUILTIN_GESTURES",
    "MAX_REPEAT",
    "MAX_STEPS",
    "MAX_STEP_MS",
    "MIN_STEP_MS",
    "Gesture",
    "GestureStep",
    "parse_gestures",
]

MAX_STEPS: Final = 100
MAX_STEP_MS: Final = 60_000
"""The longest move, and the longest hold, of one step."""
MIN_STEP_MS: Final = 50
"""The shortest step (move plus hold): a gesture publishes at most 20 states a second."""
MAX_REPEAT: Final = 100
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

StepAngles = tuple[int | None, int | None, int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class GestureStep:
    """One step: the angles to reach (None leaves a finger), how fast, how long to stay."""

    angles: StepAngles
    move_ms: int = 0
    hold_ms: int = 0
    pose: str | None = None
    """The pose the step was written as, if it was."""

    @property
    def duration_ms(self) -> int:
        return self.move_ms + self.hold_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "pose": self.pose,
            "angles": list(self.angles),
            "move_ms": self.move_ms,
            "hold_ms": self.hold_ms,
        }


@dataclass(frozen=True, slots=True)
class Gesture:
    """A named list of steps, played in order by the arbiter."""

    name: str
    steps: tuple[GestureStep, ...]

    @property
    def duration_ms(self) -> int:
        """How long one round takes."""
        return sum(step.duration_ms for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The gesture as ``<base>/bridge/gestures`` announces it."""
        return {
            "steps": [step.to_dict() for step in self.steps],
            "duration_ms": self.duration_ms,
        }

    def to_toml(self, comment: str = "") -> str:
        """The gesture as a ``[gestures.<name>]`` table of a poses file."""
        lines = [f"# {line}" for line in comment.splitlines()]
        lines += [f"[gestures.{self.name}]", "steps = ["]
        for step in self.steps:
            if step.pose is not None:
                where = f'pose = "{step.pose}"'
            elif None in step.angles:
                where = ", ".join(
                    f"{finger} = {angle}"
                    for finger, angle in zip(FINGERS, step.angles, strict=True)
                    if angle is not None
                )
            else:
                where = f"angles = [{', '.join(map(str, step.angles))}]"
            lines.append(f"  {{ {where}, move_ms = {step.move_ms}, hold_ms = {step.hold_ms} }},")
        lines.append("]")
        return "\n".join(lines) + "\n"


def _step(
    angles: Sequence[int | None], move_ms: int, hold_ms: int, pose: str | None = None
) -> GestureStep:
    return GestureStep(tuple(angles), move_ms, hold_ms, pose)  # type: ignore[arg-type]


BUILTIN_GESTURES: Final[Mapping[str, Gesture]] = {
    # One finger more at each step, from a fist to an open hand.
    "count": Gesture(
        "count",
        (
            _step((0, 0, 0, 0, 0), 400, 400, "fist"),
            _step((180, 0, 0, 0, 0), 300, 500),
            _step((180, 180, 0, 0, 0), 300, 500),
            _step((180, 180, 180, 0, 0), 300, 500),
            _step((180, 180, 180, 180, 0), 300, 500),
            _step((180, 180, 180, 180, 180), 300, 600, "open"),
        ),
    ),
    # The fingers bow twice from an open hand, the thumb stays up.
    "wave": Gesture(
        "wave",
        (
            _step((180, 180, 180, 180, 180), 300, 100, "open"),
            _step((90, 90, 90, 90, 180), 250, 100),
            _step((180, 180, 180, 180, 180), 250, 100, "open"),
            _step((90, 90, 90, 90, 180), 250, 100),
            _step((180, 180, 180, 180, 180), 250, 300, "open"),
        ),
    ),
}


def check_name(name: str, what: str = "gesture") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{what} name {name!r} must be 1-32 lowercase letters, digits, '-' or '_'"
        )
    return name


def _milliseconds(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEP_MS:
        raise ConfigError(
            f"{where}: {key} must be a whole number of milliseconds from 0 to {MAX_STEP_MS}"
        )
    return value


def _angle(value: Any, where: str, finger: str) -> int:
    if not is_angle(value):
        raise ConfigError(f"{where}: {finger} must be an angle from 0 to 180, not {value!r}")
    return value


def parse_step(data: Any, poses: Mapping[str, Sequence[int]], where: str) -> GestureStep:
    """One step of a poses file's gesture, with its pose resolved against ``poses``."""
    if not isinstance(data, dict):
        raise ConfigError(
            f'{where}: a step is a table such as {{ pose = "fist", move_ms = 300, hold_ms = 200 }}'
        )
    unknown = set(data) - {"pose", "angles", "move_ms", "hold_ms", *FINGERS}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; a step has pose, "
            "angles or finger names, move_ms and hold_ms"
        )
    fingers = [finger for finger in FINGERS if finger in data]
    if "angles" in data and (fingers or "pose" in data):
        raise ConfigError(f"{where}: give either angles or a pose and finger names, not both")
    angles: list[int | None] = [None] * len(FINGERS)
    pose = data.get("pose")
    if pose is not None:
        if not isinstance(pose, str) or pose not in poses:
            raise ConfigError(f"{where}: unknown pose {pose!r}; known poses: {', '.join(poses)}")
        angles = list(poses[pose])
    if "angles" in data:
        values = data["angles"]
        if not isinstance(values, list) or len(values) != len(FINGERS):
            raise ConfigError(f"{where}: angles must be a list of five angles")
        angles = [_angle(v, where, f) for f, v in zip(FINGERS, values, strict=True)]
    for i, finger in enumerate(FINGERS):
        if finger in data:
            angles[i] = _angle(data[finger], where, finger)
    if all(angle is None for angle in angles):
        raise ConfigError(f"{where}: the step names no pose, angles or finger")
    move_ms = _milliseconds(data.get("move_ms", 0), where, "move_ms")
    hold_ms = _milliseconds(data.get("hold_ms", 0), where, "hold_ms")
    if move_ms + hold_ms < MIN_STEP_MS:
        raise ConfigError(f"{where}: move_ms + hold_ms must be at least {MIN_STEP_MS}")
    return _step(angles, move_ms, hold_ms, pose if pose is not None and not fingers else None)


def parse_gestures(
    table: Any, poses: Mapping[str, Sequence[int]], source: str
) -> dict[str, Gesture]:
    """The ``[gestures]`` table of a poses file; ``source`` names the file in errors."""
    if not isinstance(table, dict):
        raise ConfigError(f"poses file {source}: [gestures] must be a table")
    gestures: dict[str, Gesture] = {}
    for name, value in table.items():
        check_name(name)
        where = f"gesture {name!r}"
        if not isinstance(value, dict) or set(value) != {"steps"}:
            raise ConfigError(f"{where}: give steps = [ ... ] and nothing else")
        steps = value["steps"]
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
            raise ConfigError(f"{where}: steps must be a list of 1 to {MAX_STEPS} steps")
        gestures[name] = Gesture(
            name,
            tuple(
                parse_step(step, poses, f"{where}, step {number}")
                for number, step in enumerate(steps, start=1)
            ),
        )
    return gestures


def recorded_gesture(
    name: str,
    states: Sequence[tuple[float, Sequence[int]]],
    ended: float,
) -> Gesture:
    """A gesture that replays ``states`` (monotonic seconds, five angles) with their timing.

    Each state is held until the next one came; the last until ``ended`` (at least
    :data:`MIN_STEP_MS`, at most :data:`MAX_STEP_MS`). A state that repeats the angles before it
    only lengthens that step, and one that came sooner than :data:`MIN_STEP_MS` after the step
    before replaces it (the hand was on its way, and playback would drop it anyway).
    """
    check_name(name)
    kept: list[tuple[float, tuple[int, ...]]] = []
    for at, values in states:
        angles = tuple(values)
        if kept and kept[-1][1] == angles:
            continue
        if kept and (at - kept[-1][0]) * 1000 < MIN_STEP_MS:
            kept[-1] = (kept[-1][0], angles)
            if len(kept) > 1 and kept[-2][1] == angles:
                kept.pop()
            continue
        kept.append((at, angles))
    if not kept:
        raise ConfigError("nothing to record: the hand did not change while recording")
    if len(kept) > MAX_STEPS:
        raise ConfigError(f"{len(kept)} steps recorded; a gesture has at most {MAX_STEPS}")
    steps: list[GestureStep] = []
    for (at, angles), following in zip(kept, [*kept[1:], (ended, ())], strict=True):
        held = round((following[0] - at) * 1000)
        steps.append(_step(angles, 0, min(MAX_STEP_MS, max(MIN_STEP_MS, held))))
    return Gesture(name, tuple(steps))
