"""A stream of commands to one hand, and the check that each was answered exactly once.

Every command carries its own transaction and a delta of +1 on the index finger, so a command
applied twice or lost shows in the final angle; each must be answered once, by a state or an
error, and the versions must follow each other with no gap.
"""

from __future__ import annotations

import json
from collections import Counter

from hand_mqtt import BrokerUrl, HandState, Lease, MqttClient, Topics
from harness.waiting import wait_until
from tests.support.system import Recorder

HAND = "hand1"


class Stream:
    """A commander and a recorder of every answer, for one hand (see the module)."""

    def __init__(self, url: BrokerUrl, topics: Topics, hand: str = HAND) -> None:
        self.url = url
        self.topics = topics
        self.hand_name = hand
        self.hand = topics.hand(hand)
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
        found = self.recorder.on(self.topics.bridge_lease(self.hand_name))
        leases = [Lease.model_validate_json(m.payload) for m in found if m.payload]
        serving = [lease for lease in leases if lease.status == "serving"]
        return serving[-1] if serving else None

    def check(self) -> None:
        """Every command answered once, the versions consecutive, the deltas all counted."""
        answered = Counter(self.answered())
        twice = sorted(str(t) for t, n in answered.items() if n > 1)
        never = sorted(str(t) for t in self.transactions(self.sent) - set(answered))
        seen = [(s.version, s.transaction, s.index) for s in self.states()]
        assert not twice, f"answered twice: {twice}; states: {seen}"
        assert not never, f"never answered: {never}; states: {seen}"
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
