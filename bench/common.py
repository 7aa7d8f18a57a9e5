"""What every scenario needs: services as processes, their memory and CPU, percentiles."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hand_mqtt import BrokerUrl, Message, MqttClient
from harness.brokers import MosquittoProcess, RunningBroker, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            len(values),
            statistics.median(values),
            percentile(values, 0.90),
            percentile(values, 0.99),
            max(values),
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
        }


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


class Service:
    """A hand-mqtt service (or any Python module) as a child process."""

    def __init__(self, *args: str, module: str = "hand_mqtt") -> None:
        self.args = [sys.executable, "-m", module, *args]
        self.process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        return _status_field(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


class AmqttProcess:
    """The embedded broker in a process of its own, so it does not share our interpreter."""

    kind = "amqtt"

    def __init__(self) -> None:
        self.port = free_port()
        self.websockets_port = free_port()
        self.service = Service(
            "broker", "--port", str(self.port), "--websockets", str(self.websockets_port)
        )
        wait_for_port(self.port)
        wait_for_port(self.websockets_port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.websockets_port}/"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.service.stop()

    def cleanup(self) -> None:
        self.stop()


def shipped_queue_limits() -> str:
    """The queue limits of broker/mosquitto.conf, so the benchmarks run what we ship."""
    lines = (ROOT / "broker" / "mosquitto.conf").read_text().splitlines()
    wanted = ("max_queued_", "max_inflight")
    return "".join(f"{line}\n" for line in lines if line.startswith(wanted))


@contextmanager
def broker_process(kind: str) -> Iterator[RunningBroker]:
    broker: RunningBroker
    if kind == "mosquitto":
        broker = MosquittoProcess(extra_config=shipped_queue_limits(), websockets_port=free_port())
        broker.start()
    else:
        broker = AmqttProcess()
    try:
        yield broker
    finally:
        broker.stop()
        cleanup = getattr(broker, "cleanup", None)
        if cleanup is not None:
            cleanup()


class Watcher:
    """Keeps the latest payload per topic and calls hooks, on our own MQTT client."""

    def __init__(self, url: str, *filters: str, qos: int = 1) -> None:
        self.latest: dict[str, bytes] = {}
        self.hooks: list[Callable[[Message], None]] = []
        self.client = MqttClient(BrokerUrl.parse(url), name="bench")
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._on_message, qos=qos)
        self.client.connect()
        self._lock = threading.Lock()

    def _on_message(self, message: Message) -> None:
        self.latest[message.topic] = message.payload
        for hook in self.hooks:
            hook(message)

    def close(self) -> None:
        self.client.stop()
