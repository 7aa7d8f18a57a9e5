"""Scenario 2: ten clients flood the arbiter while one more sends a final, distinct command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from bench.common import ROOT, Watcher
from bench.system import HandSystem
from hand_mqtt import BrokerUrl, HandState, Message, MqttClient

FINAL_THUMB = 42


def flood(url: str, publishers: int, per_publisher: int) -> dict[str, Any]:
    system = HandSystem(url)
    hand = system.hand
    errors: list[Message] = []
    final_seen = threading.Event()
    final_at: list[float] = [0.0]

    def on_message(message: Message) -> None:
        if message.topic == hand.error:
            errors.append(message)
        elif message.topic == hand.finger("thumb") and message.payload == str(FINAL_THUMB).encode():
            final_at[0] = time.perf_counter()
            final_seen.set()

    watcher = Watcher(url, hand.error, hand.finger("thumb"))
    watcher.hooks.append(on_message)
    frames_before = system.clock.frames
    peak_arbiter = peak_device = 0
    sampling = threading.Event()

    def sample_memory() -> None:
        nonlocal peak_arbiter, peak_device
        while not sampling.is_set():
            peak_arbiter = max(peak_arbiter, system.arbiter.rss_kib())
            peak_device = max(peak_device, system.device.rss_kib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    arbiter_cpu_before = system.arbiter.cpu_seconds()
    try:
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.publisher",
                    "--broker",
                    url,
                    "--topic",
                    hand.finger_set("index" if i % 2 else "middle"),
                    "--count",
                    str(per_publisher),
                    "--seed",
                    str(i),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(publishers)
        ]
        publish_seconds = []
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            publish_seconds.append(float(out.split()[1]))
        # The publishers are done and the arbiter works through what is queued on its own:
        # its rate from here is what it can do without ten processes fighting for two cores.
        drain_start = time.perf_counter()
        drain_version = _retained_state(url, hand.state).version
        final = MqttClient(BrokerUrl.parse(url), name="final")
        final.connect()
        system.clock.expect_index = None
        final.publish(hand.set, json.dumps({"thumb": FINAL_THUMB}), qos=1)
        if not final_seen.wait(120):
            raise TimeoutError("the final command was not processed")
        processed = final_at[0] - start
        # The hand: wait for the frame that carries the final thumb angle.
        deadline = time.monotonic() + 30
        while system.sim.firmware.targets[4] != FINAL_THUMB and time.monotonic() < deadline:
            time.sleep(0.001)
        on_line = system.clock.last_time
        final.stop()
        total = publishers * per_publisher + 1
        arbiter_cpu = system.arbiter.cpu_seconds() - arbiter_cpu_before
        state = _retained_state(url, hand.state)
        sampling.set()
        sampler.join()
        return {
            "commands": total,
            "publish_rate": publishers * per_publisher / max(publish_seconds),
            "arbiter_rate": total / processed,
            "drain_rate": (total - drain_version) / max(final_at[0] - drain_start, 1e-9),
            "backlog_at_publish_end": total - 1 - drain_version,
            "processed_s": processed,
            "version_delta": state.version,
            "lost": total - state.version,
            "errors": len(errors),
            "arbiter_cpu_us_per_command": arbiter_cpu / total * 1e6,
            "frames": system.clock.frames - frames_before,
            "final_on_line_ms": (on_line - final_at[0]) * 1e3,
            "arbiter_peak_rss_mib": max(peak_arbiter, system.arbiter.peak_rss_kib()) / 1024,
            "device_peak_rss_mib": max(peak_device, system.device.peak_rss_kib()) / 1024,
        }
    finally:
        sampling.set()
        watcher.close()
        system.stop()


def _retained_state(url: str, topic: str) -> HandState:
    watcher = Watcher(url, topic)
    deadline = time.monotonic() + 5
    while topic not in watcher.latest and time.monotonic() < deadline:
        time.sleep(0.01)
    watcher.close()
    return HandState.model_validate_json(watcher.latest[topic])
