"""The Firmata messages the driver writes and reads, byte for byte as protocol.md and servos.md
lay them out, and a parser that no garbage can crash or keep out of step."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hand_mqtt.hardware import firmata_protocol as fp

# The Uno's answers, as the real StandardFirmata 2.4 gives them in the emulator.
VERSION = bytes.fromhex("f9 02 04")
FIRMWARE = bytes.fromhex(
    "f0 79 02 04 53 00 74 00 61 00 6e 00 64 00 61 00 72 00 64 00 46 00 69 00 72 00 6d 00"
    " 61 00 74 00 61 00 2e 00 69 00 6e 00 6f 00 f7"
)
SERVO_AT_45 = bytes.fromhex("f0 6e 0b 04 2d f7")
SERVO_AT_180 = bytes.fromhex("f0 6e 09 04 34 01 f7")
OUTPUT_LOW = bytes.fromhex("f0 6e 0b 01 00 f7")
ANSWERS = VERSION + FIRMWARE + SERVO_AT_45 + SERVO_AT_180 + OUTPUT_LOW
PARSED: list[fp.Message] = [
    fp.ProtocolVersion(2, 4),
    fp.FirmwareReport(2, 4, "StandardFirmata.ino"),
    fp.PinState(11, fp.PinMode.SERVO, 45),
    fp.PinState(9, fp.PinMode.SERVO, 180),
    fp.PinState(11, fp.PinMode.OUTPUT, 0),
]


def test_queries() -> None:
    assert fp.report_version_query() == b"\xf9"
    assert fp.report_firmware_query() == b"\xf0\x79\xf7"
    assert fp.capability_query() == b"\xf0\x6b\xf7"
    assert fp.pin_state_query(11) == b"\xf0\x6d\x0b\xf7"
    assert fp.system_reset() == b"\xff"


def test_servo_config_carries_both_pulse_widths_in_14_bits() -> None:
    # 544 = 4 * 128 + 32, 2400 = 18 * 128 + 96
    assert fp.servo_config(11, 544, 2400) == bytes.fromhex("f0 70 0b 20 04 60 12 f7")
    assert fp.servo_config(127, 0, 16383) == bytes.fromhex("f0 70 7f 00 00 7f 7f f7")
    for bad in (-1, 16384):
        with pytest.raises(ValueError, match="14 bits"):
            fp.servo_config(9, bad, 2400)


def test_analog_write_is_three_bytes_below_pin_16_and_extended_above() -> None:
    assert fp.analog_write(11, 45) == bytes.fromhex("eb 2d 00")
    assert fp.analog_write(5, 180) == bytes.fromhex("e5 34 01")
    assert fp.analog_write(0, 0) == bytes.fromhex("e0 00 00")
    assert fp.analog_write(16, 180) == bytes.fromhex("f0 6f 10 34 01 f7")
    assert fp.analog_write(3, 1 << 14) == bytes.fromhex("f0 6f 03 00 00 01 f7")


def test_set_pin_mode() -> None:
    assert fp.set_pin_mode(11, fp.PinMode.OUTPUT) == bytes.fromhex("f4 0b 01")
    assert fp.set_pin_mode(5, fp.PinMode.SERVO) == bytes.fromhex("f4 05 04")


@pytest.mark.parametrize("pin", [-1, 128])
def test_pins_out_of_range_are_refused(pin: int) -> None:
    with pytest.raises(ValueError, match="pins 0-127"):
        fp.pin_state_query(pin)


def test_the_boards_answers_parse() -> None:
    assert fp.FirmataParser().feed(ANSWERS) == PARSED
    assert str(fp.ProtocolVersion(2, 4)) == "2.4"
    assert fp.FirmwareReport(2, 4, "x").version == "2.4"


def test_answers_split_anywhere_parse_the_same() -> None:
    for cut in range(1, len(ANSWERS)):
        parser = fp.FirmataParser()
        assert parser.feed(ANSWERS[:cut]) + parser.feed(ANSWERS[cut:]) == PARSED, cut


def test_capabilities_name_the_servo_pins() -> None:
    # Pins 0 and 1 (the serial port) have no mode; pin 2: input, output; pin 3: + PWM, servo.
    response = bytes.fromhex("f0 6c 7f 7f 00 01 01 01 7f 00 01 01 01 03 08 04 0e 7f f7")
    (capabilities,) = fp.FirmataParser().feed(response)
    assert isinstance(capabilities, fp.Capabilities)
    assert capabilities.pins_with(fp.PinMode.SERVO) == (3,)
    assert capabilities.supports(3, fp.PinMode.SERVO)
    assert not capabilities.supports(2, fp.PinMode.SERVO)
    assert not capabilities.supports(0, fp.PinMode.OUTPUT)
    assert not capabilities.supports(40, fp.PinMode.SERVO)


def test_strings_and_reports_the_driver_does_not_use() -> None:
    text = "Hi!"
    string = b"\xf0\x71" + b"".join(bytes((ord(c), 0)) for c in text) + b"\xf7"
    analog = bytes.fromhex("e3 10 02")
    digital = bytes.fromhex("91 05 00")
    unknown = bytes.fromhex("f0 42 01 02 f7")
    assert fp.FirmataParser().feed(string + analog + digital + unknown) == [
        fp.StringData(text),
        fp.OtherMessage(0xE3, b"\x10\x02"),
        fp.OtherMessage(0x91, b"\x05\x00"),
        fp.OtherMessage(0xF042, b"\x01\x02"),
    ]


def test_a_message_cut_short_is_dropped_at_the_next_command() -> None:
    parser = fp.FirmataParser()
    # A version report missing its last byte, a pin state cut short, an analog report cut
    # short, an END_SYSEX without a start, stray data bytes: none of them is taken, the next
    # message is.
    garbage = bytes.fromhex("f9 02  f0 6e 0b 04 2d  e3 10  f7  10 20")
    assert parser.feed(garbage + SERVO_AT_45) == [fp.PinState(11, fp.PinMode.SERVO, 45)]


def test_a_runaway_sysex_is_dropped() -> None:
    parser = fp.FirmataParser()
    assert parser.feed(b"\xf0\x79" + b"\x41" * (fp.MAX_SYSEX + 10) + b"\xf7") == []
    assert parser.feed(VERSION) == [fp.ProtocolVersion(2, 4)]


def test_a_firmware_name_with_unprintable_characters_is_kept_printable() -> None:
    report = bytes.fromhex("f0 79 02 05 41 00 07 00 7f 7f f7")
    (parsed,) = fp.FirmataParser().feed(report)
    assert isinstance(parsed, fp.FirmwareReport)
    assert parsed.name.isprintable()
    assert parsed.name.startswith("A")


@given(st.binary(max_size=400), st.binary(max_size=400))
def test_garbage_never_raises_and_the_parser_recovers(before: bytes, after: bytes) -> None:
    parser = fp.FirmataParser()
    parser.feed(before)
    # Whatever came before, a complete message after an END_SYSEX is read right (the garbage
    # may complete into a message of its own first: F0 00 F7 is a SysEx).
    assert parser.feed(b"\xf7" + SERVO_AT_180)[-1] == fp.PinState(9, fp.PinMode.SERVO, 180)
    parser.feed(after)
