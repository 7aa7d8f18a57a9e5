"""The hold timeout: a finger that has reached its target and held it for a while relaxes.

Hobby servos burn when they hold a position against something (a fist around an object) for
long. With ``hand-mqtt device --hold-timeout SECONDS`` the device service relaxes a finger once
the firmware has confirmed it at its desired angle, not moving, for that long; ``reported``
lists it in ``hold_relaxed``. The finger is driven again when its desired angle changes, or when
a command that relaxed it explicitly is followed by one that drives it (the arbiter's
``relaxed`` list drops it).

:class:`HoldTimer` is the rule alone, with the clock passed in: the link thread feeds it what it
wants and what the hand confirmed, and adds :attr:`HoldTimer.relaxed` to the fingers it asks the
driver to relax.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from hand_mqtt.hardware.driver import Confirmed
from hand_mqtt.model import Angles

__all__ = ["HoldTimer"]


class HoldTimer:
    """Which fingers have held their target longer than ``seconds`` (see the module)."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"the hold timeout must be more than 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self._since: dict[int, float] = {}
        self._relaxed: dict[int, int] = {}  # finger -> the desired angle it was relaxed at

    @property
    def relaxed(self) -> frozenset[int]:
        """The fingers the hold timeout has relaxed."""
        return frozenset(self._relaxed)

    @property
    def deadline(self) -> float:
        """When :meth:`update` must run again at the latest (``math.inf``: only on news)."""
        return min((since + self.seconds for since in self._since.values()), default=math.inf)

    def forget(self) -> None:
        """Start afresh (the link went down: nothing is known to be held)."""
        self._since.clear()
        self._relaxed.clear()

    def update(
        self,
        now: float,
        desired: Angles | None,
        desired_relaxed: Collection[int],
        confirmed: Confirmed,
    ) -> bool:
        """Account for what is wanted and what the hand confirmed at ``now``; True when
        :attr:`relaxed` changed."""
        before = set(self._relaxed)
        if desired is None:
            self._since.clear()
            return False
        for finger, angle in enumerate(desired):
            if finger in desired_relaxed:
                # Relaxed by a command: when a later one drives it, its hold starts afresh.
                self._since.pop(finger, None)
                self._relaxed.pop(finger, None)
                continue
            if finger in self._relaxed:
                if self._relaxed[finger] != angle:
                    del self._relaxed[finger]  # a new target: driven again
                else:
                    continue
            held = (
                confirmed.angles is not None
                and confirmed.angles[finger] == angle
                and not confirmed.moving
                and finger not in confirmed.relaxed
            )
            if not held:
                self._since.pop(finger, None)
                continue
            since = self._since.setdefault(finger, now)
            if now - since >= self.seconds:
                del self._since[finger]
                self._relaxed[finger] = angle
        return set(self._relaxed) != before
