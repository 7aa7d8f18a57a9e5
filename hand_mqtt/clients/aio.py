"""The Python API for asyncio programs: :class:`AsyncHandClient`.

The same client as :class:`~hand_mqtt.clients.client.HandClient`, on the same core: commands
are published at once and their answers arrive as futures the event loop awaits; connecting
and closing (which wait on sockets) run in a worker thread. No call blocks the event loop.

```python
async with AsyncHandClient("mqtt://127.0.0.1:1883", hand="hand1") as hand:
    await hand.pose("peace", wait="reported")
    async for snapshot in hand.changes():
        ...
```
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from hand_mqtt.clients import payloads
from hand_mqtt.clients.client import CHANGES_KEPT
from hand_mqtt.clients.core import (
    DEFAULT_TIMEOUT,
    ClientCore,
    Pending,
    PlayWait,
    Snapshot,
    Wait,
)
from hand_mqtt.gestures import Gesture
from hand_mqtt.model import ErrorReport, HandState, Reported
from hand_mqtt.mqtt import BrokerUrl
from hand_mqtt.topics import HandTopics, Topics

__all__ = ["AsyncChanges", "AsyncHandClient"]


class AsyncChanges(AsyncIterator[Snapshot]):
    """Every change of one hand, delivered on the event loop that iterates.

    Iteration ends when the client is closed (or :meth:`close` is called). A consumer that
    falls more than :data:`~hand_mqtt.clients.client.CHANGES_KEPT` changes behind loses the
    oldest.
    """

    def __init__(self, core: ClientCore, kept: int = CHANGES_KEPT) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Snapshot] = deque(maxlen=kept)
        self._ready = asyncio.Event()
        self._closed = False
        self._remove = core.listen(self._from_network, self._from_closing)

    def _from_network(self, snapshot: Snapshot) -> None:
        # On the network thread: hand over to the loop, never touch its objects from here.
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self._loop.call_soon_threadsafe(self._put, snapshot)

    def _from_closing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def _put(self, snapshot: Snapshot) -> None:
        self._queue.append(snapshot)
        self._ready.set()

    async def get(self, timeout: float | None = None) -> Snapshot | None:
        """The next change; None when ``timeout`` passed first or iteration has ended."""
        while not self._queue and not self._closed and not self._core.closed:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        return self._queue.popleft() if self._queue else None

    def pending(self) -> list[Snapshot]:
        """Every change that arrived and was not taken yet, without waiting."""
        found = list(self._queue)
        self._queue.clear()
        return found

    def __aiter__(self) -> AsyncChanges:
        return self

    async def __anext__(self) -> Snapshot:
        snapshot = await self.get()
        if snapshot is None:
            raise StopAsyncIteration
        return snapshot

    def close(self) -> None:
        """Stop listening; a task waiting in :meth:`get` or ``async for`` returns."""
        self._remove()
        self._closed = True
        self._ready.set()


class AsyncHandClient:
    """:class:`~hand_mqtt.clients.client.HandClient` for asyncio: the same methods, awaited.

    ``async with AsyncHandClient(url, hand="hand1") as hand:`` connects and waits for the
    retained state; commands are coroutines that return the new desired state, raise
    :class:`~hand_mqtt.errors.CommandError` with the arbiter's sentence, or
    :class:`~hand_mqtt.errors.NoAnswerError` after ``timeout``.
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
        self.require_state = require_state

    # -- connection ------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> AsyncHandClient:
        """Connect and wait for the retained state (what ``async with`` does)."""
        await asyncio.to_thread(
            self._core.connect, self._timeout(timeout), require_state=self.require_state
        )
        return self

    async def close(self) -> None:
        """Disconnect. Iterators over :meth:`changes` end; waiting commands fail."""
        await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncHandClient:
        return await self.connect()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

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

    # -- reading (never waits) -------------------------------------------------------------

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
        return self._core.poses

    @property
    def gestures(self) -> dict[str, Gesture]:
        """The gestures the arbiter plays (name → steps and duration)."""
        return self._core.gestures

    @property
    def errors(self) -> list[ErrorReport]:
        return self._core.errors

    def snapshot(self) -> Snapshot:
        return self._core.snapshot()

    def changes(self) -> AsyncChanges:
        """Iterate every change from now on with ``async for`` (see :class:`AsyncChanges`)."""
        return AsyncChanges(self._core)

    # -- commands --------------------------------------------------------------------------

    async def send(
        self, command: Mapping[str, Any], *, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Send a raw ``<base>/<hand>/set`` command (docs/topics.md) and wait as the others do."""
        return await self._wait(self._core.submit(command, wait), timeout)

    async def pose(
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
        return await self.send(command, wait=wait, timeout=timeout)

    async def set(
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
        return await self.send(payloads.timed(command, duration), wait=wait, timeout=timeout)

    async def nudge(
        self, finger: str, delta: int, *, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Move one finger by ``delta`` degrees, clamped to 0-180 by the arbiter."""
        return await self.send(payloads.nudge(finger, delta), wait=wait, timeout=timeout)

    async def angles(
        self,
        values: Sequence[int | None],
        *,
        duration: float | None = None,
        wait: Wait = "accepted",
        timeout: float | None = None,
    ) -> HandState:
        """All five fingers at once, in finger order; None leaves a finger as it is."""
        command = payloads.timed(payloads.angles(values), duration)
        return await self.send(command, wait=wait, timeout=timeout)

    async def relax(
        self, *fingers: str, wait: Wait = "accepted", timeout: float | None = None
    ) -> HandState:
        """Stop driving the fingers named, or all five (the servos go limp) until a command
        moves them."""
        return await self.send(payloads.relax(fingers), wait=wait, timeout=timeout)

    async def stop(self, *, wait: Wait = "accepted", timeout: float | None = None) -> HandState:
        """Emergency stop: every finger relaxes and the arbiter refuses every motion until
        :meth:`unlock`."""
        return await self.send(payloads.lock(True), wait=wait, timeout=timeout)

    async def unlock(self, *, wait: Wait = "accepted", timeout: float | None = None) -> HandState:
        """Undo :meth:`stop`; the fingers stay relaxed until a command moves them."""
        return await self.send(payloads.lock(False), wait=wait, timeout=timeout)

    async def play(
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
        return await self._wait(pending, timeout)

    # -- waiting ---------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def _wait(self, pending: Pending, timeout: float | None) -> HandState:
        seconds = self._timeout(timeout)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(pending.future), seconds)
        except TimeoutError:
            raise self._core.no_answer(pending, seconds) from None
