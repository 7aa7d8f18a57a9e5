"""A client for people and programs: send commands and wait for the verdict, read the state.

Used by the CLI and the GUI; any MQTT client can do the same by following docs/topics.md.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hand_mqtt.errors import CommandError, NoAnswerError
from hand_mqtt.model import FINGERS, ErrorReport, HandState, Reported
from hand_mqtt.mqtt import BrokerUrl, Message, MqttClient
from hand_mqtt.topics import HandTopics, Topics

__all__ = ["HandClient", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the broker holds about one hand."""

    desired: HandState | None
    reported: Reported | None
    device: str | None
    """The device service's availability: ``online``, ``offline`` or None (never seen)."""
    arbiter: str | None
    """The arbiter's bridge state: ``online``, ``offline`` or None."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired.model_dump() if self.desired else None,
            "reported": self.reported.model_dump() if self.reported else None,
            "device": self.device,
            "arbiter": self.arbiter,
        }


Listener = Callable[[Snapshot], None]


class HandClient:
    """Commands one hand and follows what the arbiter and the device say about it."""

    def __init__(
        self,
        url: BrokerUrl,
        *,
        topics: Topics | None = None,
        hand: str = "hand1",
        name: str = "cli",
    ) -> None:
        self.topics = topics or Topics()
        self.hand_topics: HandTopics = self.topics.hand(hand)
        self._mqtt = MqttClient(url, name=name)
        self._lock = threading.Condition()
        self._desired: HandState | None = None
        self._reported: Reported | None = None
        self._device: str | None = None
        self._arbiter: str | None = None
        self._answers: dict[str | int, HandState | ErrorReport | None] = {}
        self._synced = threading.Event()
        self._listeners: list[Listener] = []
        self.poses: dict[str, list[int]] = {}
        self.errors: list[ErrorReport] = []

    # -- connection ------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and wait until the retained topics have arrived."""
        t = self.hand_topics
        self._mqtt.subscribe(t.state, self._on_state)
        self._mqtt.subscribe(t.reported, self._on_reported)
        self._mqtt.subscribe(t.availability, self._on_device)
        self._mqtt.subscribe(t.error, self._on_error)
        self._mqtt.subscribe(self.topics.bridge_state, self._on_bridge)
        self._mqtt.subscribe(self.topics.bridge_poses, self._on_poses)
        sync_topic = self.topics.sync(self._mqtt.client_id)
        self._mqtt.subscribe(sync_topic, lambda _m: self._synced.set())
        self._mqtt.on_connect(lambda: self._mqtt.publish(sync_topic, b"sync", qos=1))
        self._mqtt.connect(timeout)
        self._synced.wait(timeout)

    def close(self) -> None:
        self._mqtt.stop()

    def __enter__(self) -> HandClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._mqtt.connected

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with a fresh :class:`Snapshot` on every change (network thread)."""
        self._listeners.append(listener)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._desired, self._reported, self._device, self._arbiter)

    # -- commands --------------------------------------------------------------------------

    def send(self, command: dict[str, Any], *, timeout: float = 5.0) -> HandState:
        """Publish a whole-hand command and wait for the arbiter's verdict.

        Returns the new desired state; raises :class:`CommandError` with the arbiter's sentence
        when it is rejected and :class:`NoAnswerError` when nothing answers in time.
        """
        transaction = uuid.uuid4().hex[:16]
        payload = json.dumps({**command, "transaction": transaction})
        with self._lock:
            self._answers[transaction] = None
        self._mqtt.publish(self.hand_topics.set, payload, qos=1)
        with self._lock:
            answered = self._lock.wait_for(
                lambda: self._answers.get(transaction) is not None, timeout
            )
            answer = self._answers.pop(transaction, None)
        if not answered or answer is None:
            raise NoAnswerError(
                f"no answer from the arbiter within {timeout:g} s "
                f"(is 'hand-mqtt arbiter' running for {self.hand_topics.root}?)"
            )
        if isinstance(answer, ErrorReport):
            raise CommandError(answer.error, answer.transaction)
        return answer

    def set_finger(self, finger: str, angle: int, *, timeout: float = 5.0) -> HandState:
        return self.send({_finger(finger): angle}, timeout=timeout)

    def nudge(self, finger: str, delta: int, *, timeout: float = 5.0) -> HandState:
        return self.send({_finger(finger): {"delta": delta}}, timeout=timeout)

    def pose(self, name: str, *, timeout: float = 5.0) -> HandState:
        return self.send({"pose": name}, timeout=timeout)

    def angles(self, angles: Sequence[int | None], *, timeout: float = 5.0) -> HandState:
        return self.send({"angles": list(angles)}, timeout=timeout)

    # -- handlers (network thread) ---------------------------------------------------------

    def _changed(self) -> None:
        snapshot = self.snapshot()
        for listener in list(self._listeners):
            listener(snapshot)

    def _on_state(self, message: Message) -> None:
        try:
            state = HandState.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._desired = state
            if state.transaction is not None and state.transaction in self._answers:
                self._answers[state.transaction] = state
                self._lock.notify_all()
        self._changed()

    def _on_error(self, message: Message) -> None:
        try:
            report = ErrorReport.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self.errors.append(report)
            del self.errors[:-50]
            if report.transaction is not None and report.transaction in self._answers:
                self._answers[report.transaction] = report
                self._lock.notify_all()
        self._changed()

    def _on_reported(self, message: Message) -> None:
        try:
            reported = Reported.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._reported = reported
        self._changed()

    def _on_device(self, message: Message) -> None:
        with self._lock:
            self._device = message.payload.decode("utf-8", "replace") or None
        self._changed()

    def _on_bridge(self, message: Message) -> None:
        with self._lock:
            self._arbiter = message.payload.decode("utf-8", "replace") or None
        self._changed()

    def _on_poses(self, message: Message) -> None:
        try:
            poses = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(poses, dict):
            self.poses = {str(k): list(v) for k, v in poses.items() if isinstance(v, list)}
        self._changed()


def _finger(name: str) -> str:
    if name not in FINGERS:
        raise CommandError(f"unknown finger {name!r}; fingers are {', '.join(FINGERS)}")
    return name
