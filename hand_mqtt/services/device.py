"""The device service: the one process that owns a hand's serial port.

It follows the hand's retained desired ``state`` and drives the hand to it through a hand driver
(the seam between MQTT and any firmware, :mod:`hand_mqtt.hardware.driver`; the bundled
firmware's is :class:`~hand_mqtt.hardware.framed.FramedDriver`). What the hand confirms is
published as the retained ``reported`` topic. When the port vanishes it backs off, reopens,
shakes hands again and drives the hand to the current state.

Threads: the MQTT network thread runs the handlers below; they only leave the latest desired
state with the link thread (:class:`~hand_mqtt.services.device_link.DeviceLink`) and never
wait for the port. The link thread owns the driver, so it is the only writer of the port, and
the only thread that builds ``reported``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from pydantic import ValidationError

from hand_mqtt.errors import DeviceBusyError
from hand_mqtt.hardware import protocol
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.driver import HandDriver
from hand_mqtt.hardware.firmata import FIRMATA_BAUDRATE, FirmataDriver
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import DEFAULT_BAUDRATE, SerialLink
from hand_mqtt.model import DEFAULT_PINS, FINGERS, HandState, Reported
from hand_mqtt.mqtt import Message, MqttClient, Will
from hand_mqtt.services.device_link import DeviceLink
from hand_mqtt.topics import OFFLINE, ONLINE, HandTopics, Topics

__all__ = ["DeviceService", "DeviceSettings", "firmata_driver", "framed_driver", "hand_driver"]

logger = logging.getLogger("hand_mqtt")


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """How the device service drives its link."""

    ack_timeout: float = 0.25
    """Seconds to wait for an ACK before sending the frame again."""
    max_retries: int = 4
    """Retransmissions before the link is declared dead and reopened."""
    hello_timeout: float = 6.0
    """Seconds to wait for HELLO after opening (an Uno resets when its port opens)."""
    backoff_initial: float = 0.2
    """First wait before reopening a lost port, and before resending angles the firmware
    did not take; doubles up to :attr:`backoff_max`."""
    backoff_max: float = 5.0
    firmware: protocol.DeviceConfig = field(
        default_factory=lambda: protocol.DeviceConfig(failsafe_timeout_ms=2000)
    )
    baudrate: int | None = None
    """Serial speed; None: the firmware's own (115200 bundled, 57600 StandardFirmata)."""
    firmata: bool = False
    """The hand's board runs StandardFirmata instead of the bundled firmware."""
    pins: tuple[int, ...] = DEFAULT_PINS
    """StandardFirmata: the board's pin for each finger, in finger order (the bundled firmware
    has its pins built in)."""
    relax_on_exit: bool = False
    """Relax every finger when the service stops cleanly (not when another service takes the
    hand over)."""
    calibration: Calibration = field(default_factory=Calibration)
    """Each finger's map from logical angles to pulses, given to the firmware at every
    handshake (``--calibration FILE``)."""
    hold_timeout: float | None = None
    """Relax a finger that has held its target this many seconds (None: never)."""


def hand_driver(serial_url: str, settings: DeviceSettings | None = None) -> HandDriver:
    """The driver ``settings`` ask for on ``serial_url``: StandardFirmata's or the bundled
    firmware's."""
    s = settings or DeviceSettings()
    return firmata_driver(serial_url, s) if s.firmata else framed_driver(serial_url, s)


def framed_driver(serial_url: str, settings: DeviceSettings | None = None) -> FramedDriver:
    """The driver for the bundled firmware on ``serial_url``, configured by ``settings``."""
    s = settings or DeviceSettings()
    return FramedDriver(
        SerialLink(serial_url, baudrate=s.baudrate or DEFAULT_BAUDRATE),
        config=s.firmware,
        ack_timeout=s.ack_timeout,
        max_retries=s.max_retries,
        hello_timeout=s.hello_timeout,
        resend_initial=s.backoff_initial,
        resend_max=s.backoff_max,
        calibration=s.calibration,
    )


def firmata_driver(serial_url: str, settings: DeviceSettings | None = None) -> FirmataDriver:
    """The driver for StandardFirmata on ``serial_url``, configured by ``settings``."""
    s = settings or DeviceSettings(firmata=True)
    return FirmataDriver(
        SerialLink(serial_url, baudrate=s.baudrate or FIRMATA_BAUDRATE),
        pins=s.pins,
        servos=[s.calibration[finger] for finger in FINGERS],
        hello_timeout=s.hello_timeout,
        resend_initial=s.backoff_initial,
        resend_max=s.backoff_max,
    )


class DeviceService:
    """Drives one hand through a serial URL, following its desired state over MQTT.

    The hand is driven by ``driver``, by default the one ``settings`` ask for
    (:func:`hand_driver` on ``serial_url``: the bundled firmware's, or StandardFirmata's).
    """

    def __init__(
        self,
        client: MqttClient,
        serial_url: str,
        *,
        topics: Topics | None = None,
        hand: str = "hand1",
        settings: DeviceSettings | None = None,
        takeover: bool = False,
        driver: HandDriver | None = None,
    ) -> None:
        self.client = client
        self.serial_url = serial_url
        self.hand = hand
        self.topics: HandTopics = (topics or Topics()).hand(hand)
        self.settings = settings or DeviceSettings()
        self.takeover = takeover
        self.driver = driver if driver is not None else hand_driver(serial_url, self.settings)
        # Not the client id: anyone who read that could take it and knock us off the broker.
        self.owner = f"{client.name}-{uuid.uuid4().hex[:12]}"
        self.claimed = time.time()
        self._link = DeviceLink(
            self.driver,
            initial=Reported(
                serial=serial_url,
                owner=self.owner,
                claimed=self.claimed,
                takeover=takeover,
                calibration=self.settings.calibration.info,
            ),
            publish=self._publish_reported,
            backoff_initial=self.settings.backoff_initial,
            backoff_max=self.settings.backoff_max,
            hold_timeout=self.settings.hold_timeout,
        )
        self._serving = threading.Event()
        self._retained_availability: bytes | None = None
        self._retained_reported: Reported | None = None
        self.taken_over = threading.Event()
        self.busy: str | None = None
        """Why this service stopped after it started: another one was running all along."""

    # -- life cycle ----------------------------------------------------------------------

    def start(self, connect_timeout: float = 10.0) -> None:
        """Connect, make sure no other service owns the hand, then start driving it.

        Raises :class:`DeviceBusyError` when another device service is online for the hand
        and ``takeover`` is false.
        """
        self.client.set_will(Will(self.topics.availability, OFFLINE))
        sync_topic = Topics(self.topics.base).sync(self.client.client_id)
        self.client.subscribe(self.topics.availability, self._on_availability)
        self.client.subscribe(self.topics.reported, self._on_reported)
        self.client.connect(connect_timeout)
        if not self.client.wait_synced(sync_topic, connect_timeout, have_all=self._have_claims):
            logger.warning("device: the broker did not echo our sync message; carrying on")
        current = self._retained_reported
        if (
            self._retained_availability == ONLINE
            and current is not None
            and current.owner not in (None, self.owner)
            and not self.takeover
        ):
            self.client.stop()
            where = f" on {current.serial}" if current.serial else ""
            raise DeviceBusyError(
                f"another device service ({current.owner}{where}) is online for "
                f"{self.topics.root}; stop it first, or start this one with --takeover"
            )
        if self._retained_availability == ONLINE and self.takeover:
            logger.warning(
                "device: taking over %s from %s",
                self.topics.root,
                current.owner if current else "another service",
            )
        # Before the link thread runs, this thread is the only one that publishes reported.
        self.client.publish(self.topics.availability, ONLINE, retain=True)
        self._publish_reported(self._link.reported)
        self._serving.set()
        self._link.start()
        self.client.on_connect(self._on_reconnect)
        # QoS 0 on purpose: the retained state is the truth and the newest one always wins,
        # so a lost intermediate state costs nothing, and each hop saves a PUBACK.
        self.client.subscribe(self.topics.state, self._on_state, qos=0)

    def stop(self) -> None:
        """Stop driving the hand, say ``offline`` and disconnect."""
        self._serving.clear()
        self._link.stop(relax=self.settings.relax_on_exit and not self.taken_over.is_set())
        if self.client.connected and not self.taken_over.is_set():
            # The link thread has stopped: the last word on reported is this thread's.
            self._publish_reported(self._link.reported.model_copy(update={"link": "down"}))
            try:
                self.client.publish(self.topics.availability, OFFLINE, retain=True, wait=2.0)
            except Exception:
                logger.warning("device: could not publish offline before stopping")
        self.client.stop()
        self._link.close()  # no handler can post to it any more

    @property
    def link_up(self) -> bool:
        return self._link.link_up

    @property
    def reported(self) -> Reported:
        return self._link.reported

    # -- MQTT handlers (network thread): never wait for the port ---------------------------

    def _on_reconnect(self) -> None:
        if self.taken_over.is_set():
            return
        self.client.publish(self.topics.availability, ONLINE, retain=True)
        self._link.republish()

    def _publish_reported(self, reported: Reported) -> None:
        if self.taken_over.is_set():
            return
        self.client.publish(self.topics.reported, reported.model_dump_json(), retain=True)

    def _have_claims(self) -> bool:
        return self._retained_availability is not None and self._retained_reported is not None

    def _on_availability(self, message: Message) -> None:
        self._retained_availability = message.payload
        if message.payload == OFFLINE and self._serving.is_set() and not self.taken_over.is_set():
            # A service that stepped down for us says offline as it goes: we run, say so.
            self.client.publish(self.topics.availability, ONLINE, retain=True)

    def _on_reported(self, message: Message) -> None:
        try:
            reported = Reported.model_validate_json(message.payload)
        except ValidationError:
            return
        if not self._serving.is_set():
            self._retained_reported = reported
            return
        if reported.owner in (None, self.owner) or self.taken_over.is_set():
            return
        if (reported.claimed or 0.0) > self.claimed:
            if not reported.takeover:
                # Started without --takeover and without knowing of us (a clustered broker can
                # deliver our retained claim late): we run; say so, live.
                self._link.republish()
                return
            logger.warning(
                "device: %s was taken over by %s; stepping down", self.topics.root, reported.owner
            )
        elif not message.retain and not self.takeover:
            # A live word from an older owner: it ran all along, and we were not asked to take
            # the hand over (its retained claim came too late to stop us starting).
            self.busy = (
                f"another device service ({reported.owner}) is online for {self.topics.root}; "
                "stop it first, or start this one with --takeover"
            )
            logger.error("device: %s; stepping down", self.busy)
        else:
            return  # an older claim, retained: its service is gone, or stands down for us
        self.taken_over.set()
        self._link.step_down()
        # Never leave "online" behind: the owner that stays says it again when it sees this,
        # and a claim with no service behind it leaves the truth, offline.
        self.client.publish(self.topics.availability, OFFLINE, retain=True)

    def _on_state(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            state = HandState.model_validate_json(message.payload)
        except ValidationError:
            logger.warning("device: ignoring an unreadable state on %s", message.topic)
            return
        self._link.want(state)
