"""The driver for a hand whose Uno runs StandardFirmata (the firmware pyFirmata users have).

StandardFirmata answers nothing it is sent: no acknowledgement, no checksum, no sequence number.
So this driver never believes a write. After every batch of writes it asks for the state of each
pin it wrote (PIN_STATE_QUERY; the board answers each pin's mode and the value last written to
it) and confirms only what it read back. While one batch waits for its answers, newer targets
only replace each other; the latest goes out when the answers are in (latest wins, as with the
bundled firmware). When the idle link has been quiet for ``check_every`` seconds it reads all
five pins back again, which notices a board that restarted or stopped answering.

A finger is driven by SERVO_CONFIG (its pulse range: the widths at servo 0 and 180 degrees)
then an analog write of its servo angle; SERVO_CONFIG goes out once per finger and session,
because re-sending it to a driven pin restarts the board's servo timer (one stretched pulse). A
finger is relaxed by taking its pin out of servo mode (SET_PIN_MODE OUTPUT, which holds it low).

Handshake: an Uno restarts when its port opens and StandardFirmata speaks only after its
start-up blink (about 2 s); it then announces REPORT_VERSION and REPORT_FIRMWARE. The driver
asks for both every second until they come or ``hello_timeout`` passes, then checks that every
finger's pin can drive a servo (CAPABILITY_QUERY) and reads the five pins back. A
REPORT_FIRMWARE that arrives later, unasked, means the board restarted: every servo mode is
gone. The driver then asks for the version once more and ignores every pin state answered
before it (queries sent before or during the restart, answered by a board that forgot
everything), configures the fingers again and drives them to the latest target.

What StandardFirmata cannot do, the driver says in :class:`HandInfo`: no failsafe (the servos
hold their last pulses forever when the host falls silent) and no timed moves.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from hand_mqtt.errors import ConfigError, HandshakeError, LinkError
from hand_mqtt.hardware import firmata_protocol as fp
from hand_mqtt.hardware import protocol as framed_protocol
from hand_mqtt.hardware.driver import Confirmed, HandDriver, HandInfo, Target, Wait
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.model import DEFAULT_PINS, FINGERS, MAX_ANGLE, MIN_ANGLE, Angles, FirmwareInfo

__all__ = [
    "FIRMATA_BAUDRATE",
    "MAX_SERVO_MIN_US",
    "MIN_SERVO_MAX_US",
    "FirmataDriver",
    "ServoMap",
]

logger = logging.getLogger("hand_mqtt")

FIRMATA_BAUDRATE: Final = 57600
"""StandardFirmata's serial speed."""
MAX_SERVO_MIN_US: Final = 1056
"""The longest pulse StandardFirmata takes for servo 0 degrees. Arduino's Servo library keeps
each limit as a signed byte of 4 µs steps from 544 µs (and from 2400 µs for the other end):
a longer minimum wraps round to a pulse of a few dozen microseconds (measured in the emulator:
1060 µs gives 36 µs)."""
MIN_SERVO_MAX_US: Final = 1892
"""The shortest pulse StandardFirmata takes for servo 180 degrees (1888 µs gives 2912 µs)."""

_QUERY_EVERY_S: Final = 1.0
"""How often the handshake asks for the version and firmware while nothing answers."""
_SERVO_DEGREES: Final = 180


class ServoMap(Protocol):
    """One finger's map from logical angles to servo degrees, and its pulse range."""

    @property
    def pulse_min_us(self) -> int:
        """Pulse width at servo 0 degrees."""

    @property
    def pulse_max_us(self) -> int:
        """Pulse width at servo 180 degrees."""

    def servo_degrees(self, logical: float) -> float:
        """The servo angle for a logical angle."""


@dataclass(frozen=True, slots=True)
class _Straight:
    """Logical angle = servo angle, Arduino's Servo library's pulse range (the original)."""

    pulse_min_us: int = 544
    pulse_max_us: int = 2400

    def servo_degrees(self, logical: float) -> float:
        return logical


@dataclass(slots=True)
class _Batch:
    """Writes on their way and the read-back that will confirm them."""

    fingers: frozenset[int]
    """The fingers whose pins were queried."""
    expected: dict[int, tuple[int, int]]
    """The (mode, state) each written finger should read back (empty for a check)."""
    sent_at: float
    resends: int = 0


def _not_open(_timeout: float) -> None:
    raise LinkError("the driver is not open")


class FirmataDriver(HandDriver):
    """Drives StandardFirmata's servos over a :class:`SerialLink` (57600 baud)."""

    def __init__(
        self,
        link: SerialLink,
        *,
        pins: Sequence[int] = DEFAULT_PINS,
        servos: Sequence[ServoMap] | None = None,
        hello_timeout: float = 6.0,
        answer_timeout: float = 0.25,
        silence_limit: float = 5.0,
        check_every: float = 1.0,
        resend_initial: float = 0.2,
        resend_max: float = 5.0,
    ) -> None:
        self.link = link
        self.url = link.url
        self.pins = tuple(pins)
        if len(self.pins) != len(FINGERS) or len(set(self.pins)) != len(FINGERS):
            raise ConfigError(f"give {len(FINGERS)} different pins, one per finger: {FINGERS}")
        for pin in self.pins:
            if not 0 <= pin <= fp.MAX_PIN:
                raise ConfigError(f"pin {pin} is not a Firmata pin (0-{fp.MAX_PIN})")
        self.servos: tuple[ServoMap, ...] = tuple(servos or [_Straight()] * len(FINGERS))
        for finger, servo in zip(FINGERS, self.servos, strict=True):
            if servo.pulse_min_us > MAX_SERVO_MIN_US or servo.pulse_max_us < MIN_SERVO_MAX_US:
                raise ConfigError(
                    f"{finger}: StandardFirmata drives a servo from a pulse of at most "
                    f"{MAX_SERVO_MIN_US} µs at 0 degrees to one of at least {MIN_SERVO_MAX_US} µs "
                    f"at 180 degrees, not {servo.pulse_min_us}-{servo.pulse_max_us} µs"
                )
        self.hello_timeout = hello_timeout
        self.answer_timeout = answer_timeout
        self.silence_limit = silence_limit
        self.check_every = check_every
        self.resend_initial = resend_initial
        self.resend_max = resend_max
        self._finger_of = {pin: finger for finger, pin in enumerate(self.pins)}
        self._wait: Wait = _not_open
        self._parser = fp.FirmataParser()
        self._info: HandInfo | None = None
        self._board: list[fp.PinState | None] = [None] * len(FINGERS)
        self._configured: set[int] = set()
        self._unanswered: Counter[int] = Counter()
        self._batch: _Batch | None = None
        self._flush_due: float | None = None
        self._desired: Angles | None = None
        self._desired_relaxed: frozenset[int] = frozenset()
        self._written: dict[int, int] = {}  # finger -> the logical angle last written
        self._confirmed = Confirmed()
        self._disagreed = False
        self._resend_at = 0.0
        self._resend_delay = resend_initial
        self._last_heard = 0.0
        self._next_check = math.inf
        self.batches_sent = 0
        """Batches of writes sent, read-back checks not counted."""
        self.restarts = 0
        """Times the board announced itself unasked (it restarted) after a handshake."""

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
        version, firmware = self._await_announcement()
        capabilities = self._read_pins()
        for finger, pin in zip(FINGERS, self.pins, strict=True):
            if not capabilities.supports(pin, fp.PinMode.SERVO):
                servo_pins = ", ".join(map(str, capabilities.pins_with(fp.PinMode.SERVO)))
                raise HandshakeError(
                    f"pin {pin} ({finger}) cannot drive a servo with {firmware.name} on "
                    f"{self.url}; its servo pins are {servo_pins or 'none'}"
                )
        self._info = HandInfo(
            firmware=FirmwareInfo(
                name=firmware.name,
                version=firmware.version,
                protocol=f"Firmata {version}",
                fingers=len(FINGERS),
                failsafe=False,
                relax=True,
                timed_moves=False,
            ),
            failsafe=False,
            relax=True,
            timed_moves=False,
        )
        logger.info(
            "device: %s %s (Firmata %s) ready on %s, fingers on pins %s",
            firmware.name,
            firmware.version,
            version,
            self.url,
            ", ".join(map(str, self.pins)),
        )
        now = time.monotonic()
        self._update_confirmed()
        self._next_check = now + self.check_every
        self._push(now)
        return self._info

    def apply(self, target: Target) -> None:
        # StandardFirmata cannot time moves (HandInfo.timed_moves): every move is at once.
        relaxed = frozenset(target.relaxed)
        if target.angles != self._desired or relaxed != self._desired_relaxed:
            self._desired = target.angles
            self._desired_relaxed = relaxed
            self._resend_at = 0.0  # a new target goes out at once, whatever the backoff
            self._update_confirmed()
        self._push(time.monotonic())

    def service(self) -> None:
        self._receive()
        if self._info is None:
            return
        now = time.monotonic()
        if self._flush_due is not None:
            if now >= self._flush_due:
                self._flush(now)
            return
        batch = self._batch
        if batch is not None:
            if now >= self._answer_due(batch):
                self._ask_again(batch, now)
            return
        self._push(now)
        if self._batch is None and now >= self._next_check:
            self._check(now)

    @property
    def deadline(self) -> float:
        if self._info is None:
            return math.inf
        if self._flush_due is not None:
            return self._flush_due
        if self._batch is not None:
            return self._answer_due(self._batch)
        due = self._next_check
        if self._desired is not None and self._differs():
            due = min(due, self._resend_at)
        return due

    # -- handshake ---------------------------------------------------------------------------

    def _await_announcement(self) -> tuple[fp.ProtocolVersion, fp.FirmwareReport]:
        """The board's REPORT_VERSION and REPORT_FIRMWARE: announced after a restart, or
        answered when asked (every second)."""
        started = time.monotonic()
        deadline = started + self.hello_timeout
        next_query = started
        version: fp.ProtocolVersion | None = None
        firmware: fp.FirmwareReport | None = None
        framed = framed_protocol.FrameDecoder()
        bundled = False
        while True:
            now = time.monotonic()
            if now >= next_query:
                self.link.write(fp.report_version_query() + fp.report_firmware_query())
                next_query = now + _QUERY_EVERY_S
            data = self.link.read_available()
            if data:
                for message in self._parser.feed(data):
                    if isinstance(message, fp.ProtocolVersion):
                        version = message
                    elif isinstance(message, fp.FirmwareReport):
                        firmware = message
                # The bundled firmware says HELLO when it starts: name it.
                bundled = bundled or any(
                    frame.type == framed_protocol.FrameType.HELLO
                    for frame in framed.feed(data, now)
                )
                if version is not None and firmware is not None:
                    return version, firmware
            if now >= deadline:
                where = f"on {self.url} at {self.link.baudrate} baud"
                if bundled:
                    raise HandshakeError(
                        f"no Firmata answer {where}: hand-mqtt's bundled firmware answers "
                        "there; start without --firmata"
                    )
                raise HandshakeError(
                    f"no Firmata answer {where}: is StandardFirmata flashed? Without "
                    "--firmata, hand-mqtt expects its bundled firmware"
                )
            self._wait(max(0.0, min(next_query, deadline) - time.monotonic()))

    def _read_pins(self) -> fp.Capabilities:
        """Ask which pins can drive servos and read the five pins back. Announcements that
        arrive meanwhile answer the handshake's earlier questions (a board in its start-up
        blink keeps them and answers them all afterwards, in order): they are not restarts."""
        capabilities: fp.Capabilities | None = None
        queries = b"".join(fp.pin_state_query(pin) for pin in self.pins)
        for _attempt in range(3):
            self._unanswered.clear()
            self._unanswered.update(range(len(FINGERS)))
            self.link.write(fp.capability_query() + queries)
            answer_by = time.monotonic() + max(1.0, self.answer_timeout * 4)
            while time.monotonic() < answer_by:
                for message in self._read():
                    if isinstance(message, fp.Capabilities):
                        capabilities = message
                    else:
                        self._take(message, handshaking=True)
                if capabilities is not None and not +self._unanswered:
                    return capabilities
                self._wait(max(0.0, answer_by - time.monotonic()))
        raise HandshakeError(
            f"the Firmata firmware on {self.url} did not answer which of its pins drive servos"
        )

    # -- batches -----------------------------------------------------------------------------

    def _forget_session(self) -> None:
        self._parser.reset()
        self._info = None
        self._forget_board()
        self._unanswered.clear()
        self._flush_due = None
        self._disagreed = False
        self._resend_at = 0.0
        self._resend_delay = self.resend_initial
        self._next_check = math.inf
        self._last_heard = time.monotonic()

    def _forget_board(self) -> None:
        """Know nothing of the pins (a new connection, or the board restarted)."""
        self._board = [None] * len(FINGERS)
        self._configured.clear()
        self._batch = None
        self._confirmed = Confirmed()

    def _degrees(self, finger: int, logical: int) -> int:
        degrees = round(self.servos[finger].servo_degrees(logical))
        return min(max(degrees, 0), _SERVO_DEGREES)

    def _wanted(self, finger: int) -> tuple[int, int]:
        """The (mode, state) a finger's pin should read back for the desired target."""
        assert self._desired is not None
        if finger in self._desired_relaxed:
            return fp.PinMode.OUTPUT, 0
        return fp.PinMode.SERVO, self._degrees(finger, self._desired[finger])

    def _differs(self) -> bool:
        return any(
            board is None or (board.mode, board.state) != self._wanted(finger)
            for finger, board in enumerate(self._board)
        )

    def _push(self, now: float) -> None:
        """Write what the board lacks of the desired target, if the line is free."""
        desired = self._desired
        if desired is None or self._info is None or self._batch is not None:
            return
        if self._flush_due is not None:
            return
        if now < self._resend_at:
            return
        data = bytearray()
        expected: dict[int, tuple[int, int]] = {}
        for finger, pin in enumerate(self.pins):
            board = self._board[finger]
            mode, state = self._wanted(finger)
            applied = board is not None and (board.mode, board.state) == (mode, state)
            # A servo pin is configured once per session, even when it reads back right: its
            # pulse range may be another program's.
            if applied and (mode != fp.PinMode.SERVO or finger in self._configured):
                continue
            if mode == fp.PinMode.SERVO:
                if finger not in self._configured or board is None or board.mode != mode:
                    servo = self.servos[finger]
                    data += fp.servo_config(pin, servo.pulse_min_us, servo.pulse_max_us)
                    self._configured.add(finger)
                data += fp.analog_write(pin, state)
                self._written[finger] = desired[finger]
            else:
                data += fp.set_pin_mode(pin, fp.PinMode.OUTPUT)
                self._configured.discard(finger)
            expected[finger] = (mode, state)
        if expected:
            self.batches_sent += 1
            self._send(data, frozenset(expected), expected, now)

    def _check(self, now: float) -> None:
        """Read every finger's pin back, writing nothing."""
        self._send(bytearray(), frozenset(range(len(FINGERS))), {}, now)

    def _send(
        self,
        data: bytearray,
        fingers: frozenset[int],
        expected: dict[int, tuple[int, int]],
        now: float,
    ) -> None:
        for finger in sorted(fingers):
            data += fp.pin_state_query(self.pins[finger])
            self._unanswered[finger] += 1
        self._batch = _Batch(fingers, expected, now)
        self.link.write(bytes(data))

    def _answer_due(self, batch: _Batch) -> float:
        patience: float = min(self.answer_timeout * 2.0**batch.resends, 1.0)
        return batch.sent_at + patience

    def _ask_again(self, batch: _Batch, now: float) -> None:
        """No answer in time: the queries (or the board) were lost. Ask again, patiently: a
        board that restarted answers nothing during its start-up blink."""
        self._check_silence(now)
        waiting = [finger for finger in batch.fingers if self._unanswered[finger] > 0]
        data = bytearray()
        for finger in waiting:
            data += fp.pin_state_query(self.pins[finger])
            self._unanswered[finger] = 1
        batch.resends += 1
        batch.sent_at = now
        self.link.write(bytes(data))

    def _check_silence(self, now: float) -> None:
        if now - self._last_heard >= self.silence_limit:
            raise LinkError(f"the Firmata firmware stopped answering on {self.url}")

    def _flush(self, now: float) -> None:
        """After a restart, ask for the version and take no pin state until it comes.

        A board in its start-up blink keeps what it is sent and answers it all afterwards, in
        order: pin states queried before or during the restart are answered by a board that
        knows nothing any more. The version's answer comes after all of them."""
        self._check_silence(now)
        self._flush_due = now + max(1.0, self.answer_timeout * 4)
        self.link.write(fp.report_version_query())

    def _receive(self) -> None:
        for message in self._read():
            self._take(message)

    def _read(self) -> list[fp.Message]:
        data = self.link.read_available()
        if not data:
            return []
        self._last_heard = time.monotonic()
        return self._parser.feed(data)

    def _take(self, message: fp.Message, *, handshaking: bool = False) -> None:
        if isinstance(message, fp.PinState):
            finger = self._finger_of.get(message.pin)
            if finger is None or self._flush_due is not None:
                return
            self._unanswered[finger] = max(0, self._unanswered[finger] - 1)
            self._board[finger] = message
            batch = self._batch
            if batch is not None and not any(self._unanswered[f] for f in batch.fingers):
                self._finish(batch)
            elif batch is None and not handshaking:
                self._update_confirmed()
        elif isinstance(message, fp.FirmwareReport) and not handshaking and self._info:
            self._restarted(message)
        elif isinstance(message, fp.ProtocolVersion) and self._flush_due is not None:
            self._flush_due = None  # every answer from before the restart is in: start afresh
            now = time.monotonic()
            if self._desired is None:
                self._check(now)
            else:
                self._push(now)
        elif isinstance(message, fp.StringData):
            logger.warning("device: the Firmata firmware on %s says: %s", self.url, message.text)

    def _finish(self, batch: _Batch) -> None:
        now = time.monotonic()
        self._batch = None
        wrong = {
            finger: (want, self._board[finger])
            for finger, want in batch.expected.items()
            if (board := self._board[finger]) is None or (board.mode, board.state) != want
        }
        for finger in wrong:
            board = self._board[finger]
            if board is None or board.mode != fp.PinMode.SERVO:
                self._configured.discard(finger)
        if wrong:
            self._disagreed = True
            self._back_off(now, wrong)
        elif batch.expected:
            self._disagreed = False
            self._resend_delay = self.resend_initial
        self._next_check = now + self.check_every
        self._update_confirmed()
        self._push(now)

    def _back_off(
        self, now: float, wrong: dict[int, tuple[tuple[int, int], fp.PinState | None]]
    ) -> None:
        first = self._resend_delay == self.resend_initial
        described = "; ".join(
            f"{FINGERS[finger]} (pin {self.pins[finger]}) reads back "
            f"{_describe(board)} instead of {_describe_wanted(want)}"
            for finger, (want, board) in wrong.items()
        )
        (logger.warning if first else logger.debug)(
            "device: %s on %s; trying again in %.1f s", described, self.url, self._resend_delay
        )
        self._resend_at = now + self._resend_delay
        self._resend_delay = min(self._resend_delay * 2, self.resend_max)

    def _restarted(self, firmware: fp.FirmwareReport) -> None:
        logger.warning(
            "device: %s on %s restarted: its servos are detached; configuring them again",
            firmware.name,
            self.url,
        )
        self.restarts += 1
        self._forget_board()
        self._unanswered.clear()
        self._resend_at = 0.0
        self._flush(time.monotonic())

    def _update_confirmed(self) -> None:
        """Confirmed: what the five pins read back, as logical angles."""
        boards = self._board
        if any(board is None for board in boards):
            confirmed = Confirmed()
        else:
            relaxed = frozenset(
                finger
                for finger, board in enumerate(boards)
                if board is not None and board.mode != fp.PinMode.SERVO
            )
            angles = [self._logical(finger, board) for finger, board in enumerate(boards)]
            if any(angle is None for angle in angles):
                confirmed = Confirmed(relaxed=relaxed)
            else:
                found: Angles = tuple(angles)  # type: ignore[assignment]
                confirmed = Confirmed(
                    angles=found,
                    relaxed=relaxed,
                    mismatch=self._disagreed
                    and (found != self._desired or relaxed != self._desired_relaxed),
                )
        if confirmed != self._confirmed:
            self._confirmed = confirmed

    def _logical(self, finger: int, board: fp.PinState | None) -> int | None:
        """The logical angle a pin's read-back stands for. A pin out of servo mode has none of
        its own: it stands for the angle the finger is wanted at (it is listed as relaxed)."""
        desired = self._desired
        if board is None:
            return None
        if board.mode != fp.PinMode.SERVO:
            return desired[finger] if desired is not None else None
        for candidate in (
            desired[finger] if desired is not None else None,
            self._written.get(finger),
        ):
            if candidate is not None and self._degrees(finger, candidate) == board.state:
                return candidate
        # Nobody here wrote that angle: the nearest logical angle that gives it.
        return min(
            range(MIN_ANGLE, MAX_ANGLE + 1),
            key=lambda logical: abs(self._degrees(finger, logical) - board.state),
        )


def _describe(board: fp.PinState | None) -> str:
    if board is None:
        return "nothing"
    if board.mode == fp.PinMode.SERVO:
        return f"servo at {board.state} degrees"
    try:
        mode = fp.PinMode(board.mode).name.lower()
    except ValueError:
        mode = f"mode {board.mode}"
    return f"{mode} {board.state}"


def _describe_wanted(want: tuple[int, int]) -> str:
    mode, state = want
    return f"servo at {state} degrees" if mode == fp.PinMode.SERVO else "output low (relaxed)"
