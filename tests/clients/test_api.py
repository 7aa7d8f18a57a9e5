"""The blocking Python API, against a real broker, the arbiter, the device service and the
simulated hand on a pty."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from hand_mqtt import (
    BrokerUrl,
    CommandError,
    HandClient,
    HandMqttError,
    HandState,
    MqttError,
    NoAnswerError,
    Snapshot,
    Topics,
)
from harness.brokers import RunningBroker, free_port
from harness.waiting import wait_until
from tests.support.system import System


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


@pytest.fixture
def hand(system: System, broker: RunningBroker) -> Iterator[HandClient]:
    with HandClient(broker.url, hand="hand1", base=system.topics.base) as client:
        yield client


def test_with_block_starts_with_the_retained_state(system: System, broker: RunningBroker) -> None:
    system.client().publish(system.hand_topics.set, b'{"pose": "peace"}')
    system.wait_hand((180, 180, 0, 0, 0))
    # A string URL and a parsed one both work; the state is there when the block starts.
    for url in (broker.url, BrokerUrl.parse(broker.url)):
        with HandClient(url, hand="hand1", base=system.topics.base) as hand:
            assert hand.state is not None
            assert hand.state.pose == "peace"
            assert hand.connected
    assert not hand.connected


def test_typed_commands_return_the_new_desired_state(hand: HandClient, system: System) -> None:
    before = hand.state
    assert before is not None
    peace = hand.pose("peace")
    assert (peace.angles, peace.pose) == ((180, 180, 0, 0, 0), "peace")
    assert peace.version == before.version + 1
    assert hand.set(index=90, thumb=0).angles == (90, 180, 0, 0, 0)
    assert hand.set({"ring": 10}, pinky=20).angles == (90, 180, 10, 20, 0)
    assert hand.set({"ring": 0, "pinky": 0}).angles == (90, 180, 0, 0, 0)
    assert hand.nudge("thumb", -15).angles == (90, 180, 0, 0, 0)  # clamped at 0
    assert hand.nudge("index", 15).angles == (105, 180, 0, 0, 0)
    last = hand.angles([180, None, 0, 0, 0])
    assert last.angles == (180, 180, 0, 0, 0)
    assert last.version == before.version + 7
    assert hand.state == last
    system.wait_hand(last.angles)


def test_relax_stop_unlock_and_timed_moves(hand: HandClient) -> None:
    fist = hand.pose("fist", duration=0.8)
    assert (fist.angles, fist.duration_ms) == ((0,) * 5, 800)
    assert hand.relax("thumb", "index").relaxed == ("index", "thumb")
    assert hand.set(index=10, duration=0.25).relaxed == ("thumb",)
    assert hand.relax().relaxed == ("index", "middle", "ring", "pinky", "thumb")
    stopped = hand.stop()
    assert stopped.locked
    with pytest.raises(CommandError, match=r"the hand is locked \(emergency stop\)"):
        hand.angles([90, None, None, None, None], duration=1)
    unlocked = hand.unlock()
    assert not unlocked.locked
    assert hand.angles([90, None, None, None, None], duration=1).relaxed == (
        "middle",
        "ring",
        "pinky",
        "thumb",
    )
    with pytest.raises(CommandError, match="unknown finger 'toe'"):
        hand.relax("toe")
    with pytest.raises(CommandError, match="duration_ms must be a whole number"):
        hand.pose("open", duration=-1)


def test_waiting_for_the_report_waits_for_the_arrival_and_the_relax(hand: HandClient) -> None:
    hand.pose("open", wait="reported")
    started = time.monotonic()
    fist = hand.pose("fist", duration=0.6, wait="reported")
    # A timed move cannot be over before its duration: the wait ended with the arrival.
    assert time.monotonic() - started >= 0.55
    reported = hand.reported
    assert reported is not None
    assert (reported.angles, reported.moving, reported.version) == ((0,) * 5, False, fist.version)
    hand.relax("thumb", "ring", wait="reported")
    reported = hand.reported
    assert reported is not None
    assert reported.relaxed == ("ring", "thumb")
    hand.set(ring=10, wait="reported")
    reported = hand.reported
    assert reported is not None
    assert reported.relaxed == ("thumb",)


def test_refusals_raise_the_arbiters_sentence(hand: HandClient) -> None:
    with pytest.raises(CommandError, match="unknown pose 'salute'"):
        hand.pose("salute")
    with pytest.raises(CommandError, match="index: 999 is out of range"):
        hand.set(index=999)
    with pytest.raises(CommandError, match="thumb: 200 is out of range"):
        hand.angles([0, 0, 0, 0, 200])
    assert hand.errors[-1].error.startswith("thumb: 200")
    # Mistakes a program makes by its own hand are caught before anything is sent.
    with pytest.raises(CommandError, match="unknown finger 'toe'"):
        hand.nudge("toe", 15)
    with pytest.raises(CommandError, match="name at least one finger"):
        hand.set()
    with pytest.raises(CommandError, match="unknown finger 'toe'"):
        hand.set({"toe": 1})
    with pytest.raises(CommandError, match="give five angles"):
        hand.angles([0, 0])


def test_wait_reported_returns_when_the_device_reports_the_hand_there(
    hand: HandClient, system: System
) -> None:
    for target in ((0, 0, 0, 0, 0), (180, 0, 0, 180, 180), (10, 20, 30, 40, 50)):
        state = hand.angles(list(target), wait="reported")
        reported = hand.reported
        assert reported is not None
        assert reported.angles == target
        assert reported.version is not None
        assert reported.version >= state.version
        assert system.sim.firmware.targets == target
    # Asking for the pose the hand is already in is answered by the device too.
    again = hand.angles([10, 20, 30, 40, 50], wait="reported")
    assert hand.reported is not None
    assert hand.reported.version == again.version


def test_wait_reported_waits_until_a_timed_move_has_arrived(hand: HandClient) -> None:
    with hand.changes() as changes:
        started = time.monotonic()
        state = hand.pose("fist", duration=0.5, wait="reported")
        took = time.monotonic() - started
        seen = [s.reported for s in changes.pending() if s.reported is not None]
    assert state.duration_ms == 500
    # The device said "moving" on the way; the call returned only once it said "arrived".
    assert any(r.moving and r.angles == state.angles for r in seen)
    assert hand.reported is not None
    assert not hand.reported.moving
    assert hand.reported.angles == state.angles
    assert took >= 0.5


def test_online_follows_the_device(hand: HandClient, system: System) -> None:
    wait_until(lambda: hand.online, what="online")
    assert system.device is not None
    system.device.stop()
    wait_until(lambda: hand.snapshot().device == "offline", what="the device's offline")
    assert not hand.online


def test_wait_reported_times_out_with_a_reason(hand: HandClient, system: System) -> None:
    assert system.device is not None
    system.device.stop()
    wait_until(lambda: hand.snapshot().device == "offline", what="device offline")
    with pytest.raises(NoAnswerError, match=r"accepted version .* device service is not online"):
        hand.pose("fist", wait="reported", timeout=0.5)
    # The arbiter did accept it: the desired state moved on.
    assert hand.state is not None
    assert hand.state.pose == "fist"


def test_no_answer_when_the_arbiter_is_gone(hand: HandClient, system: System) -> None:
    assert system.arbiter is not None
    system.arbiter.stop()
    wait_until(lambda: hand.snapshot().arbiter == "offline", what="arbiter offline")
    with pytest.raises(NoAnswerError, match=r"no answer from the arbiter within 0\.3 s"):
        hand.pose("fist", timeout=0.3)


def test_changes_arrive_in_the_callers_thread(hand: HandClient, system: System) -> None:
    seen: list[tuple[Snapshot, int]] = []
    with hand.changes() as changes:
        other = system.client("other")
        other.publish(system.hand_topics.set, b'{"pose": "okay"}')
        other.publish(system.hand_topics.set, b'{"pose": "nonsense"}')
        other.publish(system.hand_topics.set, b'{"pose": "point"}')
        for snapshot in changes:
            seen.append((snapshot, threading.get_ident()))
            if snapshot.desired is not None and snapshot.desired.pose == "point":
                break
        other.stop()
    assert {ident for _, ident in seen} == {threading.get_ident()}
    poses = [s.desired.pose for s, _ in seen if s.desired is not None]
    assert poses.index("okay") < poses.index("point")
    refusals = [s.error for s, _ in seen if s.error is not None]
    assert [r.error for r in refusals] == [
        "unknown pose 'nonsense'; known poses: " + ", ".join(hand.poses)
    ]


def test_closing_ends_iteration_in_another_thread(hand: HandClient) -> None:
    changes = hand.changes()
    finished = threading.Event()

    def consume() -> None:
        for _ in changes:
            pass
        finished.set()

    thread = threading.Thread(target=consume)
    thread.start()
    hand.close()
    thread.join(10)
    assert finished.is_set()


def test_get_with_a_timeout_returns_none_or_the_next_change(
    hand: HandClient, system: System
) -> None:
    with hand.changes() as changes:
        # Nothing has changed yet; a command on the same path is the sentinel.
        assert changes.get(timeout=0) is None
        state = hand.pose("rockstar")
        found: list[HandState] = []
        while not found or found[-1].version < state.version:
            snapshot = changes.get(timeout=5)
            assert snapshot is not None
            if snapshot.desired is not None:
                found.append(snapshot.desired)
        assert found[-1] == state


def test_a_hand_no_arbiter_serves_is_refused_with_a_sentence(broker: RunningBroker) -> None:
    base = f"t{free_port()}"
    with pytest.raises(NoAnswerError, match=rf"no state for {base}/hand2 on the broker"):
        HandClient(broker.url, hand="hand2", base=base, timeout=5).connect()
    # A watcher that does not need the state yet can still connect.
    watcher = HandClient(broker.url, base=base, require_state=False).connect()
    assert watcher.state is None
    watcher.close()


def test_an_unreachable_broker_raises_the_package_error() -> None:
    with pytest.raises(MqttError, match="could not connect to the broker"):
        HandClient(f"mqtt://127.0.0.1:{free_port()}", timeout=0.5).connect()


def test_a_bad_url_raises_the_package_error() -> None:
    with pytest.raises(HandMqttError, match="scheme 'http' is not supported"):
        HandClient("http://127.0.0.1")


def test_importing_the_package_leaves_asyncio_to_those_who_use_it() -> None:
    """The services import hand_mqtt; the asyncio client must not slow their start."""
    code = (
        "import sys, hand_mqtt; assert 'asyncio' not in sys.modules; "
        "hand_mqtt.AsyncHandClient; assert 'asyncio' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
