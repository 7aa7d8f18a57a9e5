"""The device service's link thread driving the framed driver, without a broker.

The hand is the simulated firmware (or a misbehaving one) behind a real TCP port, reached
through ``socket://``: the serial URL is the seam. ``reported`` is collected from the link
thread's publish callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from hand_mqtt import HandState, Reported, SimulatedFirmware, SocketHand
from hand_mqtt.devtools.simulator import FIRMWARE_VERSION
from hand_mqtt.hardware import protocol as p
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.driver import Confirmed, HandDriver, HandInfo, Target, Wait
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.model import Angles, FirmwareInfo
from hand_mqtt.services.device_link import DeviceLink
from harness.waiting import wait_until
from tests.support.firmwares import (
    ClampingFirmware,
    FalseStartFirmware,
    LossyFirmware,
    NackingFirmware,
    SilentFirmware,
)

SETS = (p.FrameType.SET_ALL, p.FrameType.SET_SOME)
QUIET = p.DeviceConfig(failsafe_timeout_ms=0)  # no heartbeats: only the frames a test causes
OPEN: Angles = (180, 180, 180, 180, 180)
FIST: Angles = (0, 0, 0, 0, 0)


def state(
    version: int,
    angles: Angles,
    *,
    relaxed: tuple[str, ...] = (),
    duration_ms: int | None = None,
    locked: bool = False,
) -> HandState:
    index, middle, ring, pinky, thumb = angles
    return HandState.model_validate(
        {
            "index": index,
            "middle": middle,
            "ring": ring,
            "pinky": pinky,
            "thumb": thumb,
            "version": version,
            "relaxed": relaxed,
            "duration_ms": duration_ms,
            "locked": locked,
        }
    )


class Published:
    """Every ``reported`` the link thread published, in order."""

    def __init__(self) -> None:
        self.items: list[Reported] = []
        self._changed = threading.Condition()

    def __call__(self, reported: Reported) -> None:
        with self._changed:
            self.items.append(reported)
            self._changed.notify_all()

    def wait_for(
        self, match: Callable[[Reported], bool], what: str, timeout: float = 10.0
    ) -> Reported:
        """Wait until the latest ``reported`` matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.items and match(self.items[-1])):
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.items[-1] if self.items else None
                    raise AssertionError(f"timed out waiting for {what}; last reported: {last}")
                self._changed.wait(left)
            return self.items[-1]

    def wait_seen(
        self, match: Callable[[Reported], bool], since: int, what: str, timeout: float = 10.0
    ) -> Reported:
        """Wait until any ``reported`` published after the first ``since`` matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.items[since:] if match(r)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; saw {self.items[since:]}")
                self._changed.wait(left)

    def snapshot(self) -> list[Reported]:
        with self._changed:
            return list(self.items)


@dataclass
class FrameLog:
    """Frames the simulated firmware received, with the time each arrived."""

    frames: list[tuple[float, p.Frame]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, frame: p.Frame) -> None:
        with self.lock:
            self.frames.append((time.monotonic(), frame))

    def of(self, *types: int) -> list[tuple[float, p.Frame]]:
        with self.lock:
            return [(t, f) for t, f in self.frames if f.type in types]


@dataclass
class Rig:
    hand: SocketHand
    driver: FramedDriver
    link: DeviceLink
    published: Published
    frames: FrameLog

    def up(self) -> Reported:
        return self.published.wait_for(lambda r: r.link == "up", "link up")

    def reported_version(self, version: int, angles: Angles) -> Reported:
        return self.published.wait_for(
            lambda r: r.version == version and r.angles == angles,
            f"reported version {version} with {angles}",
        )


Factory = Callable[..., Rig]


@pytest.fixture
def rig() -> Iterator[Factory]:
    made: list[Rig] = []

    def make(
        firmware: SimulatedFirmware | None = None,
        *,
        hand: SocketHand | None = None,
        config: p.DeviceConfig = QUIET,
        ack_timeout: float = 0.2,
        max_retries: int = 3,
        hello_timeout: float = 3.0,
        start: bool = True,
        calibration: Calibration | None = None,
        hold_timeout: float | None = None,
    ) -> Rig:
        frames = FrameLog()
        if hand is None:
            hand = SocketHand(firmware=firmware, on_frame=frames)
            hand.start()
        driver = FramedDriver(
            SerialLink(hand.url),
            config=config,
            ack_timeout=ack_timeout,
            max_retries=max_retries,
            hello_timeout=hello_timeout,
            resend_initial=0.05,
            resend_max=0.4,
            calibration=calibration,
        )
        published = Published()
        link = DeviceLink(
            driver,
            initial=Reported(serial=hand.url),
            publish=published,
            backoff_initial=0.05,
            backoff_max=0.2,
            hold_timeout=hold_timeout,
        )
        made.append(Rig(hand, driver, link, published, frames))
        if start:
            link.start()
        return made[-1]

    yield make
    for each in reversed(made):
        each.link.stop()
        each.link.close()
        each.hand.stop()


# -- the link as a whole ---------------------------------------------------------------------


def test_handshake_then_the_desired_state_reaches_the_hand(rig: Factory) -> None:
    r = rig()
    up = r.up()
    assert up.firmware is not None
    version = ".".join(str(part) for part in FIRMWARE_VERSION)
    assert (up.firmware.name, up.firmware.version, up.firmware.protocol) == (
        "hand-mqtt",
        version,
        p.PROTOCOL_VERSION,
    )
    assert r.link.link_up
    r.link.want(state(1, (10, 20, 30, 40, 50)))
    reported = r.reported_version(1, (10, 20, 30, 40, 50))
    assert (reported.link, reported.failsafe, reported.mismatch) == ("up", False, False)
    assert r.hand.firmware.targets == (10, 20, 30, 40, 50)
    assert r.hand.firmware.config == QUIET  # configured before any angle went out
    assert [f.type for _, f in r.frames.of(*SETS)] == [p.FrameType.SET_ALL]


def test_only_the_fingers_that_changed_are_sent(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    r.link.want(state(2, (0, 0, 90, 0, 0)))
    r.reported_version(2, (0, 0, 90, 0, 0))
    r.link.want(state(3, (1, 2, 3, 4, 0)))
    r.reported_version(3, (1, 2, 3, 4, 0))
    sent = [f for _, f in r.frames.of(*SETS)]
    assert [f.type for f in sent] == [
        p.FrameType.SET_ALL,
        p.FrameType.SET_SOME,
        p.FrameType.SET_ALL,
    ]
    assert sent[1].payload == bytes((0b00100, 90))


def test_a_state_that_changes_no_angle_is_reported_without_a_frame(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    r.link.want(state(2, FIST))
    r.reported_version(2, FIST)
    assert len(r.frames.of(*SETS)) == 1


def test_the_latest_desired_state_wins(rig: Factory) -> None:
    r = rig()
    r.up()
    started = time.monotonic()
    count = 2000
    for version in range(1, count + 1):
        r.link.want(state(version, (version % 181, 0, 0, 0, 0)))
    final = (count % 181, 0, 0, 0, 0)
    r.reported_version(count, final)
    elapsed = time.monotonic() - started
    assert r.hand.firmware.targets == final
    sets = len(r.frames.of(*SETS))
    # One frame in flight at a time: never more frames than the line carries in the time
    # (a SET_SOME and its ACK are 7 + 11 bytes at 115200 baud, 1.56 ms).
    assert sets <= elapsed / 0.00156 + 10, f"{sets} frames in {elapsed:.2f} s"
    # Every version reported names exactly the angles reported with it.
    for reported in r.published.snapshot():
        if reported.version is not None:
            assert reported.angles == (reported.version % 181, 0, 0, 0, 0)


def test_republish_sends_reported_again(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, OPEN))
    reported = r.reported_version(1, OPEN)
    before = len(r.published.snapshot())
    r.link.republish()
    wait_until(lambda: len(r.published.snapshot()) > before, what="reported again")
    assert r.published.snapshot()[-1] == reported


def test_heartbeats_keep_the_failsafe_quiet(rig: Factory) -> None:
    r = rig(config=p.DeviceConfig(failsafe_timeout_ms=150))
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    wait_until(lambda: len(r.frames.of(p.FrameType.HEARTBEAT)) >= 6, what="six heartbeats")
    assert r.hand.firmware.failsafe_count == 0
    assert r.published.snapshot()[-1].failsafe is False


# -- lost frames, silence, refusals ----------------------------------------------------------


def test_lost_frames_are_sent_again(rig: Factory) -> None:
    r = rig(LossyFirmware(drop=2))
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    assert r.driver.retransmissions >= 2
    assert all(rep.link == "up" for rep in r.published.snapshot()[1:])


def test_a_silent_firmware_takes_the_link_down_until_it_answers_again(rig: Factory) -> None:
    firmware = SilentFirmware()
    r = rig(firmware, max_retries=2)
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    firmware.silent.set()
    r.link.want(state(2, OPEN))
    down = r.published.wait_for(lambda rep: rep.link == "down", "link down")
    assert down.version == 1  # what the hand last confirmed stays readable
    assert not r.link.link_up
    firmware.silent.clear()
    r.reported_version(2, OPEN)
    assert r.link.link_up


def test_a_refused_frame_is_sent_again_with_growing_pauses(rig: Factory) -> None:
    firmware = NackingFirmware()
    r = rig(firmware)
    r.link.want(state(1, FIST))
    wait_until(lambda: r.driver.nacks >= 4, what="four NACKs")
    times = firmware.refused
    # resend_initial 0.05 s, doubling: no busy loop, whatever the machine's speed.
    assert times[3] - times[0] >= 0.05 + 0.1 + 0.2 - 0.01
    assert r.link.link_up
    assert all(rep.version is None for rep in r.published.snapshot())


def test_a_firmware_that_restarts_is_configured_and_driven_again(rig: Factory) -> None:
    config = p.DeviceConfig(failsafe_timeout_ms=0, safe_pose=(1, 2, 3, 4, 5))
    r = rig(config=config)
    r.link.want(state(1, (10, 20, 30, 40, 50)))
    r.reported_version(1, (10, 20, 30, 40, 50))
    configures = len(r.frames.of(p.FrameType.CONFIGURE))
    r.hand.inject(r.hand.firmware.boot())  # power cycle: defaults, then HELLO with SEQ 0
    wait_until(lambda: len(r.frames.of(p.FrameType.CONFIGURE)) > configures, what="configure")
    wait_until(lambda: r.hand.firmware.targets == (10, 20, 30, 40, 50), what="driven again")
    assert r.hand.firmware.config == config
    r.reported_version(1, (10, 20, 30, 40, 50))
    assert r.link.link_up


# -- the three lies of issue "hostile clients ... lying firmware" -----------------------------


def test_false_start_before_every_answer_costs_no_retransmission(rig: Factory) -> None:
    r = rig(FalseStartFirmware(), ack_timeout=1.0)
    for version, angles in enumerate([FIST, OPEN, (5, 6, 7, 8, 9)], start=1):
        r.link.want(state(version, angles))
        r.reported_version(version, angles)
    # Each answer is found once its false start is 50 ms stale, long before the ACK timeout.
    assert r.driver.retransmissions == 0
    assert len(r.frames.of(*SETS)) == 3


def test_a_firmware_that_acks_other_angles_is_not_flooded(rig: Factory) -> None:
    r = rig(ClampingFirmware(low=10, high=170))
    r.link.want(state(1, FIST))
    lie = r.published.wait_for(lambda rep: rep.mismatch, "a mismatch")
    assert lie.angles == (10, 10, 10, 10, 10)
    assert lie.version is None  # never the version of angles the hand did not confirm
    wait_until(lambda: len(r.frames.of(*SETS)) >= 4, what="four tries")
    times = [t for t, _ in r.frames.of(*SETS)]
    assert times[3] - times[0] >= 0.05 + 0.1 + 0.2 - 0.01
    # Angles the firmware takes as they are end the mismatch.
    r.link.want(state(2, (90, 90, 90, 90, 90)))
    fine = r.reported_version(2, (90, 90, 90, 90, 90))
    assert not fine.mismatch
    for reported in r.published.snapshot():
        assert reported.version is None or reported.angles == (90, 90, 90, 90, 90)


def test_the_failsafe_pose_is_never_reported_with_a_version(rig: Factory) -> None:
    config = p.DeviceConfig(
        failsafe_timeout_ms=60_000, failsafe_action=p.FailsafeAction.SAFE_POSE, safe_pose=OPEN
    )
    r = rig(config=config)
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    before = len(r.published.snapshot())
    r.hand.inject(r.hand.firmware.fire_failsafe())
    fired = r.published.wait_seen(lambda rep: rep.failsafe, before, "the failsafe reported")
    assert (fired.angles, fired.version) == (OPEN, None)
    # The hand goes back to the desired state, and says so with its version.
    r.published.wait_for(lambda rep: rep.version == 1 and not rep.failsafe, "back to state 1")
    history = r.published.snapshot()
    safe = [rep for rep in history if rep.angles == OPEN]
    assert safe, "the safe pose was reported"
    assert all(rep.version is None and rep.failsafe for rep in safe)
    assert r.hand.firmware.targets == FIST


# -- one owner: stepping down, stopping, never waiting on the port ----------------------------


def test_stepping_down_releases_the_port_for_the_next_owner(rig: Factory) -> None:
    first = rig()
    first.link.want(state(1, FIST))
    first.reported_version(1, FIST)
    first.link.step_down()
    wait_until(lambda: not first.hand.connected, what="the port released")
    published = len(first.published.snapshot())
    second = rig(hand=first.hand)
    second.link.want(state(2, OPEN))
    second.reported_version(2, OPEN)
    assert first.hand.firmware.targets == OPEN
    assert len(first.published.snapshot()) == published  # not a word after stepping down


def test_stop_does_not_wait_for_a_handshake(rig: Factory) -> None:
    firmware = SilentFirmware()
    firmware.silent.set()
    r = rig(firmware, hello_timeout=60.0)
    wait_until(lambda: r.frames.of(p.FrameType.HELLO_REQUEST), what="a hello request")
    r.link.stop(timeout=5.0)
    assert not r.driver.link.is_open


class BlockingDriver(HandDriver):
    """A driver double whose apply() blocks until released, like a port that stalls."""

    def __init__(self) -> None:
        self.url = "stub://"
        self.applied: list[Angles] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self._info: HandInfo | None = None
        self._wait: Wait | None = None

    def open(self, wait: Wait) -> None:
        self._wait = wait

    def handshake(self) -> HandInfo:
        self._info = HandInfo(FirmwareInfo(version="0", protocol=0, fingers=5), failsafe=False)
        return self._info

    @property
    def info(self) -> HandInfo | None:
        return self._info

    def fileno(self) -> int | None:
        return None

    def apply(self, target: Target) -> None:
        self.entered.set()
        self.release.wait(10)
        self.applied.append(target.angles)

    def service(self) -> None:
        pass

    @property
    def deadline(self) -> float:
        return time.monotonic() + 1.0

    @property
    def confirmed(self) -> Confirmed:
        return Confirmed(self.applied[-1] if self.applied else None)

    def close(self) -> None:
        pass


def test_handing_over_a_state_never_waits_for_the_port() -> None:
    driver = BlockingDriver()
    published = Published()
    link = DeviceLink(driver, initial=Reported(), publish=published)
    link.start()
    try:
        link.want(state(1, FIST))
        assert driver.entered.wait(5)  # the link thread is stuck writing state 1
        for version in range(2, 1002):  # returns at once however stuck the port is
            link.want(state(version, (version % 181, 0, 0, 0, 0)))
        driver.release.set()
        published.wait_for(lambda r: r.version == 1001, "the last state")
        assert driver.applied[0] == FIST
        assert driver.applied[1:] == [(1001 % 181, 0, 0, 0, 0)]  # latest wins
    finally:
        driver.release.set()
        link.stop()
        link.close()


# -- relax, calibration, timed moves, the hold timeout -----------------------------------------


def test_relaxed_fingers_get_a_relax_and_a_move_drives_them_again(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    r.link.want(state(2, FIST, relaxed=("index", "thumb")))
    reported = r.published.wait_for(lambda x: x.relaxed == ("index", "thumb"), "two relaxed")
    assert reported.version == 2
    assert r.hand.firmware.relaxed == 0b10001
    assert r.hand.firmware.pulse_widths[0] is None
    relax_frames = [f for _, f in r.frames.of(p.FrameType.RELAX)]
    assert [f.payload for f in relax_frames] == [bytes((0b10001,))]
    # The index is named again at the same angle (a command moved it); the thumb stays limp.
    r.link.want(state(3, FIST, relaxed=("thumb",)))
    r.published.wait_for(lambda x: x.relaxed == ("thumb",), "the index driven again")
    last_set = r.frames.of(*SETS)[-1][1]
    assert last_set.type == p.FrameType.SET_SOME
    assert last_set.payload == bytes((0b00001, 0))
    # An emergency stop: every finger relaxed in one frame.
    r.link.want(state(4, FIST, relaxed=("index", "middle", "ring", "pinky", "thumb"), locked=True))
    r.published.wait_for(lambda x: len(x.relaxed) == 5, "all relaxed")
    assert r.frames.of(p.FrameType.RELAX)[-1][1].payload == bytes((0b01111,))
    assert r.hand.firmware.pulse_widths == (None,) * 5


def test_relaxed_fingers_stay_limp_after_a_restart(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, (10, 20, 30, 40, 50), relaxed=("middle",)))
    r.published.wait_for(
        lambda x: x.relaxed == ("middle",) and x.index == 10, "a hand with the middle limp"
    )
    # Only the driven fingers were ever sent: SET_SOME of four, never a SET_ALL.
    assert [f.type for _, f in r.frames.of(*SETS)] == [p.FrameType.SET_SOME]
    r.hand.inject(r.hand.firmware.boot())  # the firmware restarts
    wait_until(lambda: len(r.frames.of(p.FrameType.CONFIGURE)) == 2, what="a second handshake")
    wait_until(lambda: r.hand.firmware.driven == 0b11101, what="the others driven again")
    assert r.hand.firmware.pulse_widths[1] is None


def test_new_angles_with_a_duration_go_out_as_a_move(rig: Factory) -> None:
    r = rig()
    r.link.want(state(1, OPEN))
    r.reported_version(1, OPEN)
    r.link.want(state(2, (0, 0, 180, 180, 180), duration_ms=300))
    moving = r.published.wait_for(lambda x: x.version == 2, "the move acknowledged")
    moves = [f for _, f in r.frames.of(p.FrameType.MOVE)]
    assert len(moves) == 1
    assert p.parse_request(moves[0]) == p.Move(moves[0].seq, 300, 0b00011, (0, 0))
    assert moving.moving
    # The firmware reports the arrival: reported.moving clears without a command.
    arrived = r.published.wait_for(lambda x: x.version == 2 and not x.moving, "the arrival")
    assert arrived.angles == (0, 0, 180, 180, 180)
    # The same state again (a reconnect, a relax) is no new move.
    r.link.want(state(3, (0, 0, 180, 180, 180), duration_ms=300))
    r.reported_version(3, (0, 0, 180, 180, 180))
    assert len(r.frames.of(p.FrameType.MOVE)) == 1


def test_moving_is_cleared_even_when_the_arrived_frame_is_lost(rig: Factory) -> None:
    # A firmware whose ARRIVED never reaches the host: the driver asks while moving.
    firmware = SimulatedFirmware()
    r = rig(firmware)
    r.link.want(state(1, OPEN))
    r.reported_version(1, OPEN)
    original = firmware._state_frame  # the one place to lose a frame type

    def no_arrived(kind: p.FrameType, seq: int) -> bytes:
        frame = original(kind, seq)
        return b"" if kind == p.FrameType.ARRIVED else frame

    firmware._state_frame = no_arrived  # type: ignore[method-assign]
    r.link.want(state(2, FIST, duration_ms=200))
    r.published.wait_for(lambda x: x.version == 2 and x.moving, "moving")
    r.published.wait_for(lambda x: x.version == 2 and not x.moving, "arrived, asked for")
    assert r.frames.of(p.FrameType.HEARTBEAT), "no heartbeat asked the firmware"


def test_the_calibration_is_given_at_every_handshake(rig: Factory) -> None:
    calibration = Calibration.from_toml(
        "[fingers.index]\nservo_min = 160\nservo_max = 20\n"
        "pulse_min_us = 500\npulse_max_us = 2500\n"
        "[fingers.thumb]\npulse_min_us = 500\npulse_max_us = 2500\n"
    )
    r = rig(calibration=calibration)
    r.up()
    frames = [p.parse_request(f) for _, f in r.frames.of(p.FrameType.CALIBRATE)]
    assert sorted((f.mask, f.pulse_at_0_us, f.pulse_at_180_us) for f in frames) == [  # type: ignore[union-attr]
        (0b00001, 2278, 722),
        (0b01110, 544, 2400),
        (0b10000, 500, 2500),
    ]
    r.link.want(state(1, (90, 90, 90, 90, 90)))
    r.reported_version(1, (90, 90, 90, 90, 90))
    assert r.hand.firmware.pulse_widths == (1500.0, 1472.0, 1472.0, 1472.0, 1500.0)
    r.hand.inject(r.hand.firmware.boot())
    wait_until(lambda: len(r.frames.of(p.FrameType.CALIBRATE)) == 6, what="calibrated again")


def test_the_hold_timeout_relaxes_a_finger_that_held_its_target(rig: Factory) -> None:
    r = rig(hold_timeout=0.3)
    r.link.want(state(1, FIST))
    r.reported_version(1, FIST)
    held = r.published.wait_for(lambda x: len(x.hold_relaxed) == 5, "every finger relaxed")
    assert held.relaxed == held.hold_relaxed == ("index", "middle", "ring", "pinky", "thumb")
    assert r.hand.firmware.pulse_widths == (None,) * 5
    # A new angle for a finger drives it again; the others stay limp.
    r.link.want(state(2, (90, 0, 0, 0, 0)))
    again = r.published.wait_for(lambda x: x.index == 90 and "index" not in x.relaxed, "index")
    assert again.hold_relaxed == ("middle", "ring", "pinky", "thumb")
    r.published.wait_for(lambda x: len(x.hold_relaxed) == 5, "the index held too long too")
