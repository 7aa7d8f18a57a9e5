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
    """Start to ready, and ready to stopped after one SIGINT (the process has exited).

    ``web``: the page and the websockets listener on, as by default (on free ports).
    """
    times = []
    stops = []
    web_args = _WEB_ON_FREE_PORTS if web else ("--no-web",)
    for _ in range(runs):
        process, port, start = _start_up(web_args)
        try:
            times.append(_wait_ready(port, start) * 1e3)
            stops.append(_stop_ms(process, signal.SIGINT, 1))
        finally:
            _reap(process)
    return {
        "runs": runs,
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "stop_median_ms": statistics.median(stops),
        "stop_max_ms": max(stops),
    }


def up_stop_burst(runs: int, burst: int = 10) -> dict[str, Any]:
    """Ready to stopped when ``burst`` SIGTERMs arrive a millisecond apart."""
    stops = []
    for _ in range(runs):
        process, port, start = _start_up(("--no-web",))
        try:
            _wait_ready(port, start)
            stops.append(_stop_ms(process, signal.SIGTERM, burst))
        finally:
            _reap(process)
    return {
        "runs": runs,
        "burst": burst,
        "median_ms": statistics.median(stops),
        "max_ms": max(stops),
    }


def _start_up(web_args: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen(
        [*_command(), "up", "--port", str(port), "--no-live", *web_args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port, start


def _stop_ms(process: subprocess.Popen[bytes], signum: signal.Signals, count: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        if n:
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signum)
    process.wait(30)
    return (time.perf_counter() - start) * 1e3


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(20)


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
