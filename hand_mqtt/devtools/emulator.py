"""Run the real firmware ELF in simavr behind a pseudo-terminal, and read its servo pulses.

:class:`EmulatedHand` starts the simavr runner ``hand-sim`` (built on demand, see
:func:`hand_mqtt.devtools.firmware.build_dir`) with the firmware ELF. The emulated Uno's UART0
appears as a pty at :attr:`EmulatedHand.path`, which any serial client opens like a real board
(the device service, pyserial, ``picocom``). By default it behaves like an Uno's DTR auto-reset:
the MCU starts, and restarts, when a client opens the port, so the client sees the boot HELLO.

With a VCD file the runner records the five servo pins; :func:`servo_pulses` turns the trace
into pulses (start time, width) per finger and :func:`last_pulse_widths` gives the latest width
per finger. Pulse times are emulated time, exact to the CPU cycle.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self

from hand_mqtt.devtools import firmware
from hand_mqtt.errors import FirmwareError

__all__ = [
    "FINGER_PINS",
    "SERVO_MAX_US",
    "SERVO_MIN_US",
    "EmulatedHand",
    "Pulse",
    "TraceMark",
    "angle_to_pulse_us",
    "last_pulse_widths",
    "pin_levels",
    "pulse_us_to_angle",
    "servo_pulses",
    "trace_marks",
    "trace_time",
]

logger = logging.getLogger("hand_mqtt")

FINGER_PINS: Final[dict[str, str]] = {
    "PB3": "index",  # D11
    "PB2": "middle",  # D10
    "PB1": "ring",  # D9
    "PD6": "pinky",  # D6
    "PD5": "thumb",  # D5
}
"""The pins the runner traces (AVR port names) and the finger each drives by default."""
SERVO_MIN_US: Final = 544
"""Pulse width for 0 degrees."""
SERVO_MAX_US: Final = 2400
"""Pulse width for 180 degrees."""

_START_TIMEOUT_S: Final = 15.0
_STOP_TIMEOUT_S: Final = 5.0
_PTY_PREFIX: Final = "PTY "
_TIMESCALE_UNITS: Final[dict[str, float]] = {
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "ns": 1e-9,
    "ps": 1e-12,
    "fs": 1e-15,
}


class TraceMark(NamedTuple):
    """What the runner stamps into the trace at every flush."""

    emulated_s: float
    """Emulated time."""
    wall_s: float
    """``time.monotonic()`` at that emulated time."""
    received: int
    """Bytes the firmware's UART has taken in so far."""
    sent: int
    """Bytes it has sent so far."""


class Pulse(NamedTuple):
    """One servo pulse: when its rising edge came and how long it lasted."""

    start_s: float
    width_us: float


def angle_to_pulse_us(angle: float) -> float:
    """The pulse width the firmware uses for ``angle`` degrees."""
    return SERVO_MIN_US + (SERVO_MAX_US - SERVO_MIN_US) * angle / 180.0


def pulse_us_to_angle(width_us: float) -> float:
    """The angle a pulse width stands for."""
    return (width_us - SERVO_MIN_US) * 180.0 / (SERVO_MAX_US - SERVO_MIN_US)


def _timescale_seconds(text: str) -> float:
    compact = text.replace(" ", "")
    digits = "".join(ch for ch in compact if ch.isdigit())
    unit = compact[len(digits) :]
    if not digits or unit not in _TIMESCALE_UNITS:
        raise FirmwareError(f"unsupported VCD timescale {text!r}")
    return int(digits) * _TIMESCALE_UNITS[unit]


def servo_pulses(vcd_path: Path | str, *, by_finger: bool = True) -> dict[str, list[Pulse]]:
    """Every complete high pulse per traced signal in a VCD file written by the runner.

    Keys are finger names (``index`` … ``thumb``) for the runner's servo pins, or the signal
    names as found in the file with ``by_finger=False`` (or for signals that are not servo
    pins). A file still being written is fine: an unfinished last line is ignored.
    """
    try:
        text = Path(vcd_path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise FirmwareError(f"cannot read the VCD trace {vcd_path}: {exc}") from exc
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    tokens = text.split()
    names: dict[str, str] = {}
    scale = 1e-9
    index = 0
    # Header: $keyword ... $end blocks until $enddefinitions.
    while index < len(tokens):
        word = tokens[index]
        if word == "$enddefinitions":
            index = tokens.index("$end", index) + 1
            break
        if word.startswith("$"):
            end = tokens.index("$end", index) if "$end" in tokens[index:] else len(tokens)
            body = tokens[index + 1 : end]
            if word == "$timescale" and body:
                scale = _timescale_seconds("".join(body))
            elif word == "$var" and len(body) >= 4:
                names[body[2]] = body[3]
            index = end + 1
            continue
        index += 1

    def key(code: str) -> str:
        name = names.get(code, code)
        return FINGER_PINS.get(name, name) if by_finger else name

    pulses: dict[str, list[Pulse]] = {key(code): [] for code in names}
    rising: dict[str, int] = {}
    now = 0
    for token in tokens[index:]:
        first = token[0]
        if first == "#":
            try:
                now = int(token[1:])
            except ValueError:
                continue
        elif first in "01xXzZ" and len(token) > 1:
            code = token[1:]
            if code not in names:
                continue
            if first == "1":
                rising.setdefault(code, now)
            else:
                started = rising.pop(code, None)
                if started is not None and first == "0":
                    pulses[key(code)].append(
                        Pulse(start_s=started * scale, width_us=(now - started) * scale * 1e6)
                    )
    return pulses


def pin_levels(vcd_path: Path | str) -> dict[str, int | None]:
    """Each finger's pin level (0 or 1) at the end of the trace so far (None: never set)."""
    try:
        text = Path(vcd_path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise FirmwareError(f"cannot read the VCD trace {vcd_path}: {exc}") from exc
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    head, _sep, body = text.partition("$enddefinitions")
    codes: dict[str, str] = {}
    for line in head.splitlines():
        words = line.split()
        if len(words) >= 5 and words[0] == "$var":
            codes[words[3]] = FINGER_PINS.get(words[4], words[4])
    levels: dict[str, int | None] = dict.fromkeys(codes.values())
    for token in body.split():
        if token[0] in "01" and token[1:] in codes:
            levels[codes[token[1:]]] = int(token[0])
    return levels


def trace_marks(vcd_path: Path | str) -> list[TraceMark]:
    """Every mark the runner stamped into the trace (one per flush), in order."""
    try:
        text = Path(vcd_path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise FirmwareError(f"cannot read the VCD trace {vcd_path}: {exc}") from exc
    head, _sep, body = text.partition("$enddefinitions")
    scale = 1e-9
    for block in head.split("$end"):
        words = block.split()
        if words and words[0] == "$timescale":
            scale = _timescale_seconds("".join(words[1:]))
    marks: list[TraceMark] = []
    now = 0
    words = body[: body.rfind("\n") + 1].split()
    for index, word in enumerate(words):
        if word.startswith("#") and word[1:].isdigit():
            now = int(word[1:])
        elif word == "$comment" and words[index + 1 : index + 2] == ["wall_ns"]:
            fields = words[index + 1 : index + 8]
            if len(fields) == 7 and fields[6] == "$end":
                values = dict(zip(fields[0:6:2], fields[1:6:2], strict=True))
                marks.append(
                    TraceMark(
                        emulated_s=now * scale,
                        wall_s=int(values["wall_ns"]) / 1e9,
                        received=int(values["received"]),
                        sent=int(values["sent"]),
                    )
                )
    return marks


def trace_time(vcd_path: Path | str) -> float:
    """How far the trace goes, in emulated seconds: the runner stamps the time at every flush
    (every 20 ms of emulated time), so this moves on even while no pin does."""
    try:
        text = Path(vcd_path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise FirmwareError(f"cannot read the VCD trace {vcd_path}: {exc}") from exc
    head, _sep, body = text.partition("$enddefinitions")
    scale = 1e-9
    for block in head.split("$end"):
        words = block.split()
        if words and words[0] == "$timescale":
            scale = _timescale_seconds("".join(words[1:]))
    complete = body[: body.rfind("\n") + 1]
    stamps = [token for token in complete.split() if token.startswith("#")]
    for stamp in reversed(stamps):
        try:
            return int(stamp[1:]) * scale
        except ValueError:
            continue
    return 0.0


def last_pulse_widths(vcd_path: Path | str) -> dict[str, float]:
    """The width in microseconds of the latest complete pulse of each finger that has one."""
    return {name: found[-1].width_us for name, found in servo_pulses(vcd_path).items() if found}


class EmulatedHand:
    """The firmware running in simavr, its UART on a pty. Use as a context manager.

    ``elf`` defaults to building ``hand.elf`` (see :func:`firmware.build`); the runner is built
    when missing. ``realtime`` throttles emulation to wall-clock time (needed whenever timing
    matters: failsafe timeouts, motion speed, the 50 ms stale-frame rule). ``vcd`` records the
    servo pins to that file (``True``: a temporary file, see :attr:`vcd_path`, deleted by
    :meth:`stop`).
    ``reset_on_open`` makes the MCU start, and restart, when a client opens the pty.
    """

    def __init__(
        self,
        elf: Path | str | None = None,
        *,
        realtime: bool = True,
        vcd: Path | str | bool | None = None,
        reset_on_open: bool = True,
        runner: Path | str | None = None,
        start_timeout: float = _START_TIMEOUT_S,
    ) -> None:
        self._elf = Path(elf) if elf is not None else None
        self._runner = Path(runner) if runner is not None else None
        self._realtime = realtime
        self._vcd_option = vcd
        self._reset_on_open = reset_on_open
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._path: str | None = None
        self._vcd_path: Path | None = None
        self._log_path: Path | None = None

    # -- public ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The pty slave to open as the serial port."""
        if self._path is None:
            raise FirmwareError("the emulated hand is not running")
        return self._path

    @property
    def vcd_path(self) -> Path | None:
        """The VCD trace being written, if any."""
        return self._vcd_path

    @property
    def pid(self) -> int:
        """The runner's process id."""
        if self._proc is None:
            raise FirmwareError("the emulated hand is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the runner process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Build what is missing, start the runner and wait for its pty."""
        if self._proc is not None:
            raise FirmwareError("the emulated hand is already running")
        elf = self._elf if self._elf is not None else firmware.build().elf
        if not elf.is_file():
            raise FirmwareError(f"the firmware ELF {elf} does not exist")
        runner = self._runner if self._runner is not None else self._default_runner()
        self._tmp = Path(tempfile.mkdtemp(prefix="hand-sim-"))
        self._log_path = self._tmp / "runner.log"
        command = [str(runner)]
        if self._realtime:
            command.append("--realtime")
        if self._reset_on_open:
            command.append("--reset-on-open")
        if self._vcd_option is True:
            self._vcd_path = self._tmp / "servos.vcd"
        elif self._vcd_option:
            self._vcd_path = Path(self._vcd_option).resolve()
        if self._vcd_path is not None:
            command += ["--vcd", str(self._vcd_path)]
        command.append(str(elf))
        logger.debug("starting %s", " ".join(command))
        try:
            with self._log_path.open("wb") as log:
                self._proc = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
                )
        except OSError as exc:
            self._cleanup()
            raise FirmwareError(f"could not start the simavr runner {runner}: {exc}") from exc
        try:
            self._path = self._wait_for_pty()
        except BaseException:
            self.stop()
            raise
        logger.info("emulated hand on %s (pid %d)", self._path, self._proc.pid)

    def stop(self) -> None:
        """Stop the runner (SIGTERM to its own pid, then SIGKILL) and wait for it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    logger.warning("simavr runner %d ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._path = None
        self._cleanup()

    def runner_log(self) -> str:
        """What the runner wrote to stderr so far."""
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def pulses(self) -> dict[str, list[Pulse]]:
        """:func:`servo_pulses` of this hand's VCD trace."""
        return servo_pulses(self._need_vcd())

    def last_pulse_widths(self) -> dict[str, float]:
        """:func:`last_pulse_widths` of this hand's VCD trace."""
        return last_pulse_widths(self._need_vcd())

    def trace_time(self) -> float:
        """:func:`trace_time` of this hand's VCD trace."""
        return trace_time(self._need_vcd())

    def trace_marks(self) -> list[TraceMark]:
        """:func:`trace_marks` of this hand's VCD trace."""
        return trace_marks(self._need_vcd())

    def pin_levels(self) -> dict[str, int | None]:
        """:func:`pin_levels` of this hand's VCD trace."""
        return pin_levels(self._need_vcd())

    def reset(self) -> None:
        """Reset the emulated MCU now, as its reset button would: the firmware starts again
        while the client keeps the port open and is told nothing."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise FirmwareError("the emulated hand is not running")
        proc.send_signal(signal.SIGUSR1)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _default_runner() -> Path:
        built = firmware.build_dir() / "sim" / "hand-sim"
        source = firmware.firmware_dir() / "sim" / "hand_sim.c"
        if built.is_file() and built.stat().st_mtime >= source.stat().st_mtime:
            return built
        return firmware.build_simulator()

    def _need_vcd(self) -> Path:
        if self._vcd_path is None:
            raise FirmwareError("this emulated hand was started without a VCD trace")
        return self._vcd_path

    def _wait_for_pty(self) -> str:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        buffered = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FirmwareError(
                        f"the simavr runner printed no PTY line within {self._start_timeout:.0f} s"
                        f"{self._log_excerpt()}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    code = proc.wait()
                    raise FirmwareError(
                        f"the simavr runner exited ({code}) before opening its pty"
                        f"{self._log_excerpt()}"
                    )
                buffered += chunk
                for raw in buffered.split(b"\n")[:-1]:
                    line = raw.decode("utf-8", "replace").strip()
                    if line.startswith(_PTY_PREFIX):
                        return line[len(_PTY_PREFIX) :].strip()

    def _log_excerpt(self) -> str:
        text = self.runner_log().strip()
        return f":\n{text[-2000:]}" if text else ""

    def _cleanup(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is None:
            return
        if self._vcd_path is not None and self._vcd_path.parent == tmp:
            self._vcd_path = None  # the temporary trace goes with the folder
        shutil.rmtree(tmp, ignore_errors=True)
