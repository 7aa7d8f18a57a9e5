"""The arbiter: the one writer of every hand's desired state.

It takes commands from any client, applies them in arrival order against the current state,
and publishes the result as retained topics: a JSON ``state`` with a version that grows by one
for every accepted command, and one plain angle per finger. A rejected command is answered on
the hand's ``error`` topic.

Restore before serve: on start it reads each hand's retained ``state`` (and its own state file,
when it keeps one) and continues from the newer, a locked hand (the emergency stop) included. A
hand is served once its retained state has arrived, or, when it has none, once the broker has
delivered every retained message (:meth:`MqttClient.when_synced`: its own echo plus a short
grace, because some brokers deliver retained messages after the echo); the hand then starts
from the state file, or open at version 0. Commands that come earlier are held and applied in
arrival order as soon as their hand is served. A retained state that cannot be read is never
replaced by a guess: without a state file to fall back on, the hand is not served (its commands
are answered on ``error``) until a readable state or an empty retained message replaces it.

Gestures are played here too, by the one writer: a :class:`GesturePlayer` keeps time on its own
thread and calls back for each step, which is applied and published like a command's result.
Every handler and every step runs under one lock, so they never interleave.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Concatenate, Final, ParamSpec, TypeVar, cast

from pydantic import ValidationError

from hand_mqtt.commands import Command, parse_command
from hand_mqtt.errors import CommandError
from hand_mqtt.model import (
    ERROR_SENTENCE_CHARS,
    FINGERS,
    Angles,
    BridgeResponse,
    ErrorReport,
    Finger,
    GestureProgress,
    HandState,
    PoseBook,
    ServedHands,
    excerpt,
)
from hand_mqtt.mqtt import Message, MqttClient, Will
from hand_mqtt.services.journal import StateJournal
from hand_mqtt.services.player import GesturePlayer, Playing
from hand_mqtt.services.requests import REQUESTS, parse_request
from hand_mqtt.topics import BRIDGE, OFFLINE, ONLINE, CommandTopic, HandTopics, Topics

__all__ = ["Arbiter"]

logger = logging.getLogger("hand_mqtt")

_LOCKED: Final = (
    'the hand is locked (emergency stop) and refuses to move; send {"lock": false} to unlock it'
)


def _effects(
    current: HandState, command: Command, poses: PoseBook
) -> tuple[Angles, tuple[str, ...], bool, int | None]:
    """What an accepted command (not a gesture) makes of ``current``: the angles, the relaxed
    fingers, the lock and the motion's duration."""
    relaxed = {FINGERS.index(finger) for finger in current.relaxed}
    locked = current.locked
    angles = current.angles
    duration = None
    if command.lock is not None:
        locked = command.lock
        if locked:
            relaxed = set(range(len(FINGERS)))
    relaxed |= set(command.relax)
    if command.moves:
        angles = command.apply(current.angles, poses)
        relaxed -= command.driven
        duration = command.duration_ms
    return angles, tuple(FINGERS[i] for i in sorted(relaxed)), locked, duration


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(
    method: Callable[Concatenate[Arbiter, _P], _R],
) -> Callable[Concatenate[Arbiter, _P], _R]:
    """Run a handler under the arbiter's lock: the network thread and the gesture timer take
    turns, so states are made and published in one order."""

    @functools.wraps(method)
    def run(self: Arbiter, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class Arbiter:
    """Validates and applies commands for one or more hands.

    ``hands`` lists the hands served; ``None`` serves every hand under the base topic (up to
    ``max_hands``, so a stray client cannot make it grow without bound: only hands with an
    accepted command hold a slot, and a ``retire`` request frees one).

    With a ``journal`` every new state is written to it before it is published, and read back
    on start, so a crash of the broker together with the arbiter loses no accepted command.
    At most ``max_held`` commands wait for their hand's state to be restored; more are answered
    on ``error``.
    """

    def __init__(
        self,
        client: MqttClient,
        *,
        topics: Topics | None = None,
        hands: Sequence[str] | None = ("hand1",),
        poses: PoseBook | None = None,
        max_hands: int = 1000,
        journal: StateJournal | None = None,
        max_held: int = 1000,
    ) -> None:
        self.client = client
        self.journal = journal
        self.session = uuid.uuid4().hex[:16]
        """A random id of this run, in every answer to a request (see ``bridge/request``)."""
        self.started = time.time()
        self.topics = topics or Topics()
        self.poses = poses or PoseBook()
        self.max_hands = max_hands
        self.max_held = max_held
        self._fixed = None if hands is None else {h: self.topics.hand(h) for h in hands}
        self._states: dict[str, HandState] = {}
        self._hand_topics: dict[str, HandTopics] = dict(self._fixed or {})
        self._synced = False
        """Every retained state the broker had for us has arrived (or never will)."""
        self._ready: set[str] = set()
        """Hands served before that (their retained state came), in arrival order of commands."""
        self._held: dict[str, list[Message]] = {}
        self._held_count = 0
        self._unreadable: dict[str, bytes] = {}
        """Hands whose retained state cannot be read, with that payload: not served."""
        self._restored = threading.Event()
        self._sync_topic = self.topics.sync(client.client_id)
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.RLock()
        self._playing: dict[str, Playing] = {}
        self._player = GesturePlayer(self._next_step)
        client.set_will(Will(self.topics.bridge_state, OFFLINE))

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, then start the client; returns at once (see :meth:`wait_ready`)."""
        if self.journal is not None:
            for hand, state in self.journal.load().items():
                if self._fixed is None or hand in self._fixed:
                    self._states[hand] = self._fresh(state)
        for topic_filter in self._state_filters():
            self.client.subscribe(topic_filter, self._on_retained_state)
        if self._fixed is None:
            filters: Sequence[str] = self.topics.all_command_filters
        else:
            filters = [f for t in self._fixed.values() for f in t.command_filters]
        self.client.subscribe(self.topics.bridge_request("+"), self._on_request)
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._on_command)
        self.client.on_connect(self._on_connect)
        self.client.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until every hand's state has been restored and commands are being served."""
        return self._restored.wait(timeout)

    def stop(self) -> None:
        """Say ``offline`` on the bridge topic and disconnect; a gesture stops where it is."""
        self._player.close()
        if self.client.connected:
            try:
                self.client.publish(self.topics.bridge_state, OFFLINE, retain=True, wait=2.0)
            except Exception:
                logger.warning("arbiter: could not publish offline before stopping")
        self.client.stop()
        if self.journal is not None:
            self.journal.close()

    def state(self, hand: str) -> HandState:
        """The current desired state of ``hand`` (open when never commanded)."""
        return self._states.get(hand) or self._open()

    @property
    def hands(self) -> list[str]:
        return sorted(self._states.copy())

    # -- handlers (network thread) ---------------------------------------------------------

    @_serialised
    def _on_connect(self) -> None:
        self.client.publish(self.topics.bridge_state, ONLINE, retain=True)
        poses = {name: list(angles) for name, angles in self.poses.items()}
        self.client.publish(self.topics.bridge_poses, json.dumps(poses), retain=True)
        gestures = {name: gesture.to_dict() for name, gesture in self.poses.gestures.items()}
        self.client.publish(self.topics.bridge_gestures, json.dumps(gestures), retain=True)
        served = ServedHands(hands=tuple(self._fixed or ()), all_hands=self._fixed is None)
        self.client.publish(self.topics.bridge_hands, served.model_dump_json(), retain=True)
        if not self._synced:
            self.client.when_synced(self._sync_topic, self._on_synced)
        for hand in list(self._states):
            if self._serving(hand):
                self._publish_state(hand, previous=None)

    @_serialised
    def _on_synced(self) -> None:
        """Every retained state has arrived: the hands still waiting start from what is known."""
        if self._synced:
            return
        self._synced = True
        waiting = {*(self._fixed or self._held), *self._states}
        for hand in sorted(waiting - self._ready - set(self._unreadable)):
            self._serve(hand, self._states.get(hand) or self._open())
        # Only hands whose state is unreadable still listen to it, for its replacement.
        still = {self.topics.hand(hand).state for hand in self._unreadable}
        filters = self._state_filters()
        for topic_filter in filters:
            if topic_filter not in still:
                self.client.unsubscribe(topic_filter)
        for topic in still.difference(filters):
            self.client.subscribe(topic, self._on_retained_state)
        logger.info("arbiter: serving %s", ", ".join(self.hands) or "every hand")
        self._restored.set()

    @_serialised
    def _on_retained_state(self, message: Message) -> None:
        hand = self.topics.hand_of(message.topic, "state")
        if hand is None or self._serving(hand):
            return  # served: this arbiter is the writer of its state from now on
        if self._fixed is not None and hand not in self._fixed:
            return
        known = self._states.get(hand)  # from the state file
        if known is None and self._fixed is None and len(self._states) >= self.max_hands:
            return
        if not message.payload:
            if hand in self._unreadable:
                logger.warning("arbiter: %s's unreadable state was cleared", hand)
                self._serve(hand, known or self._open())
            return
        restored = self._read_state(hand, message)
        if restored is None:
            if known is None:
                self._refuse_unreadable(hand, message)
                return
            sentence = (
                f"{hand}'s retained state is unreadable; continuing from the state file at "
                f"version {known.version}"
            )
            logger.warning("arbiter: %s", sentence)
            self._report(hand, message, sentence)
            self._serve(hand, known)
            return
        if known is not None and known.version >= restored.version:
            self._serve(hand, known)  # the state file's record is as new or newer
            return
        self._serve(hand, self._fresh(restored))

    @_serialised
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
        if not self._serving(target.hand):
            self._hold(target.hand, message)
            return
        try:
            command = parse_command(target, message.payload, self.poses)
        except CommandError as exc:
            self._reject(target.hand, message, str(exc), exc.transaction)
            return
        current = self._states.get(target.hand) or self.state(target.hand)
        if current.locked and command.moves:
            self._reject(target.hand, message, _LOCKED, command.transaction)
            return
        self.accepted += 1
        if command.gesture is not None:
            self._play(target.hand, command)
            return
        self._end_gesture(target.hand)  # any other command ends a gesture at once (a stop too)
        angles, relaxed, locked, duration = _effects(current, command, self.poses)
        self._commit(
            target.hand,
            angles,
            command.transaction,
            relaxed=relaxed,
            locked=locked,
            duration_ms=duration,
        )

    # -- restoring -------------------------------------------------------------------------

    def _serving(self, hand: str) -> bool:
        """Whether commands for ``hand`` are applied now (else held, or refused)."""
        return hand in self._ready or (self._synced and hand not in self._unreadable)

    def _state_filters(self) -> list[str]:
        if self._fixed is None:
            return [f"{self.topics.base}/+/state"]
        return [t.state for t in self._fixed.values()]

    def _fresh(self, state: HandState) -> HandState:
        """A restored state as this arbiter continues from it: a gesture is not resumed."""
        return state.model_copy(update={"pose": self.poses.name_of(state.angles), "gesture": None})

    def _read_state(self, hand: str, message: Message) -> HandState | None:
        """The retained state, or its angles and version when only other parts are unreadable."""
        try:
            return HandState.model_validate_json(message.payload)
        except ValidationError:
            pass
        try:
            data = json.loads(message.payload)
            kept = {key: data[key] for key in (*FINGERS, "version")}
            # The lock and the relaxed fingers are kept too, and must be readable if present:
            # an emergency stop is never lifted by a restart.
            kept |= {key: data[key] for key in ("locked", "relaxed") if key in data}
            salvaged = HandState.model_validate(kept)
        except (ValueError, TypeError, KeyError, ValidationError):
            return None
        sentence = (
            f"{hand}'s retained state has unreadable parts; continuing from its angles and "
            f"version {salvaged.version} without them"
        )
        logger.warning("arbiter: %s", sentence)
        self._report(hand, message, sentence)
        return salvaged

    def _refuse_unreadable(self, hand: str, message: Message) -> None:
        """Never guess a hand's angles: wait for a readable state, refusing its commands."""
        if self._unreadable.get(hand) == message.payload:
            return  # said already (the same retained message, delivered again)
        self._unreadable[hand] = message.payload
        logger.warning("arbiter: %s", self._unreadable_sentence(hand))
        self._report(hand, message, self._unreadable_sentence(hand))
        for held in self._held.pop(hand, []):
            self._held_count -= 1
            self._refuse(hand, held, self._unreadable_sentence(hand))

    def _unreadable_sentence(self, hand: str) -> str:
        return (
            f"{hand}'s retained state is unreadable, so the arbiter does not serve {hand} "
            "rather than guess its angles; an administrator must retain a readable state "
            "or clear it"
        )

    def _hold(self, hand: str, message: Message) -> None:
        """Before the hand's state is known: hold the command, or answer why it cannot be."""
        if hand in self._unreadable:
            self._refuse(hand, message, self._unreadable_sentence(hand))
        elif self._held_count >= self.max_held:
            self._refuse(
                hand,
                message,
                f"the arbiter is restoring the hands' state and already holds {self.max_held} "
                "commands; send this one again in a moment",
            )
        else:
            self._held.setdefault(hand, []).append(message)
            self._held_count += 1

    def _serve(self, hand: str, state: HandState) -> None:
        """Start serving ``hand`` from ``state``, then apply what was held for it, in order."""
        self._hand_topics.setdefault(hand, self.topics.hand(hand))
        if self._unreadable.pop(hand, None) is not None and self._synced:
            self.client.unsubscribe(self._hand_topics[hand].state)
        self._ready.add(hand)
        self._states[hand] = state
        if self.journal is not None:
            self.journal.record(hand, state)
        logger.info("arbiter: serving %s from version %d", hand, state.version)
        self._publish_state(hand, previous=None)
        held = self._held.pop(hand, [])
        self._held_count -= len(held)
        for message in held:
            self._on_command(message)

    def _refuse(self, hand: str, message: Message, sentence: str) -> None:
        """Answer a command that cannot be applied now, echoing its transaction if it has one."""
        transaction: str | int | None = None
        target = self.topics.parse_command(message.topic)
        if target is not None:
            try:
                transaction = parse_command(target, message.payload, self.poses).transaction
            except CommandError as exc:
                transaction = exc.transaction
        self._reject(hand, message, sentence, transaction)

    def _open(self) -> HandState:
        """The state of a hand that never had one: open, version 0."""
        return HandState(pose=self.poses.name_of(HandState().angles))

    # -- gestures --------------------------------------------------------------------------

    def _play(self, hand: str, command: Command) -> None:
        assert command.gesture is not None
        self._end_gesture(hand)
        playing = Playing(
            hand, self.poses.gestures[command.gesture], command.repeat, command.transaction
        )
        self._playing[hand] = playing
        self._show_step(playing)
        self._player.schedule(playing)

    def _end_gesture(self, hand: str) -> None:
        playing = self._playing.pop(hand, None)
        if playing is not None:
            playing.ended = True
            logger.info("arbiter: %s ended the gesture %s early", hand, playing.gesture.name)

    def _next_step(self, playing: Playing) -> None:
        """The gesture timer: the next step of ``playing`` is due (gesture thread)."""
        with self._lock:
            if playing.ended or self._playing.get(playing.hand) is not playing:
                return
            playing.position += 1
            if playing.position < playing.length:
                self._show_step(playing)
                self._player.schedule(playing)
                return
            # Played to the end: the same angles once more, saying no gesture is playing.
            playing.ended = True
            del self._playing[playing.hand]
            self._commit(playing.hand, self.state(playing.hand).angles, playing.transaction)

    def _show_step(self, playing: Playing) -> None:
        current = self.state(playing.hand).angles
        angles = tuple(
            now if wanted is None else wanted
            for wanted, now in zip(playing.step.angles, current, strict=True)
        )
        # A gesture names every finger: relaxed ones are driven again. The step's move is a
        # timed move, so the fingers that move arrive together when it ends.
        self._commit(
            playing.hand,
            angles,  # type: ignore[arg-type]
            playing.transaction,
            playing.progress,
            relaxed=(),
            duration_ms=playing.step.move_ms or None,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _commit(
        self,
        hand: str,
        angles: Angles,
        transaction: str | int | None,
        gesture: GestureProgress | None = None,
        *,
        relaxed: tuple[str, ...] | None = None,
        locked: bool | None = None,
        duration_ms: int | None = None,
    ) -> None:
        """Make ``angles`` the hand's next desired state and publish it; the relaxed fingers
        and the lock stay as they are unless given."""
        current = self._states.get(hand) or self.state(hand)
        # model_construct: every angle was checked by the command parser or the poses file.
        self._states[hand] = HandState.model_construct(
            index=angles[0],
            middle=angles[1],
            ring=angles[2],
            pinky=angles[3],
            thumb=angles[4],
            pose=self.poses.name_of(angles),
            version=current.version + 1,
            transaction=transaction,
            gesture=gesture,
            relaxed=current.relaxed if relaxed is None else cast("tuple[Finger, ...]", relaxed),
            locked=current.locked if locked is None else locked,
            duration_ms=duration_ms,
        )
        self._hand_topics.setdefault(hand, self.topics.hand(hand))
        if self.journal is not None:
            self.journal.record(hand, self._states[hand])
        self._publish_state(hand, previous=current)

    def _topics_for(self, target: CommandTopic, message: Message) -> HandTopics | None:
        topics = self._hand_topics.get(target.hand)
        if topics is not None:
            return topics
        if self._fixed is not None:
            return None
        # Only a hand with an accepted command takes a slot (in _commit): commands that are
        # all refused, to any number of made-up hands, take none.
        if len(self._states) >= self.max_hands:
            self._reject(
                target.hand,
                message,
                f"this arbiter already serves {self.max_hands} hands; retire one "
                "(hand-mqtt retire HAND) to make room",
            )
            return None
        return self.topics.hand(target.hand)

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

    # -- requests to the arbiter itself -------------------------------------------------------

    @_serialised
    def _on_request(self, message: Message) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if name not in REQUESTS:
            self._reject(None, message, f"unknown request; requests: {', '.join(REQUESTS)}")
            return
        if message.retain:
            # A retained retire would run again at every start.
            self._answer(name, None, "retained requests are ignored: publish without retain")
            return
        try:
            request = parse_request(name, message.payload)
        except CommandError as exc:
            self._answer(name, exc.transaction, str(exc))
            return
        error = self._retire(request.hand) if request.hand is not None else None
        self._answer(name, request.transaction, error, request.hand)

    def _retire(self, hand: str) -> str | None:
        """Forget ``hand`` and clear its retained topics; a sentence when it cannot."""
        if self._fixed is not None:
            return "this arbiter serves its hands by name (--hand); it retires none"
        if not self._synced:
            return "the arbiter is restoring the hands' states; ask again in a moment"
        if hand not in self._states:
            return f"{hand} holds no slot: no command for it was ever accepted here"
        self._end_gesture(hand)
        del self._states[hand]
        self._ready.discard(hand)
        topics = self._hand_topics.pop(hand)
        if self.journal is not None:
            self.journal.retire(hand)
        for topic in [topics.state, *(topics.finger(finger) for finger in FINGERS)]:
            self.client.publish(topic, b"", qos=1, retain=True)
        logger.info("arbiter: retired %s", hand)
        return None

    def _answer(
        self,
        name: str,
        transaction: str | int | None,
        error: str | None,
        hand: str | None = None,
    ) -> None:
        response = BridgeResponse(
            request=name,
            status="ok" if error is None else "error",
            transaction=transaction,
            error=None if error is None else excerpt(error, ERROR_SENTENCE_CHARS),
            hand=hand,
            session=self.session,
            started=self.started,
        )
        self.client.publish(self.topics.bridge_response(name), response.model_dump_json(), qos=1)

    def _reject(
        self,
        hand: str | None,
        message: Message,
        sentence: str,
        transaction: str | int | None = None,
    ) -> None:
        self.rejected += 1
        report = self._report(hand, message, sentence, transaction)
        logger.info("arbiter: rejected a command on %s: %s", report.topic, report.error)

    def _report(
        self,
        hand: str | None,
        message: Message,
        sentence: str,
        transaction: str | int | None = None,
    ) -> ErrorReport:
        """Publish ``sentence`` about ``message`` on the hand's error topic."""
        # Bounded and escaped whatever the message held: 4 kB of control characters must not
        # become 20 kB for every subscriber, nor garble a terminal or a log.
        report = ErrorReport.about(message.topic, message.payload, sentence, transaction)
        if hand is None:
            error_topic = f"{self.topics.base}/{BRIDGE}/error"
        else:
            error_topic = self._hand_topics.get(hand, self.topics.hand(hand)).error
        self.client.publish(error_topic, report.model_dump_json(), qos=1)
        return report
