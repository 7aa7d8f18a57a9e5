"""``hand-mqtt firmware``: build the bundled Arduino Uno firmware, export it as an Arduino IDE
sketch, and flash it with avrdude."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from hand_mqtt.devtools import firmware as fw
from hand_mqtt.devtools.firmware import BuildResult

from .base import exit_status
from .common import VerboseOption, handle_errors, setup_logging

__all__ = ["app"]

app = typer.Typer(
    help="Build the bundled Arduino Uno firmware, export it as a sketch, flash it "
    "(make, avr-gcc, avrdude).",
    no_args_is_help=True,
)

# avrdude redraws its progress bar ("Writing | ####  | 40% 0.21s") on one line.
_PROGRESS = re.compile(r"^(Reading|Writing) \|.*\| *(\d+)%")


def _report(result: BuildResult) -> None:
    typer.echo(
        f"flash {result.flash_bytes} / {fw.FLASH_BUDGET} bytes, "
        f"RAM {result.ram_bytes} / {fw.RAM_BUDGET} bytes"
    )
    typer.echo(f"ELF {result.elf}")
    typer.echo(f"HEX {result.hex}")


@app.command(epilog=exit_status("firmware build"))
def build(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Build folder (default: firmware/build in a checkout, else a cache folder).",
            file_okay=False,
        ),
    ] = None,
    verbose: VerboseOption = 0,
) -> None:
    """Build hand.elf and hand.hex with make and check them against the size budget."""
    setup_logging(verbose, service=False)
    with handle_errors():
        result = fw.build(out)
    _report(result)


@app.command(epilog=exit_status("firmware export"))
def export(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="Where to write the sketch folder hand/ (created if missing).",
            file_okay=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace sketch files that already exist there.")
    ] = False,
    verbose: VerboseOption = 0,
) -> None:
    """Write the firmware as a sketch folder the Arduino IDE opens as it is (DIR/hand)."""
    setup_logging(verbose, service=False)
    with handle_errors():
        sketch = fw.export_sketch(directory, overwrite=force)
    typer.echo(f"sketch {sketch}")
    typer.echo(f"open {sketch / 'hand.ino'} in the Arduino IDE, then Upload to the Uno")


class _Progress:
    """Prints avrdude's output; its progress bar is redrawn in place on a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stdout.isatty()
        self._open_bar = False

    def __call__(self, line: str) -> None:
        bar = _PROGRESS.match(line)
        if bar is not None and self._tty:
            sys.stdout.write("\r" + line)
            sys.stdout.flush()
            self._open_bar = int(bar.group(2)) < 100
            if not self._open_bar:
                sys.stdout.write("\n")
            return
        if bar is not None and int(bar.group(2)) < 100:
            return  # not a terminal: only the finished bar, not every step of it
        self.finish()
        typer.echo(line)

    def finish(self) -> None:
        if self._open_bar:
            sys.stdout.write("\n")
            self._open_bar = False


@app.command(epilog=exit_status("firmware flash"))
def flash(
    port: Annotated[
        str,
        typer.Option(
            "--port",
            "-p",
            envvar="HAND_MQTT_SERIAL",
            metavar="PORT",
            help="The Uno's serial port: /dev/ttyACM0, /dev/ttyUSB0, …",
        ),
    ],
    hex_file: Annotated[
        Path | None,
        typer.Option(
            "--hex",
            metavar="FILE",
            help="Image to write (default: build the firmware first).",
            dir_okay=False,
        ),
    ] = None,
    baudrate: Annotated[
        int, typer.Option(metavar="BAUD", help="Bootloader speed (Uno: 115200).")
    ] = 115200,
    verbose: VerboseOption = 0,
) -> None:
    """Write the firmware to an Arduino Uno through its bootloader with avrdude."""
    setup_logging(verbose, service=False)
    progress = _Progress()
    with handle_errors():
        fw.check_flash_target(port)  # before a build: say at once what is missing
        if hex_file is None:
            result = fw.build()
            _report(result)
            hex_file = result.hex
        typer.echo(f"flashing {hex_file} to {port}")
        try:
            fw.flash(port, hex_file, progress, baudrate=baudrate)
        finally:
            progress.finish()
    typer.echo(f"flashed {hex_file} to {port}")
