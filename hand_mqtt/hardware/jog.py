"""Move one finger's servo by servo degrees, straight through the firmware's hand driver.

:class:`ServoJog` is what ``hand-mqtt calibrate`` stands on: it opens the serial port itself
(exclusively: the device service must not be running), shakes hands with the firmware (the
bundled one, or StandardFirmata with ``firmata``), and
drives only the finger being calibrated, by servo degrees with that finger's pulse range, so
the servo can be brought to the finger's real stops whatever the calibration says now. The
other fingers stay limp. Everything happens on the caller's thread; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self

from hand_mqtt.errors import LinkError
from hand_mqtt.hardware import protocol
from hand_mqtt.hardware.calibration import Calibration, FingerCalibration
from hand_mqtt.hardware.driver import Confirmed, HandDriver, Target
from hand_mqtt.hardware.firmata import FIRMATA_BAUDRATE, FirmataDriver
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import DEFAULT_BAUDRATE, SerialLink
from hand_mqtt.model import DEFAULT_PINS, FINGERS

__all__ = ["ServoJog"]

_CONFIRM_TIMEOUT_S: Final = 3.0
_SERVO_RANGE: Final = 180


class ServoJog:
    """One finger's servo under direct control (see the module). Use as a context manager."""

    def __init__(
        self,
        url: str,
        finger: str,
        *,
        pulse_min_us: int = 544,
        pulse_max_us: int = 2400,
        baudrate: int | None = None,
        hello_timeout: float = 6.0,
        firmata: bool = False,
        pins: Sequence[int] = DEFAULT_PINS,
    ) -> None:
        self.finger = FINGERS.index(finger)
        # Identity from logical to servo degrees: the angles sent are servo degrees.
        calibration = Calibration(
            {finger: FingerCalibration(0, _SERVO_RANGE, pulse_min_us, pulse_max_us)}
        )
        self.driver: HandDriver
        if firmata:
            self.driver = FirmataDriver(
                SerialLink(url, baudrate=baudrate or FIRMATA_BAUDRATE),
                pins=pins,
                servos=[calibration[name] for name in FINGERS],
                hello_timeout=hello_timeout,
            )
        else:
            self.driver = FramedDriver(
                SerialLink(url, baudrate=baudrate or DEFAULT_BAUDRATE),
                config=protocol.DeviceConfig(failsafe_timeout_ms=0),  # no failsafe while jogging
                calibration=calibration,
                hello_timeout=hello_timeout,
            )
        self.degrees: int | None = None
        """Where the servo was last confirmed, in servo degrees."""

    def open(self) -> None:
        """Open the port and shake hands; raises :class:`LinkError` with a sentence."""
        self.driver.open(self._wait)
        try:
            self.driver.handshake()
        except BaseException:
            self.driver.close()
            raise

    def move(self, degrees: int) -> int:
        """Drive the servo to ``degrees`` (clamped to 0-180); returns them once confirmed."""
        degrees = max(0, min(_SERVO_RANGE, degrees))
        angles = [90] * len(FINGERS)
        angles[self.finger] = degrees
        others = frozenset(range(len(FINGERS))) - {self.finger}
        self.driver.apply(Target((angles[0], angles[1], angles[2], angles[3], angles[4]), others))
        self._until(
            lambda c: (
                c.angles is not None
                and c.angles[self.finger] == degrees
                and self.finger not in c.relaxed
            ),
            f"the {FINGERS[self.finger]} at {degrees} degrees",
        )
        self.degrees = degrees
        return degrees

    def relax(self) -> None:
        """Stop driving the finger (and every other)."""
        angles = self.driver.confirmed.angles or (90, 90, 90, 90, 90)
        self.driver.apply(Target(angles, frozenset(range(len(FINGERS)))))
        self._until(lambda c: len(c.relaxed) == len(FINGERS), "every finger relaxed")

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # Leave the finger limp however the session ended, if the link still works.
            with contextlib.suppress(LinkError):
                self.relax()
        finally:
            self.close()

    def _until(self, done: Callable[[Confirmed], bool], what: str) -> None:
        deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        while not done(self.driver.confirmed):
            now = time.monotonic()
            if now >= deadline:
                raise LinkError(f"the firmware on {self.driver.url} did not confirm {what}")
            self.driver.service()
            self._wait(min(self.driver.deadline, deadline) - time.monotonic())

    def _wait(self, timeout: float) -> None:
        timeout = max(0.0, min(timeout, 0.05))
        fd = self.driver.fileno()
        if fd is None:
            time.sleep(timeout)
            return
        select.select([fd], [], [], timeout)
