"""The real firmware ELF in simavr, spoken to through its pty with pyserial.

Servo pulse widths come from the runner's VCD trace of pins 11/10/9/6/5 (emulated time, exact
to the CPU cycle). Timing tests run the emulator throttled to wall-clock time.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hand_mqtt.devtools.emulator import (
    FINGER_PINS,
    EmulatedHand,
    Pulse,
    angle_to_pulse_us,
    last_pulse_widths,
    servo_pulses,
)
from hand_mqtt.devtools.firmware import BuildResult
from hand_mqtt.hardware import protocol as p

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

FINGERS = ("index", "middle", "ring", "pinky", "thumb")
ONE_DEGREE_US = (2400 - 544) / 180  # ~10.3 us
VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors.json"
FRAME_S = 0.020  # servo frame
CLOCK_SLACK_S = 0.005  # how far the emulated clock may run ahead of ours (see firmware/sim)
HANG_S = 10.0  # what the firmware must do and has not done by then, it never does


class Port:
    """A pyserial connection to the emulated hand plus a frame decoder."""

    def __init__(self, path: str) -> None:
        self.serial = serial.Serial(path, 115200, timeout=0.05)
        self.decoder = p.FrameDecoder()
        self.frames: list[p.Frame] = []

    def close(self) -> None:
        self.serial.close()

    def write(self, data: bytes) -> None:
        self.serial.write(data)
        self.serial.flush()

    def read_frame(self, timeout: float = 2.0) -> p.Frame | None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            chunk = self.serial.read(self.serial.in_waiting or 1)
            if chunk:
                self.frames.extend(self.decoder.feed(chunk))
        return self.frames.pop(0)

    def expect(self, timeout: float = 2.0) -> p.Reply:
        frame = self.read_frame(timeout)
        assert frame is not None, "no frame from the firmware"
        return p.parse_reply(frame)

    def request(self, frame: p.Frame, timeout: float = 2.0) -> p.Reply:
        self.write(frame.encode())
        return self.expect(timeout)

    def silent_for(self, seconds: float) -> bool:
        """True when nothing at all arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        got = b""
        while time.monotonic() < deadline:
            got += self.serial.read(self.serial.in_waiting or 1)
        return got == b"" and not self.frames


@pytest.fixture
def hand(firmware_build: BuildResult, sim_runner: Path, tmp_path: Path) -> Iterator[EmulatedHand]:
    with EmulatedHand(
        firmware_build.elf, runner=sim_runner, realtime=True, vcd=tmp_path / "servos.vcd"
    ) as emulated:
        yield emulated


@pytest.fixture
def port(hand: EmulatedHand) -> Iterator[Port]:
    opened = Port(hand.path)
    try:
        hello = opened.expect(timeout=5.0)  # the Uno-like reset on open boots the firmware
        assert isinstance(hello, p.Hello)
        assert hello.seq == 0
        yield opened
    finally:
        opened.close()


def vcd(hand: EmulatedHand) -> Path:
    assert hand.vcd_path is not None
    return hand.vcd_path


def widths_after(pulses: list[Pulse], start_s: float) -> list[float]:
    return [pulse.width_us for pulse in pulses if pulse.start_s >= start_s]


def emulated_now(hand: EmulatedHand) -> float:
    """The latest pulse start in the trace: a stand-in for 'now' in emulated time."""
    starts = [pulse.start_s for found in servo_pulses(vcd(hand)).values() for pulse in found]
    return max(starts, default=0.0)


def wait_for_widths(hand: EmulatedHand, angles: dict[str, int], timeout: float = 10.0) -> float:
    """Wait until the trace shows each finger's latest pulse at its angle (the trace is flushed
    every 20 ms of emulated time and lags the pty); return that moment in emulated time."""
    deadline = time.monotonic() + timeout
    while True:
        widths = last_pulse_widths(vcd(hand))
        if all(
            abs(widths.get(finger, 0.0) - angle_to_pulse_us(angle)) <= 1.5
            for finger, angle in angles.items()
        ):
            return emulated_now(hand)
        assert time.monotonic() < deadline, f"the trace never showed {angles}: {widths}"
        time.sleep(0.02)


def wait_for_pulses_since(
    hand: EmulatedHand, mark: float, count: int, timeout: float = 10.0
) -> dict[str, list[Pulse]]:
    """Wait until the trace holds ``count`` pulses of every finger from ``mark`` (emulated
    seconds) on, however slowly a busy machine runs the emulator; return the pulses."""
    deadline = time.monotonic() + timeout
    while True:
        pulses = servo_pulses(vcd(hand))
        short = [f for f in FINGERS if len(widths_after(pulses[f], mark)) < count]
        if not short:
            return pulses
        assert time.monotonic() < deadline, f"fewer than {count} pulses since {mark}: {short}"
        time.sleep(0.02)


def settle(seconds: float = 0.15) -> None:
    time.sleep(seconds)  # realtime: a few 20 ms servo frames


def assert_pulses_match(
    hand: EmulatedHand, angles: dict[str, int], frames: int = 3, timeout: float = 10.0
) -> None:
    """Wait until each finger's latest ``frames`` pulses are at its angle (within a degree):
    the emulator runs in real time and its trace lags the serial line by a frame or more."""
    deadline = time.monotonic() + timeout
    while True:
        pulses = servo_pulses(vcd(hand))
        wrong = []
        for finger, angle in angles.items():
            recent = [pulse.width_us for pulse in pulses[finger][-frames:]]
            expected = angle_to_pulse_us(angle)
            if len(recent) < frames or any(abs(w - expected) > ONE_DEGREE_US for w in recent):
                wrong.append(f"{finger} at {angle} deg: pulses {recent}, expected {expected:.2f}")
        if not wrong:
            return
        assert time.monotonic() < deadline, "; ".join(wrong)
        time.sleep(0.02)


def test_boot_hello_and_hello_request(port: Port, hand: EmulatedHand) -> None:
    reply = port.request(p.hello_request(42))
    assert isinstance(reply, p.Hello)
    assert reply.seq == 42
    assert reply.protocol == 2
    assert reply.finger_count == 5
    assert reply.firmware == (2, 0, 0)
    assert reply.status == 0
    # Nothing is driven before the first SET.
    settle(0.1)
    assert all(not found for found in servo_pulses(vcd(hand)).values())


def test_set_all_pulse_widths_match_angles(port: Port, hand: EmulatedHand) -> None:
    angles = (0, 45, 90, 135, 180)
    ack = port.request(p.set_all(7, angles))
    assert isinstance(ack, p.Ack)
    assert ack.seq == 7
    assert ack.angles == angles
    assert ack.status == 0
    settle()
    assert_pulses_match(hand, dict(zip(FINGERS, angles, strict=True)), frames=4)
    # A 20 ms frame: consecutive pulses of one finger are 20 ms apart.
    index = servo_pulses(vcd(hand))["index"]
    gaps = [b.start_s - a.start_s for a, b in itertools.pairwise(index[-4:])]
    assert len(gaps) == 3
    assert all(abs(gap - FRAME_S) < 50e-6 for gap in gaps), gaps


def test_pulse_widths_for_many_angles(port: Port, hand: EmulatedHand) -> None:
    for seq, base in enumerate((1, 17, 33, 89, 121, 163, 179), start=1):
        angles = tuple((base + 7 * i) % 181 for i in range(5))
        ack = port.request(p.set_all(seq, angles))
        assert isinstance(ack, p.Ack)
        settle(0.08)
        assert_pulses_match(hand, dict(zip(FINGERS, angles, strict=True)), frames=2)


def test_set_some_moves_only_the_masked_fingers(port: Port, hand: EmulatedHand) -> None:
    # From power-on: SET_SOME drives only its own fingers.
    ack = port.request(p.set_some(1, {1: 30, 3: 150}))
    assert isinstance(ack, p.Ack)
    assert ack.angles == (90, 30, 90, 150, 90)
    settle()
    pulses = servo_pulses(vcd(hand))
    assert not pulses["index"]
    assert not pulses["ring"]
    assert not pulses["thumb"]
    assert_pulses_match(hand, {"middle": 30, "pinky": 150})

    ack = port.request(p.set_all(2, (60, 60, 60, 60, 60)))
    mark = wait_for_widths(hand, dict.fromkeys(FINGERS, 60))
    before = last_pulse_widths(vcd(hand))
    ack = port.request(p.set_some(3, {0: 10, 2: 170}))
    assert isinstance(ack, p.Ack)
    assert ack.angles == (10, 60, 170, 60, 60)
    assert_pulses_match(hand, {"index": 10, "ring": 170, "middle": 60, "pinky": 60, "thumb": 60})
    pulses = servo_pulses(vcd(hand))
    for finger in ("middle", "pinky", "thumb"):
        widths = widths_after(pulses[finger], mark)
        assert widths
        assert all(abs(w - before[finger]) < 2.0 for w in widths), (finger, widths)


def test_nack_vectors_get_the_exact_reply_and_move_nothing(port: Port, hand: EmulatedHand) -> None:
    vectors = json.loads(VECTORS.read_text())["requests"]
    nacks = [v for v in vectors if v["expect"] == "nack"]
    assert nacks
    for vector in nacks:
        port.write(bytes.fromhex(vector["hex"]))
        frame = port.read_frame()
        assert frame is not None, vector["name"]
        assert frame.encode() == bytes.fromhex(vector["reply_hex"]), vector["name"]
    settle(0.1)
    assert all(not found for found in servo_pulses(vcd(hand)).values())
    # Still at the power-on state: a heartbeat reports 90s and nothing else changed.
    ack = port.request(p.heartbeat(200))
    assert isinstance(ack, p.Ack)
    assert ack.angles == (90, 90, 90, 90, 90)


def test_every_request_vector_on_a_freshly_booted_firmware(hand: EmulatedHand) -> None:
    vectors = json.loads(VECTORS.read_text())["requests"]
    for vector in vectors:
        opened = freshly_booted(hand)
        try:
            opened.write(bytes.fromhex(vector["hex"]))
            frame = opened.read_frame()
            assert frame is not None, vector["name"]
            assert frame.encode() == bytes.fromhex(vector["reply_hex"]), vector["name"]
        finally:
            opened.close()


def freshly_booted(hand: EmulatedHand, attempts: int = 5) -> Port:
    """Open the port so that the emulated Uno resets, and read its boot HELLO. The runner
    looks for a client once per emulated millisecond: a close and an open closer together
    than that (a loaded machine slows emulation down) go unseen, and no HELLO comes (at most
    what the running firmware still had to say), so close and open again."""
    for _attempt in range(attempts):
        time.sleep(0.02)  # let the runner see the port closed, so this open resets
        opened = Port(hand.path)
        deadline = time.monotonic() + 2.0
        while (frame := opened.read_frame(timeout=deadline - time.monotonic())) is not None:
            if p.parse_reply(frame) == p.Hello(0, 2, (2, 0, 0), 5, 0):
                return opened
        opened.close()
    raise AssertionError(f"no boot HELLO after {attempts} opens")


def test_garbage_on_the_line_moves_nothing(port: Port, hand: EmulatedHand) -> None:
    angles = (20, 40, 60, 80, 100)
    ack = port.request(p.set_all(1, angles))
    assert isinstance(ack, p.Ack)
    settle()
    mark = emulated_now(hand)
    rng = random.Random(1234)
    # Line noise without a sync byte, frames with a flipped bit, a bad LEN, truncations.
    noise = bytes(b for b in rng.randbytes(400) if b != p.SYNC)
    attacks = bytearray(noise)
    for seq in range(20):
        good = bytearray(p.set_all(seq, (180 - seq, 0, 180, 0, 180)).encode())
        good[rng.randrange(1, len(good))] ^= 1 << rng.randrange(8)  # corrupt one bit
        attacks += good
        attacks += bytes((p.SYNC, 17 + seq, 0x01, seq))  # LEN > 16
        attacks += bytes(b for b in rng.randbytes(30) if b != p.SYNC)
    for start in range(0, len(attacks), 64):  # keep within the UART ring's pace
        port.write(bytes(attacks[start : start + 64]))
        time.sleep(0.01)
    assert port.silent_for(0.3), "the firmware answered garbage"
    pulses = wait_for_pulses_since(hand, mark, 10)
    for finger, angle in zip(FINGERS, angles, strict=True):
        widths = widths_after(pulses[finger], mark)
        expected = angle_to_pulse_us(angle)
        assert all(abs(w - expected) <= ONE_DEGREE_US for w in widths), finger
    # The parser is back in step: the next frame is answered.
    ack = port.request(p.heartbeat(99))
    assert isinstance(ack, p.Ack)
    assert ack.angles == angles


def test_stale_partial_frame_is_discarded_after_50_ms(port: Port) -> None:
    # A sync byte claiming 16 payload bytes, then silence: without the 50 ms rule the next
    # five-byte frame would be swallowed as part of it. The ARRIVED of a 60 ms MOVE sent just
    # before it says, in the emulated Uno's own time, that the false start is 50 ms old.
    port.write(p.move(4, 60, {4: 100}).encode() + bytes((p.SYNC, 16, 0x01, 0x05)))
    ack = port.expect(timeout=HANG_S)
    assert isinstance(ack, p.Ack)
    assert ack.seq == 4
    assert isinstance(port.expect(timeout=HANG_S), p.Arrived)
    ack = port.request(p.heartbeat(5), timeout=HANG_S)
    assert isinstance(ack, p.Ack)
    assert ack.seq == 5


def test_failsafe_moves_to_the_safe_pose_after_the_silence(port: Port, hand: EmulatedHand) -> None:
    pose = (10, 20, 30, 40, 50)
    config = p.DeviceConfig(
        failsafe_timeout_ms=300,
        failsafe_action=p.FailsafeAction.SAFE_POSE,
        safe_pose=pose,
        speed_dps=0,
    )
    assert isinstance(port.request(p.configure(1, config)), p.Ack)
    sent = time.monotonic()  # before the last frame: the emulated clock never runs ahead
    ack = port.request(p.set_all(2, (150, 150, 150, 150, 150)))
    assert isinstance(ack, p.Ack)
    failsafe = port.expect(timeout=HANG_S)
    waited = time.monotonic() - sent
    assert isinstance(failsafe, p.Failsafe)
    assert failsafe.angles == pose
    assert failsafe.status & p.STATUS_FAILSAFE
    assert waited >= 0.3 - CLOCK_SLACK_S, f"failsafe after {waited:.3f} s, configured 0.300 s"
    settle()
    assert_pulses_match(hand, dict(zip(FINGERS, pose, strict=True)))
    # It fires once per silence, and the next SET clears the flag.
    assert port.silent_for(0.5)
    ack = port.request(p.set_all(3, (90, 90, 90, 90, 90)))
    assert isinstance(ack, p.Ack)
    assert ack.status == 0


def test_failsafe_hold_keeps_the_targets(port: Port, hand: EmulatedHand) -> None:
    # A timeout with room for a loaded machine between two heartbeats (the test asserts the
    # rule, not how fast the machine turns a sleep of 0.1 s into the next frame).
    config = p.DeviceConfig(failsafe_timeout_ms=1000, failsafe_action=p.FailsafeAction.HOLD)
    assert isinstance(port.request(p.configure(1, config)), p.Ack)
    angles = (5, 50, 95, 140, 175)
    assert isinstance(port.request(p.set_all(2, angles)), p.Ack)
    # Heartbeats keep it quiet...
    for seq in range(3, 8):
        time.sleep(0.2)
        ack = port.request(p.heartbeat(seq))
        assert isinstance(ack, p.Ack)
        assert ack.status == 0
    # ...silence does not.
    failsafe = port.expect(timeout=HANG_S)
    assert isinstance(failsafe, p.Failsafe)
    assert failsafe.angles == angles
    assert_pulses_match(hand, dict(zip(FINGERS, angles, strict=True)))
    ack = port.request(p.heartbeat(9))
    assert isinstance(ack, p.Ack)
    assert ack.status == p.STATUS_FAILSAFE  # only a SET clears it


def test_motion_speed_sweeps_through_intermediate_widths(port: Port, hand: EmulatedHand) -> None:
    config = p.DeviceConfig(speed_dps=180)
    assert isinstance(port.request(p.configure(1, config)), p.Ack)
    ack = port.request(p.set_all(2, (0, 0, 0, 0, 0)))
    assert isinstance(ack, p.Ack)
    assert ack.status & p.STATUS_MOVING  # sweeping down from the power-on 90
    assert isinstance(port.expect(timeout=5.0), p.Arrived)
    ack = port.request(p.heartbeat(3))
    assert isinstance(ack, p.Ack)
    assert ack.status == 0
    mark = wait_for_widths(hand, dict.fromkeys(FINGERS, 0))
    ack = port.request(p.set_all(4, (180, 180, 180, 180, 180)))
    assert isinstance(ack, p.Ack)
    assert ack.status & p.STATUS_MOVING
    assert isinstance(port.expect(timeout=5.0), p.Arrived)
    wait_for_widths(hand, dict.fromkeys(FINGERS, 180))
    ack = port.request(p.heartbeat(5))
    assert isinstance(ack, p.Ack)
    assert ack.status == 0
    pulses = servo_pulses(vcd(hand))
    for finger in FINGERS:
        sweep = [pulse for pulse in pulses[finger] if pulse.start_s >= mark]
        widths = [pulse.width_us for pulse in sweep]
        between = [w for w in widths if 560 < w < 2380]
        # 180 deg at 180 deg/s: about 1 s, i.e. ~50 frames of intermediate widths.
        assert len(between) >= 40, (finger, len(between))
        assert all(b >= a - 3.0 for a, b in itertools.pairwise(widths)), finger
        steps = [b - a for a, b in itertools.pairwise(between)]
        expected_step = (2400 - 544) * FRAME_S  # 37 us of pulse per 20 ms frame
        # The position advances every millisecond and each pulse samples it at its slot start,
        # so a frame-to-frame step is 20 +/- 2 ms of motion (plus a few microseconds when
        # another interrupt delays one edge); on average it is exact.
        assert all(abs(step - expected_step) < ONE_DEGREE_US for step in steps), sorted(steps)
        assert abs(sum(steps) / len(steps) - expected_step) < 1.0, (finger, steps)
        first = next(p_ for p_ in sweep if p_.width_us > 560)
        last = next(p_ for p_ in sweep if p_.width_us >= 2399)
        duration = last.start_s - first.start_s
        assert 0.9 <= duration <= 1.1, (finger, duration)


def test_vcd_pins_are_the_servo_pins() -> None:
    assert dict(FINGER_PINS) == {
        "PB3": "index",
        "PB2": "middle",
        "PB1": "ring",
        "PD6": "pinky",
        "PD5": "thumb",
    }


# -- relax, calibration, timed moves ---------------------------------------------------------

# The two edges of a slot change are written a few CPU cycles apart, so a pulse measures up to
# about a microsecond short of its nominal width in the trace (0.1 degree).
PULSE_TOLERANCE_US = 1.5


def pin_high_at_end(vcd_path: Path, finger: str) -> bool:
    """Whether the finger's pin was high at the last change in the trace."""
    pin = next(name for name, owner in FINGER_PINS.items() if owner == finger)
    tokens = vcd_path.read_text(encoding="ascii", errors="replace").split()
    code = next(tokens[i + 3] for i, t in enumerate(tokens) if t == "$var" and tokens[i + 4] == pin)
    level = "0"
    for token in tokens:
        if len(token) > 1 and token[0] in "01" and token[1:] == code:
            level = token[0]
    return level == "1"


def wait_for_pulses(hand: EmulatedHand, finger: str, count: int, timeout: float = 10.0) -> None:
    """Wait until the trace holds ``count`` pulses of ``finger`` (the emulator runs in real
    time and flushes the trace every 20 ms of emulated time)."""
    deadline = time.monotonic() + timeout
    while len(servo_pulses(vcd(hand))[finger]) < count:
        assert time.monotonic() < deadline, f"{finger}: fewer than {count} pulses"
        time.sleep(0.02)


def test_relaxed_pins_stay_low_while_the_others_keep_pulsing(
    port: Port, hand: EmulatedHand
) -> None:
    angles = (30, 60, 90, 120, 150)
    assert isinstance(port.request(p.set_all(1, angles)), p.Ack)
    settle()
    ack = port.request(p.relax(2, p.finger_mask([0, 4])))  # index and thumb
    assert ack == p.Ack(2, angles, 0, 0b10001)
    # The ACK comes back within a frame of the RELAX; from the middle finger's next pulse on,
    # count frames: 8 of them, while index and thumb must stay silent.
    seen = len(servo_pulses(vcd(hand))["middle"])
    wait_for_pulses(hand, "middle", seen + 8)
    pulses = servo_pulses(vcd(hand))
    quiet_from = pulses["middle"][seen + 1].start_s  # a frame of slack for the trace's lag
    for finger in ("index", "thumb"):
        late = [pulse for pulse in pulses[finger] if pulse.start_s >= quiet_from]
        assert not late, f"{finger} pulsed after RELAX: {late}"
        assert not pin_high_at_end(vcd(hand), finger), f"{finger} is held high"
        # Every pulse it did get, the last one included, had its full width: no runt pulse.
        expected = angle_to_pulse_us(angles[FINGERS.index(finger)])
        assert all(abs(w.width_us - expected) <= PULSE_TOLERANCE_US for w in pulses[finger]), finger
    quiet_frames = (pulses["middle"][-1].start_s - quiet_from) / FRAME_S
    assert quiet_frames >= 5, quiet_frames
    print(f"relaxed index and thumb: no pulse for {quiet_frames:.0f} frames and counting")
    for finger in ("middle", "ring", "pinky"):
        assert len([q for q in pulses[finger] if q.start_s >= quiet_from]) >= 6, finger
    assert_pulses_match(hand, {"middle": 60, "ring": 90, "pinky": 120})
    # Driving the index again (any angle) brings its pulses back at the commanded width.
    assert port.request(p.set_some(3, {0: 45})) == p.Ack(3, (45, 60, 90, 120, 150), 0, 0b10000)
    seen = len(servo_pulses(vcd(hand))["index"])
    wait_for_pulses(hand, "index", seen + 4)
    assert_pulses_match(hand, {"index": 45})
    assert len(servo_pulses(vcd(hand))["thumb"]) == len(pulses["thumb"])


def test_calibration_sets_each_fingers_pulse_range(port: Port, hand: EmulatedHand) -> None:
    assert isinstance(port.request(p.calibrate(1, 0b00001, 2278, 722)), p.Ack)  # mirrored
    assert isinstance(port.request(p.calibrate(2, 0b01000, 500, 2500)), p.Ack)
    assert isinstance(port.request(p.calibrate(3, 0b10000, 1000, 2000)), p.Ack)
    ack = port.request(p.set_all(4, (90, 90, 0, 180, 45)))
    assert isinstance(ack, p.Ack)
    expected = {"index": 1500.0, "middle": 1472.0, "ring": 544.0, "pinky": 2500.0, "thumb": 1250.0}
    wait_for_pulse_widths(hand, expected)
    assert isinstance(port.request(p.set_all(5, (0, 0, 0, 0, 0))), p.Ack)
    wait_for_pulse_widths(hand, {"index": 2278.0, "pinky": 500.0, "thumb": 1000.0})


def wait_for_pulse_widths(hand: EmulatedHand, expected: dict[str, float]) -> None:
    """Wait until every finger's latest pulses (three in a row) have the expected width."""
    deadline = time.monotonic() + 10.0
    while True:
        pulses = servo_pulses(vcd(hand))
        recent = {finger: [q.width_us for q in pulses[finger][-3:]] for finger in expected}
        if all(
            len(widths) == 3 and all(abs(w - expected[f]) <= PULSE_TOLERANCE_US for w in widths)
            for f, widths in recent.items()
        ):
            return
        assert time.monotonic() < deadline, f"expected {expected}, the trace shows {recent}"
        time.sleep(0.02)


def arrival_frame(pulses: list[Pulse], target_us: float, frame_starts: list[float]) -> int:
    """The servo frame (counted by the index finger's pulse starts) from which on the finger's
    pulses stay at ``target_us``."""
    last_off = max(
        (
            i
            for i, pulse in enumerate(pulses)
            if abs(pulse.width_us - target_us) > PULSE_TOLERANCE_US
        ),
        default=-1,
    )
    arrived = pulses[last_off + 1]
    return sum(1 for start in frame_starts if start <= arrived.start_s + 1e-6)


def test_a_timed_move_brings_every_finger_in_the_same_frame(port: Port, hand: EmulatedHand) -> None:
    start = (180, 180, 90, 0, 100)
    goal = (0, 90, 0, 180, 100)  # index 180 deg, middle 90, ring 90, pinky 180; thumb stays
    duration_s = 0.8
    assert isinstance(port.request(p.set_all(1, start)), p.Ack)
    mark = wait_for_widths(hand, dict(zip(FINGERS, start, strict=True)))
    ack = port.request(p.move(2, int(duration_s * 1000), {0: 0, 1: 90, 2: 0, 3: 180}))
    assert ack == p.Ack(2, goal, p.STATUS_MOVING)
    arrived = port.expect(timeout=HANG_S)
    assert arrived == p.Arrived(goal, 0)
    wait_for_widths(hand, dict(zip(FINGERS, goal, strict=True)))
    # A few frames past the arrival in the trace, counted in frames, not in our seconds.
    wait_for_pulses(hand, "index", len(servo_pulses(vcd(hand))["index"]) + 3)
    pulses = {f: [q for q in servo_pulses(vcd(hand))[f] if q.start_s >= mark] for f in FINGERS}
    frame_starts = [q.start_s for q in pulses["index"]]
    arrivals: dict[str, int] = {}
    first_change: dict[str, float] = {}
    for finger, before, after in zip(FINGERS[:4], start, goal, strict=False):
        widths = [q.width_us for q in pulses[finger]]
        begin_us, end_us = angle_to_pulse_us(before), angle_to_pulse_us(after)
        assert abs(widths[0] - begin_us) <= PULSE_TOLERANCE_US, finger
        moved = next(q for q in pulses[finger] if abs(q.width_us - begin_us) > PULSE_TOLERANCE_US)
        first_change[finger] = moved.start_s
        arrivals[finger] = arrival_frame(pulses[finger], end_us, frame_starts)
        # Monotone along the way, never past the target.
        step = 1 if end_us > begin_us else -1
        assert all(step * (b - a) >= -PULSE_TOLERANCE_US for a, b in itertools.pairwise(widths)), (
            finger
        )
    assert max(arrivals.values()) - min(arrivals.values()) <= 1, arrivals
    # The thumb, not in the move, held its width all along.
    thumb = [q.width_us for q in pulses["thumb"]]
    assert all(abs(w - angle_to_pulse_us(100)) <= PULSE_TOLERANCE_US for w in thumb), thumb
    # The move's length on the pins: from the first changed pulse to the arrival frame.
    began = min(first_change.values())
    ended = frame_starts[max(arrivals.values()) - 1]
    length = ended - began
    assert abs(length - duration_s) <= FRAME_S, f"move took {length:.4f} s on the pins"
    print(
        f"timed move {duration_s * 1000:.0f} ms: arrival frames {arrivals}, "
        f"{length * 1000:.1f} ms from first change to arrival"
    )
