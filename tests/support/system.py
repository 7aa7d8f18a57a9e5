"""Test helpers: the services wired to a real broker and a simulated hand on a real pty."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from hand_mqtt import (
    Arbiter,
    BrokerUrl,
    DeviceService,
    DeviceSettings,
    HandState,
    Message,
    MqttClient,
    PoseBook,
    PtyHand,
    Reported,
    SimulatedFirmware,
    Topics,
)
from hand_mqtt.hardware.protocol import DeviceConfig, Frame
from harness.waiting import wait_until


class Recorder:
    """Subscribes to topics and keeps every message, for assertions."""

    def __init__(self, url: BrokerUrl, *filters: str) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.client = MqttClient(url, name="recorder")
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._keep)
        self.client.connect()
        # A message to ourselves proves the subscriptions are in place.
        marker = f"recorder/{self.client.client_id}"
        seen = threading.Event()
        self.client.subscribe(marker, lambda _m: seen.set(), wait=5)
        self.client.publish(marker, b"x")
        seen.wait(5)

    def _keep(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last_json(self, topic: str) -> Any:
        found = self.on(topic)
        return json.loads(found[-1].payload) if found else None

    def close(self) -> None:
        self.client.stop()


class System:
    """Arbiter + device service + simulated hand on one broker, under a base topic of its own."""

    def __init__(
        self,
        url: BrokerUrl,
        topics: Topics,
        *,
        hand: str = "hand1",
        settings: DeviceSettings | None = None,
        poses: PoseBook | None = None,
        firmware: SimulatedFirmware | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        other_hands: Sequence[str] = (),
        device_url: BrokerUrl | None = None,
    ) -> None:
        self.url = url
        self.device_url = device_url or url  # on a broker with accounts: the device's own
        self.topics = topics
        self.hand_name = hand
        self.other_hands = tuple(other_hands)  # served by the arbiter, with no device service
        self.hand_topics = topics.hand(hand)
        self.settings = settings or DeviceSettings(
            ack_timeout=0.2,
            backoff_initial=0.05,
            backoff_max=0.5,
            firmware=DeviceConfig(failsafe_timeout_ms=0),
        )
        self.poses = poses
        self.sim = PtyHand(firmware=firmware, on_frame=on_frame)
        self.arbiter: Arbiter | None = None
        self.device: DeviceService | None = None

    def start(self) -> System:
        self.sim.start()
        self.start_arbiter()
        self.start_device()
        wait_until(lambda: self.device is not None and self.device.link_up, what="link up")
        return self

    def start_arbiter(self) -> Arbiter:
        self.arbiter = Arbiter(
            MqttClient(self.url, name="arbiter"),
            topics=self.topics,
            hands=[self.hand_name, *self.other_hands],
            poses=self.poses,
        )
        self.arbiter.start()
        assert self.arbiter.wait_ready(10), "arbiter did not become ready"
        return self.arbiter

    def start_device(self, *, takeover: bool = False) -> DeviceService:
        self.device = self.new_device(takeover=takeover)
        self.device.start()
        return self.device

    def new_device(self, *, takeover: bool = False, serial: str | None = None) -> DeviceService:
        return DeviceService(
            MqttClient(self.device_url, name="device"),
            serial or self.sim.path,
            topics=self.topics,
            hand=self.hand_name,
            settings=self.settings,
            takeover=takeover,
        )

    def stop(self) -> None:
        if self.device is not None:
            self.device.stop()
        if self.arbiter is not None:
            self.arbiter.stop()
        self.sim.stop()

    def client(self, name: str = "test") -> MqttClient:
        client = MqttClient(self.url, name=name)
        client.connect()
        return client

    def wait_hand(self, angles: tuple[int, ...], timeout: float = 10.0) -> None:
        """Wait until the simulated firmware's targets are ``angles``."""
        wait_until(
            lambda: self.sim.firmware.targets == angles,
            timeout,
            f"hand at {angles} (now {self.sim.firmware.targets})",
        )

    def wait_reported(self, angles: tuple[int, ...], timeout: float = 10.0) -> Reported:
        assert self.device is not None
        device = self.device
        wait_until(
            lambda: device.reported.angles == angles,
            timeout,
            f"reported {angles} (now {device.reported.angles})",
        )
        return device.reported

    def state(self) -> HandState:
        assert self.arbiter is not None
        return self.arbiter.state(self.hand_name)
