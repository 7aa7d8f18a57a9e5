"""The whole system in one process: broker, arbiter, device service, a hand and the web page.

``hand-mqtt up`` runs this; tests and benchmarks use it too. Each part can be swapped: an
external broker instead of the embedded one, a real serial port (or the firmware in the emulator)
instead of the simulated hand. The web page is served when the browser can reach the broker over
websockets: the embedded broker's own listener, or an external broker's ``broker_ws``.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hand_mqtt.broker.embedded import EmbeddedBroker
from hand_mqtt.devtools.simulated_port import PtyHand
from hand_mqtt.errors import ConfigError
from hand_mqtt.model import PoseBook
from hand_mqtt.mqtt import SYNC_GRACE_S, BrokerUrl, MqttClient
from hand_mqtt.services.arbiter import Arbiter
from hand_mqtt.services.device import DeviceService, DeviceSettings
from hand_mqtt.topics import Topics

if TYPE_CHECKING:
    from hand_mqtt.clients.web import WebServer

__all__ = ["Stack", "StackSettings"]

logger = logging.getLogger("hand_mqtt")


class _Hand(Protocol):
    @property
    def path(self) -> str: ...
    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StackSettings:
    broker: str | None = None
    """An external broker URL; None runs the embedded broker."""
    host: str = "127.0.0.1"
    port: int = 1883
    serial: str | None = None
    """A real serial port or URL; None runs a hand (simulated or emulated)."""
    emulate: bool = False
    """Run the firmware in the emulator instead of the Python simulator: the bundled one, or
    the real StandardFirmata when ``device.firmata`` is set."""
    base: str = "hand"
    hand: str = "hand1"
    poses: PoseBook = field(default_factory=PoseBook)
    takeover: bool = False
    device: DeviceSettings = field(default_factory=DeviceSettings)
    websockets_port: int | None = None
    """The embedded broker's MQTT-over-websockets listener (0: any free port; None: none)."""
    web_port: int | None = None
    """The web page's port, on ``host`` (0: any free port; None: no page)."""
    broker_ws: str | None = None
    """With an external broker: its websockets URL as the browser reaches it, for the page."""


class Stack:
    """Starts the parts in order and stops them in reverse."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.broker: EmbeddedBroker | None = None
        self.hand: _Hand | None = None
        self.arbiter: Arbiter | None = None
        self.device: DeviceService | None = None
        self.web: WebServer | None = None
        self._stack = ExitStack()
        self.url = ""
        self.ws_url: str | None = None
        self.serial_url = ""

    def start(self) -> None:
        s = self.settings
        if s.device.firmata and s.serial is None and not s.emulate:
            raise ConfigError(
                "--firmata needs --serial PORT or --emulate: the simulated hand speaks only "
                "the bundled firmware's protocol"
            )
        try:
            if s.broker is None:
                self.broker = EmbeddedBroker(s.host, s.port, websockets_port=s.websockets_port)
                self.broker.start()
                self._stack.callback(self.broker.stop)
                self.url = self.broker.url
                self.ws_url = self.broker.websockets_url
            else:
                self.url = s.broker
                self.ws_url = s.broker_ws
            url = BrokerUrl.parse(self.url)
            # The embedded broker delivers retained messages before a client's own echo and
            # starts empty: no grace is needed after the echo (see MqttClient.when_synced).
            grace = 0.0 if self.broker is not None else SYNC_GRACE_S
            topics = Topics(s.base)
            if s.serial is not None:
                self.serial_url = s.serial
            else:
                self.hand = self._start_hand()
                self._stack.callback(self.hand.stop)
                self.serial_url = self.hand.path
            self.arbiter = Arbiter(
                MqttClient(url, name="arbiter", sync_grace=grace),
                topics=topics,
                hands=[s.hand],
                poses=s.poses,
            )
            self.arbiter.start()
            self._stack.callback(self.arbiter.stop)
            self.arbiter.client.wait_connected(10.0)
            self.arbiter.wait_ready(10.0)
            self.device = DeviceService(
                MqttClient(url, name="device", sync_grace=grace),
                self.serial_url,
                topics=topics,
                hand=s.hand,
                settings=s.device,
                takeover=s.takeover,
            )
            self.device.start()
            self._stack.callback(self.device.stop)
            if s.web_port is not None and self.ws_url is not None:
                from hand_mqtt.clients.web import WebServer

                self.web = WebServer(
                    self.ws_url, host=s.host, port=s.web_port, base=s.base, hand=s.hand
                )
                self.web.start()
                self._stack.callback(self.web.stop)
        except BaseException:
            self.stop()
            raise

    def _start_hand(self) -> _Hand:
        if self.settings.emulate:
            from hand_mqtt.devtools.emulator import EmulatedHand

            elf = None
            if self.settings.device.firmata:
                from hand_mqtt.devtools.standard_firmata import standard_firmata

                elf = standard_firmata()
            emulated = EmulatedHand(elf, realtime=True)
            emulated.start()
            return emulated
        simulated = PtyHand()
        simulated.start()
        return simulated

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
