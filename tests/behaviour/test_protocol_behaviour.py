"""The firmware's behaviour on the wire, as docs/serial-protocol.md describes it.

Each test runs against the Python simulator and against the real firmware in simavr (see
conftest.py); where the two disagree, one of them is wrong.

Timings are real, and a busy machine only ever makes the hand later: the emulator is throttled
to wall-clock time and drops a lag rather than racing to catch up, so its clock is never ahead
of ours by more than :data:`CLOCK_SLACK_S`. A lower bound timed from before a frame was written
is therefore the hand's own delay. How soon something happens is the machine's speed, not the
hand's behaviour: upper bounds here only detect a hang. Where a test needs the hand's time to
pass, a timed MOVE's unprompted ARRIVED is its alarm clock.
"""

from __future__ import annotations

import struct
import time

from hand_mqtt.hardware import protocol as p
from tests.behaviour.wire import Wire, line_noise

POWER_ON = (90, 90, 90, 90, 90)
CLOCK_SLACK_S = 0.005
"""How far the hand's clock may run ahead of ours (the emulator's throttle)."""
HANG_S = 10.0
"""Seconds after which something the hand must do counts as never done."""
OPEN = (180, 180, 180, 180, 180)
ALL = 0b11111  # every finger: at power-on none is driven, so all five are "relaxed"


def configure_payload(
    timeout_ms: int = 0, action: int = 0, pose: tuple[int, ...] = OPEN, speed: int = 0
) -> bytes:
    """A CONFIGURE payload with any values, valid or not."""
    return struct.pack("<HB5BH", timeout_ms, action, *pose, speed)


# -- boot and hello --------------------------------------------------------------------------


def test_boot_hello_then_hello_request(booted: tuple[Wire, p.Hello]) -> None:
    wire, boot = booted
    assert boot == p.Hello(seq=0, protocol=2, firmware=(2, 0, 0), finger_count=5, status=0), boot
    assert wire.silent_for(0.2), "more than one HELLO at boot"
    for seq in (42, 0, 255):
        hello = wire.request(p.hello_request(seq), p.Hello)
        assert hello == p.Hello(seq=seq, protocol=2, firmware=(2, 0, 0), finger_count=5, status=0)
    # A hello request changes nothing: the power-on targets are still there.
    assert wire.request(p.heartbeat(1), p.Ack).angles == POWER_ON


# -- SET_ALL / SET_SOME / HEARTBEAT / CONFIGURE -----------------------------------------------


def test_set_all_is_acked_with_the_applied_angles(wire: Wire) -> None:
    for seq, angles in enumerate([(0, 45, 90, 135, 180), (180, 0, 180, 0, 180), (7,) * 5], 1):
        ack = wire.request(p.set_all(seq, angles), p.Ack)
        assert ack.angles == angles
        assert ack.status == 0


def test_set_some_is_acked_with_all_five_targets(wire: Wire) -> None:
    ack = wire.request(p.set_some(1, {1: 30, 3: 150}), p.Ack)
    assert ack.angles == (90, 30, 90, 150, 90)  # the others keep their power-on 90
    ack = wire.request(p.set_some(2, {0: 0, 4: 180}), p.Ack)
    assert ack.angles == (0, 30, 90, 150, 180)
    ack = wire.request(p.set_some(3, dict.fromkeys(range(5), 11)), p.Ack)
    assert ack.angles == (11, 11, 11, 11, 11)
    assert ack.status == 0


def test_heartbeat_is_acked_and_changes_nothing(wire: Wire) -> None:
    assert wire.request(p.heartbeat(9), p.Ack) == p.Ack(9, POWER_ON, 0, ALL)
    wire.request(p.set_all(10, (1, 2, 3, 4, 5)), p.Ack)
    assert wire.request(p.heartbeat(11), p.Ack) == p.Ack(11, (1, 2, 3, 4, 5), 0)


def test_configure_is_acked_and_keeps_the_targets(wire: Wire) -> None:
    wire.request(p.set_all(1, (10, 20, 30, 40, 50)), p.Ack)
    config = p.DeviceConfig(
        failsafe_timeout_ms=5000,
        failsafe_action=p.FailsafeAction.SAFE_POSE,
        safe_pose=(0, 0, 0, 0, 0),
        speed_dps=0,
    )
    ack = wire.request(p.configure(2, config), p.Ack)
    assert ack == p.Ack(2, (10, 20, 30, 40, 50), 0)


NACKS: list[tuple[str, p.Frame, p.NackReason]] = [
    ("an unknown type", p.Frame(0x7F, 1), p.NackReason.UNKNOWN_TYPE),
    ("a firmware type sent by the host", p.Frame(0x82, 2, bytes(6)), p.NackReason.UNKNOWN_TYPE),
    ("SET_ALL with four angles", p.Frame(0x01, 3, bytes(4)), p.NackReason.BAD_LENGTH),
    ("SET_ALL with six angles", p.Frame(0x01, 4, bytes(6)), p.NackReason.BAD_LENGTH),
    ("SET_ALL with 181", p.Frame(0x01, 5, bytes((0, 0, 181, 0, 0))), p.NackReason.BAD_ANGLE),
    ("SET_SOME without a mask", p.Frame(0x02, 6), p.NackReason.BAD_LENGTH),
    ("SET_SOME with mask 0", p.Frame(0x02, 7, bytes((0,))), p.NackReason.BAD_MASK),
    ("SET_SOME with bit 5", p.Frame(0x02, 8, bytes((0x21, 9, 9))), p.NackReason.BAD_MASK),
    ("SET_SOME, 2 bits, 1 angle", p.Frame(0x02, 9, bytes((0x03, 9))), p.NackReason.BAD_LENGTH),
    ("SET_SOME with 255", p.Frame(0x02, 10, bytes((0x10, 255))), p.NackReason.BAD_ANGLE),
    ("HEARTBEAT with a payload", p.Frame(0x03, 11, b"\x00"), p.NackReason.BAD_LENGTH),
    ("HELLO_REQUEST with a payload", p.Frame(0x04, 12, b"\x01\x02"), p.NackReason.BAD_LENGTH),
    ("CONFIGURE with 9 bytes", p.Frame(0x05, 13, bytes(9)), p.NackReason.BAD_LENGTH),
    (
        "CONFIGURE with action 2",
        p.Frame(0x05, 14, configure_payload(timeout_ms=100, action=2)),
        p.NackReason.BAD_CONFIG,
    ),
    (
        "CONFIGURE with a safe pose of 181",
        p.Frame(0x05, 15, configure_payload(100, 1, (0, 0, 0, 0, 181))),
        p.NackReason.BAD_CONFIG,
    ),
    ("MOVE without its mask", p.Frame(0x08, 16, bytes(2)), p.NackReason.BAD_LENGTH),
    ("MOVE with mask 0", p.Frame(0x08, 17, bytes(3)), p.NackReason.BAD_MASK),
    ("MOVE, 1 bit, 2 angles", p.Frame(0x08, 18, bytes((0, 1, 1, 9, 9))), p.NackReason.BAD_LENGTH),
    ("MOVE with 181", p.Frame(0x08, 19, bytes((0, 1, 0x01, 181))), p.NackReason.BAD_ANGLE),
    ("RELAX without a mask", p.Frame(0x07, 20), p.NackReason.BAD_LENGTH),
    ("RELAX with bit 6", p.Frame(0x07, 21, bytes((0x40,))), p.NackReason.BAD_MASK),
    ("CALIBRATE with 4 bytes", p.Frame(0x06, 22, bytes(4)), p.NackReason.BAD_LENGTH),
    ("CALIBRATE with mask 0", p.Frame(0x06, 23, bytes(5)), p.NackReason.BAD_MASK),
    (
        "CALIBRATE with 399 us",
        p.Frame(0x06, 24, struct.pack("<BHH", 0x01, 399, 2400)),
        p.NackReason.BAD_PULSE,
    ),
    (
        "CALIBRATE with 2601 us",
        p.Frame(0x06, 25, struct.pack("<BHH", 0x01, 544, 2601)),
        p.NackReason.BAD_PULSE,
    ),
]


def test_every_nack_reason_and_a_nacked_frame_changes_nothing(wire: Wire) -> None:
    assert {reason for _name, _frame, reason in NACKS} == set(p.NackReason)
    for name, frame, reason in NACKS:
        nack = wire.request(frame, p.Nack)
        assert nack.reason == reason, f"{name}: NACK {nack.reason!r}, expected {reason!r}"
    # Nothing moved, and the refused CONFIGUREs (100 ms failsafe) did not take effect.
    assert wire.silent_for(0.4), "a refused CONFIGURE armed the failsafe"
    assert wire.request(p.heartbeat(99), p.Ack) == p.Ack(99, POWER_ON, 0, ALL)


# -- failsafe --------------------------------------------------------------------------------


def wait_for_failsafe(wire: Wire, since: float) -> tuple[p.Failsafe, float]:
    """The unprompted FAILSAFE, and the seconds from ``since`` (before the last frame was sent)."""
    frame = wire.read_frame(timeout=HANG_S)
    waited = time.monotonic() - since
    assert frame is not None, "the failsafe did not fire"
    assert frame.seq == 0, "FAILSAFE is sent unprompted, with SEQ 0"
    failsafe = p.parse_reply(frame)
    assert isinstance(failsafe, p.Failsafe), failsafe
    return failsafe, waited


def test_failsafe_hold_keeps_the_targets_and_says_so(wire: Wire) -> None:
    # A timeout ten heartbeats long: only a stall of most of a second could let it fire.
    config = p.DeviceConfig(failsafe_timeout_ms=1000, failsafe_action=p.FailsafeAction.HOLD)
    wire.request(p.configure(1, config), p.Ack)
    angles = (5, 50, 95, 140, 175)
    wire.request(p.set_all(2, angles), p.Ack)
    # Heartbeats well inside the timeout keep it quiet...
    last_sent = time.monotonic()
    for seq in range(3, 9):
        time.sleep(0.1)
        last_sent = time.monotonic()
        assert wire.request(p.heartbeat(seq), p.Ack).status == 0
    # ...silence does not.
    failsafe, waited = wait_for_failsafe(wire, last_sent)
    assert waited >= 1.0 - CLOCK_SLACK_S, f"failsafe after {waited:.3f} s, configured 1 s"
    assert failsafe == p.Failsafe(angles=angles, status=p.STATUS_FAILSAFE)
    assert wire.silent_for(0.6), "the failsafe fired twice in one silence"
    # The flag stays until a SET; heartbeats and hello requests report it.
    assert wire.request(p.heartbeat(10), p.Ack) == p.Ack(10, angles, p.STATUS_FAILSAFE)
    assert wire.request(p.hello_request(11), p.Hello).status == p.STATUS_FAILSAFE
    assert wire.request(p.set_some(12, {0: 6}), p.Ack).status == 0


def test_failsafe_moves_to_the_safe_pose(wire: Wire) -> None:
    pose = (10, 20, 30, 40, 50)
    config = p.DeviceConfig(
        failsafe_timeout_ms=300, failsafe_action=p.FailsafeAction.SAFE_POSE, safe_pose=pose
    )
    wire.request(p.configure(1, config), p.Ack)
    sent = time.monotonic()
    wire.request(p.set_all(2, (150, 150, 150, 150, 150)), p.Ack)
    failsafe, waited = wait_for_failsafe(wire, sent)
    assert waited >= 0.3 - CLOCK_SLACK_S, f"failsafe after {waited:.3f} s, configured 0.300 s"
    assert failsafe == p.Failsafe(angles=pose, status=p.STATUS_FAILSAFE)
    sent = time.monotonic()
    assert wire.request(p.heartbeat(3), p.Ack) == p.Ack(3, pose, p.STATUS_FAILSAFE)
    # A heartbeat re-arms it: the next silence fires it again.
    failsafe, waited = wait_for_failsafe(wire, sent)
    assert waited >= 0.3 - CLOCK_SLACK_S, f"failsafe after {waited:.3f} s, configured 0.300 s"
    assert failsafe.angles == pose
    assert wire.request(p.set_all(4, (90, 90, 90, 90, 90)), p.Ack).status == 0


# -- the receiver: stale partial frames, garbage, resynchronisation ---------------------------


def test_a_partial_frame_survives_a_short_pause(wire: Wire) -> None:
    # 20 ms between the halves of a frame, against the 50 ms rule. A busy machine can stretch
    # that pause past 50 ms (this thread, or the simulator's, not running): then dropping the
    # first half is right, so the pause is tried again. A hand that drops every frame paused
    # for 20 ms still fails all five tries.
    angles = (1, 2, 3, 4, 5)
    for seq in range(1, 6):
        data = p.set_all(seq, angles).encode()
        wire.write(data[:6])
        time.sleep(0.02)
        wire.write(data[6:])
        frame = wire.read_frame(timeout=1.0)
        if frame is not None:
            assert p.parse_reply(frame) == p.Ack(seq, angles, 0)
            return
        wire.silent_for(0.1)  # the halves dropped: let the parser go idle, then again
        wire.drain()
    raise AssertionError("a frame with a 20 ms pause in it was never acted on")


def test_a_stale_partial_frame_is_dropped_after_50_ms(wire: Wire) -> None:
    # A sync byte claiming 16 payload bytes, then silence: without the rule the next frame
    # would be swallowed as the rest of it. A 60 ms MOVE just before it is the hand's own
    # clock: its ARRIVED says the false start is 50 ms old, however busy this machine is.
    wire.write(p.move(4, 60, {4: 100}).encode() + bytes((p.SYNC, 16, 0x01, 0x05)))
    assert wire.expect(p.Ack, timeout=HANG_S).seq == 4
    assert wire.expect(p.Arrived, timeout=HANG_S).angles == (90, 90, 90, 90, 100)
    ack = wire.request(p.heartbeat(5), p.Ack, timeout=HANG_S)
    assert ack == p.Ack(5, (90, 90, 90, 90, 100), 0, 0b01111)


def test_a_frame_held_behind_a_stale_sync_byte_is_found_after_50_ms(wire: Wire) -> None:
    # "Resume scanning right after the offending sync byte": the held bytes are scanned again,
    # so the complete SET_ALL behind the false start is acted on once the false start is stale.
    hidden = p.set_all(7, (12, 34, 56, 78, 90)).encode()
    sent = time.monotonic()
    wire.write(bytes((p.SYNC, 16)) + hidden)
    ack = wire.expect(p.Ack, timeout=HANG_S)
    waited = time.monotonic() - sent
    assert ack == p.Ack(7, (12, 34, 56, 78, 90), 0)
    assert waited >= 0.05 - CLOCK_SLACK_S, f"found after {waited:.3f} s, before it was stale"
    # Two false starts in a row: both are dropped in turn.
    hidden = p.heartbeat(8).encode()
    wire.write(bytes((p.SYNC, 15, p.SYNC, 12)) + hidden)
    assert wire.expect(p.Ack, timeout=HANG_S) == p.Ack(8, (12, 34, 56, 78, 90), 0)


def test_frames_hidden_after_a_false_sync_byte_are_found(wire: Wire) -> None:
    seq = 20
    # A sync byte with LEN > 16.
    wire.write(bytes((p.SYNC, 0xFF)) + p.set_all(seq, (1, 1, 1, 1, 1)).encode())
    assert wire.expect(p.Ack) == p.Ack(seq, (1, 1, 1, 1, 1), 0)
    # A sync byte whose LEN swallows the start of the real frame: its CRC cannot match.
    real = p.set_all(seq + 1, (2, 3, 4, 5, 6)).encode()
    false_start = bytes((p.SYNC, 3))
    swallowed = false_start + real[: 3 + 3]
    assert p.crc8(swallowed[1:]) != real[6], "pick other angles: the false frame is valid"
    wire.write(false_start + real)
    assert wire.expect(p.Ack) == p.Ack(seq + 1, (2, 3, 4, 5, 6), 0)
    # A whole frame with a bad CRC that carries a real frame in its payload.
    inner = p.heartbeat(seq + 2).encode()  # 5 bytes
    outer = bytearray(p.Frame(0x01, 0x33, inner + b"\x00").encode())
    outer[-1] ^= 0xFF
    wire.write(bytes(outer))
    assert wire.expect(p.Ack) == p.Ack(seq + 2, (2, 3, 4, 5, 6), 0)
    assert wire.silent_for(0.1)


def test_garbage_never_acts(wire: Wire) -> None:
    angles = (20, 40, 60, 80, 100)
    wire.request(p.set_all(1, angles), p.Ack)
    garbage = line_noise(20240501)
    for start in range(0, len(garbage), 64):
        wire.write(bytes(garbage[start : start + 64]))
        time.sleep(0.01)
    assert wire.silent_for(0.3), "the hand answered garbage"
    # Not wedged, and nothing moved.
    assert wire.request(p.heartbeat(50), p.Ack) == p.Ack(50, angles, 0)


# -- motion speed ----------------------------------------------------------------------------


def test_motion_speed_sets_moving_then_clears_it(wire: Wire) -> None:
    wire.request(p.configure(1, p.DeviceConfig(speed_dps=90)), p.Ack)
    started = time.monotonic()
    ack = wire.request(p.set_all(2, (0, 0, 0, 0, 0)), p.Ack)
    assert ack.status == p.STATUS_MOVING  # 90 degrees at 90 deg/s: a second
    time.sleep(0.1)
    assert wire.request(p.heartbeat(3), p.Ack).status == p.STATUS_MOVING
    # The end of the move is reported unprompted, once.
    arrived = wire.expect(p.Arrived, timeout=HANG_S)
    waited = time.monotonic() - started
    assert waited >= 1.0 - CLOCK_SLACK_S, f"arrived after {waited:.3f} s, before 90 degrees"
    assert arrived == p.Arrived((0, 0, 0, 0, 0), 0)
    assert wire.request(p.heartbeat(4), p.Ack) == p.Ack(4, (0, 0, 0, 0, 0), 0)
    # A single finger moving is enough for the flag.
    ack = wire.request(p.set_some(5, {4: 90}), p.Ack)
    assert ack.status == p.STATUS_MOVING
    # Speed 0 again: every servo is at its target at once, so nothing is moving.
    ack = wire.request(p.configure(6, p.DeviceConfig(speed_dps=0)), p.Ack)
    assert ack == p.Ack(6, (0, 0, 0, 0, 90), 0)


# -- relax, calibration, timed moves ----------------------------------------------------------


def test_relax_is_acked_and_a_set_naming_the_finger_drives_it_again(wire: Wire) -> None:
    wire.request(p.set_all(1, (0, 45, 90, 135, 180)), p.Ack)
    ack = wire.request(p.relax(2, 0b10001), p.Ack)
    assert ack == p.Ack(2, (0, 45, 90, 135, 180), 0, 0b10001)
    # Other fingers move, the relaxed ones stay limp; naming one drives it, same angle or not.
    assert wire.request(p.set_some(3, {1: 50}), p.Ack).relaxed == 0b10001
    assert wire.request(p.set_some(4, {0: 0}), p.Ack).relaxed == 0b10000
    assert wire.request(p.move(5, 0, {4: 170}), p.Ack) == p.Ack(5, (0, 50, 90, 135, 170), 0)
    # The failsafe never drives a relaxed finger.
    config = p.DeviceConfig(300, p.FailsafeAction.SAFE_POSE, (10, 20, 30, 40, 50))
    wire.request(p.configure(6, config), p.Ack)
    wire.request(p.relax(7, 0b00110), p.Ack)
    failsafe, _waited = wait_for_failsafe(wire, time.monotonic())
    assert failsafe == p.Failsafe((10, 50, 90, 40, 50), p.STATUS_FAILSAFE, 0b00110)


def test_calibrate_is_acked_and_keeps_the_targets(wire: Wire) -> None:
    wire.request(p.set_all(1, (10, 20, 30, 40, 50)), p.Ack)
    ack = wire.request(p.calibrate(2, 0b00001, 2278, 722), p.Ack)
    assert ack == p.Ack(2, (10, 20, 30, 40, 50), 0)
    ack = wire.request(p.calibrate(3, 0b11110, 400, 2600), p.Ack)
    assert ack == p.Ack(3, (10, 20, 30, 40, 50), 0)


def test_a_timed_move_reports_moving_then_arrives_once(wire: Wire) -> None:
    wire.request(p.set_all(1, (180, 180, 90, 0, 100)), p.Ack)
    sent = time.monotonic()
    ack = wire.request(p.move(2, 1000, {0: 0, 1: 90, 2: 0, 3: 180}), p.Ack)
    assert ack == p.Ack(2, (0, 90, 0, 180, 100), p.STATUS_MOVING)
    time.sleep(0.1)
    assert wire.request(p.heartbeat(3), p.Ack).status == p.STATUS_MOVING
    arrived = wire.expect(p.Arrived, timeout=HANG_S)
    waited = time.monotonic() - sent
    assert waited >= 1.0 - CLOCK_SLACK_S, f"arrived after {waited:.3f} s, before the move's 1 s"
    assert arrived == p.Arrived((0, 90, 0, 180, 100), 0)
    assert wire.silent_for(0.2), "more than one ARRIVED"
    # A move of zero milliseconds is a SET_SOME: done at once, so nothing to report later.
    assert wire.request(p.move(4, 0, {4: 0}), p.Ack) == p.Ack(4, (0, 90, 0, 180, 0), 0)
    assert wire.silent_for(0.1)
