"""The hand-driver seam: what the device service needs from a hand's firmware.

The device service speaks no firmware protocol itself. It owns one :class:`HandDriver` and uses
it from exactly one thread, its link thread, which is therefore the only writer of the serial
port. A driver:

- ``open``\\s the port; ``wait`` is how it waits for input from then on (see below);
- ``handshake``\\s: finds out what answers on the port (:class:`HandInfo`: firmware name, version
  and protocol, and what it can do), configures it, and raises
  :class:`~hand_mqtt.errors.HandshakeError` with a sentence when it is not what it expects;
- ``apply``\\s the latest desired :class:`Target`: the five angles, the fingers to leave limp
  (relaxed, when ``HandInfo.relax`` says the driver can) and how long a move should take (when
  ``HandInfo.timed_moves`` says so). Latest wins: a driver that is still waiting for the hand to
  confirm something only remembers the target and sends it when the line is free;
- ``service``\\s the link: reads answers, retransmits, keeps the link alive, all of it without
  waiting, whenever input arrives and by ``deadline`` at the latest;
- reports what the hand ``confirmed`` (:class:`Confirmed`): only what the firmware itself said
  it applied, never what was merely sent;
- ``close``\\s the port.

Drivers never sleep on their own. The link thread waits for the port's :meth:`~HandDriver.fileno`
and for news from MQTT at once (a new desired state, the service stopping); a driver that must
block, as a handshake does, calls the ``wait`` function it was given, which returns early when
input arrives or the thread has news, and raises :class:`~hand_mqtt.errors.LinkError` when the
service is stopping. So a stop is never held up by a driver, and the MQTT side never waits for
the port.

Implementations: :class:`~hand_mqtt.hardware.framed.FramedDriver` for the bundled firmware's
framed protocol (the firmware confirms with ACK frames), and
:class:`~hand_mqtt.hardware.firmata.FirmataDriver` for StandardFirmata (which acknowledges
nothing: the driver confirms by reading the pin state back). The seam is the same.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from hand_mqtt.model import Angles, FirmwareInfo

__all__ = ["Confirmed", "HandDriver", "HandInfo", "Target", "Wait"]

Wait = Callable[[float], None]
"""Wait up to this many seconds for input on the driver's port. Returns early when input
arrives or the link thread has news; raises :class:`~hand_mqtt.errors.LinkError` when the
device service is stopping."""


@dataclass(frozen=True, slots=True)
class HandInfo:
    """What a handshake found on the port."""

    firmware: FirmwareInfo
    """Name, version and protocol, as published in ``reported.firmware``."""
    failsafe: bool
    """The firmware has a failsafe of its own: it acts when the host goes silent."""
    relax: bool = False
    """The driver can leave fingers limp (:attr:`Target.relaxed`)."""
    timed_moves: bool = False
    """The driver can bring every finger to its target at the same time
    (:attr:`Target.duration_ms`)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A desired state, as far as a driver acts on it."""

    angles: Angles
    """The five angles, in finger order."""
    relaxed: frozenset[int] = frozenset()
    """Fingers (0 index … 4 thumb) to leave without pulses; only if ``HandInfo.relax``."""
    duration_ms: int = 0
    """Bring every finger that moves to its angle at the same time, this long after the move
    starts (0: each as fast as it goes). A wish: a driver without ``HandInfo.timed_moves``
    moves at once."""


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What the hand last confirmed. A new object whenever anything in it changes."""

    angles: Angles | None = None
    """The five angles the firmware says it applied (None: nothing confirmed yet on this
    connection)."""
    moving: bool = False
    """A servo has not reached its target yet."""
    failsafe: bool = False
    """The firmware's failsafe has acted and no new angles have reached it since."""
    mismatch: bool = False
    """The firmware confirmed other angles than it was last sent; the driver sends them again,
    backing off."""
    relaxed: frozenset[int] = frozenset()
    """Fingers the firmware says get no pulses (relaxed, or never driven since it started)."""


class HandDriver(abc.ABC):
    """One hand's firmware behind one serial port, used by one thread only."""

    url: str
    """The serial port or URL, for messages and for ``reported.serial``."""

    @abc.abstractmethod
    def open(self, wait: Wait) -> None:
        """Open the port (raises :class:`~hand_mqtt.errors.LinkError`); forget the last
        session. ``wait`` is how every later call waits for input."""

    @abc.abstractmethod
    def handshake(self) -> HandInfo:
        """Find out what firmware answers and prepare it to take angles; blocks (through
        ``wait``) for at most the driver's own timeouts. Sends the desired angles, if any were
        applied, as soon as the firmware is ready."""

    @property
    @abc.abstractmethod
    def info(self) -> HandInfo | None:
        """The last handshake's result; None before it (and while a new one runs)."""

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """A descriptor that turns readable when input arrives, or None (then the link thread
        polls :meth:`service` often)."""

    @abc.abstractmethod
    def apply(self, target: Target) -> None:
        """Drive the hand to ``target``, the latest desired state, as soon as the line is free.
        Never waits; may write at once. Raises :class:`ValueError` for a part of the target
        that ``info`` does not offer."""

    @abc.abstractmethod
    def service(self) -> None:
        """Do what is due: read what arrived, retransmit, keep the link alive. Call it when
        input arrives and by :attr:`deadline`. Raises :class:`~hand_mqtt.errors.LinkError` when
        the link is lost (the port failed, the firmware stopped answering)."""

    @property
    @abc.abstractmethod
    def deadline(self) -> float:
        """The ``time.monotonic()`` by which :meth:`service` must run again even if no input
        arrives (``math.inf``: only on input)."""

    @property
    @abc.abstractmethod
    def confirmed(self) -> Confirmed:
        """What the hand last confirmed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the port. Safe to call at any time, also twice."""
