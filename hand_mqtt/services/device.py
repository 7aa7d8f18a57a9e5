"""The device service: the one process that owns a hand's serial port.

It follows the hand's retained desired ``state`` and pushes it to the firmware with at most one
frame in flight; a newer state replaces any not-yet-sent one, so the firmware always converges on
the latest and a burst of commands costs a handful of frames. What the firmware acknowledges is
published as the retained ``reported`` topic. When the port vanishes it backs off, reopens, shakes
hands again and pushes the current state.

Threads: MQTT handlers run on the client's network thread and may write a frame at once (lowest
latency); a link thread reads the port, handles replies, retransmits, sends heartbeats and
reopens the port.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError

from hand_mqtt.errors import DeviceBusyError, HandshakeError, LinkError, ProtocolError
from hand_mqtt.hardware import protocol
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.model import FINGERS, FirmwareInfo, HandState, Reported
from hand_mqtt.mqtt import Message, MqttClient, Will
from hand_mqtt.topics import HandTopics, Topics

__all__ = ["DeviceService", "DeviceSettings"]

logger = logging.getLogger("hand_mqtt")

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"


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
    backoff_max: float = 5.0
    firmware: protocol.DeviceConfig = field(
        default_factory=lambda: protocol.DeviceConfig(failsafe_timeout_ms=2000)
    )


@dataclass(slots=True)
class _InFlight:
    frame: protocol.Frame
    data: bytes
    version: int | None
    angles: tuple[int, ...] | None
    sent_at: float
    retries: int = 0


class _Rehandshake(Exception):
    """The firmware rebooted: shake hands again without closing the port."""


class DeviceService:
    """Drives one hand through a serial URL, following its desired state over MQTT."""

    def __init__(
        self,
        client: MqttClient,
        serial_url: str,
        *,
        topics: Topics | None = None,
        hand: str = "hand1",
        settings: DeviceSettings | None = None,
        takeover: bool = False,
        link_factory: Callable[[str], SerialLink] = SerialLink,
    ) -> None:
        self.client = client
        self.serial_url = serial_url
        self.hand = hand
        self.topics: HandTopics = (topics or Topics()).hand(hand)
        self.settings = settings or DeviceSettings()
        self.takeover = takeover
        self.owner = f"{client.client_id}-{uuid.uuid4().hex[:6]}"
        self.claimed = time.time()
        self._link = link_factory(serial_url)
        self._decoder = protocol.FrameDecoder()
        self._lock = threading.RLock()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._link_up = False
        self._desired: HandState | None = None
        self._acked: tuple[int, ...] | None = None
        self._in_flight: _InFlight | None = None
        self._seq = 0
        self._last_sent = 0.0
        self._firmware: FirmwareInfo | None = None
        self._reported = Reported(serial=serial_url, owner=self.owner, claimed=self.claimed)
        self._retained_availability: bytes | None = None
        self._retained_reported: Reported | None = None
        self._synced = threading.Event()
        self.taken_over = threading.Event()
        self.link_changed = threading.Event()
        self.frames_sent = 0
        self.frames_retried = 0
        self.acks = 0

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
        self.client.subscribe(sync_topic, lambda _m: self._synced.set())
        self.client.connect(connect_timeout)
        self.client.publish(sync_topic, b"sync", qos=1)
        if not self._synced.wait(connect_timeout):
            logger.warning("device: the broker did not echo our sync message; carrying on")
        self.client.unsubscribe(sync_topic)
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
        self.client.on_connect(self._announce)
        # QoS 0 on purpose: the retained state is the truth and the newest one always wins,
        # so a lost intermediate state costs nothing, and each hop saves a PUBACK.
        self.client.subscribe(self.topics.state, self._on_state, qos=0)
        self._announce()
        self._running.set()
        self._thread = threading.Thread(target=self._run_link, name="hand-mqtt-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop driving the hand, say ``offline`` and disconnect."""
        self._running.clear()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._link.close()
        if self.client.connected and not self.taken_over.is_set():
            self._set_reported(link="down")
            try:
                self.client.publish(self.topics.availability, OFFLINE, retain=True, wait=2.0)
            except Exception:
                logger.warning("device: could not publish offline before stopping")
        self.client.stop()

    @property
    def link_up(self) -> bool:
        return self._link_up

    @property
    def reported(self) -> Reported:
        return self._reported

    # -- MQTT handlers (network thread) ----------------------------------------------------

    def _announce(self) -> None:
        if self.taken_over.is_set():
            return
        self.client.publish(self.topics.availability, ONLINE, retain=True)
        self.client.publish(self.topics.reported, self._reported.model_dump_json(), retain=True)

    def _on_availability(self, message: Message) -> None:
        self._retained_availability = message.payload

    def _on_reported(self, message: Message) -> None:
        try:
            reported = Reported.model_validate_json(message.payload)
        except ValidationError:
            return
        if not self._running.is_set():
            self._retained_reported = reported
            return
        if (
            reported.owner not in (None, self.owner)
            and (reported.claimed or 0.0) > self.claimed
            and not self.taken_over.is_set()
        ):
            logger.warning(
                "device: %s was taken over by %s; stepping down", self.topics.root, reported.owner
            )
            self.taken_over.set()
            self._running.clear()

    def _on_state(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            state = HandState.model_validate_json(message.payload)
        except ValidationError:
            logger.warning("device: ignoring an unreadable state on %s", message.topic)
            return
        with self._lock:
            # The arbiter is the only writer and MQTT keeps its order: the latest one wins,
            # even with a lower version (an arbiter that started afresh counts from 0).
            self._desired = state
            if self._in_flight is None and self._link_up:
                self._push_locked()

    # -- frames --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send_locked(
        self, frame: protocol.Frame, version: int | None, angles: tuple[int, ...] | None
    ) -> None:
        data = frame.encode()
        self._in_flight = _InFlight(frame, data, version, angles, time.monotonic())
        self._last_sent = time.monotonic()
        self.frames_sent += 1
        try:
            self._link.write(data)
        except LinkError as exc:
            logger.warning("device: %s", exc)
            self._link_up = False

    def _push_locked(self) -> None:
        """Send the desired angles if the firmware does not have them yet."""
        desired = self._desired
        if desired is None or self._in_flight is not None:
            return
        angles = desired.angles
        if self._acked == angles:
            if self._reported.version != desired.version:
                self._set_reported(version=desired.version)
            return
        changed = {
            i: angle
            for i, angle in enumerate(angles)
            if self._acked is None or self._acked[i] != angle
        }
        seq = self._next_seq()
        frame = (
            protocol.set_some(seq, changed)
            if self._acked is not None and len(changed) <= 3
            else protocol.set_all(seq, angles)
        )
        self._send_locked(frame, desired.version, angles)

    def _set_reported(self, **changes: object) -> None:
        self._reported = self._reported.model_copy(update=changes)
        if self.taken_over.is_set():
            return
        self.client.publish(self.topics.reported, self._reported.model_dump_json(), retain=True)

    # -- link thread ---------------------------------------------------------------------

    def _run_link(self) -> None:
        backoff = self.settings.backoff_initial
        while self._running.is_set():
            try:
                self._link.open()
                logger.info("device: opened %s", self.serial_url)
                while self._running.is_set():
                    try:
                        self._handshake()
                        backoff = self.settings.backoff_initial
                        self._serve()
                    except _Rehandshake:
                        logger.warning("device: the firmware restarted; shaking hands again")
                        continue
            except LinkError as exc:
                if self._running.is_set():
                    logger.warning("device: %s; retrying in %.1f s", exc, backoff)
            finally:
                self._link.close()
                self._link_down()
            if self._running.wait(0) and not self.taken_over.is_set():
                deadline = time.monotonic() + backoff
                while self._running.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
                backoff = min(backoff * 2, self.settings.backoff_max)

    def _link_down(self) -> None:
        with self._lock:
            was_up = self._link_up
            self._link_up = False
            self._in_flight = None
            self._acked = None
        if was_up:
            self.link_changed.set()
            if self.client.connected:
                self._set_reported(link="down")

    def _read_replies(self) -> list[protocol.Frame]:
        data = self._link.read()
        return self._decoder.feed(data) if data else []

    def _handshake(self) -> None:
        self._decoder.reset()
        deadline = time.monotonic() + self.settings.hello_timeout
        hello: protocol.Hello | None = None
        next_request = 0.0
        while hello is None:
            now = time.monotonic()
            if now > deadline:
                raise HandshakeError(f"no HELLO from the firmware on {self.serial_url}")
            if not self._running.is_set():
                raise LinkError("stopping")
            if now >= next_request:
                self._link.write(protocol.hello_request(self._next_seq()).encode())
                next_request = now + 0.5
            for frame in self._read_replies():
                reply = self._parse(frame)
                if isinstance(reply, protocol.Hello):
                    hello = reply
        if hello.protocol != protocol.PROTOCOL_VERSION or hello.finger_count != len(FINGERS):
            raise HandshakeError(
                f"the firmware speaks protocol {hello.protocol} with {hello.finger_count} "
                f"fingers; this service needs protocol {protocol.PROTOCOL_VERSION} with 5"
            )
        self._firmware = FirmwareInfo(
            version=".".join(str(part) for part in hello.firmware),
            protocol=hello.protocol,
            fingers=hello.finger_count,
        )
        # Configure, and wait for its ACK, before any state goes out.
        configure = protocol.configure(self._next_seq(), self.settings.firmware)
        for _attempt in range(self.settings.max_retries + 1):
            self._link.write(configure.encode())
            answer_by = time.monotonic() + self.settings.ack_timeout * 2
            while time.monotonic() < answer_by:
                for frame in self._read_replies():
                    reply = self._parse(frame)
                    if isinstance(reply, protocol.Ack) and reply.seq == configure.seq:
                        self._on_link_up(reply)
                        return
                    if isinstance(reply, protocol.Nack) and reply.seq == configure.seq:
                        raise HandshakeError(f"the firmware refused our configuration: {reply}")
        raise HandshakeError("the firmware did not acknowledge its configuration")

    def _on_link_up(self, ack: protocol.Ack) -> None:
        logger.info("device: firmware %s ready on %s", self._firmware, self.serial_url)
        with self._lock:
            self._link_up = True
            self._acked = None  # push everything once after a (re)connect
            self._in_flight = None
            self._set_reported(
                link="up",
                firmware=self._firmware,
                failsafe=bool(ack.status & protocol.STATUS_FAILSAFE),
            )
            self._push_locked()
        self.link_changed.set()

    def _parse(self, frame: protocol.Frame) -> object:
        try:
            return protocol.parse_reply(frame)
        except ProtocolError as exc:
            logger.warning("device: ignoring a bad reply: %s", exc)
            return None

    def _serve(self) -> None:
        heartbeat_every = self.settings.firmware.failsafe_timeout_ms / 3000.0
        while self._running.is_set():
            if not self._link_up:
                raise LinkError(f"writing to {self.serial_url} failed")
            for frame in self._read_replies():
                self._handle(self._parse(frame))
            now = time.monotonic()
            with self._lock:
                flight = self._in_flight
                if flight is not None and now - flight.sent_at > self.settings.ack_timeout:
                    if flight.retries >= self.settings.max_retries:
                        raise LinkError(f"the firmware stopped answering on {self.serial_url}")
                    flight.retries += 1
                    flight.sent_at = now
                    self.frames_retried += 1
                    self._link.write(flight.data)
                elif (
                    flight is None
                    and heartbeat_every > 0
                    and now - self._last_sent > heartbeat_every
                ):
                    self._send_locked(protocol.heartbeat(self._next_seq()), None, None)

    def _handle(self, reply: object) -> None:
        if isinstance(reply, protocol.Ack):
            with self._lock:
                flight = self._in_flight
                if flight is None or reply.seq != flight.frame.seq:
                    return
                self._in_flight = None
                self.acks += 1
                self._acked = tuple(reply.angles)
                changes: dict[str, object] = dict(zip(FINGERS, reply.angles, strict=True))
                changes["failsafe"] = bool(reply.status & protocol.STATUS_FAILSAFE)
                changes["moving"] = bool(reply.status & protocol.STATUS_MOVING)
                if flight.version is not None:
                    changes["version"] = flight.version
                current = self._reported.model_dump()
                if any(current.get(key) != value for key, value in changes.items()):
                    self._set_reported(**changes)
                self._push_locked()
        elif isinstance(reply, protocol.Nack):
            with self._lock:
                flight = self._in_flight
                if flight is None or reply.seq != flight.frame.seq:
                    return
                self._in_flight = None
                logger.error("device: the firmware refused frame %d: %s", reply.seq, reply.reason)
                # Do not resend what was refused; the next state is tried afresh.
        elif isinstance(reply, protocol.Failsafe):
            logger.warning("device: the firmware's failsafe fired")
            with self._lock:
                self._acked = tuple(reply.angles)
                self._set_reported(**dict(zip(FINGERS, reply.angles, strict=True)), failsafe=True)
                self._push_locked()
        elif isinstance(reply, protocol.Hello) and reply.seq == 0:
            raise _Rehandshake
