"""hand-mqtt on a clustered broker: services and clients on different nodes of one cluster.

Three Aedes nodes share one Redis (see ``harness.cluster``). Aedes delivers retained messages
late (after a client's own echo, and after later live messages), and publishes a dead node's
wills from another node a few heartbeats later: the services must be right all the same.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from hand_mqtt import (
    BrokerUrl,
    HandClient,
    HandState,
    Lease,
    Message,
    MqttClient,
    Topics,
)
from harness.cluster import AedesCluster
from harness.waiting import wait_until
from tests.support.stream import HAND, Stream
from tests.support.system import Recorder, System


@pytest.fixture
def topics() -> Topics:
    return Topics(f"c{uuid.uuid4().hex[:8]}")


def _urls(cluster: AedesCluster, *order: int) -> BrokerUrl:
    return BrokerUrl.parse(cluster.urls(*order))


class ArbiterProcess:
    """``hand-mqtt arbiter`` in a process of its own, to be killed with SIGKILL."""

    def __init__(self, broker: str, topics: Topics, log: Path, *options: str) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hand_mqtt",
                "arbiter",
                "--broker",
                broker,
                "--base",
                topics.base,
                "-v",
                *options,
            ],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Bridge:
    """Who runs and who serves what, as the retained presence and lease topics say."""

    def __init__(self, url: BrokerUrl, topics: Topics) -> None:
        self.topics = topics
        self.recorder = Recorder(url, f"{topics.base}/bridge/#")
        self.pinger = MqttClient(url, name="pinger")
        self.pinger.connect()

    def sessions(self) -> set[str]:
        """The arbiters that answered a ping (each answer names its run)."""
        answers = self.recorder.on(self.topics.bridge_response("ping"))
        return {json.loads(m.payload)["session"] for m in answers}

    def wait_arbiters(self, count: int) -> set[str]:
        """Ping until ``count`` arbiters answer: their subscriptions are in place."""

        def answered() -> bool:
            if len(self.sessions()) < count:
                self.pinger.publish(self.topics.bridge_request("ping"), b"{}")
                return False
            return True

        wait_until(answered, 60, f"{count} arbiters answering")
        return self.sessions()

    def holders(self) -> dict[str, str]:
        """Each hand's arbiter, by its latest serving lease."""
        found: dict[str, str] = {}
        prefix = self.topics.bridge_lease("")
        for message in list(self.recorder.messages):
            if not message.topic.startswith(prefix) or not message.payload:
                continue
            lease = Lease.model_validate_json(message.payload)
            if lease.status == "serving" and lease.arbiter is not None:
                found[lease.hand] = lease.arbiter
        return found

    def close(self) -> None:
        self.pinger.stop()
        self.recorder.close()


def test_a_command_to_one_node_is_served_by_services_on_the_others(
    cluster: AedesCluster, topics: Topics
) -> None:
    a, b, c = (BrokerUrl.parse(node.url) for node in cluster.nodes)
    system = System(b, topics, device_url=c)
    system.sim.start()
    try:
        system.start_arbiter()
        system.start_device()
        wait_until(lambda: system.device is not None and system.device.link_up, 30, "link up")
        with HandClient(a, topics=topics) as hand:
            state = hand.pose("peace", wait="reported", timeout=30)
            assert state.angles == (180, 180, 0, 0, 0)
            reported = hand.reported
            assert reported is not None
            assert reported.angles == (180, 180, 0, 0, 0)
            assert reported.version == state.version
            assert hand.snapshot().served_by == system.arbiter.session  # type: ignore[union-attr]
    finally:
        system.stop()


def test_services_move_to_another_node_when_theirs_dies(
    cluster: AedesCluster, topics: Topics
) -> None:
    system = System(_urls(cluster, 1, 0), topics, device_url=_urls(cluster, 2, 0))
    system.sim.start()
    client_url = BrokerUrl.parse(cluster.nodes[0].url)
    try:
        system.start_arbiter()
        system.start_device()
        wait_until(lambda: system.device is not None and system.device.link_up, 30, "link up")
        with HandClient(client_url, topics=topics) as hand:
            first = hand.pose("fist", wait="reported", timeout=30)
            cluster.nodes[1].kill()  # the arbiter's node
            arbiter = system.arbiter
            assert arbiter is not None
            wait_until(lambda: arbiter.client.broker.port == cluster.nodes[0].port, 30)
            # A command sent before its subscriptions are made on the new node is lost to a
            # lone arbiter (no other keeps it): its answer to a ping says they are.
            bridge = Bridge(client_url, topics)
            bridge.wait_arbiters(1)
            bridge.close()
            second = hand.pose("peace", wait="reported", timeout=30)
            assert second.version == first.version + 1
            cluster.nodes[2].kill()  # the device service's node
            device = system.device
            assert device is not None
            wait_until(lambda: device.client.broker.port == cluster.nodes[0].port, 30)
            third = hand.pose("rockstar", wait="reported", timeout=30)
            assert third.version == second.version + 1
            assert system.sim.firmware.targets == (180, 0, 0, 180, 180)
    finally:
        system.stop()


def _retained(url: BrokerUrl, topic: str) -> bytes | None:
    """The retained message on ``topic``, read with a fresh subscription (the broker's word,
    whatever live messages a subscriber missed)."""
    got: list[bytes] = []
    arrived = threading.Event()
    client = MqttClient(url, name="reader")

    def keep(message: Message) -> None:
        got.append(message.payload)
        arrived.set()

    client.subscribe(topic, keep)
    client.connect()
    try:
        arrived.wait(2.0)
        return got[-1] if got else None
    finally:
        client.stop()


def test_a_killed_arbiter_is_replaced_by_the_standby_mid_stream(
    cluster: AedesCluster, topics: Topics, tmp_path: Path
) -> None:
    """Aedes may not pass every retained state on to a live subscriber, so the proof is the
    final retained state: with every command a +1 on the index finger, its index and version
    count the commands applied; each of the others was answered on error."""
    watcher = BrokerUrl.parse(cluster.nodes[0].url)
    bridge = Bridge(watcher, topics)
    stream = Stream(watcher, topics)
    active = ArbiterProcess(cluster.urls(1, 2), topics, tmp_path / "active.log", "--hand", HAND)
    standby: ArbiterProcess | None = None
    total = 100
    try:
        [active_id] = bridge.wait_arbiters(1)
        standby = ArbiterProcess(
            cluster.urls(2, 1), topics, tmp_path / "standby.log", "--hand", HAND, "--standby"
        )
        standby_id = (bridge.wait_arbiters(2) - {active_id}).pop()
        stream.client.publish(stream.hand.set, b'{"pose": "fist"}', qos=1)
        wait_until(lambda: any(s.pose == "fist" for s in stream.states()), 30, "the fist")
        start = max(s.version for s in stream.states())
        assert bridge.holders()[HAND] == active_id

        def send() -> None:
            for _ in range(total):
                stream.send(1)
                time.sleep(0.003)  # a stream, not a burst: the kill falls in the middle

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: len(stream.answered()) >= 20, 30, "the stream under way")
        active.kill()
        sender.join()

        def final() -> HandState | None:
            payload = _retained(watcher, stream.hand.state)
            return HandState.model_validate_json(payload) if payload else None

        def done() -> bool:
            state = final()
            refused = {e["transaction"] for e in stream.errors()}
            return state is not None and state.version - start + len(refused) >= total

        wait_until(done, 60, "every command applied or refused")
        state = final()
        assert state is not None
        refused = {e["transaction"] for e in stream.errors()}
        assert state.version - start == total - len(refused), "a command applied twice"
        assert state.index == total - len(refused)
        assert standby.process.poll() is None
        wait_until(lambda: bridge.holders().get(HAND) == standby_id, 30, "the standby's lease")
    finally:
        active.stop()
        if standby is not None:
            standby.stop()
        stream.close()
        bridge.close()


def test_a_hundred_hands_spread_over_three_arbiters_move_when_one_dies(
    cluster: AedesCluster, topics: Topics, tmp_path: Path
) -> None:
    hands = [f"h{n:03d}" for n in range(100)]
    watcher = BrokerUrl.parse(cluster.nodes[0].url)
    bridge = Bridge(watcher, topics)
    recorder = Recorder(watcher, f"{topics.base}/+/state", f"{topics.base}/+/error")
    commander = MqttClient(watcher, name="commander")
    commander.connect()
    arbiters = [
        ArbiterProcess(
            cluster.urls(n, (n + 1) % 3), topics, tmp_path / f"arbiter{n}.log", "--all-hands"
        )
        for n in range(3)
    ]

    def states(hand: str) -> list[HandState]:
        found = recorder.on(topics.hand(hand).state)
        return [HandState.model_validate_json(m.payload) for m in found if m.payload]

    def send_round(round_: int) -> None:
        for hand in hands:
            payload = {"index": round_, "transaction": f"{hand}-{round_}"}
            commander.publish(topics.hand(hand).set, json.dumps(payload), qos=1)

    def answered(round_: int) -> set[str]:
        return {
            hand
            for hand in hands
            if any(s.transaction == f"{hand}-{round_}" for s in states(hand))
            or any(
                json.loads(m.payload).get("transaction") == f"{hand}-{round_}"
                for m in recorder.on(topics.hand(hand).error)
            )
        }

    try:
        sessions = bridge.wait_arbiters(3)
        send_round(1)
        wait_until(lambda: len(answered(1)) == len(hands), 60, "every hand served")
        wait_until(lambda: set(bridge.holders()) >= set(hands), 30, "every hand leased")
        holders = bridge.holders()
        load = Counter(holders[hand] for hand in hands)
        assert set(load) <= sessions
        assert len(load) > 1, f"one arbiter took every hand: {load}"
        busiest, _count = load.most_common(1)[0]
        moved = {hand for hand in hands if holders[hand] == busiest}
        victim = next(
            process
            for process, session in zip(arbiters, _sessions(arbiters), strict=True)
            if session == busiest
        )
        victim.kill()
        wait_until(
            lambda: all(bridge.holders().get(hand) not in (None, busiest) for hand in moved),
            60,
            "the dead arbiter's hands taken",
        )
        send_round(2)
        wait_until(lambda: len(answered(2)) == len(hands), 60, "every hand served again")
        for hand in hands:
            versions = sorted({s.version for s in states(hand)})
            applied = [s for s in states(hand) if s.transaction is not None]
            assert len({s.version for s in applied}) == 2, (hand, versions)
            assert versions[-1] == 2, (hand, versions)
    finally:
        for process in arbiters:
            process.stop()
        commander.stop()
        recorder.close()
        bridge.close()


def _sessions(arbiters: list[ArbiterProcess]) -> list[str]:
    """The id of each arbiter process's run, read from its log ("arbiter <id>: ...")."""
    found = []
    for process in arbiters:
        text = Path(process.log.name).read_text(errors="replace")
        ids = re.findall(r"arbiter ([0-9a-f]{16}): ", text)
        assert ids, text[-2000:]
        found.append(ids[0])
    return found
