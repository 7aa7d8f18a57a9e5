"""The simulated firmware: the bundled firmware's protocol behaviour in Python, without I/O.

:class:`SimulatedFirmware` is a pure state machine (no I/O, injectable clock) that follows
``docs/serial-protocol.md`` from the firmware's side: power-on defaults, ACK/NACK/HELLO,
relaxed fingers, per-finger pulse calibration, failsafe, motion speed, timed moves that end with
an ARRIVED report, and the 50 ms stale-partial-frame rule. ``simulated_port`` runs it behind a
pty or a TCP port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from hand_mqtt.errors import ProtocolError
from hand_mqtt.hardware import protocol as p

__all__ = [
    "FIRMWARE_VERSION",
    "STALE_FRAME_S",
    "SimulatedFirmware",
]

_log = logging.getLogger("hand_mqtt")

FIRMWARE_VERSION: Final = (2, 0, 0)
"""The version the simulated firmware reports in HELLO."""
STALE_FRAME_S: Final = p.STALE_FRAME_S
"""After this much silence an incomplete frame's sync byte is dropped and what followed it is
scanned again (as after a bad LEN or CRC); the frame decoder applies the rule."""
_EPSILON_S: Final = 1e-6  # clock jitter tolerance: 0.1 s measured as 0.0999999 still counts
_ALL_FINGERS: Final = (1 << p.FINGER_COUNT) - 1
_POWER_ON_TARGETS: Final = (90, 90, 90, 90, 90)
_POWER_ON_PULSES: Final = (544, 2400)  # microseconds at logical 0 and 180, every finger
_MDEG_FULL_SCALE: Final = p.MAX_ANGLE * 1000

FrameListener = Callable[[p.Frame], None]


class SimulatedFirmware:
    """The firmware's protocol behaviour, byte for byte, without any I/O.

    Feed it what the host writes (:meth:`feed`) and send back what it returns; call
    :meth:`poll` regularly so the failsafe can fire on its own. Time comes from ``clock``
    (seconds, monotonic), so tests can drive it with a fake clock. All methods are safe to
    call from several threads.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        firmware_version: tuple[int, int, int] = FIRMWARE_VERSION,
    ) -> None:
        self._clock = clock
        self._version = firmware_version
        self._lock = threading.RLock()
        self._listeners: list[FrameListener] = []
        self._decoder = p.FrameDecoder()
        self.frames_received = 0
        """Frames with a good CRC (acted on or NACKed); not reset by :meth:`boot`."""
        self.frames_applied = 0
        """Frames accepted (answered with ACK or HELLO); not reset by :meth:`boot`."""
        self.frames_nacked = 0
        """Frames answered with NACK; not reset by :meth:`boot`."""
        self.stale_discards = 0
        """Incomplete frames dropped after 50 ms of silence; not reset by :meth:`boot`."""
        self.failsafe_count = 0
        """How many times the failsafe fired; not reset by :meth:`boot`."""
        self._bad_before_boot = 0
        self._power_on(self._clock())

    # -- state ---------------------------------------------------------------------------

    def _power_on(self, now: float) -> None:
        self._bad_before_boot += self._decoder.bad_crc + self._decoder.bad_length
        self._decoder.reset()
        self._targets: tuple[int, int, int, int, int] = _POWER_ON_TARGETS
        self._positions: list[float] = [float(a) for a in self._targets]
        self._config = p.DeviceConfig()
        self._failsafe_active = False
        self._failsafe_armed = False
        self._driven = 0
        self._pulses: list[tuple[int, int]] = [_POWER_ON_PULSES] * p.FINGER_COUNT
        self._move_start = now
        self._move_s = 0.0  # length of the timed move in progress, 0 when none
        self._move_from: list[float] = list(self._positions)
        self._told_moving = False
        self._last_valid = now
        self._last_motion = now

    @property
    def targets(self) -> tuple[int, int, int, int, int]:
        """The five target angles (90 each until the first SET)."""
        with self._lock:
            return self._targets

    @property
    def positions(self) -> tuple[float, ...]:
        """Where each servo is now, moving toward its target at ``speed_dps``."""
        with self._lock:
            self._advance(self._clock())
            return tuple(self._positions)

    @property
    def config(self) -> p.DeviceConfig:
        """The configuration in force (power-on: failsafe off, hold, open hand, speed 0)."""
        with self._lock:
            return self._config

    @property
    def failsafe_active(self) -> bool:
        """Whether the failsafe has fired and no SET_ALL/SET_SOME has come since."""
        with self._lock:
            return self._failsafe_active

    @property
    def relaxed(self) -> int:
        """Mask of the fingers that get no pulses (relaxed, or not driven since power-on)."""
        with self._lock:
            return _ALL_FINGERS & ~self._driven

    @property
    def calibration(self) -> tuple[tuple[int, int], ...]:
        """Per finger, the pulse widths in microseconds at logical 0 and 180 degrees."""
        with self._lock:
            return tuple(self._pulses)

    @property
    def pulse_widths(self) -> tuple[float | None, ...]:
        """The pulse width in microseconds each finger gets now (None: no pulses), rounded to
        half a microsecond exactly as the firmware rounds it."""
        with self._lock:
            self._advance(self._clock())
            return tuple(
                self._pulse_half_us(i) / 2 if self._driven & (1 << i) else None
                for i in range(p.FINGER_COUNT)
            )

    @property
    def driving(self) -> bool:
        """Whether any servo is driven (False until the first SET or a safe-pose failsafe)."""
        with self._lock:
            return self._driven != 0

    @property
    def driven(self) -> int:
        """Mask of the driven servos (bit 0 index … bit 4 thumb): a SET_SOME drives its own."""
        with self._lock:
            return self._driven

    @property
    def moving(self) -> bool:
        """Whether a servo has not reached its target yet."""
        with self._lock:
            self._advance(self._clock())
            return self._is_moving()

    @property
    def status(self) -> int:
        """The status flags as they would be sent now."""
        with self._lock:
            self._advance(self._clock())
            return self._status()

    @property
    def bad_frames(self) -> int:
        """Frames dropped for a bad LEN or CRC (never acted on, never answered)."""
        with self._lock:
            return self._bad_before_boot + self._decoder.bad_crc + self._decoder.bad_length

    @property
    def firmware_version(self) -> tuple[int, int, int]:
        """The version reported in HELLO."""
        return self._version

    def add_listener(self, listener: FrameListener) -> None:
        """Call ``listener(frame)`` for every frame with a good CRC, before it is handled."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: FrameListener) -> None:
        """Undo :meth:`add_listener`."""
        with self._lock:
            self._listeners.remove(listener)

    # -- inputs --------------------------------------------------------------------------

    def boot(self) -> bytes:
        """Power on: reset to the defaults and return the boot HELLO (SEQ 0)."""
        with self._lock:
            self._power_on(self._clock())
            return p.hello_frame(0, self._version, self._status()).encode()

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return the bytes the firmware sends back."""
        with self._lock:
            now = self._clock()
            out = bytearray(self._tick(now))
            if data:
                for frame in self._decoder.feed(data, now):
                    out += self._handle(frame, now)
            return bytes(out)

    def fire_failsafe(self) -> bytes:
        """Act now as if the host had been silent for the failsafe timeout, configured or not:
        hold or move to the safe pose, and return the FAILSAFE frame to send to the host."""
        with self._lock:
            self._advance(self._clock())
            return self._fire_failsafe()

    def poll(self) -> bytes:
        """Let time pass: motion, stale-frame discard, failsafe.

        Returns what the firmware sends on its own: a FAILSAFE, or the answers to frames found
        behind a stale sync byte (``b""`` mostly).
        """
        with self._lock:
            return self._tick(self._clock())

    # -- internals (lock held) -------------------------------------------------------------

    def _tick(self, now: float) -> bytes:
        self._advance(now)
        out = self._drop_stale(now)
        timeout_ms = self._config.failsafe_timeout_ms
        if (
            timeout_ms
            and self._failsafe_armed
            and now - self._last_valid >= timeout_ms / 1000.0 - _EPSILON_S
        ):
            out += self._fire_failsafe()
        elif self._told_moving and not self._is_moving():
            out += self._state_frame(p.FrameType.ARRIVED, 0)
        return out

    def _drop_stale(self, now: float) -> bytes:
        """The 50 ms rule: give up on an incomplete frame nothing was added to for 50 ms.

        As after a bad LEN or CRC, scanning resumes right after the offending sync byte, so a
        complete frame that arrived behind it is still found (and answered).
        """
        if not self._decoder.pending:
            return b""
        dropped = self._decoder.stale_drops
        out = bytearray()
        for frame in self._decoder.expire(now):
            out += self._handle(frame, now)
        if self._decoder.stale_drops != dropped:
            self.stale_discards += 1
        return bytes(out)

    def _fire_failsafe(self) -> bytes:
        self._failsafe_armed = False
        self._failsafe_active = True
        self.failsafe_count += 1
        if self._config.failsafe_action == p.FailsafeAction.SAFE_POSE:
            # Only the driven fingers move: a relaxed finger stays limp.
            self._targets = tuple(  # type: ignore[assignment]
                safe if self._driven & (1 << i) else target
                for i, (safe, target) in enumerate(
                    zip(self._config.safe_pose, self._targets, strict=True)
                )
            )
            self._move_s = 0.0
            self._snap_if_instant()
        _log.debug("simulated firmware: failsafe fired, targets %s", self._targets)
        return self._state_frame(p.FrameType.FAILSAFE, 0)

    def _advance(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_motion)
        self._last_motion = now
        if self._move_s:
            done = now - self._move_start
            if done >= self._move_s - _EPSILON_S:
                self._move_s = 0.0
                self._positions = [float(a) for a in self._targets]
            else:
                fraction = max(0.0, done) / self._move_s
                self._positions = [
                    start + (target - start) * fraction
                    for start, target in zip(self._move_from, self._targets, strict=True)
                ]
            return
        speed = self._config.speed_dps
        for i, target in enumerate(self._targets):
            here = self._positions[i]
            if speed == 0 or abs(target - here) <= speed * elapsed:
                self._positions[i] = float(target)
            elif target > here:
                self._positions[i] = here + speed * elapsed
            else:
                self._positions[i] = here - speed * elapsed

    def _is_moving(self) -> bool:
        return any(pos != t for pos, t in zip(self._positions, self._targets, strict=True))

    def _status(self) -> int:
        flags = p.STATUS_FAILSAFE if self._failsafe_active else 0
        if self._is_moving():
            flags |= p.STATUS_MOVING
        return flags

    def _state_frame(self, kind: p.FrameType, seq: int) -> bytes:
        """ACK, FAILSAFE or ARRIVED with the state as it is now; remembers what it said about
        moving, so that the end of a move is reported once."""
        status = self._status()
        self._told_moving = bool(status & p.STATUS_MOVING)
        payload = bytes(self._targets) + bytes((status, _ALL_FINGERS & ~self._driven))
        return p.Frame(kind, seq, payload).encode()

    def _pulse_half_us(self, finger: int) -> int:
        at_0, at_180 = self._pulses[finger]
        span = 2 * abs(at_180 - at_0)
        mdeg = round(self._positions[finger] * 1000)
        part = (span * mdeg + _MDEG_FULL_SCALE // 2) // _MDEG_FULL_SCALE
        return 2 * at_0 + part if at_180 >= at_0 else 2 * at_0 - part

    def _snap_if_instant(self) -> None:
        if self._config.speed_dps == 0 and not self._move_s:
            self._positions = [float(a) for a in self._targets]

    def _drive(self, targets: tuple[int, int, int, int, int], mask: int) -> None:
        self._targets = targets
        self._driven |= mask
        self._failsafe_active = False
        self._move_s = 0.0

    def _start_move(self, duration_ms: int, now: float) -> None:
        # Every finger starts from where it is now and arrives when the duration is up.
        self._move_from = list(self._positions)
        self._move_start = now
        self._move_s = duration_ms / 1000.0

    def _handle(self, frame: p.Frame, now: float) -> bytes:
        self.frames_received += 1
        for listener in list(self._listeners):
            try:
                listener(frame)
            except Exception:
                _log.exception("simulated firmware: frame listener failed")
        try:
            request = p.parse_request(frame)
        except p.RequestRejected as rejected:
            self.frames_nacked += 1
            return p.nack_frame(frame.seq, rejected.reason).encode()
        except ProtocolError:  # pragma: no cover - parse_request raises only RequestRejected
            self.frames_nacked += 1
            return p.nack_frame(frame.seq, p.NackReason.UNKNOWN_TYPE).encode()
        self.frames_applied += 1
        self._last_valid = now
        self._failsafe_armed = True
        match request:
            case p.SetAll(angles=angles):
                self._drive(angles, _ALL_FINGERS)
            case p.SetSome(mask=mask) | p.Move(mask=mask):
                self._drive(request.apply(self._targets), mask)
                if isinstance(request, p.Move) and request.duration_ms:
                    self._start_move(request.duration_ms, now)
            case p.Relax(mask=mask):
                self._driven &= ~mask
                # A limp finger is taken to be at its target: nothing is left to move when it
                # is driven again, and it does not keep "moving" set.
                for i in p.fingers_of(mask):
                    self._positions[i] = self._move_from[i] = float(self._targets[i])
            case p.Calibrate(mask=mask, pulse_at_0_us=at_0, pulse_at_180_us=at_180):
                for i in p.fingers_of(mask):
                    self._pulses[i] = (at_0, at_180)
            case p.Configure(config=config):
                self._config = config
            case p.Heartbeat() | p.HelloRequest():
                pass
        self._snap_if_instant()
        if isinstance(request, p.HelloRequest):
            return p.hello_frame(request.seq, self._version, self._status()).encode()
        return self._state_frame(p.FrameType.ACK, frame.seq)
