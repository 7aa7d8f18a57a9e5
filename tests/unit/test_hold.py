"""The hold timeout's rule, with the clock in the test's hands."""

from __future__ import annotations

import math

import pytest

from hand_mqtt.hardware.driver import Confirmed
from hand_mqtt.model import Angles
from hand_mqtt.services.hold import HoldTimer

FIST: Angles = (0, 0, 0, 0, 0)


def at(angles: Angles, *, moving: bool = False, relaxed: frozenset[int] = frozenset()) -> Confirmed:
    return Confirmed(angles=angles, moving=moving, relaxed=relaxed)


def test_a_finger_held_long_enough_relaxes() -> None:
    hold = HoldTimer(2.0)
    assert hold.deadline == math.inf
    assert not hold.update(10.0, FIST, (), at(FIST))
    assert hold.deadline == 12.0
    assert not hold.update(11.9, FIST, (), at(FIST))
    assert hold.update(12.0, FIST, (), at(FIST))
    assert hold.relaxed == {0, 1, 2, 3, 4}
    assert hold.deadline == math.inf
    # Relaxed by the timeout and confirmed limp: it stays so.
    assert not hold.update(20.0, FIST, (), at(FIST, relaxed=frozenset(range(5))))
    assert hold.relaxed == {0, 1, 2, 3, 4}


def test_moving_or_elsewhere_is_not_holding() -> None:
    hold = HoldTimer(1.0)
    hold.update(0.0, FIST, (), at((90, 0, 0, 0, 0), moving=True))
    assert hold.deadline == math.inf  # nothing holds while the hand moves
    hold.update(0.5, FIST, (), at((90, 0, 0, 0, 0)))
    assert hold.deadline == 1.5  # four fingers are there; the index is not
    assert hold.update(1.5, FIST, (), at((90, 0, 0, 0, 0)))
    assert hold.relaxed == {1, 2, 3, 4}


def test_a_new_angle_drives_it_again_and_restarts_its_clock() -> None:
    hold = HoldTimer(1.0)
    hold.update(0.0, FIST, (), at(FIST))
    hold.update(1.0, FIST, (), at(FIST))
    assert hold.relaxed == {0, 1, 2, 3, 4}
    moved: Angles = (90, 0, 0, 0, 0)
    assert hold.update(2.0, moved, (), at(FIST, relaxed=frozenset(range(5))))
    assert hold.relaxed == {1, 2, 3, 4}
    hold.update(2.5, moved, (), at(moved, relaxed=frozenset({1, 2, 3, 4})))
    assert hold.deadline == 3.5
    assert hold.update(3.5, moved, (), at(moved, relaxed=frozenset({1, 2, 3, 4})))
    assert hold.relaxed == {0, 1, 2, 3, 4}


def test_fingers_relaxed_by_a_command_are_not_the_timeouts() -> None:
    hold = HoldTimer(1.0)
    hold.update(0.0, FIST, (), at(FIST))
    hold.update(1.0, FIST, (), at(FIST))
    # The thumb is relaxed by a command: forgotten here; when a command drives it again, its
    # hold starts afresh.
    assert hold.update(2.0, FIST, (4,), at(FIST, relaxed=frozenset(range(5))))
    assert hold.relaxed == {0, 1, 2, 3}
    hold.update(3.0, FIST, (), at(FIST, relaxed=frozenset({0, 1, 2, 3})))
    assert hold.deadline == 4.0
    hold.forget()
    assert hold.relaxed == frozenset()
    assert hold.deadline == math.inf


def test_no_desired_state_means_nothing_held() -> None:
    hold = HoldTimer(1.0)
    assert not hold.update(0.0, None, (), at(FIST))
    assert hold.deadline == math.inf


@pytest.mark.parametrize("seconds", [0, -1])
def test_the_timeout_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        HoldTimer(seconds)
