"""How long a hand is without an arbiter when its arbiter is killed and a standby takes over.

Two ``hand-mqtt arbiter`` processes serve one hand, the second with ``--standby``. A client
sends a command every few milliseconds (each a +1 on the index finger, with its own
transaction) and timestamps every state. The active arbiter is killed with SIGKILL; the
takeover time runs from the kill to the first state the standby publishes for a command (the
first after its lease says it serves). Then
the dead one is replaced by a new standby and the round repeats. After the last round the final
retained state is read: its version counts the commands applied, and with the ones refused on
``error`` it must equal the commands sent (none lost, none applied twice).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

from bench.common import Service, Summary, wait_until
from hand_mqtt import BrokerUrl, HandState, Lease, Message, MqttClient

HAND = "hand1"


class _Stream:
    """Commands at a steady pace from one client; every state and error, timestamped."""

    def __init__(self, url: str, base: str, interval: float) -> None:
        self.base = base
        self.interval = interval
        self.states: list[tuple[float, HandState]] = []
        self.leases: list[tuple[float, Lease]] = []
        self.errors: list[tuple[float, dict[str, Any]]] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = MqttClient(BrokerUrl.parse(url), name="bench-takeover")
        self.client.subscribe(f"{base}/{HAND}/state", self._on_state)
        self.client.subscribe(f"{base}/{HAND}/error", self._on_error)
        self.client.subscribe(f"{base}/bridge/lease/{HAND}", self._on_lease)
        self.client.connect()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _on_state(self, message: Message) -> None:
        if message.payload:
            state = HandState.model_validate_json(message.payload)
            with self._lock:
                self.states.append((time.monotonic(), state))

    def _on_lease(self, message: Message) -> None:
        if message.payload:
            lease = Lease.model_validate_json(message.payload)
            with self._lock:
                self.leases.append((time.monotonic(), lease))

    def taken_at(self, moment: float, epoch: int) -> float | None:
        """When a lease newer than ``epoch`` first said ``serving``, after ``moment``."""
        with self._lock:
            for at, lease in self.leases:
                if at > moment and lease.epoch > epoch and lease.status == "serving":
                    return at
        return None

    def epoch(self) -> int:
        with self._lock:
            return max((lease.epoch for _t, lease in self.leases), default=0)

    def _on_error(self, message: Message) -> None:
        with self._lock:
            self.errors.append((time.monotonic(), json.loads(message.payload)))

    def _send(self) -> None:
        topic = f"{self.base}/{HAND}/set"
        while not self._stop.is_set():
            payload = {"index": {"delta": 1}, "transaction": f"t{self.sent}"}
            self.client.publish(topic, json.dumps(payload), qos=1)
            self.sent += 1
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def last_version(self) -> int:
        with self._lock:
            return max((s.version for _t, s in self.states), default=-1)

    def first_state_after(self, moment: float) -> float | None:
        """When the first state that answers a command came, after ``moment``."""
        with self._lock:
            for at, state in self.states:
                if at > moment and state.transaction is not None:
                    return at
        return None

    def close(self) -> None:
        self.client.stop()


def _retained_state(url: str, base: str) -> HandState | None:
    got: list[bytes] = []
    arrived = threading.Event()
    client = MqttClient(BrokerUrl.parse(url), name="bench-reader")

    def keep(message: Message) -> None:
        got.append(message.payload)
        arrived.set()

    client.subscribe(f"{base}/{HAND}/state", keep)
    client.connect()
    try:
        arrived.wait(2.0)
    finally:
        client.stop()
    return HandState.model_validate_json(got[-1]) if got and got[-1] else None


def _arbiter(broker: str, base: str, *options: str) -> Service:
    return Service("arbiter", "--hand", HAND, "--broker", broker, "--base", base, *options)


def takeover(
    active_broker: str,
    standby_broker: str,
    watch_url: str,
    rounds: int,
    interval: float = 0.005,
) -> dict[str, Any]:
    """``rounds`` takeovers; the arbiters connect to ``active_broker`` and ``standby_broker``
    (broker lists), the client and the reader to ``watch_url``."""
    base = f"bench{int(time.time() * 1000) % 1_000_000}"
    active = _arbiter(active_broker, base)
    stream = _Stream(watch_url, base, interval)
    standby: Service | None = None
    times: list[float] = []
    leased: list[float] = []
    try:
        wait_until(lambda: stream.last_version() >= 0, 30, "the active arbiter")
        stream.client.publish(
            f"{base}/{HAND}/set", b'{"pose": "fist", "transaction": "start"}', qos=1
        )

        def started() -> HandState | None:
            state = _retained_state(watch_url, base)
            return state if state is not None and state.transaction == "start" else None

        wait_until(started, 30, "the fist")
        first = started()
        assert first is not None
        start = first.version  # every command after it is a +1
        brokers = [standby_broker, active_broker]
        standby = _arbiter(brokers[0], base, "--standby")
        time.sleep(2.0)  # the standby subscribed and synced (a process start, not measured)
        stream.start()
        for n in range(rounds):
            sent = stream.sent
            wait_until(lambda s=sent: stream.sent >= s + 50, 30, "commands under way")  # type: ignore[misc]
            epoch = stream.epoch()
            killed = time.monotonic()
            active.process.send_signal(signal.SIGKILL)
            active.process.wait()
            # The standby says it serves (its lease), then serves: its first state comes after
            # its lease, and after every state of the dead arbiter.
            wait_until(
                lambda k=killed, e=epoch: stream.taken_at(k, e) is not None,  # type: ignore[misc]
                30,
                "the standby's lease",
            )
            taken = stream.taken_at(killed, epoch)
            assert taken is not None
            leased.append((taken - killed) * 1000)
            wait_until(
                lambda t=taken: stream.first_state_after(t) is not None,  # type: ignore[misc]
                30,
                "the standby's first state",
            )
            served = stream.first_state_after(taken)
            assert served is not None
            times.append((served - killed) * 1000)
            active.stop()
            active, standby = standby, _arbiter(brokers[(n + 1) % 2], base, "--standby")
            time.sleep(2.0)  # the new standby subscribed and synced
        stream.stop()
        refused = {e["transaction"] for _t, e in stream.errors}

        def settled() -> bool:
            state = _retained_state(watch_url, base)
            return state is not None and state.version - start + len(refused) >= stream.sent

        wait_until(settled, 30, "every command applied or refused")
        final = _retained_state(watch_url, base)
        assert final is not None
        applied = final.version - start
        return {
            "rounds": rounds,
            "takeover_ms": Summary.of(times),
            "lease_ms": Summary.of(leased),
            "sent": stream.sent,
            "applied": applied,
            "refused": len(refused),
            "twice_or_lost": stream.sent - applied - len(refused),
            "interval_ms": interval * 1000,
        }
    finally:
        stream.close()
        active.stop()
        if standby is not None:
            standby.stop()
