"""``hand-mqtt calibrate FINGER``: find a finger's two stops by nudging its servo, and save them.

Interactive, on a terminal, with the serial port to itself (stop the device service first). Only
the finger being calibrated is driven, by servo degrees and with the pulse range the file gives
it; the other fingers stay limp. It asks for the contracted stop (logical 0) and then the
extended one (logical 180), each starting from the middle of the servo's travel, and writes
``servo_min`` and ``servo_max`` into the finger's table of the file, keeping the rest of it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import termios
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Final

import typer

from hand_mqtt.hardware.calibration import Calibration, save_finger
from hand_mqtt.hardware.jog import ServoJog
from hand_mqtt.model import FINGERS

from .base import exit_status
from .common import (
    FirmataOption,
    PinsOption,
    VerboseOption,
    fail,
    handle_errors,
    parse_pins,
    setup_logging,
)

__all__ = ["app"]

app = typer.Typer()

_MIDDLE: Final = 90
# Keys as the terminal sends them (arrows and page keys as their escape sequences).
_STEPS: Final[dict[str, int]] = {
    "+": 1, "=": 1, "\x1b[A": 1, "\x1b[C": 1,
    "-": -1, "_": -1, "\x1b[B": -1, "\x1b[D": -1,
    "]": 10, "\x1b[5~": 10,
    "[": -10, "\x1b[6~": -10,
}  # fmt: skip
_ACCEPT: Final = ("\r", "\n")
_QUIT: Final = ("q", "Q", "\x1b", "\x03", "\x04")
_KEYS_HELP: Final = (
    "keys: + or up/right one degree more, - or down/left one less, ] or PgUp ten more, "
    "[ or PgDn ten less, Enter: this is the stop, q: quit without saving"
)


_KEY: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z~]|\x1b|.", re.DOTALL)


class _Quit(Exception):
    pass


class _Keys:
    """The terminal in cbreak mode (a key at a time, no echo) for as long as the session lasts,
    so a key pressed while the servo moves is neither echoed nor lost."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[str] = []

    @contextlib.contextmanager
    def session(self) -> Iterator[_Keys]:
        saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        try:
            yield self
        finally:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def next(self) -> str:
        while not self._pending:
            data = os.read(self.fd, 64)
            if not data:
                return "\x04"  # end of input: quit
            self._pending = _KEY.findall(data.decode("utf-8", "replace"))
        return self._pending.pop(0)


def _show(line: str) -> None:
    # Redraw the position in place on a terminal.
    sys.stdout.write("\r\x1b[K" + line)
    sys.stdout.flush()


def _find_stop(jog: ServoJog, keys: _Keys, pulse: tuple[int, int], question: str) -> int:
    typer.echo(question)
    degrees = jog.move(_MIDDLE)
    while True:
        width = pulse[0] + (pulse[1] - pulse[0]) * degrees / 180
        _show(f"servo {degrees:3d} degrees (pulse {width:4.0f} us)")
        key = keys.next()
        if key in _ACCEPT:
            typer.echo("")
            return degrees
        if key in _QUIT:
            typer.echo("")
            raise _Quit
        step = _STEPS.get(key)
        if step is not None:
            degrees = jog.move(degrees + step)


@app.command(rich_help_panel="Production and hardware", epilog=exit_status("calibrate"))
def calibrate(
    finger: Annotated[
        str,
        typer.Argument(
            metavar="FINGER", help=f"The finger: {', '.join(FINGERS)}.", show_default=False
        ),
    ],
    serial: Annotated[
        str,
        typer.Option(
            "--serial",
            "-s",
            envvar="HAND_MQTT_SERIAL",
            metavar="PORT",
            help="The hand's serial port (the device service must not be using it).",
        ),
    ],
    calibration: Annotated[
        Path,
        typer.Option(
            "--calibration",
            envvar="HAND_MQTT_CALIBRATION",
            metavar="FILE",
            help="The calibration file to update (created if missing).",
            dir_okay=False,
        ),
    ] = Path("hand.toml"),
    baudrate: Annotated[
        int | None,
        typer.Option(metavar="BAUD", help="Serial speed [default: 115200, with --firmata 57600]."),
    ] = None,
    firmata: FirmataOption = False,
    pins: PinsOption = "11,10,9,6,5",
    verbose: VerboseOption = 0,
) -> None:
    """Find a finger's stops by nudging its servo with the keyboard, and save them."""
    setup_logging(verbose, service=False)
    if finger not in FINGERS:
        raise fail(f"unknown finger {finger!r}; fingers are {', '.join(FINGERS)}", 2)
    if not sys.stdin.isatty():
        raise fail("hand-mqtt calibrate reads keys: run it in a terminal", 2)
    with handle_errors():
        current = (Calibration.from_file(calibration) if calibration.exists() else Calibration())[
            finger
        ]
        pulse = (current.pulse_min_us, current.pulse_max_us)
        typer.echo(
            f"Calibrating the {finger} on {serial} into {calibration}; only the {finger} is "
            f"driven (pulses {pulse[0]}-{pulse[1]} us for servo 0-180 degrees)."
        )
        typer.echo(_KEYS_HELP)
        with (
            _Keys(sys.stdin.fileno()).session() as keys,
            ServoJog(
                serial,
                finger,
                pulse_min_us=pulse[0],
                pulse_max_us=pulse[1],
                baudrate=baudrate,
                firmata=firmata,
                pins=parse_pins(pins),
            ) as jog,
        ):
            try:
                servo_min = _find_stop(
                    jog, keys, pulse, f"1/2 Move the {finger} to where it is fully contracted (0)."
                )
                servo_max = _find_stop(
                    jog, keys, pulse, f"2/2 Move the {finger} to where it is fully extended (180)."
                )
            except (_Quit, KeyboardInterrupt):
                typer.echo("quit: nothing saved")
                return
        if servo_min == servo_max:
            raise fail("both stops are at the same servo angle; nothing saved")
        save_finger(calibration, finger, {"servo_min": servo_min, "servo_max": servo_max})
    inverted = " (inverted)" if servo_min > servo_max else ""
    typer.echo(
        f"saved [fingers.{finger}] servo_min = {servo_min}, servo_max = {servo_max}{inverted} "
        f"to {calibration}"
    )
