"""Scenario: the Python API (blocking and asyncio) and the timing of gestures the arbiter plays."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Summary
from bench.system import HandSystem
from hand_mqtt import AsyncHandClient, BrokerUrl, HandClient, HandState, Message, MqttClient

_STEPS = 20
_STEP_MS = 50
_GESTURE = (
    "[gestures.bench]\nsteps = [\n"
    + "".join(
        f"  {{ angles = [{a}, {a}, {a}, {a}, {a}], hold_ms = {_STEP_MS} }},\n"
        for a in (i * 9 for i in range(_STEPS))
    )
    + "]\n"
)


def api_latency(url: str, samples: int, warmup: int) -> dict[str, Any]:
    """A command through HandClient and AsyncHandClient: until accepted, and until reported."""
    folder = Path(tempfile.mkdtemp(prefix="hand-mqtt-bench-"))
    poses = folder / "poses.toml"
    poses.write_text(_GESTURE)
    system = HandSystem(url, arbiter_args=("--poses", str(poses)))
    try:
        base = system.topics.base
        results: dict[str, Any] = {}
        with HandClient(url, base=base, name="bench") as hand:
            for wait in ("accepted", "reported"):
                results[f"sync_{wait}"] = _sync(hand, wait, samples, warmup)
        for wait in ("accepted", "reported"):
            results[f"async_{wait}"] = asyncio.run(_async(url, base, wait, samples, warmup))
        results["gesture"] = _gesture_timing(url, system, rounds=5 if samples < 1000 else 20)
        return results
    finally:
        system.stop()
        poses.unlink()
        folder.rmdir()


def _sync(hand: HandClient, wait: str, samples: int, warmup: int) -> Summary:
    latencies: list[float] = []
    for n in range(warmup + samples):
        start = time.perf_counter()
        hand.set(index=n % 180, wait=wait)
        if n >= warmup:
            latencies.append((time.perf_counter() - start) * 1e6)
    return Summary.of(latencies)


async def _async(url: str, base: str, wait: str, samples: int, warmup: int) -> Summary:
    latencies: list[float] = []
    async with AsyncHandClient(url, base=base, name="bench") as hand:
        for n in range(warmup + samples):
            start = time.perf_counter()
            await hand.set(index=n % 180, wait=wait)
            if n >= warmup:
                latencies.append((time.perf_counter() - start) * 1e6)
    return Summary.of(latencies)


def _gesture_timing(url: str, system: HandSystem, rounds: int) -> dict[str, Any]:
    """Each step's arrival at a subscriber minus when it was due (from the command's send)."""
    arrivals: list[tuple[float, HandState]] = []
    done = threading.Event()

    def keep(message: Message) -> None:
        state = HandState.model_validate_json(message.payload)
        if state.transaction == "bench-gesture":
            arrivals.append((time.perf_counter(), state))
            if state.gesture is None:
                done.set()

    watcher = MqttClient(BrokerUrl.parse(url), name="bench-states")
    watcher.subscribe(system.hand.state, keep)
    watcher.connect()
    sender = MqttClient(BrokerUrl.parse(url), name="bench-sender")
    sender.connect()
    try:
        time.sleep(0.5)
        sent = time.perf_counter()
        sender.publish(
            system.hand.set,
            f'{{"gesture": "bench", "repeat": {rounds}, "transaction": "bench-gesture"}}',
        )
        if not done.wait(_STEPS * rounds * _STEP_MS / 1000 + 30):
            raise TimeoutError("the gesture did not finish")
    finally:
        sender.stop()
        watcher.stop()
    lateness = [(at - sent - n * _STEP_MS / 1000) * 1000 for n, (at, _state) in enumerate(arrivals)]
    return {
        "steps": len(arrivals),
        "late_ms": Summary.of(lateness),
        "drift_ms": lateness[-1] - lateness[0],
        "length_s": arrivals[-1][0] - sent,
        "due_s": _STEPS * rounds * _STEP_MS / 1000,
    }
