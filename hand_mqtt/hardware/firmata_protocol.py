"""The few Firmata messages a servo hand needs, encoded and decoded (no I/O).

Written from the Firmata protocol documents (``protocol.md`` and ``servos.md`` of the Firmata
protocol repository). Firmata is MIDI-shaped: a byte with the top bit set starts a message, data
bytes carry 7 bits each, and longer messages are SysEx, framed by ``F0`` … ``F7``. There is no
checksum, no sequence number and no acknowledgement; a message cut short is dropped when the
next command byte arrives.

Host → board (functions returning the bytes to write): :func:`report_version_query`,
:func:`report_firmware_query`, :func:`set_pin_mode`, :func:`servo_config`,
:func:`analog_write` (``ANALOG_MESSAGE`` for pins 0 to 15 and values below 2¹⁴, else
``EXTENDED_ANALOG``), :func:`pin_state_query`, :func:`capability_query`,
:func:`system_reset`.

Board → host: :class:`FirmataParser` turns a byte stream into :class:`ProtocolVersion`,
:class:`FirmwareReport`, :class:`PinState`, :class:`Capabilities`, :class:`StringData` and
:class:`OtherMessage` (analog and digital reports and unknown SysEx, which a servo driver
ignores). Garbage never raises: stray data bytes are dropped and a command byte always starts
afresh, so the parser is back in step at the next message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_SYSEX",
    "Capabilities",
    "FirmataParser",
    "FirmwareReport",
    "Message",
    "OtherMessage",
    "PinMode",
    "PinState",
    "ProtocolVersion",
    "StringData",
    "analog_write",
    "capability_query",
    "pin_state_query",
    "report_firmware_query",
    "report_version_query",
    "servo_config",
    "set_pin_mode",
    "system_reset",
]

# Command bytes.
ANALOG_MESSAGE: Final = 0xE0
DIGITAL_MESSAGE: Final = 0x90
REPORT_ANALOG: Final = 0xC0
REPORT_DIGITAL: Final = 0xD0
START_SYSEX: Final = 0xF0
SET_PIN_MODE: Final = 0xF4
SET_DIGITAL_PIN_VALUE: Final = 0xF5
END_SYSEX: Final = 0xF7
REPORT_VERSION: Final = 0xF9
SYSTEM_RESET: Final = 0xFF

# SysEx command ids.
CAPABILITY_QUERY: Final = 0x6B
CAPABILITY_RESPONSE: Final = 0x6C
PIN_STATE_QUERY: Final = 0x6D
PIN_STATE_RESPONSE: Final = 0x6E
EXTENDED_ANALOG: Final = 0x6F
SERVO_CONFIG: Final = 0x70
STRING_DATA: Final = 0x71
REPORT_FIRMWARE: Final = 0x79

MAX_PIN: Final = 127
MAX_SYSEX: Final = 1024
"""The longest SysEx body kept; a longer one is garbage and dropped (an Uno's capability
response, the longest answer it gives, is about 200 bytes)."""
_MAX_NAME: Final = 64


class PinMode(enum.IntEnum):
    """Pin modes, as SET_PIN_MODE and PIN_STATE_RESPONSE number them."""

    INPUT = 0x00
    OUTPUT = 0x01
    ANALOG = 0x02
    PWM = 0x03
    SERVO = 0x04
    SHIFT = 0x05
    I2C = 0x06
    ONEWIRE = 0x07
    STEPPER = 0x08
    ENCODER = 0x09
    SERIAL = 0x0A
    PULLUP = 0x0B


def _check_pin(pin: int) -> int:
    if not 0 <= pin <= MAX_PIN:
        raise ValueError(f"Firmata addresses pins 0-{MAX_PIN}, not {pin}")
    return pin


def _seven_bit(value: int, count: int) -> bytes:
    """``value`` as ``count`` 7-bit bytes, least significant first."""
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))


def _from_seven_bit(data: bytes) -> int:
    return sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(data))


# -- host → board ------------------------------------------------------------------------------


def report_version_query() -> bytes:
    """Ask for the protocol version (the board answers ``F9 major minor``)."""
    return bytes((REPORT_VERSION,))


def report_firmware_query() -> bytes:
    """Ask for the firmware's name and version (answered by a REPORT_FIRMWARE SysEx)."""
    return bytes((START_SYSEX, REPORT_FIRMWARE, END_SYSEX))


def capability_query() -> bytes:
    """Ask which modes every pin supports."""
    return bytes((START_SYSEX, CAPABILITY_QUERY, END_SYSEX))


def set_pin_mode(pin: int, mode: PinMode) -> bytes:
    """SET_PIN_MODE: ``F4 pin mode``."""
    return bytes((SET_PIN_MODE, _check_pin(pin), int(mode)))


def servo_config(pin: int, min_pulse_us: int, max_pulse_us: int) -> bytes:
    """SERVO_CONFIG: make ``pin`` a servo whose 0 and 180 degrees are these pulse widths (both
    14-bit)."""
    for value in (min_pulse_us, max_pulse_us):
        if not 0 <= value < 1 << 14:
            raise ValueError(f"a servo pulse width must fit in 14 bits, not {value}")
    return (
        bytes((START_SYSEX, SERVO_CONFIG, _check_pin(pin)))
        + _seven_bit(min_pulse_us, 2)
        + _seven_bit(max_pulse_us, 2)
        + bytes((END_SYSEX,))
    )


def analog_write(pin: int, value: int) -> bytes:
    """Write ``value`` to ``pin`` (a servo's angle in degrees): ANALOG_MESSAGE (3 bytes) when
    the pin is below 16 and the value fits in 14 bits, else EXTENDED_ANALOG."""
    _check_pin(pin)
    if value < 0:
        raise ValueError(f"an analog value cannot be negative ({value})")
    if pin < 16 and value < 1 << 14:
        return bytes((ANALOG_MESSAGE | pin,)) + _seven_bit(value, 2)
    count = max(2, (value.bit_length() + 6) // 7)
    return (
        bytes((START_SYSEX, EXTENDED_ANALOG, pin)) + _seven_bit(value, count) + bytes((END_SYSEX,))
    )


def pin_state_query(pin: int) -> bytes:
    """PIN_STATE_QUERY: ask for ``pin``'s mode and state (the last value written to it)."""
    return bytes((START_SYSEX, PIN_STATE_QUERY, _check_pin(pin), END_SYSEX))


def system_reset() -> bytes:
    """SYSTEM_RESET: every pin back to its start-up mode (servos detached)."""
    return bytes((SYSTEM_RESET,))


# -- board → host ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProtocolVersion:
    """REPORT_VERSION: the Firmata protocol version the board speaks."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class FirmwareReport:
    """REPORT_FIRMWARE: the firmware's name (its sketch file) and version."""

    major: int
    minor: int
    name: str

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class PinState:
    """PIN_STATE_RESPONSE: a pin's mode and state (for a servo, the angle last written)."""

    pin: int
    mode: int
    state: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """CAPABILITY_RESPONSE: for every pin (by number), the modes it supports."""

    modes: tuple[frozenset[int], ...]

    def supports(self, pin: int, mode: PinMode) -> bool:
        return 0 <= pin < len(self.modes) and int(mode) in self.modes[pin]

    def pins_with(self, mode: PinMode) -> tuple[int, ...]:
        return tuple(pin for pin in range(len(self.modes)) if int(mode) in self.modes[pin])


@dataclass(frozen=True, slots=True)
class StringData:
    """STRING_DATA: a message from the firmware (StandardFirmata reports errors this way)."""

    text: str


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Anything else: analog or digital reports, unknown SysEx. ``command`` is the command
    byte (``F0`` followed by the SysEx id for SysEx)."""

    command: int
    data: bytes


Message = ProtocolVersion | FirmwareReport | PinState | Capabilities | StringData | OtherMessage


def _two_byte_chars(data: bytes) -> str:
    """7-bit pairs (LSB, MSB) as text; anything not printable is replaced."""
    chars = []
    for i in range(0, len(data) - 1, 2):
        code = (data[i] & 0x7F) | (data[i + 1] & 0x7F) << 7
        char = chr(code)
        chars.append(char if char.isprintable() else "\ufffd")
    return "".join(chars)[:_MAX_NAME]


def _parse_sysex(body: bytes) -> Message:
    command, data = body[0], body[1:]
    if command == REPORT_FIRMWARE and len(data) >= 2:
        return FirmwareReport(data[0], data[1], _two_byte_chars(data[2:]))
    if command == PIN_STATE_RESPONSE and len(data) >= 3:
        return PinState(data[0], data[1], _from_seven_bit(data[2:6]))
    if command == CAPABILITY_RESPONSE:
        pins: list[frozenset[int]] = []
        modes: set[int] = set()
        pairs = iter(data)
        for byte in pairs:
            if byte == 0x7F:
                pins.append(frozenset(modes))
                modes = set()
            else:
                modes.add(byte)
                next(pairs, None)  # the mode's resolution
        return Capabilities(tuple(pins))
    if command == STRING_DATA:
        return StringData(_two_byte_chars(data))
    return OtherMessage(START_SYSEX << 8 | command, data)


class FirmataParser:
    """Turns bytes from the board into messages; keeps a partial message between calls."""

    def __init__(self) -> None:
        self._command: int | None = None
        self._data = bytearray()
        self._sysex = False

    def reset(self) -> None:
        self._command = None
        self._data.clear()
        self._sysex = False

    def feed(self, data: bytes) -> list[Message]:
        messages: list[Message] = []
        for byte in data:
            message = self._byte(byte)
            if message is not None:
                messages.append(message)
        return messages

    def _byte(self, byte: int) -> Message | None:
        if self._sysex:
            if byte == END_SYSEX:
                body = bytes(self._data)
                self.reset()
                return _parse_sysex(body) if body else None
            if byte < 0x80:
                if len(self._data) < MAX_SYSEX:
                    self._data.append(byte)
                else:
                    self.reset()  # far too long for any answer: garbage
                return None
            self.reset()  # a command byte inside SysEx: the SysEx was cut short
        if byte >= 0x80:
            self.reset()
            if byte == START_SYSEX:
                self._sysex = True
            elif byte == END_SYSEX:
                pass  # the end of a SysEx whose start was lost
            elif self._length(byte):
                self._command = byte
            return None
        command = self._command
        if command is None:
            return None  # a data byte with no command: the start of its message was lost
        self._data.append(byte)
        if len(self._data) < self._length(command):
            return None
        data = bytes(self._data)
        self.reset()
        if command == REPORT_VERSION:
            return ProtocolVersion(data[0], data[1])
        return OtherMessage(command, data)

    @staticmethod
    def _length(command: int) -> int:
        """Data bytes after a command byte (SysEx aside); 0 for a command this parser does not
        know, whose data bytes are then dropped."""
        kind = command & 0xF0
        if kind in (REPORT_ANALOG, REPORT_DIGITAL):
            return 1
        if kind in (ANALOG_MESSAGE, DIGITAL_MESSAGE) or command in (
            REPORT_VERSION,
            SET_PIN_MODE,
            SET_DIGITAL_PIN_VALUE,
        ):
            return 2
        return 0
