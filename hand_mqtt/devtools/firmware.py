"""Build the bundled Arduino Uno firmware, export it as a sketch, and flash it with avrdude.

The firmware sources (``hand/hand.ino`` and friends, the ``Makefile``, the simavr runner in
``sim/``) ship inside the package as ``hand_mqtt/data/firmware``; in a git checkout they are the
``firmware/`` folder. Builds from the installed package go to a cache folder outside
site-packages (``$XDG_CACHE_HOME/hand-mqtt/firmware-<hash of the sources>``), builds from a
checkout to ``firmware/build`` as ``make -C firmware`` does.

Debian packages needed: ``make gcc-avr avr-libc arduino-core-avr`` to build, ``avrdude`` to
flash, ``simavr libsimavr-dev libelf-dev`` for the emulator runner.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hand_mqtt.errors import FirmwareError

__all__ = [
    "BUILD_PACKAGES",
    "FLASH_BUDGET",
    "FLASH_PACKAGES",
    "RAM_BUDGET",
    "SIM_PACKAGES",
    "BuildResult",
    "build",
    "build_dir",
    "build_simulator",
    "check_flash_target",
    "export_sketch",
    "firmware_dir",
    "flash",
]

logger = logging.getLogger("hand_mqtt")

BUILD_PACKAGES: Final = "make gcc-avr avr-libc arduino-core-avr"
"""Debian packages the build needs."""
FLASH_PACKAGES: Final = "avrdude"
"""Debian packages flashing needs."""
SIM_PACKAGES: Final = "make gcc simavr libsimavr-dev libelf-dev"
"""Debian packages the simavr runner needs."""
FLASH_BUDGET: Final = 5120
"""The Makefile's default flash budget in bytes (text + data)."""
RAM_BUDGET: Final = 384
"""The Makefile's default static RAM budget in bytes (data + bss)."""

_ENV_DIR: Final = "HAND_MQTT_FIRMWARE_DIR"
_PACKAGED: Final = Path(__file__).resolve().parents[1] / "data" / "firmware"
_CHECKOUT: Final = Path(__file__).resolve().parents[2] / "firmware"
_SKETCH: Final = "hand"  # the sketch folder and its .ino share this name, as the IDE wants
_ARDUINO_DIR: Final = "/usr/share/arduino/hardware/arduino/avr"  # the Makefile's ARDUINO_DIR
_SIMAVR_HEADER: Final = Path("/usr/include/simavr/sim_avr.h")
_OUTPUT_TAIL: Final = 40  # lines of tool output quoted in an error


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What ``make`` produced and how big it is."""

    elf: Path
    hex: Path
    flash_bytes: int
    """Program memory used: text + data."""
    ram_bytes: int
    """Static RAM used: data + bss."""


def _has_sources(folder: Path) -> bool:
    return (folder / "Makefile").is_file() and (folder / _SKETCH / "hand.ino").is_file()


def firmware_dir() -> Path:
    """The firmware source folder: ``$HAND_MQTT_FIRMWARE_DIR``, else the sources installed with
    the package, else the git checkout's ``firmware/``."""
    override = os.environ.get(_ENV_DIR)
    if override:
        folder = Path(override)
        if not _has_sources(folder):
            raise FirmwareError(
                f"the firmware sources are not at {folder} (expected Makefile and "
                f"hand/hand.ino); {_ENV_DIR} must point at a folder laid out like the "
                "checkout's firmware/, or be unset to use the sources installed with hand-mqtt"
            )
        return folder
    for folder in (_PACKAGED, _CHECKOUT):
        if _has_sources(folder):
            return folder
    raise FirmwareError(
        f"the firmware sources are not at {_PACKAGED} (expected Makefile and hand/hand.ino): "
        "this installation of hand-mqtt is incomplete; reinstall it, or set "
        f"{_ENV_DIR} to a checkout's firmware/ folder"
    )


def _sources_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    files = [folder / "Makefile", *sorted((folder / _SKETCH).iterdir())]
    if (folder / "sim").is_dir():
        files += sorted((folder / "sim").iterdir())
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_dir() -> Path:
    """Where builds go by default: ``firmware/build`` in a checkout (or next to the sources
    ``$HAND_MQTT_FIRMWARE_DIR`` names), else a cache folder keyed by the sources, so an upgrade
    never reuses objects of older sources: ``$XDG_CACHE_HOME/hand-mqtt/firmware-<hash>``
    (``~/.cache`` when ``XDG_CACHE_HOME`` is unset)."""
    folder = firmware_dir()
    if folder != _PACKAGED:
        return folder / "build"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hand-mqtt" / f"firmware-{_sources_digest(folder)}"


def export_sketch(out_dir: Path | str, *, overwrite: bool = False) -> Path:
    """Write the sketch as a folder the Arduino IDE opens as it is: ``OUT_DIR/hand/hand.ino``
    and its ``.cpp``/``.h`` files. Returns the sketch folder.

    Refuses to replace a file that differs from the one it would write unless ``overwrite``.
    """
    source = firmware_dir() / _SKETCH
    target = Path(out_dir) / _SKETCH
    files = sorted(path for path in source.iterdir() if path.suffix in (".ino", ".cpp", ".h"))
    clashes = [
        target / path.name
        for path in files
        if (target / path.name).exists()
        and (
            not (target / path.name).is_file()
            or (target / path.name).read_bytes() != path.read_bytes()
        )
    ]
    if clashes and not overwrite:
        raise FirmwareError(
            f"{clashes[0]} already exists and differs from the bundled sketch; "
            "choose an empty folder, or pass --force to replace it"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, target / path.name)
    except OSError as exc:
        raise FirmwareError(f"could not write the sketch to {target}: {exc}") from exc
    logger.info("exported the sketch to %s", target)
    return target


def _need(tool: str, packages: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise FirmwareError(
            f"{tool} is not installed; on Debian/Ubuntu: sudo apt-get install {packages}"
        )
    return found


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-_OUTPUT_TAIL:])


def _make(folder: Path, args: list[str]) -> str:
    make = _need("make", BUILD_PACKAGES)
    command = [make, "-C", str(folder), *args]
    logger.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirmwareError(f"could not run make: {exc}") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        if "budget exceeded" in output:
            raise FirmwareError(f"the firmware is over its size budget:\n{_tail(output)}")
        raise FirmwareError(f"make {' '.join(args)} failed:\n{_tail(output)}")
    return output


def _sizes(elf: Path) -> tuple[int, int]:
    size_tool = _need("avr-size", BUILD_PACKAGES)
    try:
        done = subprocess.run(
            [size_tool, str(elf)], capture_output=True, text=True, check=True, timeout=60
        )
        text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError) as exc:
        raise FirmwareError(f"could not read the size of {elf}: {exc}") from exc
    return text + data, data + bss


def build(
    out_dir: Path | str | None = None,
    *,
    flash_budget: int | None = None,
    ram_budget: int | None = None,
) -> BuildResult:
    """Build ``hand.elf`` and ``hand.hex`` with ``make`` and check the size budget.

    ``out_dir`` defaults to :func:`build_dir`. The budgets default to the Makefile's (5120 B
    flash, 384 B RAM); a build over budget raises :class:`FirmwareError`.
    """
    folder = firmware_dir()
    _need("avr-gcc", BUILD_PACKAGES)
    core = Path(os.environ.get("ARDUINO_DIR") or _ARDUINO_DIR) / "cores" / "arduino"
    if not (core / "main.cpp").is_file():
        raise FirmwareError(
            f"the Arduino AVR core is not at {core}; "
            f"on Debian/Ubuntu: sudo apt-get install {BUILD_PACKAGES}"
        )
    out = Path(out_dir).resolve() if out_dir is not None else build_dir()
    args = [f"BUILD_DIR={out}"]
    if flash_budget is not None:
        args.append(f"FLASH_BUDGET={int(flash_budget)}")
    if ram_budget is not None:
        args.append(f"RAM_BUDGET={int(ram_budget)}")
    args.append("all")
    _make(folder, args)
    elf, hex_file = out / "hand.elf", out / "hand.hex"
    if not elf.is_file() or not hex_file.is_file():
        raise FirmwareError(f"make succeeded but {elf} or {hex_file} is missing")
    flash_bytes, ram_bytes = _sizes(elf)
    logger.info("firmware built: %s (%d B flash, %d B RAM)", elf, flash_bytes, ram_bytes)
    return BuildResult(elf=elf, hex=hex_file, flash_bytes=flash_bytes, ram_bytes=ram_bytes)


def build_simulator(out_dir: Path | str | None = None) -> Path:
    """Build the simavr runner (``make sim``) and return its path."""
    folder = firmware_dir()
    _need("gcc", SIM_PACKAGES)
    if not _SIMAVR_HEADER.is_file():
        raise FirmwareError(
            f"simavr headers are missing ({_SIMAVR_HEADER}); "
            f"on Debian/Ubuntu: sudo apt-get install {SIM_PACKAGES}"
        )
    out = Path(out_dir).resolve() if out_dir is not None else build_dir()
    _make(folder, [f"BUILD_DIR={out}", "sim"])
    runner = out / "sim" / "hand-sim"
    if not runner.is_file():
        raise FirmwareError(f"make sim succeeded but {runner} is missing")
    return runner


def _is_device_path(port: str) -> bool:
    return "://" not in port and (port.startswith("/") or port.startswith("."))


def check_flash_target(port: str) -> None:
    """Raise :class:`FirmwareError` when avrdude is missing or ``port`` is a device path that
    does not exist or is not a serial device (checked before anything slow, such as a build)."""
    _need("avrdude", FLASH_PACKAGES)
    if not _is_device_path(port):
        return
    if not Path(port).exists():
        raise FirmwareError(
            f"the serial port {port} does not exist; is the Uno plugged in? "
            "(see `ls /dev/ttyACM* /dev/ttyUSB*`)"
        )
    if not _is_serial_device(port):
        raise FirmwareError(
            f"{port} is not a serial port; an Uno shows up as /dev/ttyACM0 or /dev/ttyUSB0 "
            "(see `ls /dev/ttyACM* /dev/ttyUSB*`)"
        )


def _is_serial_device(port: str) -> bool:
    """Whether ``port`` is a terminal device, as every serial port is (``/dev/null`` is not)."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False  # a port that cannot be opened cannot be flashed either
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def flash(
    port: str,
    hex_path: Path | str,
    progress: Callable[[str], None] | None = None,
    *,
    baudrate: int = 115200,
    timeout: float = 120.0,
) -> None:
    """Write ``hex_path`` to an Uno on ``port`` with avrdude (through the bootloader).

    avrdude's output is passed line by line to ``progress`` (its progress bar arrives in
    pieces, split at carriage returns and newlines); without a callback it is logged at INFO.
    """
    avrdude = _need("avrdude", FLASH_PACKAGES)
    hex_file = Path(hex_path)
    if not hex_file.is_file():
        raise FirmwareError(f"the firmware image {hex_file} does not exist; build it first")
    check_flash_target(port)
    command = [
        avrdude, "-p", "atmega328p", "-c", "arduino", "-P", port, "-b", str(baudrate),
        "-U", f"flash:w:{hex_file}:i",
    ]  # fmt: skip
    emit = progress if progress is not None else (lambda line: logger.info("avrdude: %s", line))
    logger.debug("running %s", " ".join(command))
    lines: list[str] = []
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise FirmwareError(f"could not run avrdude: {exc}") from exc
    assert proc.stdout is not None
    pending = b""
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.replace(b"\r", b"\n").split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    lines.append(line)
                    emit(line)
        if pending.strip():
            line = pending.decode("utf-8", "replace").rstrip()
            lines.append(line)
            emit(line)
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise FirmwareError(f"avrdude did not finish within {timeout:.0f} s") from exc
    finally:
        proc.stdout.close()
    if returncode != 0:
        if progress is not None:  # its output was shown as it came: do not repeat it
            raise FirmwareError(f"avrdude failed (exit {returncode}) flashing {port}; see above")
        quoted = "\n".join(lines[-_OUTPUT_TAIL:])
        raise FirmwareError(f"avrdude failed (exit {returncode}) flashing {port}:\n{quoted}")
    logger.info("flashed %s to %s", hex_file, port)
