"""The simulated firmware (pure state machine) against the protocol document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hand_mqtt.devtools.simulator import FIRMWARE_VERSION, SimulatedFirmware
from hand_mqtt.hardware import protocol as p

VECTORS_PATH = Path(__file__).resolve().parents[2] / "protocol" / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fw(clock: FakeClock) -> SimulatedFirmware:
    firmware = SimulatedFirmware(clock=clock)
    firmware.boot()
    return firmware


def replies(data: bytes) -> list[p.Reply]:
    return [p.parse_reply(f) for f in p.FrameDecoder().feed(data)]


def one_reply(data: bytes) -> p.Reply:
    got = replies(data)
    assert len(got) == 1, got
    return got[0]


def send(fw: SimulatedFirmware, frame: p.Frame) -> p.Reply:
    return one_reply(fw.feed(frame.encode()))


def test_boot_says_hello_and_has_power_on_defaults(clock: FakeClock) -> None:
    fw = SimulatedFirmware(clock=clock)
    hello = one_reply(fw.boot())
    assert hello == p.Hello(0, p.PROTOCOL_VERSION, FIRMWARE_VERSION, 5, 0)
    assert FIRMWARE_VERSION == (2, 0, 0)
    assert fw.targets == (90, 90, 90, 90, 90)
    assert fw.positions == (90, 90, 90, 90, 90)
    assert fw.config == p.DeviceConfig()
    assert fw.config.safe_pose == (180,) * 5
    assert not fw.driving
    assert fw.relaxed == 0b11111
    assert fw.pulse_widths == (None,) * 5
    assert fw.calibration == ((544, 2400),) * 5
    assert not fw.failsafe_active
    assert fw.status == 0
    assert fw.poll() == b""


def test_hello_request_echoes_seq(fw: SimulatedFirmware) -> None:
    assert send(fw, p.hello_request(42)) == p.Hello(42, 2, (2, 0, 0), 5, 0)
    assert not fw.driving


def test_set_all_acks_and_drives(fw: SimulatedFirmware) -> None:
    assert send(fw, p.set_all(1, [0, 45, 90, 135, 180])) == p.Ack(1, (0, 45, 90, 135, 180), 0)
    assert fw.targets == (0, 45, 90, 135, 180)
    assert fw.positions == (0, 45, 90, 135, 180)
    assert fw.driving
    assert fw.frames_applied == 1


def test_set_some_changes_only_its_fingers(fw: SimulatedFirmware) -> None:
    send(fw, p.set_all(1, [10, 20, 30, 40, 50]))
    assert send(fw, p.set_some(2, {1: 0, 4: 180})) == p.Ack(2, (10, 0, 30, 40, 180), 0)
    assert fw.targets == (10, 0, 30, 40, 180)


def test_set_some_first_drives(fw: SimulatedFirmware) -> None:
    assert send(fw, p.set_some(7, {0: 0})) == p.Ack(7, (0, 90, 90, 90, 90), 0, 0b11110)
    assert fw.driving
    assert fw.driven == 0b00001
    send(fw, p.set_some(8, {4: 0, 2: 0}))
    assert fw.driven == 0b10101
    send(fw, p.set_all(9, [0] * 5))
    assert fw.driven == 0b11111


def test_heartbeat_acks_current_targets(fw: SimulatedFirmware) -> None:
    assert send(fw, p.heartbeat(3)) == p.Ack(3, (90,) * 5, 0, 0b11111)
    assert not fw.driving


def test_configure_acks_and_applies(fw: SimulatedFirmware) -> None:
    config = p.DeviceConfig(500, p.FailsafeAction.SAFE_POSE, (1, 2, 3, 4, 5), 90)
    assert send(fw, p.configure(4, config)) == p.Ack(4, (90,) * 5, 0, 0b11111)
    assert fw.config == config


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (p.Frame(0x09, 1), p.NackReason.UNKNOWN_TYPE),
        (p.Frame(p.FrameType.MOVE, 1, bytes([1, 0])), p.NackReason.BAD_LENGTH),
        (p.Frame(p.FrameType.MOVE, 1, bytes([1, 0, 0x40, 1])), p.NackReason.BAD_MASK),
        (p.Frame(p.FrameType.RELAX, 1, bytes([0])), p.NackReason.BAD_MASK),
        (p.Frame(p.FrameType.CALIBRATE, 1, bytes([1, 0, 0, 0x60, 0x09])), 6),
        (p.Frame(p.FrameType.ACK, 1, bytes(6)), p.NackReason.UNKNOWN_TYPE),
        (p.Frame(p.FrameType.SET_ALL, 1, bytes(4)), p.NackReason.BAD_LENGTH),
        (p.Frame(p.FrameType.SET_SOME, 1, bytes([0x03, 1])), p.NackReason.BAD_LENGTH),
        (p.Frame(p.FrameType.HEARTBEAT, 1, b"\x00"), p.NackReason.BAD_LENGTH),
        (p.Frame(p.FrameType.SET_ALL, 1, bytes([1, 2, 181, 4, 5])), p.NackReason.BAD_ANGLE),
        (p.Frame(p.FrameType.SET_SOME, 1, bytes([0x01, 200])), p.NackReason.BAD_ANGLE),
        (p.Frame(p.FrameType.SET_SOME, 1, bytes([0x00])), p.NackReason.BAD_MASK),
        (p.Frame(p.FrameType.SET_SOME, 1, bytes([0x20, 1])), p.NackReason.BAD_MASK),
        (p.Frame(p.FrameType.CONFIGURE, 1, bytes([0, 0, 2, 0, 0, 0, 0, 0, 0, 0])), 5),
        (p.Frame(p.FrameType.CONFIGURE, 1, bytes([0, 0, 0, 0, 0, 0, 0, 181, 0, 0])), 5),
    ],
)
def test_nack_for_each_reason_changes_nothing(
    fw: SimulatedFirmware, frame: p.Frame, reason: int
) -> None:
    send(fw, p.set_all(9, [1, 2, 3, 4, 5]))
    before = (fw.targets, fw.config, fw.frames_applied)
    frame = p.Frame(frame.type, 77, frame.payload)
    assert send(fw, frame) == p.Nack(77, p.NackReason(reason))
    assert (fw.targets, fw.config, fw.frames_applied) == before
    assert fw.frames_nacked == 1


@pytest.mark.parametrize("case", VECTORS["requests"], ids=lambda c: c["name"])
def test_request_vectors_reply_bytes(case: dict[str, Any], clock: FakeClock) -> None:
    fw = SimulatedFirmware(clock=clock)
    fw.boot()
    assert fw.feed(bytes.fromhex(case["hex"])).hex(" ") == case["reply_hex"]


def test_bad_crc_and_bad_length_are_never_answered(fw: SimulatedFirmware) -> None:
    wire = bytearray(p.set_all(1, [0] * 5).encode())
    wire[-1] ^= 0xFF
    assert fw.feed(bytes(wire)) == b""
    assert fw.feed(bytes([0xA5, 17]) + bytes(22)) == b""
    assert fw.targets == (90,) * 5
    assert fw.bad_frames == 2
    assert fw.frames_received == 0


def test_frames_split_across_feeds(fw: SimulatedFirmware, clock: FakeClock) -> None:
    wire = p.set_all(5, [1, 2, 3, 4, 5]).encode() + p.heartbeat(6).encode()
    out = b""
    for byte in wire:
        out += fw.feed(bytes([byte]))
        clock.advance(0.001)
    assert replies(out) == [p.Ack(5, (1, 2, 3, 4, 5), 0), p.Ack(6, (1, 2, 3, 4, 5), 0)]


def test_partial_frame_kept_within_50ms(fw: SimulatedFirmware, clock: FakeClock) -> None:
    wire = p.set_all(5, [1, 2, 3, 4, 5]).encode()
    assert fw.feed(wire[:6]) == b""
    clock.advance(0.049)
    assert one_reply(fw.feed(wire[6:])) == p.Ack(5, (1, 2, 3, 4, 5), 0)
    assert fw.stale_discards == 0


def test_stale_partial_frame_does_not_swallow_next_frame(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    lost = p.set_all(5, [1, 2, 3, 4, 5]).encode()[:6]  # the rest of it never arrives
    good = p.set_all(6, [7, 7, 7, 7, 7]).encode()
    assert fw.feed(lost) == b""
    clock.advance(0.050)
    assert one_reply(fw.feed(good)) == p.Ack(6, (7,) * 5, 0)
    assert fw.stale_discards == 1
    assert fw.bad_frames == 0


def test_stale_partial_frame_discarded_by_poll(fw: SimulatedFirmware, clock: FakeClock) -> None:
    assert fw.feed(b"\xa5\x05\x01") == b""
    clock.advance(0.060)
    assert fw.poll() == b""
    assert fw.stale_discards == 1
    good = p.heartbeat(1).encode()
    assert one_reply(fw.feed(good)) == p.Ack(1, (90,) * 5, 0, 0b11111)


def test_failsafe_hold(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.set_all(1, [10, 20, 30, 40, 50]))
    send(fw, p.configure(2, p.DeviceConfig(failsafe_timeout_ms=200)))
    clock.advance(0.199)
    assert fw.poll() == b""
    clock.advance(0.001)
    assert one_reply(fw.poll()) == p.Failsafe((10, 20, 30, 40, 50), p.STATUS_FAILSAFE)
    assert fw.failsafe_active
    assert fw.targets == (10, 20, 30, 40, 50)
    clock.advance(10)
    assert fw.poll() == b""  # once
    # a heartbeat does not clear the flag, a SET does
    assert send(fw, p.heartbeat(3)) == p.Ack(3, (10, 20, 30, 40, 50), p.STATUS_FAILSAFE)
    assert send(fw, p.set_some(4, {0: 0})) == p.Ack(4, (0, 20, 30, 40, 50), 0)
    assert not fw.failsafe_active
    assert fw.failsafe_count == 1


def test_failsafe_safe_pose_moves_only_the_driven_fingers(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100, p.FailsafeAction.SAFE_POSE)))
    send(fw, p.set_some(2, {0: 0, 1: 0}))
    clock.advance(0.1)
    failsafe = p.Failsafe((180, 180, 90, 90, 90), p.STATUS_FAILSAFE, 0b11100)
    assert one_reply(fw.poll()) == failsafe
    assert fw.driven == 0b00011


def test_failsafe_never_drives_a_relaxed_finger(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100, p.FailsafeAction.SAFE_POSE)))
    send(fw, p.set_all(2, [0] * 5))
    send(fw, p.relax(3, 0b11111))
    clock.advance(0.1)
    assert one_reply(fw.poll()) == p.Failsafe((0,) * 5, p.STATUS_FAILSAFE, 0b11111)
    assert not fw.driving


def test_failsafe_hold_before_any_set_drives_nothing(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100)))
    clock.advance(0.1)
    assert one_reply(fw.poll()) == p.Failsafe((90,) * 5, p.STATUS_FAILSAFE, 0b11111)
    assert not fw.driving


def test_failsafe_safe_pose(fw: SimulatedFirmware, clock: FakeClock) -> None:
    config = p.DeviceConfig(100, p.FailsafeAction.SAFE_POSE, (180, 170, 160, 150, 140))
    send(fw, p.set_all(1, [0] * 5))
    send(fw, p.configure(2, config))
    clock.advance(0.05)
    assert send(fw, p.heartbeat(3)) == p.Ack(3, (0,) * 5, 0)  # restarts the timer
    clock.advance(0.099)
    assert fw.poll() == b""
    clock.advance(0.002)
    assert one_reply(fw.poll()) == p.Failsafe((180, 170, 160, 150, 140), p.STATUS_FAILSAFE)
    assert fw.targets == fw.positions == (180, 170, 160, 150, 140)
    assert send(fw, p.set_all(4, [90] * 5)) == p.Ack(4, (90,) * 5, 0)


def test_failsafe_fires_before_late_frame_is_handled(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100, p.FailsafeAction.SAFE_POSE)))
    send(fw, p.set_all(2, [90] * 5))
    clock.advance(0.5)  # nobody polled in time
    got = replies(fw.feed(p.set_all(3, [0] * 5).encode()))
    assert got == [p.Failsafe((180,) * 5, 1), p.Ack(3, (0,) * 5, 0)]


def test_failsafe_rearms_after_valid_frame(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100)))
    clock.advance(0.1)
    assert isinstance(one_reply(fw.poll()), p.Failsafe)
    send(fw, p.heartbeat(2))
    clock.advance(0.1)
    assert isinstance(one_reply(fw.poll()), p.Failsafe)
    assert fw.failsafe_count == 2


def test_nacked_and_garbage_frames_do_not_feed_the_failsafe(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100)))
    clock.advance(0.06)
    assert isinstance(send(fw, p.Frame(0x09, 2)), p.Nack)
    assert fw.feed(b"\x00\x11\xa5\x30") == b""
    clock.advance(0.04)
    assert isinstance(one_reply(fw.poll()), p.Failsafe)


def test_failsafe_off_by_default(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.set_all(1, [0] * 5))
    clock.advance(3600)
    assert fw.poll() == b""
    assert not fw.failsafe_active


def test_speed_moves_at_degrees_per_second(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.configure(1, p.DeviceConfig(speed_dps=100)))
    ack = send(fw, p.set_all(2, [0, 90, 180, 100, 80]))
    assert ack == p.Ack(2, (0, 90, 180, 100, 80), p.STATUS_MOVING)
    assert fw.positions == (90, 90, 90, 90, 90)
    clock.advance(0.05)
    assert fw.positions == pytest.approx((85, 90, 95, 95, 85))
    clock.advance(0.5)
    assert fw.positions == pytest.approx((35, 90, 145, 100, 80))
    assert fw.moving
    assert send(fw, p.heartbeat(3)).status == p.STATUS_MOVING  # type: ignore[union-attr]
    clock.advance(0.5)
    assert fw.positions == (0, 90, 180, 100, 80)
    assert not fw.moving
    # The end of the move is reported once, on its own, before anything else.
    assert replies(fw.feed(p.heartbeat(4).encode())) == [
        p.Arrived((0, 90, 180, 100, 80), 0),
        p.Ack(4, (0, 90, 180, 100, 80), 0),
    ]
    assert fw.poll() == b""


def test_speed_zero_moves_at_once(fw: SimulatedFirmware) -> None:
    assert send(fw, p.set_all(1, [0] * 5)).status == 0  # type: ignore[union-attr]
    assert fw.positions == (0,) * 5


def test_relax_stops_the_pulses_until_a_set_names_the_finger(fw: SimulatedFirmware) -> None:
    send(fw, p.set_all(1, [0, 45, 90, 135, 180]))
    assert send(fw, p.relax(2, 0b10001)) == p.Ack(2, (0, 45, 90, 135, 180), 0, 0b10001)
    assert fw.pulse_widths == (None, 1008.0, 1472.0, 1936.0, None)
    # A SET_SOME of other fingers leaves them limp; naming one drives it at the same angle.
    assert send(fw, p.set_some(3, {1: 50})) == p.Ack(3, (0, 50, 90, 135, 180), 0, 0b10001)
    assert send(fw, p.set_some(4, {0: 0})) == p.Ack(4, (0, 50, 90, 135, 180), 0, 0b10000)
    assert send(fw, p.set_all(5, [0] * 5)).relaxed == 0  # type: ignore[union-attr]


def test_relax_mid_move_leaves_nothing_moving(fw: SimulatedFirmware, clock: FakeClock) -> None:
    send(fw, p.configure(1, p.DeviceConfig(speed_dps=90)))
    send(fw, p.set_all(2, [0] * 5))
    clock.advance(0.5)
    assert fw.moving
    ack = send(fw, p.relax(3, 0b11111))
    assert ack == p.Ack(3, (0,) * 5, 0, 0b11111)
    assert fw.poll() == b""  # the ACK said it: no ARRIVED


def test_calibration_sets_pulse_widths_per_finger(fw: SimulatedFirmware) -> None:
    send(fw, p.calibrate(1, 0b00001, 2278, 722))
    send(fw, p.calibrate(2, 0b00110, 500, 2500))
    assert fw.calibration[:3] == ((2278, 722), (500, 2500), (500, 2500))
    send(fw, p.set_all(3, [90, 0, 180, 90, 0]))
    assert fw.pulse_widths == (1500.0, 500.0, 2500.0, 1472.0, 544.0)


@pytest.mark.parametrize("case", VECTORS["pulses"], ids=lambda c: str(tuple(c.values())))
def test_pulse_vectors(case: dict[str, Any], fw: SimulatedFirmware) -> None:
    send(fw, p.calibrate(1, 0b11111, case["pulse_at_0_us"], case["pulse_at_180_us"]))
    send(fw, p.set_all(2, [case["angle"]] * 5))
    assert fw.pulse_widths == (case["half_us"] / 2,) * 5


def test_timed_move_brings_every_finger_in_together(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.set_all(1, [180, 180, 90, 0, 100]))
    ack = send(fw, p.move(2, 800, {0: 0, 1: 90, 2: 0, 3: 180}))
    assert ack == p.Ack(2, (0, 90, 0, 180, 100), p.STATUS_MOVING)
    clock.advance(0.4)
    assert fw.positions == pytest.approx((90, 135, 45, 90, 100))
    assert fw.poll() == b""
    clock.advance(0.399)
    assert fw.moving
    assert all(pos != target for pos, target in zip(fw.positions[:4], fw.targets, strict=False))
    clock.advance(0.001)
    assert one_reply(fw.poll()) == p.Arrived((0, 90, 0, 180, 100), 0)
    assert fw.positions == (0, 90, 0, 180, 100)
    assert fw.poll() == b""


def test_a_timed_move_carries_a_finger_still_on_its_way(
    fw: SimulatedFirmware, clock: FakeClock
) -> None:
    send(fw, p.configure(1, p.DeviceConfig(speed_dps=10)))
    send(fw, p.set_all(2, [0, 90, 90, 90, 90]))
    clock.advance(1.0)
    assert fw.positions[0] == pytest.approx(80)
    send(fw, p.move(3, 200, {1: 180}))
    clock.advance(0.1)
    assert fw.positions[:2] == pytest.approx((40, 135))
    clock.advance(0.1)
    assert isinstance(one_reply(fw.poll()), p.Arrived)
    assert fw.positions[:2] == (0, 180)


def test_a_move_of_zero_duration_is_a_set(fw: SimulatedFirmware) -> None:
    assert send(fw, p.move(1, 0, {0: 5})) == p.Ack(1, (5, 90, 90, 90, 90), 0, 0b11110)
    assert fw.positions[0] == 5


def test_boot_resets_state(fw: SimulatedFirmware) -> None:
    send(fw, p.configure(1, p.DeviceConfig(100, speed_dps=5)))
    send(fw, p.set_all(2, [0] * 5))
    fw.feed(b"\xa5\x05")
    send(fw, p.calibrate(3, 0b11111, 500, 2500))
    assert one_reply(fw.boot()) == p.Hello(0, 2, (2, 0, 0), 5, 0)
    assert fw.targets == (90,) * 5
    assert fw.config == p.DeviceConfig()
    assert fw.calibration == ((544, 2400),) * 5
    assert not fw.driving
    assert one_reply(fw.feed(p.heartbeat(3).encode())) == p.Ack(3, (90,) * 5, 0, 0b11111)


def test_listener_sees_good_frames(fw: SimulatedFirmware) -> None:
    seen: list[p.Frame] = []
    fw.add_listener(seen.append)
    fw.feed(p.heartbeat(1).encode() + b"\x00\xa5\xff" + p.Frame(0x09, 2).encode())
    assert [f.seq for f in seen] == [1, 2]
    fw.remove_listener(seen.append)
    fw.feed(p.heartbeat(3).encode())
    assert len(seen) == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\xa5", b"\x00")))
def test_garbage_without_sync_never_acts(data: bytes) -> None:
    clock = FakeClock()
    fw = SimulatedFirmware(clock=clock)
    fw.boot()
    assert fw.feed(data) == b""
    assert fw.targets == (90,) * 5
    assert not fw.driving
    assert fw.frames_received == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_never_crash_and_answers_are_valid(data: bytes) -> None:
    fw = SimulatedFirmware(clock=FakeClock())
    fw.boot()
    out = fw.feed(data)
    decoder = p.FrameDecoder()
    answers = [p.parse_reply(f) for f in decoder.feed(out)]
    assert decoder.pending == decoder.skipped_bytes == 0
    assert len(answers) == fw.frames_received
    assert all(0 <= a <= 180 for a in fw.targets)
    if not fw.driving:
        assert fw.targets == (90,) * 5
