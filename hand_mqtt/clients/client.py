"""The Python API for programs that drive a hand, blocking flavour: :class:`HandClient`.

```python
with HandClient("mqtt://127.0.0.1:1883", hand="hand1") as hand:
    hand.pose("peace")
    hand.set(index=90, thumb=0, wait="reported")
    for snapshot in hand.changes():
        ...
```

Every call runs in the caller's thread and waits there; the MQTT network thread only feeds the
shared :class:`~hand_mqtt.clients.core.ClientCore`. :class:`~hand_mqtt.clients.aio.AsyncHandClient`
is the same client for asyncio.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from hand_mqtt.clients import payloads
from hand_mqtt.clients.core import (
    DEFAULT_TIMEOUT,
    ClientCore,
    Listener,
    Pending,
    PlayWait,
    Snapshot,
    Wait,
)
from hand_mqtt.gestures import Gesture
from hand_mqtt.model import ErrorReport, HandState, Reported, ServedHands
from hand_mqtt.mqtt import BrokerUrl
from hand_mqtt.topics import HandTopics, Topics

__all__ = ["Changes", "HandClient", "Snapshot"]

CHANGES_KEPT = 1000
"""How many changes an iterator keeps for a consumer that falls behind (the oldest go)."""


class Changes(Iterator[Snapshot]):
    """Every change of one hand, delivered in the thread that iterates.

    Iteration ends when the client is closed (or :meth:`close` is called). A consumer that
    falls more than :data:`CHANGES_KEPT` changes behind loses the oldest; the newest snapshot
    is always there.
    """

    def __init__(self, core: ClientCore, kept: int = CHANGES_KEPT) -> None:
        self._core = core
        self._ready = threading.Condition()
        self._queue: deque[Snapshot] = deque(maxlen=kept)
        self._closed = False
        self._remove = core.listen(self._put, self._wake)

    def _put(self, snapshot: Snapshot) -> None:
        with self._ready:
            self._queue.append(snapshot)
            self._ready.notify_all()

    def _wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def get(self, timeout: float | None = None) -> Snapshot | None:
        """The next change; None when ``timeout`` passed first or iteration has ended."""
        with self._ready:
            self._ready.wait_for(lambda: self._queue or self._closed or self._core.closed, timeout)
            return self._queue.popleft() if self._queue else None

    def pending(self) -> list[Snapshot]:
        """Every change that arrived and was not taken yet, without waiting."""
        with self._ready:
            found = list(self._queue)
            self._queue.clear()
            return found

    def __iter__(self) -> Changes:
        return self

    def __next__(self) -> Snapshot:
        snapshot = self.get()
        if snapshot is None:
            raise StopIteration
        return snapshot

    def close(self) -> None:
        """Stop listening; a thread waiting in :meth:`get` or ``for`` returns."""
        self._remove()
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class HandClient:
    """Drives one hand and follows what the arbiter and its device say about it.

    ``url`` is a broker URL (``mqtt[s]://[user:password@]host[:port]``) or a
    :class:`~hand_mqtt.mqtt.BrokerUrl`. ``with HandClient(...) as hand:`` connects and waits
    for the retained state, or raises :class:`~hand_mqtt.errors.MqttError` (its subclass
    :class:`~hand_mqtt.errors.NoAnswerError` when no arbiter serves the hand) with a sentence.

    Every command returns the new desired state once the arbiter accepts it, raises
    :class:`~hand_mqtt.errors.CommandError` with the arbiter's sentence when it refuses, and
    :class:`~hand_mqtt.errors.NoAnswerError` after ``timeout`` seconds without an answer. With
    ``wait="reported"`` it returns only once the device reports the hand at those angles.
    """

    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        hand: str = "hand1",
        base: str | None = None,
        topics: Topics | None = None,
        name: str = "client",
        timeout: float = DEFAULT_TIMEOUT,
        require_state: bool = True,
    ) -> None:
        self._core = ClientCore(url, hand=hand, base=base, topics=topics, name=name)
        self.timeout = timeout
        """Seconds a call waits by default (connecting, and each command)."""
        self.require_state = require_state
        """Whether connecting fails when no arbiter has published a state for the hand."""

    # -- connection ------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> HandClient:
        """Connect and wait for the retained state (what ``with`` does); returns ``self``."""
        self._core.connect(self._timeout(timeout), require_state=self.require_state)
        return self

    def close(self) -> None:
        """Disconnect. Iterators over :meth:`changes` end; waiting commands fail."""
        self._core.close()

    def __enter__(self) -> HandClient:
        return self.connect()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._core.connected

    @property
    def topics(self) -> Topics:
        return self._core.topics

    @property
    def hand_topics(self) -> HandTopics:
        return self._core.hand_topics

    @property
    def url(self) -> BrokerUrl:
        return self._core.url

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> HandState | None:
        """The desired state the arbiter published last."""
        return self._core.snapshot().desired

    @property
    def reported(self) -> Reported | None:
        """What the device service last reported from the firmware."""
        return self._core.snapshot().reported

    @property
    def online(self) -> bool:
        """True when the hand can move: arbiter and device online, serial link up."""
        return self._core.snapshot().online

    @property
    def poses(self) -> dict[str, tuple[int, ...]]:
        """The poses the arbiter knows (name → five angles)."""
        return self._core.poses

    @property
    def gestures(self) -> dict[str, Gesture]:
        """The gestures the arbiter plays (name → steps and duration)."""
        return self._core.gestures

    @property
    def errors(self) -> list[ErrorReport]:
        """The latest refusals the arbiter sent for this hand, oldest first."""
        return self._core.errors

    @property
    def served(self) -> ServedHands | None:
        """Which hands the arbiter announced it serves (None: not announced)."""
        return self._core.served

    def unserved(self) -> str | None:
        """Why no arbiter will answer a command for this hand (a sentence), or None."""
        return self._core.unserved()

    def snapshot(self) -> Snapshot:
        """Desired, reported and both availabilities, read together."""
        return self._core.snapshot()

    def changes(self) -> Changes:
        """Iterate every change from now on, in the calling thread (see :class:`Changes`)."""
        return Changes(self._core)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every change on the network thread; returns a remover.

        Prefer :meth:`changes`: a listener must return quickly and must not call back into
        this client's commands (they would wait for the thread that is running it).
        """
        return self._core.listen(listener)

    # -- commands --------------------------------------------------------------------------

    def send(
        self, command: Mapping[str, Any], *, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Send a raw ``<base>/<hand>/set`` command (docs/topics.md) and wait as the others do."""
        return self._wait(self._core.submit(command, wait), timeout)

    def pose(
        self,
        name: str,
        *,
        duration: float | None = None,
        wait: Wait = "accepted",
        timeout: float | None = None,
    ) -> HandState:
        """Put the hand in a named pose; with ``duration`` (seconds) every finger that moves
        arrives then."""
        command = payloads.timed(payloads.pose(name), duration)
        return self.send(command, wait=wait, timeout=timeout)

    def set(
        self,
        angles: Mapping[str, int] | None = None,
        /,
        *,
        index: int | None = None,
        middle: int | None = None,
        ring: int | None = None,
        pinky: int | None = None,
        thumb: int | None = None,
        duration: float | None = None,
        wait: Wait = "accepted",
        timeout: float | None = None,
    ) -> HandState:
        """Set the fingers named (0 contracted … 180 extended); the others stay.

        Name them as keywords, ``set(index=90, thumb=0)``, or in a mapping when the finger is
        a value, ``set({finger: 90})``.
        """
        command = payloads.fingers(
            angles, index=index, middle=middle, ring=ring, pinky=pinky, thumb=thumb
        )
        return self.send(payloads.timed(command, duration), wait=wait, timeout=timeout)

    def nudge(
        self, finger: str, delta: int, *, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Move one finger by ``delta`` degrees, clamped to 0-180 by the arbiter."""
        return self.send(payloads.nudge(finger, delta), wait=wait, timeout=timeout)

    def angles(
        self,
        values: Sequence[int | None],
        *,
        duration: float | None = None,
        wait: Wait = "accepted",
        timeout: float | None = None,
    ) -> HandState:
        """All five fingers at once, in finger order; None leaves a finger as it is."""
        command = payloads.timed(payloads.angles(values), duration)
        return self.send(command, wait=wait, timeout=timeout)

    def relax(
        self, *fingers: str, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Stop driving the fingers named, or all five (the servos go limp) until a command
        moves them."""
        return self.send(payloads.relax(fingers), wait=wait, timeout=timeout)

    def stop(self, *, wait: Wait = "accepted", timeout: float | None = None) -> HandState:
        """Emergency stop: every finger relaxes and the arbiter refuses every motion until
        :meth:`unlock`."""
        return self.send(payloads.lock(True), wait=wait, timeout=timeout)

    def unlock(self, *, wait: Wait = "accepted", timeout: float | None = None) -> HandState:
        """Undo :meth:`stop`; the fingers stay relaxed until a command moves them."""
        return self.send(payloads.lock(False), wait=wait, timeout=timeout)

    def play(
        self,
        name: str,
        *,
        repeat: int = 1,
        wait: PlayWait = "accepted",
        timeout: float | None = None,
    ) -> HandState:
        """Have the arbiter play a gesture ``repeat`` times (any later command ends it).

        Returns the first step's state; with ``wait="finished"`` the state that ended the
        gesture (and :class:`~hand_mqtt.errors.CommandError` if a command ended it first); with
        ``wait="reported"`` that, once the device reports the hand there. The default timeout
        adds the gesture's own length to the client's.
        """
        if timeout is None and wait != "accepted":
            timeout = self._timeout(None) + self._core.play_time(name, repeat)
        pending = self._core.submit(payloads.gesture(name, repeat), wait, gesture=name)
        return self._wait(pending, timeout)

    # -- waiting ---------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _wait(self, pending: Pending, timeout: float | None) -> HandState:
        seconds = self._timeout(timeout)
        try:
            return pending.future.result(seconds)
        except TimeoutError:
            if pending.future.cancel():
                raise self._core.no_answer(pending, seconds) from None
            return pending.future.result()
