"""Scenario 5: bytes on the wire, firmware size, idle memory and CPU of each service."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Service
from bench.system import HandSystem
from hand_mqtt.errors import FirmwareError
from hand_mqtt.hardware import protocol
from hand_mqtt.model import HandState
from hand_mqtt.services.journal import StateJournal
from harness.brokers import free_port, wait_for_port

BAUD = 115200
BIT_TIMES_PER_BYTE = 10  # 8N1


def wire() -> dict[str, Any]:
    full = len(protocol.set_all(1, (180, 180, 0, 0, 0)).encode())
    single = len(protocol.set_some(1, {0: 90}).encode())
    ack = len(protocol.ack_frame(1, (180, 180, 0, 0, 0)).encode())

    def micros(n: int, baud: int = BAUD) -> float:
        return n * BIT_TIMES_PER_BYTE / baud * 1e6

    return {
        "full_bytes": full,
        "full_us": micros(full),
        "single_bytes": single,
        "single_us": micros(single),
        "ack_bytes": ack,
        "firmata_full_bytes": 15,
        "firmata_full_us_57600": micros(15, 57600),
    }


def state_file(states: int = 50_000) -> dict[str, Any]:
    """What the arbiter's ``--state-file`` costs per accepted command: one line written (and
    the file rewritten now and then), measured on its own."""
    with tempfile.TemporaryDirectory() as folder:
        journal = StateJournal(Path(folder) / "state.jsonl")
        journal.load()
        made = [HandState(index=n % 181, version=n, transaction=f"t{n}") for n in range(states)]
        started = time.perf_counter()
        for state in made:
            journal.record("hand1", state)
        elapsed = time.perf_counter() - started
        journal.close()
    return {"states": states, "us_per_state": elapsed / states * 1e6}


def firmware_size() -> dict[str, Any] | None:
    from hand_mqtt.devtools import firmware

    try:
        result = firmware.build()
    except FirmwareError:
        return None
    return {"flash_bytes": result.flash_bytes, "ram_bytes": result.ram_bytes}


def idle(url: str, seconds: float) -> dict[str, Any]:
    """Idle RSS and CPU of the arbiter, the device service and the embedded broker."""
    system = HandSystem(url)
    port = free_port()
    broker = Service("broker", "--port", str(port))
    wait_for_port(port)
    services = {"arbiter": system.arbiter, "device": system.device, "embedded broker": broker}
    try:
        time.sleep(1.0)
        before = {name: s.cpu_seconds() for name, s in services.items()}
        time.sleep(seconds)
        return {
            name: {
                "rss_mib": s.rss_kib() / 1024,
                "cpu_percent": (s.cpu_seconds() - before[name]) / seconds * 100,
            }
            for name, s in services.items()
        }
    finally:
        broker.stop()
        system.stop()
