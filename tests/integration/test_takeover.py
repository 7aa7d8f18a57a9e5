"""Arbiters that share a hand: one serves it, the other stands by and takes it over.

Every command of a stream is sent with its own transaction and a delta, so a command applied
twice or lost shows in the final angle; every one must be answered exactly once, by a state or
an error, and the versions must follow each other with no gap and no repeat.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from hand_mqtt import Arbiter, BrokerUrl, HandState, Lease, MqttClient, Topics
from tests.support.system import Recorder, wait_until

HAND = "hand1"


class Stream:
    """A commander and a recorder of every answer, for one hand."""

    def __init__(self, url: BrokerUrl, topics: Topics) -> None:
        self.url = url
        self.topics = topics
        self.hand = topics.hand(HAND)
        self.recorder = Recorder(url, f"{topics.base}/#")
        self.client = MqttClient(url, name="commander")
        self.client.connect()
        self.sent = 0

    def send(self, count: int) -> None:
        for _ in range(count):
            payload = {"index": {"delta": 1}, "transaction": f"t{self.sent}"}
            self.client.publish(self.hand.set, json.dumps(payload), qos=1)
            self.sent += 1

    def states(self) -> list[HandState]:
        return [
            HandState.model_validate_json(m.payload)
            for m in self.recorder.on(self.hand.state)
            if m.payload
        ]

    def errors(self) -> list[dict[str, object]]:
        return [json.loads(m.payload) for m in self.recorder.on(self.hand.error)]

    def answered(self) -> list[object]:
        """The transactions answered so far, by a state or an error (an arbiter that takes the
        hand over publishes the state it starts from again: one answer)."""
        versions = {s.version: s.transaction for s in self.states()}
        return [t for t in versions.values() if t is not None] + [
            e["transaction"] for e in self.errors() if e.get("transaction") is not None
        ]

    def wait_answered(self, count: int, timeout: float = 30.0) -> None:
        wait_until(
            lambda: len(set(self.answered()) & self.transactions(count)) >= count,
            timeout,
            f"{count} commands answered",
        )

    def transactions(self, count: int) -> set[object]:
        return {f"t{n}" for n in range(count)}

    def lease(self) -> Lease | None:
        found = self.recorder.on(self.topics.bridge_lease(HAND))
        leases = [Lease.model_validate_json(m.payload) for m in found if m.payload]
        serving = [lease for lease in leases if lease.status == "serving"]
        return serving[-1] if serving else None

    def check(self) -> None:
        """Every command answered once, the versions consecutive, the deltas all counted."""
        answered = Counter(self.answered())
        twice = sorted(str(t) for t, n in answered.items() if n > 1)
        never = sorted(str(t) for t in self.transactions(self.sent) - set(answered))
        assert not twice and not never, (
            f"answered twice: {twice}; never answered: {never}; "
            f"states: {[(s.version, s.transaction, s.index) for s in self.states()]}"
        )
        versions = [s.version for s in self.states()]
        # Each arbiter publishes the state it starts from once: the same version again.
        distinct = sorted(set(versions))
        assert distinct == list(range(distinct[0], distinct[-1] + 1)), versions
        applied = {s.version for s in self.states() if s.transaction is not None}
        final = max(self.states(), key=lambda s: s.version)
        assert final.index == self.start_index + len(applied)

    def close(self) -> None:
        self.client.stop()
        self.recorder.close()

    start_index = 0


@pytest.fixture
def stream(broker_url: BrokerUrl, topics: Topics) -> Iterator[Stream]:
    made = Stream(broker_url, topics)
    yield made
    made.close()


def _arbiter(url: BrokerUrl, topics: Topics, **options: object) -> Arbiter:
    arbiter = Arbiter(MqttClient(url, name="arbiter"), topics=topics, hands=[HAND], **options)  # type: ignore[arg-type]
    arbiter.start()
    assert arbiter.wait_ready(15)
    return arbiter


def _fist(stream: Stream, arbiter: Arbiter) -> None:
    stream.client.publish(stream.hand.set, b'{"pose": "fist"}', qos=1)
    wait_until(lambda: arbiter.state(HAND).pose == "fist", 10, "the fist")
    stream.start_index = 0


def test_a_standby_takes_over_a_vanished_arbiter_mid_stream(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    active = _arbiter(broker_url, topics)
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, active)
        assert active.serves(HAND)
        assert not standby.serves(HAND)
        stream.send(40)
        wait_until(lambda: active.state(HAND).index >= 10, 10, "the stream under way")
        active.abort()  # killed: no goodbye, the broker sends its wills
        stream.send(40)
        stream.wait_answered(80)
        assert standby.serves(HAND)
        stream.check()
        lease = stream.lease()
        assert lease is not None
        assert lease.arbiter == standby.session
    finally:
        active.stop()
        standby.stop()


def test_a_stopped_arbiter_releases_its_hand_to_the_standby(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    active = _arbiter(broker_url, topics)
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, active)
        stream.send(10)
        stream.wait_answered(10)
        active.stop()
        stream.send(10)
        stream.wait_answered(20)
        assert standby.serves(HAND)
        stream.check()
    finally:
        standby.stop()


def test_an_arbiter_started_for_a_served_hand_takes_it_over_and_the_holder_stands_by(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    first = _arbiter(broker_url, topics)
    second: Arbiter | None = None
    try:
        _fist(stream, first)
        stream.send(30)
        second = _arbiter(broker_url, topics)  # not a standby: it claims the hand at start
        stream.send(30)
        stream.wait_answered(60)
        wait_until(lambda: second is not None and second.serves(HAND), 10, "the handover")
        assert not first.serves(HAND)
        stream.check()
        # The first stands by now: when the second vanishes, it takes the hand back.
        second.abort()
        stream.send(10)
        stream.wait_answered(70)
        assert first.serves(HAND)
        stream.check()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_standby_alone_serves_a_hand_nobody_holds(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, standby)
        stream.send(5)
        stream.wait_answered(5)
        stream.check()
    finally:
        standby.stop()
