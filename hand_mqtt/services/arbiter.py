"""The arbiter: the one writer of every hand's desired state.

It takes commands from any client, applies them in arrival order against the current state,
and publishes the result as retained topics: a JSON ``state`` with a version that grows by one
for every accepted command, and one plain angle per finger. A rejected command is answered on
the hand's ``error`` topic. On its first connection it restores each hand from the retained
``state`` (an open hand when there is none).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Final

from pydantic import ValidationError

from hand_mqtt.commands import parse_command
from hand_mqtt.errors import CommandError
from hand_mqtt.model import FINGERS, ErrorReport, HandState, PoseBook
from hand_mqtt.mqtt import Message, MqttClient, Will
from hand_mqtt.topics import BRIDGE, CommandTopic, HandTopics, Topics

__all__ = ["Arbiter"]

logger = logging.getLogger("hand_mqtt")

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
_ERROR_PAYLOAD_CHARS: Final = 200


class Arbiter:
    """Validates and applies commands for one or more hands.

    ``hands`` lists the hands served; ``None`` serves every hand under the base topic (up to
    ``max_hands``, so a stray client cannot make it grow without bound).
    """

    def __init__(
        self,
        client: MqttClient,
        *,
        topics: Topics | None = None,
        hands: Sequence[str] | None = ("hand1",),
        poses: PoseBook | None = None,
        max_hands: int = 1000,
    ) -> None:
        self.client = client
        self.topics = topics or Topics()
        self.poses = poses or PoseBook()
        self.max_hands = max_hands
        self._fixed = None if hands is None else {h: self.topics.hand(h) for h in hands}
        self._states: dict[str, HandState] = {}
        self._hand_topics: dict[str, HandTopics] = dict(self._fixed or {})
        self._restoring = True
        self._restored = threading.Event()
        self._sync_topic = self.topics.sync(client.client_id)
        self.accepted = 0
        self.rejected = 0
        client.set_will(Will(self.topics.bridge_state, OFFLINE))

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, then start the client; returns at once (see :meth:`wait_ready`)."""
        if self._fixed is None:
            self.client.subscribe(f"{self.topics.base}/+/state", self._on_retained_state)
            filters: Sequence[str] = self.topics.all_command_filters
        else:
            for hand_topics in self._fixed.values():
                self.client.subscribe(hand_topics.state, self._on_retained_state)
            filters = [f for t in self._fixed.values() for f in t.command_filters]
        self.client.subscribe(self._sync_topic, self._on_sync)
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._on_command)
        self.client.on_connect(self._on_connect)
        self.client.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until state has been restored and commands are being served."""
        return self._restored.wait(timeout)

    def stop(self) -> None:
        """Say ``offline`` on the bridge topic and disconnect."""
        if self.client.connected:
            try:
                self.client.publish(self.topics.bridge_state, OFFLINE, retain=True, wait=2.0)
            except Exception:
                logger.warning("arbiter: could not publish offline before stopping")
        self.client.stop()

    def state(self, hand: str) -> HandState:
        """The current desired state of ``hand`` (open when never commanded)."""
        return self._states.get(hand) or HandState(pose=self.poses.name_of(HandState().angles))

    @property
    def hands(self) -> list[str]:
        return sorted(self._states.copy())

    # -- handlers (network thread) ---------------------------------------------------------

    def _on_connect(self) -> None:
        self.client.publish(self.topics.bridge_state, ONLINE, retain=True)
        poses = {name: list(angles) for name, angles in self.poses.items()}
        self.client.publish(self.topics.bridge_poses, json.dumps(poses), retain=True)
        if self._restoring:
            # Our own message comes back after the retained states the broker had queued.
            self.client.publish(self._sync_topic, b"sync", qos=1)
            return
        for hand in list(self._states):
            self._publish_state(hand, previous=None)

    def _on_sync(self, _message: Message) -> None:
        if not self._restoring:
            return
        self._restoring = False
        for topic_filter in (
            [f"{self.topics.base}/+/state"]
            if self._fixed is None
            else [t.state for t in self._fixed.values()]
        ):
            self.client.unsubscribe(topic_filter)
        self.client.unsubscribe(self._sync_topic)
        for hand in self._fixed or {}:
            if hand not in self._states:
                self._states[hand] = self.state(hand)
        for hand in list(self._states):
            self._publish_state(hand, previous=None)
        logger.info("arbiter: serving %s", ", ".join(self.hands) or "every hand")
        self._restored.set()

    def _on_retained_state(self, message: Message) -> None:
        if not self._restoring:
            return
        hand = self.topics.hand_of(message.topic, "state")
        if hand is None or hand in self._states or not message.payload:
            return
        try:
            restored = HandState.model_validate_json(message.payload)
        except ValidationError:
            logger.warning("arbiter: ignoring an unreadable retained state for %s", hand)
            return
        if self._fixed is None and len(self._states) >= self.max_hands:
            return
        self._hand_topics.setdefault(hand, self.topics.hand(hand))
        self._states[hand] = restored.model_copy(
            update={"pose": self.poses.name_of(restored.angles)}
        )
        logger.info("arbiter: restored %s at version %d", hand, restored.version)

    def _on_command(self, message: Message) -> None:
        target = self.topics.parse_command(message.topic)
        if target is None:
            if not message.topic.startswith(f"{self.topics.base}/{BRIDGE}/"):
                self._reject(None, message, "this is not a command topic of a hand")
            return
        if message.retain:
            self._reject(
                target.hand,
                message,
                "retained commands are ignored: publish commands without the retain flag",
            )
            return
        hand_topics = self._topics_for(target, message)
        if hand_topics is None:
            return
        try:
            command = parse_command(target, message.payload, self.poses)
        except CommandError as exc:
            self._reject(target.hand, message, str(exc), exc.transaction)
            return
        current = self._states.get(target.hand) or self.state(target.hand)
        angles = command.apply(current.angles, self.poses)
        # model_construct: every angle was checked by the command parser already.
        new = HandState.model_construct(
            index=angles[0],
            middle=angles[1],
            ring=angles[2],
            pinky=angles[3],
            thumb=angles[4],
            pose=self.poses.name_of(angles),
            version=current.version + 1,
            transaction=command.transaction,
        )
        self._states[target.hand] = new
        self.accepted += 1
        self._publish_state(target.hand, previous=current)

    # -- helpers ---------------------------------------------------------------------------

    def _topics_for(self, target: CommandTopic, message: Message) -> HandTopics | None:
        topics = self._hand_topics.get(target.hand)
        if topics is not None:
            return topics
        if self._fixed is not None:
            return None
        if len(self._hand_topics) >= self.max_hands:
            self._reject(
                target.hand, message, f"this arbiter already serves {self.max_hands} hands"
            )
            return None
        topics = self._hand_topics[target.hand] = self.topics.hand(target.hand)
        return topics

    def _publish_state(self, hand: str, previous: HandState | None) -> None:
        state = self._states[hand]
        topics = self._hand_topics[hand]
        # QoS 0 on purpose: these are retained snapshots, each one replacing the last, and all
        # are published again on every reconnect, so an acknowledgement would buy nothing
        # but two more packets per command. The state goes first and on the wire at once:
        # it is what the device service waits for.
        self.client.publish(topics.state, state.to_json(), qos=0, retain=True)
        self.client.flush()
        for finger, angle, old in zip(
            FINGERS,
            state.angles,
            previous.angles if previous is not None else (None,) * 5,
            strict=True,
        ):
            if angle != old:
                self.client.publish(topics.finger(finger), str(angle), qos=0, retain=True)

    def _reject(
        self,
        hand: str | None,
        message: Message,
        sentence: str,
        transaction: str | int | None = None,
    ) -> None:
        self.rejected += 1
        payload = message.payload[: _ERROR_PAYLOAD_CHARS * 4].decode("utf-8", errors="replace")
        report = ErrorReport(
            topic=message.topic[:256],
            payload=payload[:_ERROR_PAYLOAD_CHARS],
            error=sentence,
            transaction=transaction,
        )
        if hand is None:
            error_topic = f"{self.topics.base}/{BRIDGE}/error"
        else:
            error_topic = self._hand_topics.get(hand, self.topics.hand(hand)).error
        logger.info("arbiter: rejected a command on %s: %s", message.topic[:256], sentence)
        self.client.publish(error_topic, report.model_dump_json(), qos=1)
