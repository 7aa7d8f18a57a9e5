"""The asyncio Python API on a real event loop: the same behaviour as the blocking client, and
no call ever holds the loop (a ticking task keeps running while commands are in flight)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from hand_mqtt import (
    AsyncChanges,
    AsyncHandClient,
    BrokerUrl,
    CommandError,
    HandState,
    NoAnswerError,
    Snapshot,
    Topics,
)
from harness.brokers import RunningBroker
from tests.support.system import System

T = TypeVar("T")


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


class Ticker:
    """A task that yields to the loop as often as it can and counts its turns.

    A call that blocks the loop while it waits for the network gets no turn of the ticker in
    between; a call that awaits gets many, however fast or slow the machine is.
    """

    def __init__(self) -> None:
        self.turns = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.turns += 1
            await asyncio.sleep(0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def during(self, what: str, call: Awaitable[T], log: list[tuple[str, int]]) -> T:
        before = self.turns
        result = await call
        log.append((what, self.turns - before))
        return result


def test_async_client_commands_and_refusals(system: System, broker: RunningBroker) -> None:
    async def main() -> None:
        async with AsyncHandClient(broker.url, base=system.topics.base) as hand:
            assert hand.state is not None
            assert hand.state.pose == "open"
            peace = await hand.pose("peace")
            assert peace.angles == (180, 180, 0, 0, 0)
            assert (await hand.set(index=90, thumb=0)).angles == (90, 180, 0, 0, 0)
            assert (await hand.nudge("index", -15)).angles == (75, 180, 0, 0, 0)
            last = await hand.angles([0, None, 10, 20, 30], wait="reported")
            assert last.angles == (0, 180, 10, 20, 30)
            assert last.version == peace.version + 3
            assert hand.reported is not None
            assert hand.reported.angles == last.angles
            assert hand.state == last
            with pytest.raises(CommandError, match="unknown pose 'salute'"):
                await hand.pose("salute")
            with pytest.raises(CommandError, match="ring: 181 is out of range"):
                await hand.set(ring=181)
        assert not hand.connected

    asyncio.run(main())
    system.wait_hand((0, 180, 10, 20, 30))


def test_async_relax_stop_unlock_and_timed_moves(system: System, broker: RunningBroker) -> None:
    async def main() -> None:
        async with AsyncHandClient(broker.url, base=system.topics.base) as hand:
            assert (await hand.pose("fist", duration=0.5)).duration_ms == 500
            assert (await hand.set(ring=90, duration=0.1)).duration_ms == 100
            assert (await hand.angles([1, 2, 3, 4, 5], duration=2)).duration_ms == 2000
            assert (await hand.relax("ring")).relaxed == ("ring",)
            assert (await hand.stop()).locked
            with pytest.raises(CommandError, match="locked"):
                await hand.pose("open")
            unlocked = await hand.unlock()
            assert not unlocked.locked
            assert len(unlocked.relaxed) == 5

    asyncio.run(main())


def test_no_call_blocks_the_event_loop(system: System, broker: RunningBroker) -> None:
    log: list[tuple[str, int]] = []

    async def main() -> None:
        ticker = Ticker()
        ticker.start()
        hand = AsyncHandClient(broker.url, base=system.topics.base)
        await ticker.during("connect", hand.connect(), log)
        for pose in ("fist", "peace", "okay", "open"):
            await ticker.during(f"pose {pose}", hand.pose(pose), log)
            await ticker.during(f"reported {pose}", hand.pose(pose, wait="reported"), log)
        await ticker.during("set", hand.set(middle=45), log)
        await ticker.during("nudge", hand.nudge("middle", 15), log)
        await ticker.during("angles", hand.angles([1, 2, 3, 4, 5]), log)
        with pytest.raises(CommandError):
            await ticker.during("refused", hand.pose("salute"), log)
        changes = hand.changes()
        other = threading.Timer(
            0.05, lambda: system.client("other").publish(system.hand_topics.set, b"{}")
        )
        other.start()
        await ticker.during("a change", changes.get(), log)
        other.join()
        await ticker.during("close", hand.close(), log)
        await ticker.stop()

    asyncio.run(main())
    # Every call let the ticker run while it waited (a blocking one would count 0).
    assert [what for what, turns in log if turns == 0] == []
    assert len(log) == 14


def test_a_ticker_keeps_its_rhythm_through_a_long_wait(
    system: System, broker: RunningBroker
) -> None:
    """``wait="reported"`` with the device away: the loop keeps ticking until it is back."""
    ticks: list[float] = []

    async def ticking() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> tuple[float, float, HandState]:
        async with AsyncHandClient(broker.url, base=system.topics.base, timeout=30) as hand:
            assert system.device is not None
            system.device.stop()
            while hand.snapshot().device != "offline":
                await asyncio.sleep(0.01)
            task = asyncio.create_task(ticking())
            back = threading.Timer(0.8, system.start_device)
            started = time.monotonic()
            back.start()
            state = await hand.pose("phone", wait="reported")
            ended = time.monotonic()
            back.join()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return started, ended, state

    started, ended, state = asyncio.run(main())
    assert state.pose == "phone"
    window = ended - started
    assert window >= 0.8
    inside = [t for t in ticks if started <= t <= ended]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    # Blocking the loop for the wait would leave one gap as long as the whole window.
    assert len(inside) >= 4
    assert max(gaps) < window / 2
    assert statistics.median(gaps) < window / 8


def test_async_for_changes_and_close_ends_it(system: System, broker: RunningBroker) -> None:
    other = system.client("other")

    async def main() -> list[Snapshot]:
        seen: list[Snapshot] = []
        async with AsyncHandClient(broker.url, base=system.topics.base) as hand:
            changes = hand.changes()
            for payload in (b'{"pose": "fist"}', b'{"pose": "nope"}', b'{"pose": "point"}'):
                other.publish(system.hand_topics.set, payload)
            async for snapshot in changes:
                seen.append(snapshot)
                if snapshot.desired is not None and snapshot.desired.pose == "point":
                    break
            # Closing the client ends an iteration that is waiting.
            waiting = asyncio.create_task(_drain(hand.changes()))
            await asyncio.sleep(0)
        await waiting
        return seen

    try:
        seen = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        other.stop()
    poses = [s.desired.pose for s in seen if s.desired is not None]
    assert poses.index("fist") < poses.index("point")
    assert [s.error.error[:19] for s in seen if s.error is not None] == ["unknown pose 'nope'"]


async def _drain(changes: AsyncChanges) -> None:
    async for _ in changes:
        pass


def test_async_timeouts_raise_no_answer(system: System, broker: RunningBroker) -> None:
    async def main() -> None:
        async with AsyncHandClient(broker.url, base=system.topics.base) as hand:
            assert system.arbiter is not None
            system.arbiter.stop()
            with pytest.raises(NoAnswerError, match=r"no answer from the arbiter within 0\.2 s"):
                await hand.pose("fist", timeout=0.2)

    asyncio.run(main())


def test_async_connect_errors(broker: RunningBroker) -> None:
    async def main() -> None:
        base = f"t{uuid.uuid4().hex[:12]}"
        with pytest.raises(NoAnswerError, match=f"no state for {base}/hand1"):
            async with AsyncHandClient(broker.url, base=base, timeout=5):
                pass

    asyncio.run(main())
