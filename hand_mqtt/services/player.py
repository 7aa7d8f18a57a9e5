"""The gesture player: keeps time for the gestures the arbiter plays.

The arbiter stays the one writer of state. The player owns one timer thread and a schedule;
when a step is due it calls the arbiter back, and the arbiter applies the step under its lock
and publishes it on the same path as a command's result. Starting a gesture, and every command
that ends one, happen under that same lock, so a step can never land after the command that
ended its gesture. Nothing here touches MQTT, and the network thread never waits for a step.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hand_mqtt.gestures import Gesture, GestureStep
from hand_mqtt.model import GestureProgress

__all__ = ["GesturePlayer", "Playing"]

logger = logging.getLogger("hand_mqtt")


@dataclass(eq=False)
class Playing:
    """One gesture being played on one hand."""

    hand: str
    gesture: Gesture
    rounds: int
    transaction: str | int | None
    started: float = field(default_factory=time.monotonic)
    """When the first step was published (monotonic seconds); every step is due from here."""
    position: int = 0
    """The step on show, counted over all rounds from 0."""
    ended: bool = False
    """Set by the arbiter when the play finished or a command ended it."""

    @property
    def length(self) -> int:
        """How many steps the whole play has, over all rounds."""
        return len(self.gesture.steps) * self.rounds

    @property
    def step(self) -> GestureStep:
        return self.gesture.steps[self.position % len(self.gesture.steps)]

    @property
    def progress(self) -> GestureProgress:
        steps = len(self.gesture.steps)
        return GestureProgress(
            name=self.gesture.name,
            step=self.position % steps + 1,
            steps=steps,
            round=self.position // steps + 1,
            rounds=self.rounds,
        )

    def due(self, position: int) -> float:
        """When the step at ``position`` (or the end, at :attr:`length`) is due."""
        steps = self.gesture.steps
        full, part = divmod(position, len(steps))
        elapsed_ms = full * self.gesture.duration_ms + sum(s.duration_ms for s in steps[:part])
        return self.started + elapsed_ms / 1000.0


class GesturePlayer:
    """Calls ``advance(playing)`` on its timer thread whenever a scheduled play is due."""

    def __init__(self, advance: Callable[[Playing], None]) -> None:
        self._advance = advance
        self._wake = threading.Condition()
        self._queue: list[tuple[float, int, Playing]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, playing: Playing) -> None:
        """Call back when the step after the one on show is due (or the end is)."""
        with self._wake:
            if self._closed:
                return
            if len(self._queue) > 64:
                # Plays ended early stay queued until due; a flood of them must not pile up.
                live = [entry for entry in self._queue if not entry[2].ended]
                if len(live) < len(self._queue) // 2:
                    heapq.heapify(live)
                    self._queue = live
            heapq.heappush(
                self._queue, (playing.due(playing.position + 1), next(self._order), playing)
            )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hand-mqtt-gestures", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the timer; nothing scheduled is called back any more."""
        with self._wake:
            self._closed = True
            self._queue.clear()
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed:
                    if self._queue:
                        wait = self._queue[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
                if self._closed:
                    return
                _, _, playing = heapq.heappop(self._queue)
            if playing.ended:
                continue
            try:
                self._advance(playing)
            except Exception:
                logger.exception("arbiter: a gesture step failed on %s; carrying on", playing.hand)
