"""The driver for the bundled firmware: the framed protocol of ``docs/serial-protocol.md``.

The firmware confirms every request with an ACK frame carrying the five targets it now applies.
This driver keeps at most one frame in flight: angles applied while a frame waits for its ACK
are only remembered, and the latest of them is sent when the ACK comes (latest wins: a burst of
commands costs a handful of frames). It retransmits a frame whose ACK does not come, declares
the link dead after ``max_retries``, sends heartbeats so the firmware's failsafe stays quiet,
shakes hands again when the firmware says HELLO with SEQ 0 (it rebooted), and sends only the
fingers that changed (SET_SOME) when that is shorter than all five (SET_ALL).

At every handshake it gives the firmware its configuration and then each finger's pulse range
from the calibration (CALIBRATE). Fingers the target relaxes get a RELAX before anything else
is sent; a finger the firmware reports relaxed that should be driven is named in the next SET
(at the same angle if need be). New angles with a duration go out as a MOVE, so every finger
that moves arrives at the same time. While the firmware reports motion the driver asks it for
its state at least every half second, so the end of a move is known even if the ARRIVED frame
that reports it is lost.

A firmware that confirms other angles than it was sent (one that clamps, or a broken one) is
not sent the same frame in a busy loop: the resend waits, doubling from ``resend_initial`` to
``resend_max``, and :attr:`Confirmed.mismatch` says so. A NACK is answered the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Final

from hand_mqtt.errors import HandshakeError, LinkError, ProtocolError
from hand_mqtt.hardware import protocol
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.driver import Confirmed, HandDriver, HandInfo, Target, Wait
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.model import FINGERS, Angles, FirmwareInfo

__all__ = ["FramedDriver"]

logger = logging.getLogger("hand_mqtt")

_HELLO_REQUEST_EVERY_S: Final = 0.5
# SET_SOME costs 1 + n payload bytes against SET_ALL's 5: shorter for up to three fingers.
_SET_SOME_MAX_FINGERS: Final = 3
_MOVING_POLL_S: Final = 0.5
"""While the firmware reports motion, ask for its state at least this often."""
_ALL_FINGERS: Final = frozenset(range(protocol.FINGER_COUNT))


@dataclass(slots=True)
class _InFlight:
    seq: int
    data: bytes
    target: dict[int, int] | None
    """The fingers a SET or MOVE named, with their angles (None for any other frame)."""
    sent_at: float
    retries: int = 0


def _not_open(_timeout: float) -> None:
    raise LinkError("the driver is not open")


class FramedDriver(HandDriver):
    """Drives the bundled firmware over a :class:`SerialLink`."""

    def __init__(
        self,
        link: SerialLink,
        *,
        config: protocol.DeviceConfig | None = None,
        ack_timeout: float = 0.25,
        max_retries: int = 4,
        hello_timeout: float = 6.0,
        resend_initial: float = 0.2,
        resend_max: float = 5.0,
        calibration: Calibration | None = None,
    ) -> None:
        self.link = link
        self.url = link.url
        self.config = config or protocol.DeviceConfig(failsafe_timeout_ms=2000)
        self.calibration = calibration or Calibration()
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.hello_timeout = hello_timeout
        self.resend_initial = resend_initial
        self.resend_max = resend_max
        self._heartbeat_every = self.config.failsafe_timeout_ms / 3000.0
        self._wait: Wait = _not_open
        self._decoder = protocol.FrameDecoder()
        self._seq = 0
        self._info: HandInfo | None = None
        self._in_flight: _InFlight | None = None
        self._desired: Angles | None = None
        self._desired_relaxed: frozenset[int] = frozenset()
        self._duration_ms = 0  # the duration of the next move, for angles not sent yet
        self._acked: Angles | None = None
        self._acked_relaxed: frozenset[int] = _ALL_FINGERS
        self._disagreed = False
        self._confirmed = Confirmed()
        self._last_sent = 0.0
        self._resend_at = 0.0
        self._resend_delay = resend_initial
        self.frames_sent = 0
        """Frames written, retransmissions not counted."""
        self.retransmissions = 0
        self.acks = 0
        self.nacks = 0

    # -- the seam ----------------------------------------------------------------------------

    def open(self, wait: Wait) -> None:
        self._wait = wait
        self._forget_session()
        self.link.open()

    def close(self) -> None:
        self.link.close()
        self._forget_session()

    def fileno(self) -> int | None:
        return self.link.fileno()

    @property
    def info(self) -> HandInfo | None:
        return self._info

    @property
    def confirmed(self) -> Confirmed:
        return self._confirmed

    def handshake(self) -> HandInfo:
        self._forget_session()
        hello = self._await_hello()
        if hello.protocol != protocol.PROTOCOL_VERSION or hello.finger_count != (
            protocol.FINGER_COUNT
        ):
            raise HandshakeError(
                f"the firmware on {self.url} speaks protocol {hello.protocol} with "
                f"{hello.finger_count} fingers; this service needs protocol "
                f"{protocol.PROTOCOL_VERSION} with {protocol.FINGER_COUNT}"
            )
        ack = self._request(protocol.configure(self._next_seq(), self.config), "its configuration")
        for (at_0, at_180), mask in self._pulse_groups().items():
            ack = self._request(
                protocol.calibrate(self._next_seq(), mask, at_0, at_180),
                f"the pulse range {at_0}-{at_180} us for {_names(mask)}",
            )
        self._info = HandInfo(
            firmware=FirmwareInfo(
                version=".".join(str(part) for part in hello.firmware),
                protocol=hello.protocol,
                fingers=hello.finger_count,
            ),
            failsafe=True,
            relax=True,
            timed_moves=True,
        )
        # Nothing is confirmed on this connection until the first SET is: the firmware's
        # targets after a power-on are not driven yet. Push every finger once (the first push
        # is never timed: where the servos are after a start is anybody's guess).
        self._acked_relaxed = frozenset(ack.relaxed_fingers)
        self._duration_ms = 0
        self._confirmed = Confirmed(
            failsafe=ack.failsafe_active, relaxed=frozenset(ack.relaxed_fingers)
        )
        logger.info("device: firmware %s ready on %s", self._info.firmware.version, self.url)
        self._push(time.monotonic())
        return self._info

    def apply(self, target: Target) -> None:
        angles = target.angles
        relaxed = frozenset(target.relaxed)
        if angles != self._desired or relaxed != self._desired_relaxed:
            if angles != self._desired:
                # The duration belongs to the move to these angles, not to a repeat of them.
                self._duration_ms = target.duration_ms
            self._desired = angles
            self._desired_relaxed = relaxed
            self._resend_at = 0.0  # new angles go out at once, whatever the backoff
            self._update_confirmed()
        self._push(time.monotonic())

    def service(self) -> None:
        for reply in self._receive():
            if self._handle(reply):
                break  # the firmware restarted: what came before its HELLO is history
        now = time.monotonic()
        flight = self._in_flight
        if flight is not None:
            if now - flight.sent_at >= self.ack_timeout:
                if flight.retries >= self.max_retries:
                    raise LinkError(f"the firmware stopped answering on {self.url}")
                flight.retries += 1
                flight.sent_at = self._last_sent = now
                self.retransmissions += 1
                self.link.write(flight.data)
            return
        self._push(now)
        if self._in_flight is None and self._info is not None and now >= self._heartbeat_due():
            self._send(protocol.heartbeat(self._next_seq()), None, now)

    @property
    def deadline(self) -> float:
        due = math.inf
        if self._info is not None:
            if self._in_flight is not None:
                due = self._in_flight.sent_at + self.ack_timeout
            else:
                if self._desired is not None and any(self._needs()):
                    due = self._resend_at
                due = min(due, self._heartbeat_due())
        stale_at = self._decoder.stale_at
        return due if stale_at is None else min(due, stale_at)

    # -- handshake ---------------------------------------------------------------------------

    def _await_hello(self) -> protocol.Hello:
        deadline = time.monotonic() + self.hello_timeout
        next_request = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise HandshakeError(
                    f"no HELLO from the firmware on {self.url} in {self.hello_timeout:g} s: "
                    "is the bundled firmware flashed, at the same baud rate? (a board that "
                    "runs StandardFirmata needs --firmata)"
                )
            if now >= next_request:
                self.link.write(protocol.hello_request(self._next_seq()).encode())
                next_request = now + _HELLO_REQUEST_EVERY_S
            for reply in self._receive():
                if isinstance(reply, protocol.Hello):
                    return reply
            self._wait_until(min(next_request, deadline))

    def _pulse_groups(self) -> dict[tuple[int, int], int]:
        """Each pulse range of the calibration, with the mask of the fingers that have it."""
        groups: dict[tuple[int, int], int] = {}
        for finger, pulses in enumerate(self.calibration.pulse_ranges_us):
            groups[pulses] = groups.get(pulses, 0) | 1 << finger
        return groups

    def _request(self, frame: protocol.Frame, what: str) -> protocol.Ack:
        """Send a frame of the handshake and wait for its ACK before anything else goes out."""
        for _attempt in range(self.max_retries + 1):
            self.link.write(frame.encode())
            self._last_sent = time.monotonic()
            answer_by = self._last_sent + self.ack_timeout * 2
            while time.monotonic() < answer_by:
                for reply in self._receive():
                    if isinstance(reply, protocol.Ack) and reply.seq == frame.seq:
                        return reply
                    if isinstance(reply, protocol.Nack) and reply.seq == frame.seq:
                        raise HandshakeError(
                            f"the firmware on {self.url} refused {what}: {reply.describe()}"
                        )
                self._wait_until(answer_by)
        raise HandshakeError(f"the firmware on {self.url} did not acknowledge {what}")

    # -- frames ------------------------------------------------------------------------------

    def _forget_session(self) -> None:
        self._decoder.reset()
        self._info = None
        self._in_flight = None
        self._acked = None
        self._acked_relaxed = _ALL_FINGERS
        self._disagreed = False
        self._resend_at = 0.0
        self._resend_delay = self.resend_initial
        self._confirmed = Confirmed()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _wait_until(self, when: float) -> None:
        stale_at = self._decoder.stale_at
        if stale_at is not None:
            when = min(when, stale_at)
        self._wait(max(0.0, when - time.monotonic()))

    def _receive(self) -> list[protocol.Reply]:
        """What the firmware said since the last call, the 50 ms rule applied."""
        data = self.link.read_available()
        now = time.monotonic()
        # Bytes first: they may complete the frame held back (we may be late to look).
        frames = self._decoder.feed(data, now) if data else []
        frames += self._decoder.expire(now)
        replies: list[protocol.Reply] = []
        for frame in frames:
            try:
                replies.append(protocol.parse_reply(frame))
            except ProtocolError as exc:
                logger.warning("device: ignoring a bad reply from the firmware: %s", exc)
        return replies

    def _heartbeat_due(self) -> float:
        every = self._heartbeat_every if self._heartbeat_every > 0 else math.inf
        if self._confirmed.moving:
            every = min(every, _MOVING_POLL_S)
        return self._last_sent + every

    def _needs(self) -> tuple[int, dict[int, int]]:
        """What the firmware lacks of the desired state: the mask of the driven fingers to
        relax, and the fingers to drive (limp ones among them, at their angles)."""
        desired = self._desired
        if desired is None:
            return 0, {}
        limp = self._acked_relaxed
        acked = self._acked
        to_relax = protocol.finger_mask(self._desired_relaxed - limp)
        to_drive = {
            finger: angle
            for finger, angle in enumerate(desired)
            if finger not in self._desired_relaxed
            and (finger in limp or acked is None or acked[finger] != angle)
        }
        return to_relax, to_drive

    def _agrees(self, angles: Angles) -> bool:
        """Whether ``angles`` are the desired ones on every finger that is to be driven."""
        desired = self._desired
        return desired is not None and all(
            angles[f] == desired[f] for f in _ALL_FINGERS - self._desired_relaxed
        )

    def _send(self, frame: protocol.Frame, target: dict[int, int] | None, now: float) -> None:
        data = frame.encode()
        self._in_flight = _InFlight(frame.seq, data, target, now)
        self._last_sent = now
        self.frames_sent += 1
        self.link.write(data)

    def _push(self, now: float) -> None:
        """Send what the firmware lacks of the desired state, if the line is free: first the
        fingers to relax, then the angles (timed when they came with a duration)."""
        desired = self._desired
        if (
            desired is None
            or self._info is None
            or self._in_flight is not None
            or now < self._resend_at
        ):
            return
        to_relax, to_drive = self._needs()
        if to_relax:
            self._send(protocol.relax(self._next_seq(), to_relax), None, now)
            return
        if not to_drive:
            return
        seq = self._next_seq()
        if self._duration_ms:
            frame = protocol.move(seq, self._duration_ms, to_drive)
            self._duration_ms = 0
        elif self._desired_relaxed or (
            self._acked is not None and len(to_drive) <= _SET_SOME_MAX_FINGERS
        ):
            frame = protocol.set_some(seq, to_drive)
        else:
            frame = protocol.set_all(seq, desired)
            to_drive = dict(enumerate(desired))
        self._send(frame, to_drive, now)

    def _handle(self, reply: protocol.Reply) -> bool:
        """Act on one reply; True when the firmware restarted (and hands were shaken again)."""
        if isinstance(reply, protocol.Ack):
            self._on_ack(reply)
        elif isinstance(reply, protocol.Nack):
            self._on_nack(reply)
        elif isinstance(reply, protocol.Failsafe):
            logger.warning(
                "device: the firmware's failsafe acted on %s; its targets are now %s",
                self.url,
                list(reply.angles),
            )
            self._acked = reply.angles
            self._acked_relaxed = frozenset(reply.relaxed_fingers)
            self._set_confirmed(reply)
            self._push(time.monotonic())
        elif isinstance(reply, protocol.Arrived):
            self._acked = reply.angles
            self._acked_relaxed = frozenset(reply.relaxed_fingers)
            self._set_confirmed(reply)  # the servos reached their targets: moving clears
        elif reply.seq == 0:  # a HELLO nobody asked for: the firmware has just booted
            logger.warning("device: the firmware on %s restarted; shaking hands again", self.url)
            self.handshake()
            return True
        return False

    def _on_ack(self, ack: protocol.Ack) -> None:
        flight = self._in_flight
        if flight is None or ack.seq != flight.seq:
            return  # late, or an answer to a frame given up on
        self._in_flight = None
        self.acks += 1
        self._acked = ack.angles
        self._acked_relaxed = frozenset(ack.relaxed_fingers)
        now = time.monotonic()
        if flight.target is not None:
            if all(ack.angles[f] == angle for f, angle in flight.target.items()):
                self._disagreed = False
                self._resend_delay = self.resend_initial
            else:
                self._disagreed = True
                self._back_off(
                    now,
                    f"the firmware on {self.url} applied {list(ack.angles)} when sent "
                    f"{_described(flight.target)}",
                )
        self._set_confirmed(ack)
        self._push(now)

    def _on_nack(self, nack: protocol.Nack) -> None:
        flight = self._in_flight
        if flight is None or nack.seq != flight.seq:
            return
        self._in_flight = None
        self.nacks += 1
        if flight.target is not None:
            self._back_off(
                time.monotonic(),
                f"the firmware on {self.url} refused {_described(flight.target)}: "
                f"{nack.describe()}",
            )
        else:
            logger.error(
                "device: the firmware on %s refused a frame: %s", self.url, nack.describe()
            )

    def _back_off(self, now: float, what: str) -> None:
        """Do not send the same angles again before a delay that doubles every time."""
        first = self._resend_delay == self.resend_initial
        (logger.warning if first else logger.debug)(
            "device: %s; trying again in %.1f s", what, self._resend_delay
        )
        self._resend_at = now + self._resend_delay
        self._resend_delay = min(self._resend_delay * 2, self.resend_max)

    def _set_confirmed(self, reply: protocol.Ack | protocol.Failsafe | protocol.Arrived) -> None:
        self._confirmed = Confirmed(
            angles=reply.angles,
            moving=reply.moving,
            failsafe=reply.failsafe_active,
            mismatch=self._disagreed and not self._agrees(reply.angles),
            relaxed=frozenset(reply.relaxed_fingers),
        )

    def _update_confirmed(self) -> None:
        confirmed = self._confirmed
        if confirmed.angles is None:
            return
        mismatch = self._disagreed and not self._agrees(confirmed.angles)
        if mismatch != confirmed.mismatch:
            self._confirmed = dataclasses.replace(confirmed, mismatch=mismatch)


def _names(mask: int) -> str:
    return ", ".join(FINGERS[f] for f in protocol.fingers_of(mask))


def _described(target: dict[int, int]) -> str:
    return ", ".join(f"{FINGERS[f]} {angle}" for f, angle in sorted(target.items()))
