"""The system under test: arbiter and device service as processes, a simulated hand here."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from bench.common import Service, Watcher, wait_until
from hand_mqtt import PtyHand, Reported, Topics
from hand_mqtt.hardware import protocol as p


@dataclass
class FrameClock:
    """Timestamps every frame the simulated hand receives, by the angles it carries."""

    frames: int = 0
    expect_index: int | None = None
    """When set, :attr:`event` fires only for a frame that sets index to this angle."""
    last_time: float = 0.0
    last_angles: dict[int, int] = field(default_factory=dict)
    event: threading.Event = field(default_factory=threading.Event)

    def on_frame(self, frame: p.Frame) -> None:
        now = time.perf_counter()
        self.frames += 1
        if frame.type == p.FrameType.SET_ALL:
            self.last_angles = dict(enumerate(frame.payload))
        elif frame.type == p.FrameType.SET_SOME:
            mask, values = frame.payload[0], iter(frame.payload[1:])
            self.last_angles = {i: next(values) for i in range(5) if mask >> i & 1}
        else:
            return
        self.last_time = now
        if self.expect_index is None or self.last_angles.get(0) == self.expect_index:
            self.event.set()


class HandSystem:
    """Arbiter + device service processes on ``url`` driving a simulated hand in this process."""

    def __init__(
        self, url: str, *, base: str | None = None, arbiter_args: tuple[str, ...] = ()
    ) -> None:
        self.url = url
        self.topics = Topics(base or f"b{uuid.uuid4().hex[:8]}")
        self.hand = self.topics.hand("hand1")
        self.clock = FrameClock()
        self.sim = PtyHand(on_frame=self.clock.on_frame)
        self.sim.start()
        common = ("--broker", url, "--base", self.topics.base)
        self.arbiter = Service("arbiter", *common, *arbiter_args)
        self.device = Service(
            "device", "--serial", self.sim.path, "--failsafe-timeout", "0", *common
        )
        self.watcher = Watcher(
            url, self.hand.reported, self.hand.availability, self.topics.bridge_state
        )
        wait_until(self._ready, 30, "arbiter and device online")

    def _ready(self) -> bool:
        latest = self.watcher.latest
        reported = latest.get(self.hand.reported)
        return (
            latest.get(self.topics.bridge_state) == b"online"
            and latest.get(self.hand.availability) == b"online"
            and reported is not None
            and Reported.model_validate_json(reported).link == "up"
        )

    def stop(self) -> None:
        self.watcher.close()
        self.device.stop()
        self.arbiter.stop()
        self.sim.stop()
