"""Scenario 4: what a CLI command costs from process start, and `hand-mqtt up` to ready."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Watcher
from bench.system import HandSystem
from hand_mqtt import Reported
from harness.brokers import free_port


def _command() -> list[str]:
    script = Path(sys.executable).with_name("hand-mqtt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hand_mqtt"]


def cli_command(url: str, runs: int) -> dict[str, Any]:
    system = HandSystem(url)
    env = {**os.environ, "HAND_MQTT_BROKER": url, "HAND_MQTT_BASE": system.topics.base}
    times = []
    try:
        for n in range(runs + 2):
            start = time.perf_counter()
            subprocess.run(
                [*_command(), "pose", "peace" if n % 2 else "fist"],
                env=env,
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            if n >= 2:  # the first runs warm the file cache
                times.append((time.perf_counter() - start) * 1e3)
        return {"runs": runs, "median_ms": statistics.median(times), "max_ms": max(times)}
    finally:
        system.stop()


_WEB_ON_FREE_PORTS = ("--web-port", "0", "--ws-port", "0")


def up_ready(runs: int, *, web: bool = True) -> dict[str, Any]:
    """``web``: the page and the websockets listener on, as by default (on free ports)."""
    times = []
    web_args = _WEB_ON_FREE_PORTS if web else ("--no-web",)
    for _ in range(runs):
        port = free_port()
        start = time.perf_counter()
        process = subprocess.Popen(
            [*_command(), "up", "--port", str(port), "--no-live", *web_args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            times.append(_wait_ready(port, start) * 1e3)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(20)
    return {"runs": runs, "median_ms": statistics.median(times), "max_ms": max(times)}


def _wait_ready(port: int, start: float) -> float:
    """Seconds from start until the hand reports its link up."""
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.005)
    watcher = Watcher(f"mqtt://127.0.0.1:{port}", "hand/hand1/reported")
    try:
        while time.monotonic() < deadline:
            payload = watcher.latest.get("hand/hand1/reported")
            if payload and Reported.model_validate_json(payload).link == "up":
                return time.perf_counter() - start
            time.sleep(0.002)
    finally:
        watcher.close()
    raise TimeoutError("hand-mqtt up did not become ready")


def have_console_script() -> bool:
    return shutil.which("hand-mqtt") is not None
