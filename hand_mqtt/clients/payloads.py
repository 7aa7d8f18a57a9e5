"""The ``<base>/<hand>/set`` payloads the client API sends, built from typed arguments.

Only what a program can get wrong by its own hand (a finger's name, the length of a list) is
checked here; angles, poses and gestures are the arbiter's to judge, so every client gets the
same sentence for the same mistake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hand_mqtt.errors import CommandError
from hand_mqtt.model import FINGERS

__all__ = ["angles", "finger_name", "fingers", "gesture", "lock", "nudge", "pose", "relax", "timed"]

Payload = dict[str, Any]


def finger_name(name: str) -> str:
    """``name`` if it names a finger, else a :class:`CommandError` listing the fingers."""
    if name not in FINGERS:
        raise CommandError(f"unknown finger {name!r}; fingers are {', '.join(FINGERS)}")
    return name


def pose(name: str) -> Payload:
    return {"pose": name}


def fingers(named: Mapping[str, int] | None = None, **angles: int | None) -> Payload:
    payload: Payload = {finger_name(f): a for f, a in (named or {}).items()}
    for finger, angle in angles.items():
        if angle is not None:
            payload[finger_name(finger)] = angle
    if not payload:
        raise CommandError(f"name at least one finger to set ({', '.join(FINGERS)})")
    return payload


def nudge(finger: str, delta: int) -> Payload:
    return {finger_name(finger): {"delta": delta}}


def angles(values: Sequence[int | None]) -> Payload:
    listed = list(values)
    if len(listed) != len(FINGERS):
        raise CommandError(
            f"give five angles ({', '.join(FINGERS)}), each 0 to 180 or None; got {len(listed)}"
        )
    return {"angles": listed}


def gesture(name: str, repeat: int) -> Payload:
    return {"gesture": name} if repeat == 1 else {"gesture": name, "repeat": repeat}


def timed(payload: Payload, duration: float | None) -> Payload:
    """``payload`` with a ``duration_ms`` (from seconds) when a duration is given: every finger
    that moves then arrives at its target that much later."""
    if duration is None:
        return payload
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise CommandError(f"duration must be a number of seconds, not {duration!r}")
    return {**payload, "duration_ms": round(duration * 1000)}


def relax(names: Sequence[str]) -> Payload:
    """Relax the fingers named, or all five when none is."""
    if isinstance(names, str):
        raise CommandError("give the fingers to relax as a list of names")
    return {"relax": [finger_name(name) for name in names] if names else True}


def lock(on: bool) -> Payload:
    return {"lock": on}
