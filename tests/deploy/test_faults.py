"""Faults, with the real services as subprocesses: each ends with the hand where the last accepted
command put it, and the availability topics telling the truth on the way, with no manual restart.

The arbiter and the device service run as ``python -m hand_mqtt ...`` and are killed with
SIGKILL by their own PID; the simulated hand runs on a real pty (in this process, so that it can
be unplugged, or as ``hand-mqtt simulate``).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hand_mqtt import BrokerUrl, EmbeddedBroker, HandState, MqttClient, PtyHand, Reported, Topics
from harness.brokers import MosquittoProcess, free_port, mosquitto_binary
from harness.waiting import wait_until as eventually
from tests.conftest import need
from tests.deploy.support import (
    ROOT,
    ServiceProcess,
    SimulatedHandProcess,
    Watcher,
    service_env,
)

HAND = "hand1"


class Broker:
    """Mosquitto (persistence on) or the embedded broker, on a fixed port, restartable."""

    def __init__(self, kind: str, folder: Path, *, autosave_interval: int = 1) -> None:
        self.kind = kind
        self.port = free_port()
        self._mosquitto: MosquittoProcess | None = None
        self._embedded: EmbeddedBroker | None = None
        if kind == "mosquitto":
            need(mosquitto_binary() is not None, "mosquitto is not installed")
            self._mosquitto = MosquittoProcess(
                self.port, persistence=True, workdir=folder, autosave_interval=autosave_interval
            )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.start()
        else:
            # No probe connection: amqtt leaves the socket of a connection that sent nothing.
            self._embedded = EmbeddedBroker("127.0.0.1", self.port)
            self._embedded.start()

    def stop(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.stop()
        elif self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def crash(self) -> None:
        """SIGKILL for Mosquitto; the embedded broker loses its retained messages either way."""
        if self._mosquitto is not None:
            self._mosquitto.kill()
        else:
            self.stop()


class Rig:
    """A broker, a simulated hand on a pty, the services as subprocesses, and a watcher."""

    def __init__(
        self,
        kind: str,
        folder: Path,
        *,
        autosave_interval: int = 1,
        arbiter_args: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.broker = Broker(kind, folder, autosave_interval=autosave_interval)
        self.arbiter_args = arbiter_args
        self.topics = Topics(f"t{uuid.uuid4().hex[:10]}")
        self.t = self.topics.hand(HAND)
        self.sim = PtyHand(folder / "pty")
        (folder / "pty").mkdir()
        self.services: list[ServiceProcess] = []
        self.watcher: Watcher | None = None
        self._clients: list[MqttClient] = []

    # -- parts -------------------------------------------------------------------------------

    def start(self) -> Rig:
        self.broker.start()
        self.sim.start()
        self.arbiter = self.start_arbiter()
        self.device = self.start_device()
        self.watch()
        self.wait_converged("the first state")
        return self

    def common(self) -> list[str]:
        return ["--broker", self.broker.url, "--base", self.topics.base, "--hand", HAND]

    def spawn(self, name: str, args: list[str]) -> ServiceProcess:
        log = self.folder / f"{name}-{len(self.services)}.log"
        service = ServiceProcess(args, log).start()
        self.services.append(service)
        return service

    def start_arbiter(self) -> ServiceProcess:
        return self.spawn("arbiter", ["arbiter", *self.common(), *self.arbiter_args])

    def start_device(self, *extra: str, serial: str | None = None) -> ServiceProcess:
        return self.spawn(
            "device",
            [
                "device",
                "--serial",
                serial or self.sim.path,
                "--failsafe-timeout",
                "0",
                *self.common(),
                *extra,
            ],
        )

    def watch(self) -> Watcher:
        if self.watcher is not None:
            self.watcher.close()
        self.watcher = Watcher(self.broker.url, f"{self.topics.base}/#")
        return self.watcher

    def client(self, name: str = "commander") -> MqttClient:
        mqtt = MqttClient(BrokerUrl.parse(self.broker.url), name=name)
        mqtt.connect(10)
        self._clients.append(mqtt)
        return mqtt

    def stop(self) -> None:
        for mqtt in self._clients:
            mqtt.stop()
        if self.watcher is not None:
            self.watcher.close()
        for service in self.services:
            service.stop()
        self.sim.stop()
        self.broker.stop()

    # -- what the topics say -----------------------------------------------------------------

    def last(self, topic: str) -> bytes | None:
        assert self.watcher is not None
        return self.watcher.last(topic)

    def payloads(self, topic: str) -> list[bytes]:
        assert self.watcher is not None
        return self.watcher.payloads(topic)

    def state(self) -> HandState | None:
        raw = self.last(self.t.state)
        return HandState.model_validate_json(raw) if raw else None

    def reported(self) -> Reported | None:
        raw = self.last(self.t.reported)
        return Reported.model_validate_json(raw) if raw else None

    def converged(self) -> bool:
        state, reported = self.state(), self.reported()
        return (
            state is not None
            and reported is not None
            and reported.link == "up"
            and reported.angles == state.angles
            and reported.version == state.version
            and self.sim.firmware.targets == state.angles
            and self.last(self.t.availability) == b"online"
            and self.last(self.topics.bridge_state) == b"online"
        )

    def wait_converged(self, what: str, timeout: float = 20.0) -> HandState:
        try:
            eventually(self.converged, timeout, what)
        except AssertionError:
            logs = "\n".join(f"--- {s.log_path.name}\n{s.log()[-1500:]}" for s in self.services)
            raise AssertionError(
                f"not converged on {what}: state {self.state()}, reported {self.reported()}, "
                f"hand {self.sim.firmware.targets}, availability "
                f"{self.last(self.t.availability)!r}, bridge "
                f"{self.last(self.topics.bridge_state)!r}\n{logs}"
            ) from None
        state = self.state()
        assert state is not None
        return state

    def command(self, mqtt: MqttClient, transaction: str, **fields: object) -> None:
        mqtt.publish(self.t.set, json.dumps({**fields, "transaction": transaction}), wait=10)

    def wait_transaction(self, transaction: str, timeout: float = 20.0) -> HandState:
        eventually(
            lambda: (s := self.state()) is not None and s.transaction == transaction,
            timeout,
            f"transaction {transaction}",
        )
        return self.wait_converged(f"transaction {transaction}", timeout)


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    kind = getattr(request, "param", "mosquitto")
    running = Rig(kind, tmp_path)
    try:
        yield running.start()
    finally:
        running.stop()


BOTH = pytest.mark.parametrize("rig", ["mosquitto", "amqtt"], indirect=True)


# -- the broker --------------------------------------------------------------------------------


@BOTH
def test_broker_restart_while_commands_flow(rig: Rig) -> None:
    """Mosquitto keeps the retained topics on disk; amqtt loses them and the services re-publish.

    Commands published by a client while the broker is away are queued by the client (QoS 1)
    and delivered after it comes back.
    """
    commander = rig.client()
    rig.command(commander, "before", pose="peace")
    before = rig.wait_transaction("before")
    stop_flow = threading.Event()
    sent: list[int] = []

    def flow() -> None:
        angle = 0
        while not stop_flow.is_set():
            angle = (angle + 7) % 181
            commander.publish(rig.t.finger_set("ring"), str(angle))
            sent.append(angle)
            time.sleep(0.02)

    def sends(more: int) -> None:
        """Wait until the flow has sent ``more`` commands from now (a broker away included)."""
        target = len(sent) + more
        eventually(lambda: len(sent) >= target, 30, f"{more} more commands sent")

    flowing = threading.Thread(target=flow)
    flowing.start()
    try:
        sends(10)
        rig.broker.stop()
        sends(20)  # published while the broker is away: queued by the client
        rig.broker.start()
        if rig.broker.kind == "mosquitto":
            # Before the services are back, the retained state is already there, from disk.
            early = Watcher(rig.broker.url, rig.t.state)
            try:
                eventually(lambda: early.last(rig.t.state) is not None, 5, "persisted state")
                persisted = HandState.model_validate_json(early.last(rig.t.state) or b"")
                assert persisted.version >= before.version
            finally:
                early.close()
        # Every service back on the broker, and commands flowing through it again.
        rig.watch()
        eventually(
            lambda: (
                rig.last(rig.topics.bridge_state) == b"online"
                and rig.last(rig.t.availability) == b"online"
            ),
            30,
            "the services back online",
        )
        sends(10)
    finally:
        stop_flow.set()
        flowing.join()
    rig.watch()
    rig.command(commander, "after", thumb=33)
    after = rig.wait_transaction("after")
    assert after.version > before.version
    assert after.thumb == 33
    assert after.ring in sent
    assert all(s.alive() for s in rig.services)


# -- the services ------------------------------------------------------------------------------


def test_arbiter_killed_and_restarted(rig: Rig) -> None:
    commander = rig.client()
    rig.command(commander, "one", pose="rockstar")
    before = rig.wait_transaction("one")
    rig.arbiter.kill()
    eventually(lambda: rig.last(rig.topics.bridge_state) == b"offline", 5, "bridge offline (will)")
    # Nobody applies commands now, and the hand stays where it was.
    rig.command(commander, "lost", pose="fist")
    assert rig.last(rig.t.availability) == b"online"
    rig.arbiter = rig.start_arbiter()
    eventually(lambda: rig.last(rig.topics.bridge_state) == b"online", 15, "bridge online")
    rig.command(commander, "two", index=10)
    after = rig.wait_transaction("two")
    # Restored from the retained state: the change applies to rockstar, the version continues,
    # and the command sent while no arbiter ran was never applied (nor did the hand move).
    assert after.angles == (10, *before.angles[1:])
    assert after.version == before.version + 1
    assert all(transaction_of(raw) != "lost" for raw in rig.payloads(rig.t.state))


@BOTH
def test_device_killed_and_restarted(rig: Rig) -> None:
    commander = rig.client()
    rig.command(commander, "one", pose="okay")
    rig.wait_transaction("one")
    rig.device.kill()
    eventually(lambda: rig.last(rig.t.availability) == b"offline", 5, "availability offline (will)")
    # The arbiter keeps accepting; the device picks the latest up when it is back.
    rig.command(commander, "two", pose="phone")
    rig.command(commander, "three", middle=45)
    eventually(lambda: (s := rig.state()) is not None and s.transaction == "three", 10, "three")
    rig.device = rig.start_device()
    after = rig.wait_transaction("three")
    assert after.angles == (0, 45, 0, 180, 180)


def test_serial_port_vanishes_and_comes_back(rig: Rig) -> None:
    commander = rig.client()
    rig.command(commander, "one", pose="point")
    rig.wait_transaction("one")
    rig.sim.unplug()
    eventually(lambda: (r := rig.reported()) is not None and r.link == "down", 10, "link down")
    assert rig.last(rig.t.availability) == b"online"  # the service is alive, the hand is not
    rig.command(commander, "two", angles=[1, 2, 3, 4, 5])
    eventually(lambda: (s := rig.state()) is not None and s.transaction == "two", 10, "two")
    assert (rig.reported() or Reported()).link == "down"
    rig.sim.plug()  # the firmware boots again at its power-on angles
    after = rig.wait_transaction("two")
    assert after.angles == (1, 2, 3, 4, 5)
    assert rig.device.alive()


def test_simulated_hand_process_killed_and_restarted(rig: Rig, tmp_path: Path) -> None:
    """The hand as ``hand-mqtt simulate`` in its own process, killed and started again."""
    link = tmp_path / "sim-link"
    link.mkdir()
    hand = SimulatedHandProcess(tmp_path / "simulate.log", args=["--link", str(link)]).start()
    try:
        rig.device.stop()
        rig.device = rig.start_device(serial=hand.path)
        commander = rig.client()
        rig.command(commander, "one", pose="fist")
        eventually(
            lambda: (r := rig.reported()) is not None and r.angles == (0, 0, 0, 0, 0), 20, "fist"
        )
        hand.kill()
        eventually(lambda: (r := rig.reported()) is not None and r.link == "down", 10, "down")
        hand = SimulatedHandProcess(tmp_path / "simulate.log", args=["--link", str(link)]).start()
        rig.command(commander, "two", thumb=90)
        eventually(
            lambda: (
                (r := rig.reported()) is not None
                and r.link == "up"
                and r.angles == (0, 0, 0, 0, 90)
                and r.version == (rig.state() or HandState()).version
            ),
            20,
            "reported on the new hand",
        )
    finally:
        hand.stop()


# -- clients -----------------------------------------------------------------------------------


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([kind]) + bytes(encoded) + body


def test_client_disconnecting_mid_command(rig: Rig) -> None:
    commander = rig.client()
    rig.command(commander, "one", pose="peace")
    before = rig.wait_transaction("one")
    connect = _packet(
        0x10, _mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + _mqtt_string("cut")
    )
    publish = _packet(0x30, _mqtt_string(rig.t.set) + b'{"pose": "fist", "transaction": "cut"}')
    for cut in (1, 2, len(publish) // 2, len(publish) - 1):
        with socket.create_connection(("127.0.0.1", rig.broker.port), timeout=5) as raw:
            raw.sendall(connect)
            raw.recv(4)  # CONNACK
            raw.sendall(publish[:cut])
    # A client that dies right after publishing: its QoS 0 command may or may not be applied,
    # but the system stays consistent either way.
    dying = MqttClient(BrokerUrl.parse(rig.broker.url), name="dying")
    dying.connect()
    dying.publish(rig.t.finger_set("pinky"), "77", qos=0)
    dying.abort()
    rig.command(commander, "two", pose="okay")
    rig.wait_transaction("two")
    # The cut commands were never applied; the dying client's may have been, on peace.
    states = [HandState.model_validate_json(raw) for raw in rig.payloads(rig.t.state) if raw]
    assert "cut" not in [s.transaction for s in states]
    assert {s.angles for s in states if s.version > before.version} <= {
        (180, 180, 0, 77, 0),
        (0, 180, 180, 180, 0),
    }


@BOTH
def test_flooding_client_while_others_command(rig: Rig) -> None:
    """A client publishing as fast as it can for two seconds, while another commands politely.

    MQTT does not say who published a message, so the arbiter cannot be fair between clients:
    the polite commands wait in line behind the flood (and the broker may drop some once its
    queue for the arbiter is full). What must hold: nothing crashes, no state goes backwards,
    and once the flood stops the backlog drains and the next command is applied promptly.
    """
    flooder = rig.client("flooder")
    polite = rig.client("polite")
    # The embedded broker shares this process (and its GIL) with the flooding thread.
    flood_size = 8000 if rig.broker.kind == "mosquitto" else 2000

    def flood() -> None:
        for i in range(flood_size):
            flooder.publish(rig.t.finger_set("index"), str(i % 181), qos=0)
        # Acknowledged only once the broker has taken every flood message before it.
        flooder.publish(rig.t.finger_set("index"), "0", qos=1, wait=60)

    flooding = threading.Thread(target=flood)
    started = time.monotonic()
    flooding.start()
    i = 0
    while flooding.is_alive():
        rig.command(polite, f"polite-{i}", thumb=i)
        i += 1
        time.sleep(0.05)
    flooding.join()
    flood_ended = time.monotonic()
    rig.command(polite, "last", thumb=123)
    # A slow subscriber (our watcher) may lose messages in such a burst; the retained
    # topics are the truth, so read them afresh once the hand got there.
    eventually(lambda: rig.sim.firmware.targets[4] == 123, 60, "the last command on the hand")
    drained_in = time.monotonic() - flood_ended
    seen = list(rig.payloads(rig.t.state))
    # Flood commands only move the index: whatever of the flood a broker still delivers
    # after "last", the thumb stays where "last" put it.
    rig.watch()
    after = rig.wait_transaction("last", 60)
    assert after.thumb == 123
    assert all(s.alive() for s in rig.services)
    versions = [HandState.model_validate_json(raw).version for raw in seen if raw]
    assert versions == sorted(versions), "a state went backwards"
    applied = {transaction_of(raw) for raw in seen}
    polite_applied = sum(f"polite-{n}" in applied for n in range(i))
    print(
        f"\n{rig.broker.kind}: {flood_size} commands flooded in {flood_ended - started:.1f} s; "
        f"{polite_applied}/{i} polite commands seen applied; state version {after.version}; "
        f"the next command reached the hand {drained_in:.1f} s after the flood"
    )


def transaction_of(raw: bytes) -> object:
    try:
        return json.loads(raw).get("transaction")
    except ValueError:
        return None


# -- ownership of the hand -----------------------------------------------------------------------


@BOTH
def test_second_device_refused_then_takeover_on_purpose(rig: Rig) -> None:
    commander = rig.client()
    first_owner = (rig.reported() or Reported()).owner
    second = rig.start_device()
    assert second.process is not None
    assert second.process.wait(20) == 1
    assert "another device service" in second.log()
    rig.command(commander, "still-first", pose="peace")
    rig.wait_transaction("still-first")
    assert (rig.reported() or Reported()).owner == first_owner
    third = rig.start_device("--takeover")
    assert rig.device.process is not None
    assert rig.device.process.wait(20) == 3, rig.device.log()[-2000:]
    eventually(
        lambda: (r := rig.reported()) is not None and r.owner not in (None, first_owner),
        20,
        "the new owner in reported",
    )
    rig.command(commander, "third", pose="rockstar")
    rig.wait_transaction("third")
    assert third.alive()
    assert (rig.reported() or Reported()).owner != first_owner


# -- crashes of the broker and the arbiter --------------------------------------------------


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_a_crash_of_the_broker_and_the_arbiter_together_loses_no_command(
    kind: str, tmp_path: Path
) -> None:
    """Mosquitto as shipped saves retained messages every 30 s; the embedded broker never. When
    both die before a save, the arbiter's state file still has every accepted command: the
    version goes on and the hand does not move."""
    rig = Rig(
        kind,
        tmp_path,
        autosave_interval=30,
        arbiter_args=("--state-file", str(tmp_path / "arbiter" / "state.jsonl")),
    )
    try:
        rig.start()
        commander = rig.client()
        rig.command(commander, "one", pose="rockstar")
        before = rig.wait_transaction("one")
        commander.stop()
        rig.arbiter.kill()
        rig.broker.crash()
        rig.broker.start()
        rig.arbiter = rig.start_arbiter()
        rig.watch()
        restored = rig.wait_converged("the state after the crash")
        assert (restored.version, restored.angles) == (before.version, before.angles)
        commander = rig.client()
        rig.command(commander, "two", index=10)
        after = rig.wait_transaction("two")
        assert after.version == before.version + 1
        assert after.angles == (10, *before.angles[1:])
    finally:
        rig.stop()


def hand_mqtt_cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hand_mqtt",
            *args,
            "--broker",
            rig.broker.url,
            "--base",
            rig.topics.base,
        ],
        capture_output=True,
        text=True,
        env=service_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_a_stale_online_after_a_broker_restart_is_told_apart(rig: Rig) -> None:
    """Mosquitto keeps bridge/state=online on disk: after a restart it is back before the
    arbiter reconnects, or when the arbiter is gone for good. The health check asks the arbiter
    itself (bridge/request/ping) and is not fooled."""
    assert hand_mqtt_cli(rig, "health", "arbiter", "-t", "5").returncode == 0
    # Mosquitto saves its retained messages every second here: wait until "online" is on disk.
    database = rig.folder / "mosquitto.db"
    eventually(
        lambda: database.exists() and rig.topics.bridge_state.encode() in database.read_bytes(),
        10,
        "bridge/state saved",
    )
    rig.broker.crash()
    rig.arbiter.kill()  # while the broker is down: nobody will publish its will
    rig.broker.start()
    rig.watch()
    eventually(lambda: rig.last(rig.topics.bridge_state) == b"online", 10, "the stale online")
    stale = hand_mqtt_cli(rig, "health", "arbiter", "-t", "2")
    assert stale.returncode == 1
    assert "does not answer" in stale.stderr
    # A command now is lost (nobody serves it), and the client says so.
    lost = hand_mqtt_cli(rig, "set", "index", "10", "-t", "2")
    assert lost.returncode == 4  # nothing answered within --timeout
    assert "no answer from the arbiter" in lost.stderr
    rig.arbiter = rig.start_arbiter()
    eventually(
        lambda: hand_mqtt_cli(rig, "health", "arbiter", "-t", "5").returncode == 0,
        30,
        "the arbiter answering again",
    )
