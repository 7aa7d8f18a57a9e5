"""Scenario 1: command latency, against the two-hop relay floor measured in the same run."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bench.common import Service, Summary, Watcher
from bench.system import HandSystem
from hand_mqtt import BrokerUrl, Message, MqttClient, Reported


def relay_floor(url: str, port: int, samples: int, warmup: int) -> Summary:
    """Publisher → broker → relay process → broker → subscriber, QoS 1 both ways."""
    inbound, outbound = "floor/in", "floor/out"
    relay = Service(
        "--port", str(port), "--inbound", inbound, "--outbound", outbound, module="bench.relay"
    )
    arrived = threading.Event()
    expected: list[int] = [-1]
    stamp: list[float] = [0.0]

    def on_message(message: Message) -> None:
        if json.loads(message.payload)["value"]["n"] == expected[0]:
            stamp[0] = time.perf_counter()
            arrived.set()

    watcher = Watcher(url, outbound)
    watcher.hooks.append(on_message)
    publisher = MqttClient(BrokerUrl.parse(url), name="bench-pub")
    publisher.connect()
    try:
        time.sleep(0.5)  # the relay connects and subscribes
        latencies: list[float] = []
        for n in range(warmup + samples):
            arrived.clear()
            expected[0] = n
            start = time.perf_counter()
            publisher.publish(inbound, json.dumps({"n": n}), qos=1)
            if not arrived.wait(5):
                raise TimeoutError("the relay did not answer")
            if n >= warmup:
                latencies.append((stamp[0] - start) * 1e6)
        return Summary.of(latencies)
    finally:
        publisher.stop()
        watcher.close()
        relay.stop()


def command_latency(url: str, samples: int, warmup: int) -> dict[str, Any]:
    """Publisher → arbiter → device service → pty (a), and on to `reported` (b)."""
    system = HandSystem(url)
    reported_event = threading.Event()
    reported_index: list[int | None] = [None]
    reported_at: list[float] = [0.0]

    def on_reported(message: Message) -> None:
        if message.topic != system.hand.reported:
            return
        index = Reported.model_validate_json(message.payload).index
        if index == reported_index[0]:
            reported_at[0] = time.perf_counter()
            reported_event.set()

    system.watcher.hooks.append(on_reported)
    publisher = MqttClient(BrokerUrl.parse(url), name="bench-pub")
    publisher.connect()
    topic = system.hand.finger_set("index")
    clock = system.clock
    try:
        to_frame: list[float] = []
        to_reported: list[float] = []
        for n in range(warmup + samples):
            angle = n % 180  # differs from the previous one every time
            clock.event.clear()
            clock.expect_index = angle
            reported_event.clear()
            reported_index[0] = angle
            start = time.perf_counter()
            publisher.publish(topic, str(angle), qos=1)
            if not clock.event.wait(5):
                raise TimeoutError("no frame")
            if not reported_event.wait(5):
                raise TimeoutError("no reported")
            if n >= warmup:
                to_frame.append((clock.last_time - start) * 1e6)
                to_reported.append((reported_at[0] - start) * 1e6)
        return {
            "frame": Summary.of(to_frame),
            "reported": Summary.of(to_reported),
            "arbiter_rss_kib": system.arbiter.rss_kib(),
            "device_rss_kib": system.device.rss_kib(),
        }
    finally:
        publisher.stop()
        system.stop()
