"""The host side of the serial protocol (``docs/serial-protocol.md``): frames, CRC, resync.

Pure Python, no I/O. A frame on the wire is::

    0xA5 | LEN | TYPE | SEQ | PAYLOAD[LEN] | CRC-8 over LEN..PAYLOAD

:class:`FrameDecoder` turns a byte stream into :class:`Frame` objects and resynchronises on
garbage exactly as the protocol document prescribes. The builders (:func:`set_all`,
:func:`set_some`, :func:`move`, :func:`relax`, :func:`calibrate`, :func:`heartbeat`,
:func:`hello_request`, :func:`configure`) make host requests; :func:`parse_reply` reads the
firmware's answers. The firmware direction (:func:`parse_request`, :func:`hello_frame`,
:func:`ack_frame`, :func:`nack_frame`, :func:`failsafe_frame`, :func:`arrived_frame`) is here
too, for the simulator and for tests.

Bad input from the *wire* never raises from the decoder; a frame whose CRC is good but whose
content breaks the rules raises :class:`~hand_mqtt.errors.ProtocolError` from the parsers.
Bad arguments from *our own code* (an angle of 200 given to a builder, a payload of 17 bytes)
raise :class:`ValueError`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from hand_mqtt.errors import ProtocolError

__all__ = [
    "FINGER_COUNT",
    "FRAME_OVERHEAD",
    "MAX_ANGLE",
    "MAX_FRAME",
    "MAX_MOVE_MS",
    "MAX_PAYLOAD",
    "MAX_PULSE_US",
    "MIN_PULSE_US",
    "PROTOCOL_VERSION",
    "STALE_FRAME_S",
    "STATUS_FAILSAFE",
    "STATUS_MOVING",
    "SYNC",
    "Ack",
    "Arrived",
    "Calibrate",
    "Configure",
    "DeviceConfig",
    "Failsafe",
    "FailsafeAction",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Heartbeat",
    "Hello",
    "HelloRequest",
    "Move",
    "Nack",
    "NackReason",
    "Relax",
    "Reply",
    "Request",
    "RequestRejected",
    "SetAll",
    "SetSome",
    "ack_frame",
    "arrived_frame",
    "calibrate",
    "configure",
    "crc8",
    "failsafe_frame",
    "finger_mask",
    "fingers_of",
    "heartbeat",
    "hello_frame",
    "hello_request",
    "move",
    "nack_frame",
    "parse_reply",
    "parse_request",
    "relax",
    "set_all",
    "set_some",
]

SYNC: Final = 0xA5
"""The byte every frame starts with."""
MAX_PAYLOAD: Final = 16
"""The largest LEN a frame may carry; a larger LEN makes the frame invalid."""
PROTOCOL_VERSION: Final = 2
"""The protocol version this module speaks (carried in HELLO)."""
FINGER_COUNT: Final = 5
"""Fingers, in protocol order: index, middle, ring, pinky, thumb."""
MAX_ANGLE: Final = 180
"""The largest angle, in degrees, anywhere in the protocol."""
FRAME_OVERHEAD: Final = 5
"""Bytes in a frame besides its payload: sync, LEN, TYPE, SEQ, CRC."""
MAX_FRAME: Final = FRAME_OVERHEAD + MAX_PAYLOAD
"""The longest frame on the wire, in bytes."""
MIN_PULSE_US: Final = 400
"""The shortest servo pulse a CALIBRATE may set, in microseconds."""
MAX_PULSE_US: Final = 2600
"""The longest servo pulse a CALIBRATE may set, in microseconds."""
MAX_MOVE_MS: Final = 0xFFFF
"""The longest timed move a MOVE can ask for, in milliseconds."""
STALE_FRAME_S: Final = 0.050
"""After this much silence in the middle of a frame, its sync byte is dropped and the bytes
after it are scanned again (as after a bad LEN or CRC). Both sides follow this rule."""
_STALE_EPSILON_S: Final = 1e-6  # clock jitter: 50 ms measured as 49.999999 ms still counts

STATUS_FAILSAFE: Final = 0x01
"""Status flag: the failsafe has acted and no SET_ALL/SET_SOME has arrived since."""
STATUS_MOVING: Final = 0x02
"""Status flag: at least one servo has not reached its target yet."""

_MAX_U8: Final = 0xFF
_MAX_U16: Final = 0xFFFF
_FINGER_MASK_ALL: Final = (1 << FINGER_COUNT) - 1
_CONFIG_FORMAT: Final = struct.Struct("<HB5BH")
_CALIBRATE_FORMAT: Final = struct.Struct("<BHH")
_MOVE_HEADER: Final = struct.Struct("<HB")
_HELLO_LEN: Final = 6
_STATE_LEN: Final = FINGER_COUNT + 2  # ACK / FAILSAFE / ARRIVED: angles, status, relaxed mask


class FrameType(enum.IntEnum):
    """The TYPE byte. Host → firmware types are below 0x80, firmware → host above."""

    SET_ALL = 0x01
    SET_SOME = 0x02
    HEARTBEAT = 0x03
    HELLO_REQUEST = 0x04
    CONFIGURE = 0x05
    CALIBRATE = 0x06
    RELAX = 0x07
    MOVE = 0x08
    HELLO = 0x81
    ACK = 0x82
    NACK = 0x83
    FAILSAFE = 0x84
    ARRIVED = 0x85


class NackReason(enum.IntEnum):
    """Why the firmware refused a frame whose CRC was good."""

    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    BAD_ANGLE = 3
    BAD_MASK = 4
    BAD_CONFIG = 5
    BAD_PULSE = 6

    def describe(self) -> str:
        """A sentence a person understands."""
        return _NACK_SENTENCES[self]


_NACK_SENTENCES: Final[dict[NackReason, str]] = {
    NackReason.UNKNOWN_TYPE: "the firmware does not know this message type",
    NackReason.BAD_LENGTH: "the message length does not fit its type",
    NackReason.BAD_ANGLE: "an angle is above 180 degrees",
    NackReason.BAD_MASK: "the finger mask is empty or names a sixth finger",
    NackReason.BAD_CONFIG: "the configuration has an unknown failsafe action or a bad safe pose",
    NackReason.BAD_PULSE: (
        f"a calibration pulse width is outside {MIN_PULSE_US}-{MAX_PULSE_US} microseconds"
    ),
}


class FailsafeAction(enum.IntEnum):
    """What the firmware does when the failsafe fires."""

    HOLD = 0
    SAFE_POSE = 1


# --------------------------------------------------------------------------------------------
# CRC-8 (poly 0x07, init 0, no reflection, no final XOR: CRC-8/SMBUS)


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _make_crc_table()


def crc8(data: bytes | bytearray | memoryview) -> int:
    """CRC-8/SMBUS of ``data``: ``crc8(b"123456789") == 0xF4``."""
    crc = 0
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[crc ^ byte]
    return crc


# --------------------------------------------------------------------------------------------
# Frames


def _check_u8(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U8:
        raise ValueError(f"{name} must be an integer 0-255, got {value!r}")
    return value


def _check_angle(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ANGLE:
        raise ValueError(f"{name} must be an integer angle 0-{MAX_ANGLE}, got {value!r}")
    return value


def _check_angles(values: Sequence[int], what: str = "angles") -> tuple[int, ...]:
    if isinstance(values, str | bytes) or len(values) != FINGER_COUNT:
        raise ValueError(f"{what} must be {FINGER_COUNT} integers, got {values!r}")
    return tuple(_check_angle(f"{what}[{i}]", v) for i, v in enumerate(values))


def _check_finger(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < FINGER_COUNT:
        raise ValueError(f"finger index must be 0-{FINGER_COUNT - 1}, got {value!r}")
    return value


def finger_mask(fingers: Iterable[int]) -> int:
    """The mask of finger indexes (0 index … 4 thumb): bit i set for finger i."""
    mask = 0
    for finger in fingers:
        mask |= 1 << _check_finger(finger)
    return mask


def fingers_of(mask: int) -> tuple[int, ...]:
    """The finger indexes whose bits are set in ``mask``, in finger order."""
    return tuple(f for f in range(FINGER_COUNT) if mask & (1 << f))


def _check_mask(mask: object) -> int:
    if not isinstance(mask, int) or isinstance(mask, bool) or not 0 < mask <= _FINGER_MASK_ALL:
        raise ValueError(f"finger mask must be 1-{_FINGER_MASK_ALL}, got {mask!r}")
    return mask


def _check_pulse(name: str, value: object) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_PULSE_US <= value <= MAX_PULSE_US
    ):
        raise ValueError(f"{name} must be {MIN_PULSE_US}-{MAX_PULSE_US} us, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: TYPE, SEQ and payload. Construction validates; :meth:`encode` adds the rest."""

    type: int
    seq: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        _check_u8("frame type", self.type)
        _check_u8("sequence number", self.seq)
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload is {len(self.payload)} bytes, at most {MAX_PAYLOAD}")

    def encode(self) -> bytes:
        """The bytes on the wire, sync byte and CRC included."""
        body = bytes((len(self.payload), self.type, self.seq)) + self.payload
        return bytes((SYNC,)) + body + bytes((crc8(body),))

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Parse exactly one complete frame; :class:`ValueError` if ``data`` is anything else."""
        if len(data) < FRAME_OVERHEAD or data[0] != SYNC:
            raise ValueError("not a frame: too short or no sync byte")
        length = data[1]
        if length > MAX_PAYLOAD:
            raise ValueError(f"not a frame: LEN {length} > {MAX_PAYLOAD}")
        if len(data) != length + FRAME_OVERHEAD:
            raise ValueError(f"not a frame: {len(data)} bytes for LEN {length}")
        if crc8(data[1:-1]) != data[-1]:
            raise ValueError("not a frame: bad CRC")
        return cls(data[2], data[3], bytes(data[4:-1]))

    @property
    def type_name(self) -> str:
        """The TYPE's name, or its hex value if it is not a known type."""
        try:
            return FrameType(self.type).name
        except ValueError:
            return f"0x{self.type:02x}"


class FrameDecoder:
    """Incremental frame parser that resynchronises on garbage as the protocol prescribes.

    Feed it chunks of any size; it returns the complete frames with a good CRC. A sync byte
    followed by LEN > 16, or a whole frame with a bad CRC, is dropped and scanning resumes at
    the byte right after that sync byte. It never raises, runs in linear time and keeps at most
    one incomplete frame (< :data:`MAX_FRAME` bytes) between calls.

    The 50 ms rule needs a clock: give :meth:`feed` the time the bytes arrived and call
    :meth:`expire` when :attr:`stale_at` has passed. An incomplete frame that has waited
    :data:`STALE_FRAME_S` since the last byte loses its sync byte, and the bytes after it are
    scanned again, so a lost byte cannot wedge the parser and a frame held behind a false start
    is still found.
    """

    __slots__ = (
        "_bad_crc",
        "_bad_length",
        "_buffer",
        "_frames",
        "_last_byte",
        "_skipped",
        "_stale",
    )

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._bad_crc = 0
        self._bad_length = 0
        self._skipped = 0
        self._frames = 0
        self._stale = 0
        self._last_byte = 0.0

    @property
    def bad_crc(self) -> int:
        """Frames dropped because their CRC did not match."""
        return self._bad_crc

    @property
    def bad_length(self) -> int:
        """Sync bytes dropped because the LEN after them was above 16."""
        return self._bad_length

    @property
    def skipped_bytes(self) -> int:
        """Bytes thrown away: garbage before a sync byte, dropped sync bytes, stale partials."""
        return self._skipped

    @property
    def frames(self) -> int:
        """Good frames returned so far."""
        return self._frames

    @property
    def stale_drops(self) -> int:
        """Sync bytes dropped because their frame went stale (the 50 ms rule)."""
        return self._stale

    @property
    def pending(self) -> int:
        """Bytes held back as the start of a frame not complete yet."""
        return len(self._buffer)

    @property
    def stale_at(self) -> float | None:
        """When the incomplete frame held back goes stale (None when nothing is held)."""
        return self._last_byte + STALE_FRAME_S if self._buffer else None

    def reset(self) -> None:
        """Forget any partial frame and zero every counter."""
        self._buffer.clear()
        self._bad_crc = self._bad_length = self._skipped = self._frames = self._stale = 0

    def discard(self) -> int:
        """Drop a partial frame (counted as skipped), keeping the counters; return its size."""
        dropped = len(self._buffer)
        self._skipped += dropped
        self._buffer.clear()
        return dropped

    def feed(self, data: bytes | bytearray | memoryview, now: float | None = None) -> list[Frame]:
        """Consume ``data`` (received at ``now``, for the 50 ms rule) and return the frames
        completed by it, in order."""
        if now is not None and data:
            self._last_byte = now
        return self._scan(data)

    def expire(self, now: float) -> list[Frame]:
        """Apply the 50 ms rule at ``now``: if the incomplete frame held back has had no byte
        for :data:`STALE_FRAME_S`, drop it as :meth:`drop_stale` does. Returns the frames found
        behind it (usually none)."""
        stale_at = self.stale_at
        if stale_at is None or now < stale_at - _STALE_EPSILON_S:
            return []
        return self.drop_stale()

    def drop_stale(self) -> list[Frame]:
        """Give up on the incomplete frame held back: drop its sync byte and scan what followed,
        repeating until nothing is held (every byte held is as old as the last one). Returns
        the complete frames found on the way."""
        frames: list[Frame] = []
        while self._buffer:
            del self._buffer[0]
            self._skipped += 1
            self._stale += 1
            frames += self._scan(b"")
        return frames

    def _scan(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(SYNC, pos)
            if start < 0:
                self._skipped += end - pos
                pos = end
                break
            self._skipped += start - pos
            pos = start
            if end - start < 2:
                break  # LEN not here yet
            length = buf[start + 1]
            if length > MAX_PAYLOAD:
                self._bad_length += 1
                self._skipped += 1
                pos = start + 1
                continue
            stop = start + FRAME_OVERHEAD + length
            if stop > end:
                break  # wait for the rest
            if crc8(memoryview(buf)[start + 1 : stop - 1]) != buf[stop - 1]:
                self._bad_crc += 1
                self._skipped += 1
                pos = start + 1
                continue
            frames.append(Frame(buf[start + 2], buf[start + 3], bytes(buf[start + 4 : stop - 1])))
            pos = stop
        del buf[:pos]
        self._frames += len(frames)
        return frames


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """The CONFIGURE payload: failsafe timeout and action, safe pose, motion speed."""

    failsafe_timeout_ms: int = 0
    """Milliseconds without a valid frame before the failsafe acts; 0 = never."""
    failsafe_action: FailsafeAction = FailsafeAction.HOLD
    """Hold the current targets, or move to :attr:`safe_pose`."""
    safe_pose: tuple[int, int, int, int, int] = (180, 180, 180, 180, 180)
    """The pose for :attr:`FailsafeAction.SAFE_POSE` (default: open hand)."""
    speed_dps: int = 0
    """Servo speed in degrees per second; 0 = move at once."""

    def __post_init__(self) -> None:
        for name in ("failsafe_timeout_ms", "speed_dps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U16:
                raise ValueError(f"{name} must be an integer 0-65535, got {value!r}")
        try:
            action = FailsafeAction(self.failsafe_action)
        except ValueError:
            raise ValueError(
                f"failsafe_action must be 0 (hold) or 1 (safe pose), got {self.failsafe_action!r}"
            ) from None
        object.__setattr__(self, "failsafe_action", action)
        object.__setattr__(self, "safe_pose", _check_angles(self.safe_pose, "safe_pose"))

    def payload(self) -> bytes:
        """The 10-byte CONFIGURE payload."""
        return _CONFIG_FORMAT.pack(
            self.failsafe_timeout_ms, self.failsafe_action, *self.safe_pose, self.speed_dps
        )


# --------------------------------------------------------------------------------------------
# Host → firmware: builders


def set_all(seq: int, angles: Sequence[int]) -> Frame:
    """SET_ALL: five angles (index, middle, ring, pinky, thumb), 0-180 each."""
    return Frame(FrameType.SET_ALL, _check_u8("seq", seq), bytes(_check_angles(angles)))


def _masked_angles(angles: Mapping[int, int], what: str) -> bytes:
    """The mask byte, then one angle per finger in finger order."""
    if not angles:
        raise ValueError(f"{what} needs at least one finger")
    for finger, angle in angles.items():
        _check_finger(finger)
        _check_angle(f"angle for finger {finger}", angle)
    mask = finger_mask(angles)
    return bytes((mask,)) + bytes(angles[f] for f in fingers_of(mask))


def set_some(seq: int, angles: Mapping[int, int]) -> Frame:
    """SET_SOME: a map of finger index (0 index … 4 thumb) to angle; at least one finger."""
    return Frame(FrameType.SET_SOME, _check_u8("seq", seq), _masked_angles(angles, "set_some"))


def move(seq: int, duration_ms: int, angles: Mapping[int, int]) -> Frame:
    """MOVE: like SET_SOME, but every finger reaches its target ``duration_ms`` from now.

    The fingers not named arrive then too if they are still on their way; 0 is a SET_SOME.
    """
    if (
        not isinstance(duration_ms, int)
        or isinstance(duration_ms, bool)
        or not 0 <= duration_ms <= MAX_MOVE_MS
    ):
        raise ValueError(f"duration_ms must be 0-{MAX_MOVE_MS}, got {duration_ms!r}")
    payload = _masked_angles(angles, "move")
    header = _MOVE_HEADER.pack(duration_ms, payload[0])
    return Frame(FrameType.MOVE, _check_u8("seq", seq), header + payload[1:])


def relax(seq: int, mask: int) -> Frame:
    """RELAX: the fingers in ``mask`` get no more pulses until a SET_ALL, SET_SOME or MOVE
    names them (see :func:`finger_mask`)."""
    return Frame(FrameType.RELAX, _check_u8("seq", seq), bytes((_check_mask(mask),)))


def calibrate(seq: int, mask: int, pulse_at_0_us: int, pulse_at_180_us: int) -> Frame:
    """CALIBRATE: the pulse widths at logical 0 and 180 degrees for the fingers in ``mask``.

    A mirrored servo has the longer pulse at 0; each width is 400-2600 microseconds.
    """
    payload = _CALIBRATE_FORMAT.pack(
        _check_mask(mask),
        _check_pulse("pulse_at_0_us", pulse_at_0_us),
        _check_pulse("pulse_at_180_us", pulse_at_180_us),
    )
    return Frame(FrameType.CALIBRATE, _check_u8("seq", seq), payload)


def heartbeat(seq: int) -> Frame:
    """HEARTBEAT: keeps the failsafe from firing; answered with ACK."""
    return Frame(FrameType.HEARTBEAT, _check_u8("seq", seq))


def hello_request(seq: int) -> Frame:
    """HELLO_REQUEST: answered with HELLO carrying the same SEQ."""
    return Frame(FrameType.HELLO_REQUEST, _check_u8("seq", seq))


def configure(seq: int, config: DeviceConfig) -> Frame:
    """CONFIGURE: failsafe timeout/action, safe pose and speed."""
    if not isinstance(config, DeviceConfig):
        raise ValueError(f"config must be a DeviceConfig, got {type(config).__name__}")
    return Frame(FrameType.CONFIGURE, _check_u8("seq", seq), config.payload())


# --------------------------------------------------------------------------------------------
# Firmware → host: replies


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO: sent at boot (SEQ 0) and in answer to HELLO_REQUEST."""

    seq: int
    protocol: int
    firmware: tuple[int, int, int]
    finger_count: int
    status: int

    @property
    def failsafe_active(self) -> bool:
        """Whether the failsafe flag is set."""
        return bool(self.status & STATUS_FAILSAFE)


class _HandStatus:
    """What ACK, FAILSAFE and ARRIVED have in common: targets, status flags, relaxed mask."""

    __slots__ = ()
    angles: tuple[int, int, int, int, int]
    status: int
    relaxed: int

    @property
    def failsafe_active(self) -> bool:
        """Whether the failsafe flag is set."""
        return bool(self.status & STATUS_FAILSAFE)

    @property
    def moving(self) -> bool:
        """Whether a driven servo has not reached its target yet."""
        return bool(self.status & STATUS_MOVING)

    @property
    def relaxed_fingers(self) -> tuple[int, ...]:
        """The finger indexes that get no pulses (relaxed, or not driven since power-on)."""
        return fingers_of(self.relaxed)


@dataclass(frozen=True, slots=True)
class Ack(_HandStatus):
    """ACK: the five target angles now applied, the status flags and the relaxed mask."""

    seq: int
    angles: tuple[int, int, int, int, int]
    status: int
    relaxed: int = 0
    """Bit i set: finger i gets no pulses (relaxed, or not driven since power-on)."""


@dataclass(frozen=True, slots=True)
class Nack:
    """NACK: the frame with this SEQ was refused and changed nothing."""

    seq: int
    reason: NackReason | int
    """A :class:`NackReason`, or the raw code if this side does not know it."""

    def describe(self) -> str:
        """A sentence a person understands."""
        if isinstance(self.reason, NackReason):
            return self.reason.describe()
        return f"the firmware refused the frame (unknown reason code {self.reason})"


@dataclass(frozen=True, slots=True)
class Failsafe(_HandStatus):
    """FAILSAFE: the failsafe fired; the targets after it acted, status flags, relaxed mask."""

    angles: tuple[int, int, int, int, int]
    status: int
    relaxed: int = 0


@dataclass(frozen=True, slots=True)
class Arrived(_HandStatus):
    """ARRIVED: the servos have reached their targets (``moving`` has just cleared)."""

    angles: tuple[int, int, int, int, int]
    status: int
    relaxed: int = 0


Reply = Hello | Ack | Nack | Failsafe | Arrived
"""Anything the firmware sends."""


def _five(values: bytes) -> tuple[int, int, int, int, int]:
    return (values[0], values[1], values[2], values[3], values[4])


def _reply_angles(frame: Frame) -> tuple[int, int, int, int, int]:
    angles = _five(frame.payload)
    if any(a > MAX_ANGLE for a in angles):
        raise ProtocolError(
            f"{frame.type_name} (seq {frame.seq}) reports an angle above {MAX_ANGLE}: "
            f"{list(angles)}"
        )
    return angles


_REPLY_LENGTHS: Final[dict[int, int]] = {
    FrameType.HELLO: _HELLO_LEN,
    FrameType.ACK: _STATE_LEN,
    FrameType.NACK: 1,
    FrameType.FAILSAFE: _STATE_LEN,
    FrameType.ARRIVED: _STATE_LEN,
}


def parse_reply(frame: Frame) -> Reply:
    """Interpret a frame from the firmware.

    Raises :class:`~hand_mqtt.errors.ProtocolError` for an unknown or host-direction TYPE, a
    LEN that does not fit the TYPE, an angle above 180 or a relaxed mask naming a sixth finger.
    Unknown status bits are kept as they are (not an error), so a newer firmware's extra flags
    do not break an older host.
    """
    expected = _REPLY_LENGTHS.get(frame.type)
    if expected is None:
        raise ProtocolError(
            f"unexpected frame type {frame.type_name} (seq {frame.seq}) from the firmware"
        )
    if len(frame.payload) != expected:
        raise ProtocolError(
            f"{frame.type_name} (seq {frame.seq}) has {len(frame.payload)} payload bytes, "
            f"expected {expected}"
        )
    payload = frame.payload
    if frame.type == FrameType.HELLO:
        return Hello(
            seq=frame.seq,
            protocol=payload[0],
            firmware=(payload[1], payload[2], payload[3]),
            finger_count=payload[4],
            status=payload[5],
        )
    if frame.type == FrameType.NACK:
        code = payload[0]
        reason: NackReason | int
        try:
            reason = NackReason(code)
        except ValueError:
            reason = code
        return Nack(seq=frame.seq, reason=reason)
    angles, status, relaxed = _reply_angles(frame), payload[5], payload[6]
    if relaxed & ~_FINGER_MASK_ALL:
        raise ProtocolError(
            f"{frame.type_name} (seq {frame.seq}) reports relaxed mask 0x{relaxed:02x}, "
            "which names a sixth finger"
        )
    if frame.type == FrameType.ACK:
        return Ack(seq=frame.seq, angles=angles, status=status, relaxed=relaxed)
    if frame.type == FrameType.FAILSAFE:
        return Failsafe(angles=angles, status=status, relaxed=relaxed)
    return Arrived(angles=angles, status=status, relaxed=relaxed)


def hello_frame(
    seq: int,
    firmware: tuple[int, int, int],
    status: int = 0,
    *,
    protocol: int = PROTOCOL_VERSION,
    finger_count: int = FINGER_COUNT,
) -> Frame:
    """HELLO (firmware side)."""
    if len(firmware) != 3:
        raise ValueError(f"firmware version must be (major, minor, patch), got {firmware!r}")
    fields = (protocol, *firmware, finger_count, status)
    payload = bytes(_check_u8("hello field", v) for v in fields)
    return Frame(FrameType.HELLO, _check_u8("seq", seq), payload)


def _state_payload(angles: Sequence[int], status: int, relaxed: int) -> bytes:
    if not isinstance(relaxed, int) or isinstance(relaxed, bool) or relaxed & ~_FINGER_MASK_ALL:
        raise ValueError(f"relaxed must be a finger mask 0-{_FINGER_MASK_ALL}, got {relaxed!r}")
    return bytes(_check_angles(angles)) + bytes((_check_u8("status", status), relaxed))


def ack_frame(seq: int, angles: Sequence[int], status: int = 0, relaxed: int = 0) -> Frame:
    """ACK (firmware side): the applied targets, the status flags and the relaxed mask."""
    return Frame(FrameType.ACK, _check_u8("seq", seq), _state_payload(angles, status, relaxed))


def nack_frame(seq: int, reason: NackReason | int) -> Frame:
    """NACK (firmware side)."""
    return Frame(FrameType.NACK, _check_u8("seq", seq), bytes((_check_u8("reason", reason),)))


def failsafe_frame(angles: Sequence[int], status: int = STATUS_FAILSAFE, relaxed: int = 0) -> Frame:
    """FAILSAFE (firmware side, always SEQ 0): the targets after the failsafe acted."""
    return Frame(FrameType.FAILSAFE, 0, _state_payload(angles, status, relaxed))


def arrived_frame(angles: Sequence[int], status: int = 0, relaxed: int = 0) -> Frame:
    """ARRIVED (firmware side, always SEQ 0): the servos have reached their targets."""
    return Frame(FrameType.ARRIVED, 0, _state_payload(angles, status, relaxed))


# --------------------------------------------------------------------------------------------
# Host → firmware: parsing (firmware side)


def _replaced(targets: Sequence[int], changes: Mapping[int, int]) -> tuple[int, int, int, int, int]:
    new = list(targets)
    for finger, angle in changes.items():
        new[finger] = angle
    return _five(bytes(new))


@dataclass(frozen=True, slots=True)
class SetAll:
    """A valid SET_ALL request."""

    seq: int
    angles: tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class SetSome:
    """A valid SET_SOME request: ``mask`` bit i set means finger i gets the next angle."""

    seq: int
    mask: int
    angles: tuple[int, ...]
    """One angle per set bit of ``mask``, in finger order."""

    def as_dict(self) -> dict[int, int]:
        """Finger index → angle."""
        return dict(zip(fingers_of(self.mask), self.angles, strict=True))

    def apply(self, targets: Sequence[int]) -> tuple[int, int, int, int, int]:
        """``targets`` with this request's fingers replaced."""
        return _replaced(targets, self.as_dict())


@dataclass(frozen=True, slots=True)
class Move:
    """A valid MOVE request: like :class:`SetSome`, arriving ``duration_ms`` from now."""

    seq: int
    duration_ms: int
    mask: int
    angles: tuple[int, ...]

    def as_dict(self) -> dict[int, int]:
        """Finger index → angle."""
        return dict(zip(fingers_of(self.mask), self.angles, strict=True))

    def apply(self, targets: Sequence[int]) -> tuple[int, int, int, int, int]:
        """``targets`` with this request's fingers replaced."""
        return _replaced(targets, self.as_dict())


@dataclass(frozen=True, slots=True)
class Relax:
    """A valid RELAX request: the fingers in ``mask`` stop getting pulses."""

    seq: int
    mask: int


@dataclass(frozen=True, slots=True)
class Calibrate:
    """A valid CALIBRATE request: pulse widths at logical 0 and 180 for the masked fingers."""

    seq: int
    mask: int
    pulse_at_0_us: int
    pulse_at_180_us: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A valid HEARTBEAT request."""

    seq: int


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """A valid HELLO_REQUEST."""

    seq: int


@dataclass(frozen=True, slots=True)
class Configure:
    """A valid CONFIGURE request."""

    seq: int
    config: DeviceConfig


Request = SetAll | SetSome | Move | Relax | Calibrate | Heartbeat | HelloRequest | Configure
"""Anything the host sends."""


class RequestRejected(ProtocolError):
    """A request the firmware answers with NACK: ``reason`` and the request's ``seq``."""

    def __init__(self, reason: NackReason, seq: int, detail: str) -> None:
        super().__init__(f"{reason.describe()} ({detail}; seq {seq}, NACK {int(reason)})")
        self.reason = reason
        self.seq = seq


def _expect_length(frame: Frame, expected: int) -> None:
    if len(frame.payload) != expected:
        raise RequestRejected(
            NackReason.BAD_LENGTH,
            frame.seq,
            f"{frame.type_name} with LEN {len(frame.payload)}, expected {expected}",
        )


def _request_mask(frame: Frame, mask: int) -> int:
    if mask == 0 or mask & ~_FINGER_MASK_ALL:
        raise RequestRejected(NackReason.BAD_MASK, frame.seq, f"mask 0x{mask:02x}")
    return mask


def _request_angles(frame: Frame, values: bytes) -> tuple[int, ...]:
    for value in values:
        if value > MAX_ANGLE:
            raise RequestRejected(
                NackReason.BAD_ANGLE, frame.seq, f"{frame.type_name} angle {value}"
            )
    return tuple(values)


def parse_request(frame: Frame) -> Request:
    """Interpret a frame from the host exactly as the firmware does.

    Raises :class:`RequestRejected` (a :class:`~hand_mqtt.errors.ProtocolError`) with the
    NACK reason. Checks, in order: TYPE (UNKNOWN_TYPE); then per type: SET_ALL LEN 5
    (BAD_LENGTH) then angles (BAD_ANGLE); SET_SOME LEN ≥ 1 (BAD_LENGTH), mask non-zero with
    bits 5-7 clear (BAD_MASK), LEN = 1 + bits set (BAD_LENGTH), angles (BAD_ANGLE); MOVE the
    same after its two duration bytes (LEN ≥ 3, LEN = 3 + bits set); HEARTBEAT /
    HELLO_REQUEST LEN 0 (BAD_LENGTH); CONFIGURE LEN 10 (BAD_LENGTH), then action ≤ 1 and
    safe-pose angles ≤ 180 (BAD_CONFIG), timeout and speed take any u16; CALIBRATE LEN 5
    (BAD_LENGTH), mask (BAD_MASK), both pulses 400-2600 (BAD_PULSE); RELAX LEN 1
    (BAD_LENGTH), mask (BAD_MASK).
    """
    kind = frame.type
    payload = frame.payload
    if kind == FrameType.SET_ALL:
        _expect_length(frame, FINGER_COUNT)
        return SetAll(frame.seq, _five(bytes(_request_angles(frame, payload))))
    if kind in (FrameType.SET_SOME, FrameType.MOVE):
        head = 1 if kind == FrameType.SET_SOME else _MOVE_HEADER.size
        if len(payload) < head:
            raise RequestRejected(
                NackReason.BAD_LENGTH, frame.seq, f"{frame.type_name} without a mask"
            )
        mask = _request_mask(frame, payload[head - 1])
        _expect_length(frame, head + mask.bit_count())
        angles = _request_angles(frame, payload[head:])
        if kind == FrameType.SET_SOME:
            return SetSome(frame.seq, mask, angles)
        return Move(frame.seq, _MOVE_HEADER.unpack_from(payload)[0], mask, angles)
    if kind == FrameType.RELAX:
        _expect_length(frame, 1)
        return Relax(frame.seq, _request_mask(frame, payload[0]))
    if kind == FrameType.CALIBRATE:
        _expect_length(frame, _CALIBRATE_FORMAT.size)
        raw_mask, at_0, at_180 = _CALIBRATE_FORMAT.unpack(payload)
        mask = _request_mask(frame, raw_mask)
        for pulse in (at_0, at_180):
            if not MIN_PULSE_US <= pulse <= MAX_PULSE_US:
                raise RequestRejected(NackReason.BAD_PULSE, frame.seq, f"pulse {pulse} us")
        return Calibrate(frame.seq, mask, at_0, at_180)
    if kind in (FrameType.HEARTBEAT, FrameType.HELLO_REQUEST):
        _expect_length(frame, 0)
        return Heartbeat(frame.seq) if kind == FrameType.HEARTBEAT else HelloRequest(frame.seq)
    if kind == FrameType.CONFIGURE:
        _expect_length(frame, _CONFIG_FORMAT.size)
        timeout, action, *pose, speed = _CONFIG_FORMAT.unpack(payload)
        if action > max(FailsafeAction):
            raise RequestRejected(NackReason.BAD_CONFIG, frame.seq, f"failsafe action {action}")
        if any(a > MAX_ANGLE for a in pose):
            raise RequestRejected(NackReason.BAD_CONFIG, frame.seq, f"safe pose {pose}")
        config = DeviceConfig(timeout, FailsafeAction(action), _five(bytes(pose)), speed)
        return Configure(frame.seq, config)
    raise RequestRejected(NackReason.UNKNOWN_TYPE, frame.seq, f"type {frame.type_name}")
