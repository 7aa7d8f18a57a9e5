"""Scenario 3: one arbiter serving 1,000 hands, with lightweight device stand-ins."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from bench.common import ROOT, Service, Summary, Watcher
from hand_mqtt import BrokerUrl, Message, MqttClient, Topics


def many_hands(url: str, hands: int, commands: int, samples: int) -> dict[str, Any]:
    topics = Topics(f"m{uuid.uuid4().hex[:8]}")
    arbiter = Service(
        "arbiter", "--broker", url, "--base", topics.base, "--all-hands", "--max-hands", str(hands)
    )
    standin = Service("--broker", url, "--base", topics.base, module="bench.standin")
    names = [f"h{i:04d}" for i in range(hands)]
    arrived: dict[str, float] = {}
    event = threading.Event()
    waiting: list[str | None] = [None]

    def on_reported(message: Message) -> None:
        hand = message.topic.split("/")[-2]
        arrived[hand] = time.perf_counter()
        if hand == waiting[0]:
            event.set()

    watcher = Watcher(url, f"{topics.base}/+/reported", qos=0)
    watcher.hooks.append(on_reported)
    client = MqttClient(BrokerUrl.parse(url), name="bench-hands")
    client.connect()
    try:
        time.sleep(1.0)  # the arbiter restores and subscribes
        one_hand_kib = arbiter.rss_kib()
        for name in names:  # every hand gets its state once
            client.publish(topics.hand(name).finger_set("index"), b"90", qos=1)
        deadline = time.monotonic() + 60
        while len(arrived) < hands and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(arrived) < hands:
            raise TimeoutError(f"only {len(arrived)} of {hands} hands answered")
        all_hands_kib = arbiter.rss_kib()

        # Latency: one command at a time to a random hand, until its reported arrives.
        rng = random.Random(1)
        latencies = []
        for n in range(samples):
            name = rng.choice(names)
            event.clear()
            waiting[0] = name
            start = time.perf_counter()
            client.publish(topics.hand(name).finger_set("thumb"), str(n % 181), qos=1)
            if not event.wait(5):
                raise TimeoutError("no reported")
            latencies.append((arrived[name] - start) * 1e6)
        waiting[0] = None

        # Throughput: a publisher process spreads commands over every hand as fast as it can.
        # Only the last command's finger topic is watched, so measuring costs nothing.
        watcher.close()
        last = names[-1]
        done = threading.Event()
        done_at: list[float] = [0.0]

        def on_last(message: Message) -> None:
            if message.payload == b"3":
                done_at[0] = time.perf_counter()
                done.set()

        last_watcher = Watcher(url, topics.hand(last).finger("pinky"), qos=0)
        last_watcher.hooks.append(on_last)
        cpu_before = arbiter.cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _SPREAD, url, topics.base, str(hands), str(commands)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        client.publish(topics.hand(last).set, json.dumps({"pinky": 3}), qos=1)
        if not done.wait(120):
            raise TimeoutError("the last command was not processed")
        last_watcher.close()
        elapsed = done_at[0] - start
        cpu_per_command = (arbiter.cpu_seconds() - cpu_before) / (commands + 1) * 1e6
        return {
            "hands": hands,
            "latency_reported": Summary.of(latencies),
            "commands": commands + 1,
            "rate": (commands + 1) / elapsed,
            "arbiter_cpu_us_per_command": cpu_per_command,
            "publish_s": float(proc.stdout.split()[-1]),
            "rss_one_hand_mib": one_hand_kib / 1024,
            "rss_all_hands_mib": all_hands_kib / 1024,
            "kib_per_hand": (all_hands_kib - one_hand_kib) / max(hands - 1, 1),
        }
    finally:
        client.stop()
        watcher.close()
        standin.stop()
        arbiter.stop()


_SPREAD = """
import sys, time
from hand_mqtt import BrokerUrl, MqttClient
url, base, hands, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = MqttClient(BrokerUrl.parse(url), name="spread")
client.connect()
start = time.perf_counter()
for n in range(count - 1):
    client.publish(f"{base}/h{n % hands:04d}/ring/set", str(n % 181), qos=1)
client.publish(f"{base}/h0000/ring/set", "1", qos=1, wait=120)
print(time.perf_counter() - start)
client.stop()
"""
