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

Several arbiters may run against one broker (or cluster): each hand is served by the holder of
its lease (:mod:`hand_mqtt.services.leases`). An arbiter subscribes to the commands, states and
errors of every hand it may serve, and keeps the commands of hands it does not serve in a ledger
until their answer (a state or error naming the command's digest) comes by; when it takes a hand
over, from an arbiter that handed it or vanished, it continues from the last state it saw (or the
retained one) and applies what is left in the ledger: no command is applied twice, none is
dropped without an answer. ``standby`` arbiters only take hands nobody holds; the others claim
their named hands at start, and the holder stands down. The arbiter's will says ``offline`` on
its own presence topic, which frees its hands; a second, tiny connection keeps the base's
``bridge/state`` and its will.

Gestures are played here too, by the one writer: a :class:`GesturePlayer` keeps time on its own
thread and calls back for each step, which is applied and published like a command's result.
Every handler and every step runs under one lock, so they never interleave.
"""

from __future__ import annotations

import functools
import hashlib
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
    Lease,
    PoseBook,
    ServedHands,
    excerpt,
)
from hand_mqtt.mqtt import Message, MqttClient, Will
from hand_mqtt.services.journal import StateJournal
from hand_mqtt.services.leases import LeaseKeeper, Outcome, Phase, command_digest
from hand_mqtt.services.player import GesturePlayer, Playing
from hand_mqtt.services.requests import REQUESTS, parse_request
from hand_mqtt.topics import BRIDGE, OFFLINE, ONLINE, CommandTopic, HandTopics, Topics

__all__ = ["Arbiter"]

logger = logging.getLogger("hand_mqtt")

CLAIM_STAGGER_S: Final = 0.2
"""How much later each next arbiter in a free hand's order claims it (see ``_claim_free``)."""
HANDOVER_WAIT_S: Final = 5.0
"""How long a claim that won waits for the previous holder to stand down: one that says
nothing this long is taken for dead (a broker restored its presence from disk, say)."""

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


def _rank(hand: str, arbiter: str) -> bytes:
    """Where ``arbiter`` stands in the order in which arbiters claim a free ``hand``."""
    return hashlib.blake2b(f"{hand}/{arbiter}".encode(), digest_size=8).digest()


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
        standby: bool = False,
    ) -> None:
        self.client = client
        self.standby = standby
        """Take only hands that nobody holds (never claim one from a running arbiter)."""
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
        """Hands served: their lease is ours and their state is known."""
        self._unreadable: dict[str, bytes] = {}
        """Hands whose retained state cannot be read, with that payload: not served."""
        self._restored = threading.Event()
        self._sync_topic = self.topics.sync(client.client_id)
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.RLock()
        self._playing: dict[str, Playing] = {}
        self._player = GesturePlayer(self._next_step)
        self.leases = LeaseKeeper(self.session)
        self._seen: dict[str, HandState] = {}
        """The newest state of each hand that another arbiter serves, as it goes by."""
        self._rereading: dict[str, int] = {}
        """Hands taken over whose retained state is being read afresh, with the lease's epoch."""
        self._pending_state: dict[str, Message] = {}
        """An unreadable retained state of a hand another arbiter serves, kept for a takeover."""
        self._handover_timers: dict[str, threading.Timer] = {}
        self._claim_timers: dict[str, threading.Timer] = {}
        self._claimed_named = False
        self._wanted: set[str] = set()
        """Named hands claimed at start and not taken yet: a claim that loses to an older
        lease (learnt meanwhile) is made again, for the next epoch."""
        self._stopping = False
        self._awaited: set[str] = set()
        """Hands claimed at start: ready once each is served, or lost."""
        client.set_will(Will(self.topics.bridge_arbiter(self.session), OFFLINE))
        # One will per connection: the herald's is the base's bridge/state.
        self.herald = MqttClient(
            client.url,
            name=f"{client.name}-herald",
            will=Will(self.topics.bridge_state, OFFLINE),
            sync_grace=client.sync_grace,
        )
        self.herald.on_connect(self._on_herald_connect)
        self.herald.subscribe(self.topics.bridge_state, self._on_bridge_state)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, then start the client; returns at once (see :meth:`wait_ready`)."""
        if self.journal is not None:
            for hand, state in self.journal.load().items():
                if self._fixed is None or hand in self._fixed:
                    self._states[hand] = self._fresh(state)
        # Who runs and who holds what first: a hand's state is read knowing its holder.
        self.client.subscribe(self.topics.bridge_arbiter("+"), self._on_presence)
        self.client.subscribe(self.topics.bridge_lease("+"), self._on_lease)
        for topic_filter in self._state_filters():
            self.client.subscribe(topic_filter, self._on_retained_state)
        for topic_filter in self._state_filters("error"):
            self.client.subscribe(topic_filter, self._on_error_report)
        if self._fixed is None:
            filters: Sequence[str] = self.topics.all_command_filters
        else:
            filters = [f for t in self._fixed.values() for f in t.command_filters]
        self.client.subscribe(self.topics.bridge_request("+"), self._on_request)
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._on_command)
        self.client.on_connect(self._on_connect)
        self.client.start()
        self.herald.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until every hand's state has been restored and commands are being served."""
        return self._restored.wait(timeout)

    def stop(self) -> None:
        """Release the hands, say ``offline`` and disconnect; a gesture stops where it is."""
        self._player.close()
        with self._lock:
            self._stopping = True
            for timer in [*self._handover_timers.values(), *self._claim_timers.values()]:
                timer.cancel()
            releases = [
                self.leases.release(lease.hand)
                for lease in list(self.leases.hands.values())
                if lease.phase is Phase.SERVING
            ]
            self._ready.clear()
        if self.client.connected:
            try:
                for release in releases:
                    self._publish_lease(release, retain=True)
                presence = self.topics.bridge_arbiter(self.session)
                self.client.publish(presence, OFFLINE, retain=True)
                self.client.publish(presence, OFFLINE, wait=2.0)
            except Exception:
                logger.warning("arbiter: could not release its hands before stopping")
        self.client.stop()
        if self.herald.connected:
            try:
                self.herald.publish(self.topics.bridge_state, OFFLINE, retain=True, wait=2.0)
            except Exception:
                logger.warning("arbiter: could not publish offline before stopping")
        self.herald.stop()
        if self.journal is not None:
            self.journal.close()

    def abort(self) -> None:
        """Vanish without a goodbye, as a killed process does: the broker sends the wills."""
        self._player.close()
        with self._lock:
            self._stopping = True
            for timer in [*self._handover_timers.values(), *self._claim_timers.values()]:
                timer.cancel()
        self.client.abort()
        self.herald.abort()

    def serves(self, hand: str) -> bool:
        """Whether this arbiter holds ``hand``'s lease and applies its commands now."""
        return hand in self._ready and self._ours(hand)

    def state(self, hand: str) -> HandState:
        """The current desired state of ``hand`` (open when never commanded)."""
        return self._states.get(hand) or self._open()

    @property
    def hands(self) -> list[str]:
        return sorted(self._states.copy())

    # -- handlers (network thread) ---------------------------------------------------------

    def _on_herald_connect(self) -> None:
        self.herald.publish(self.topics.bridge_state, ONLINE, retain=True)

    def _on_bridge_state(self, message: Message) -> None:
        """Another arbiter stopped or vanished (or a cluster published our own will late, after
        we moved to another node): while this one runs, an arbiter is online."""
        if message.payload == OFFLINE and not self._stopping and self.herald.connected:
            self.herald.publish(self.topics.bridge_state, ONLINE, retain=True)

    @_serialised
    def _on_connect(self) -> None:
        self.client.publish(self.topics.bridge_arbiter(self.session), ONLINE, retain=True)
        for lease in list(self.leases.hands.values()):
            if lease.phase is Phase.SERVING:
                self._publish_lease(self.leases.serving(lease.hand), retain=True)
        if self._fixed is not None and not self.standby and not self._claimed_named:
            # Named hands are claimed at once, from whoever holds them (it stands down); only
            # at start: one that took them from us since is not asked for them back.
            self._claimed_named = True
            self._wanted = set(self._fixed)
            for hand in self._fixed:
                if self.leases.hand(hand).phase is Phase.STANDBY:
                    self._claim(hand)
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
        for hand, lease in sorted(self.leases.hands.items()):
            if lease.phase is Phase.SERVING and hand not in self._ready:
                self._restore(hand)
            elif (
                lease.phase is Phase.STANDBY
                and lease.holder not in (None, self.session)
                and self.leases.alive(lease.holder)
            ):
                # What came before we knew who holds the hand and what its state is, its
                # holder answered, maybe before our state subscription was live (a cluster
                # makes each subscription live on its own time): its state counts them.
                lease.ledger.take()
        # The hands this arbiter may serve that nobody holds: the named ones, or every hand
        # known to have a state, a lease or a command waiting.
        known = set(self._fixed or {*self._seen, *self._states, *self.leases.hands})
        for hand in sorted(known):
            if self.leases.hand(hand).phase is Phase.STANDBY and self.leases.is_free(hand):
                self._claim_free(hand)
        self._awaited = {
            hand
            for hand, lease in self.leases.hands.items()
            if lease.phase is not Phase.STANDBY and hand not in self._ready
        }
        self._check_restored()

    def _check_restored(self) -> None:
        """Ready once synced and every hand claimed at start is served, lost to another
        arbiter, or known to be unreadable."""
        if self._restored.is_set() or not self._synced:
            return
        for hand in self._awaited:
            lease = self.leases.hands.get(hand)
            if (
                lease is not None
                and lease.phase is not Phase.STANDBY
                and hand not in self._ready
                and hand not in self._unreadable
            ):
                return
        logger.info(
            "arbiter %s: serving %s", self.session, ", ".join(sorted(self._ready)) or "no hand yet"
        )
        self._restored.set()

    @_serialised
    def _on_retained_state(self, message: Message) -> None:
        hand = self.topics.hand_of(message.topic, "state")
        if hand is None or self._serving(hand):
            return  # served: this arbiter is the writer of its state from now on
        if self._fixed is not None and hand not in self._fixed:
            return
        if not self._ours(hand) or hand in self._rereading:
            self._track(hand, message)
            if hand in self._rereading and message.retain and not self._synced:
                # Starting: the retained state is all there is to wait for (the end of the
                # retained messages may be long in coming, on a broker that gives no order).
                self._reread_done(hand, self._rereading[hand])
            return
        self._restore_from(hand, message)

    def _restore_from(self, hand: str, message: Message) -> None:
        """The hand is ours and waits for its state: ``message`` is its retained state."""
        known = self._best_known(hand)  # the state file's, or the last one seen served
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
        answers = command_digest(message.topic, message.payload)
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
            self._play(target.hand, command, answers)
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
            answers=answers,
        )

    # -- restoring -------------------------------------------------------------------------

    def _serving(self, hand: str) -> bool:
        """Whether commands for ``hand`` are applied now (else held, or refused)."""
        return hand in self._ready

    def _state_filters(self, topic: str = "state") -> list[str]:
        if self._fixed is None:
            return [f"{self.topics.base}/+/{topic}"]
        return [f"{t.root}/{topic}" for t in self._fixed.values()]

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
        self._check_restored()
        logger.warning("arbiter: %s", self._unreadable_sentence(hand))
        self._report(hand, message, self._unreadable_sentence(hand))
        for held in self.leases.hand(hand).ledger.take():
            self._refuse(hand, held, self._unreadable_sentence(hand))

    def _unreadable_sentence(self, hand: str) -> str:
        return (
            f"{hand}'s retained state is unreadable, so the arbiter does not serve {hand} "
            "rather than guess its angles; an administrator must retain a readable state "
            "or clear it"
        )

    def _hold(self, hand: str, message: Message) -> None:
        """A command for a hand not served now: hold it in the hand's ledger (applied when this
        arbiter serves the hand, forgotten when another answers it), or answer why not."""
        new = hand not in self.leases.hands
        lease = self.leases.hand(hand)
        mine = lease.phase is not Phase.STANDBY  # claiming, taking over, or restoring
        if mine and hand in self._unreadable:
            self._refuse(hand, message, self._unreadable_sentence(hand))
        elif mine and len(lease.ledger) >= self.max_held:
            self._refuse(
                hand,
                message,
                f"the arbiter is restoring the hands' state and already holds {self.max_held} "
                "commands; send this one again in a moment",
            )
        elif not mine and self._synced and self.leases.is_free(hand):
            # A hand nobody serves: take it, for a command that can be applied (a made-up hand
            # with only refused commands takes no slot, and leaves no lease behind).
            if self._fixed is None and not self._known(hand) and not self._parses(message):
                if new:
                    del self.leases.hands[hand]  # nothing kept for a made-up hand
                return
            lease.ledger.add(message)
            self._claim_free(hand)
        else:
            lease.ledger.add(message)

    def _known(self, hand: str) -> bool:
        """Whether ``hand`` has a state (ours or seen) or a lease on the broker."""
        lease = self.leases.hands.get(hand)
        return hand in self._states or hand in self._seen or (lease is not None and lease.seen)

    def _parses(self, message: Message) -> bool:
        """Whether a command can be applied to a new hand; it is answered on error if not."""
        target = self.topics.parse_command(message.topic)
        if target is None:
            return False
        try:
            parse_command(target, message.payload, self.poses)
        except CommandError as exc:
            self._reject(target.hand, message, str(exc), exc.transaction)
            return False
        return True

    def _serve(self, hand: str, state: HandState, *, announce: bool = True) -> None:
        """Start serving ``hand`` from ``state``, then apply what was held for it, in order."""
        self._hand_topics.setdefault(hand, self.topics.hand(hand))
        self._unreadable.pop(hand, None)
        self._ready.add(hand)
        if self._fixed is not None:
            # Our own states and errors need not come back to us while we serve the hand.
            topics = self._hand_topics[hand]
            self.client.unsubscribe(topics.state)
            self.client.unsubscribe(topics.error)
        logger.log(
            logging.INFO if announce else logging.DEBUG,
            "arbiter %s: serving %s from version %d",
            self.session,
            hand,
            state.version,
        )
        if announce:
            self._states[hand] = state
            if self.journal is not None:
                self.journal.record(hand, state)
            self._publish_state(hand, previous=None)
        for message in self.leases.hand(hand).ledger.take():
            self._on_command(message)
        self._check_restored()

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

    # -- leases: which arbiter serves which hand ---------------------------------------------

    def _ours(self, hand: str) -> bool:
        """Whether this arbiter holds ``hand``'s lease (its state may still be on its way)."""
        lease = self.leases.hands.get(hand)
        return lease is not None and lease.phase is Phase.SERVING

    def _wants(self, hand: str) -> bool:
        """Whether this arbiter may serve ``hand`` (it takes it when nobody holds it)."""
        return self._fixed is None or hand in self._fixed

    def _best_known(self, hand: str) -> HandState | None:
        """The newest state known for ``hand``: the state file's or our own, or the last one
        another arbiter was seen to publish."""
        ours, seen = self._states.get(hand), self._seen.get(hand)
        if seen is not None and (ours is None or seen.version > ours.version):
            return self._fresh(seen)
        return ours

    def _track(self, hand: str, message: Message) -> None:
        """Another arbiter's state for ``hand`` (or the retained one): remember the newest, and
        forget the command it answers."""
        if not message.payload:
            self._seen.pop(hand, None)  # retired
            return
        try:
            state = HandState.model_validate_json(message.payload)
        except ValidationError:
            self._pending_state[hand] = message  # read again, with its sentence, if we serve
            return
        self._pending_state.pop(hand, None)
        old = self._seen.get(hand)
        if old is not None and state.version <= old.version:
            return  # a state seen already (or an older one, late)
        self._seen[hand] = state
        lease = self.leases.hand(hand)
        if (
            old is None
            and lease.phase is Phase.STANDBY
            and lease.holder != self.session
            and self.leases.alive(lease.holder)
        ):
            # The commands that came before we knew the hand's state were answered by its
            # holder before we could see (a cluster may make the command subscription live
            # before the state's): this state counts them.
            lease.ledger.take()
        if state.answers is not None and not message.retain:
            # The commands before this one were answered too, in the order they came (their
            # states may have been missed: a cluster may not pass every one on).
            lease.ledger.answered_through(state.answers)

    @_serialised
    def _on_error_report(self, message: Message) -> None:
        hand = self.topics.hand_of(message.topic, "error")
        if hand is None or self._ours(hand) or hand not in self.leases.hands:
            return  # ours, or a hand with nothing waiting
        try:
            report = ErrorReport.model_validate_json(message.payload)
        except ValidationError:
            return
        if report.answers is not None:
            self.leases.hand(hand).ledger.answered_through(report.answers)

    @_serialised
    def _on_presence(self, message: Message) -> None:
        arbiter = self.topics.bridge_item(message.topic, "arbiter")
        if arbiter is None or not message.payload:
            return
        online = message.payload == ONLINE
        if arbiter == self.session:
            if not online and self.client.connected:
                # Our own will, published late (by a node that lost us): we are here.
                self.client.publish(message.topic, ONLINE, retain=True)
            return
        freed = self.leases.on_presence(arbiter, online)
        if online:
            return
        logger.info(
            "arbiter %s: arbiter %s went away (%s)",
            self.session,
            arbiter,
            excerpt(repr(message.payload), 40),
        )
        for hand in self.leases.handing_from(arbiter):
            self._take_over(hand)
        for hand in freed:
            if self._wants(hand):
                self._claim_free(hand)

    @_serialised
    def _on_lease(self, message: Message) -> None:
        hand = self.topics.bridge_item(message.topic, "lease")
        if hand is None or not message.payload or not self._wants(hand):
            return
        try:
            lease = Lease.model_validate_json(message.payload)
        except ValidationError:
            logger.debug("arbiter: ignored an unreadable lease on %s", message.topic)
            return
        if lease.hand != hand:
            return
        if lease.arbiter not in (None, self.session) and self.leases.alive(lease.arbiter):
            # Known to run even if its presence was missed (a cluster may not deliver it).
            self.leases.online.add(lease.arbiter)
        outcome = self.leases.on_lease(lease)
        state = self.leases.hand(hand)
        if outcome is Outcome.TAKE_OVER:
            self._take_over(hand)
        elif outcome is Outcome.WON:
            self._await_handover(hand, state.epoch)
        elif outcome is Outcome.STEP_DOWN:
            self._step_down(hand)
        elif outcome is Outcome.REASSERT:
            self._publish_lease(self.leases.serving(hand), retain=True)
        elif outcome is Outcome.FREE:
            self._claim_free(hand)
        elif (
            outcome is None
            and lease.status == "claim"
            and lease.arbiter == self.session
            and state.phase is Phase.CLAIMING
            and lease.epoch < state.epoch
        ):
            self._claim(hand)  # our claim was older than the lease we learnt of meanwhile
        if (
            outcome in (Outcome.LOST, Outcome.STEP_DOWN)
            and state.phase is Phase.STANDBY
            and (not self.leases.alive(state.holder) or hand in self._wanted)
        ):
            self._claim(hand)  # the winner is gone already, or held the hand before our claim
        elif (
            outcome is None
            and lease.arbiter == self.session
            and lease.status == "claim"
            and state.phase is Phase.STANDBY
            and hand in self._wanted
        ):
            self._claim(hand)  # our claim came after a lease of its epoch
        self._check_restored()

    def _claim(self, hand: str) -> None:
        if not self._wants(hand) or self._stopping:
            return
        claim = self.leases.claim(hand)
        logger.debug("arbiter %s: claims %s (epoch %d)", self.session, hand, claim.epoch)
        self._publish_lease(claim, retain=False)

    def _claim_free(self, hand: str) -> None:
        """Claim a hand that nobody holds, in turn with the other arbiters: each ranks the
        running arbiters by a hash of the hand and their ids; the first claims at once, the
        next :data:`CLAIM_STAGGER_S` later if the hand is still free, and so on. Free hands
        spread evenly over the arbiters, and one that the first does not take is still taken."""
        if not self._wants(hand) or self._stopping or hand in self._claim_timers:
            return
        mine = _rank(hand, self.session)
        ahead = sum(1 for other in self.leases.online if _rank(hand, other) > mine)
        if ahead == 0:
            self._claim(hand)
            return
        timer = threading.Timer(ahead * CLAIM_STAGGER_S, self._claim_if_free, (hand,))
        timer.daemon = True
        self._claim_timers[hand] = timer
        timer.start()

    def _claim_if_free(self, hand: str) -> None:
        with self._lock:
            self._claim_timers.pop(hand, None)
            lease = self.leases.hands.get(hand)
            if lease is not None and lease.phase is Phase.STANDBY and self.leases.is_free(hand):
                self._claim(hand)

    def _await_handover(self, hand: str, epoch: int) -> None:
        """Our claim won; the holder stands down with ``handed``, or is taken for dead."""
        old = self._handover_timers.pop(hand, None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(HANDOVER_WAIT_S, self._handover_overdue, (hand, epoch))
        timer.daemon = True
        self._handover_timers[hand] = timer
        timer.start()

    def _handover_overdue(self, hand: str, epoch: int) -> None:
        with self._lock:
            self._handover_timers.pop(hand, None)
            lease = self.leases.hands.get(hand)
            if lease is None or lease.phase is not Phase.HANDING or lease.epoch != epoch:
                return
            logger.warning(
                "arbiter %s: %s did not hand %s over within %g s; taking it",
                self.session,
                lease.previous,
                hand,
                HANDOVER_WAIT_S,
            )
            self._take_over(hand)

    def _take_over(self, hand: str) -> None:
        """The hand is ours: say so (retained), then serve it once its state is known."""
        timer = self._handover_timers.pop(hand, None)
        if timer is not None:
            timer.cancel()
        if self._stopping:
            return
        self._wanted.discard(hand)
        lease = self.leases.serving(hand)
        self._publish_lease(lease, retain=True)
        # A hand taken from another arbiter is news; a new hand of --all-hands is routine.
        logger.log(
            logging.INFO if lease.previous is not None else logging.DEBUG,
            "arbiter %s: takes %s (epoch %d)",
            self.session,
            hand,
            lease.epoch,
        )
        new = lease.epoch == 1 and hand not in self._seen and hand not in self._states
        if self._synced and new:
            self._restore(hand)  # never leased, no state seen: nothing to read or wait for
        elif self._synced or hand in self._seen:
            self._reread(hand, lease.epoch)
        elif hand in self._pending_state:
            self._restore(hand)
        # else: its retained state, or the end of the retained messages, serves it

    def _reread(self, hand: str, epoch: int) -> None:
        """Before serving a hand taken over: every state its last holder published must have
        come by. Some brokers deliver a vanished client's will before its last messages, and a
        cluster delivers a retained message late: read the retained state afresh, and wait
        for our own echo (and its grace) behind whatever the broker still had for us."""
        self._rereading[hand] = epoch
        topic = self.topics.hand(hand).state
        self.client.subscribe(topic, self._on_retained_state)
        self.client.when_synced(self._sync_topic, functools.partial(self._reread_done, hand, epoch))

    def _reread_done(self, hand: str, epoch: int) -> None:
        with self._lock:
            if self._rereading.get(hand) != epoch:
                return  # done already (the retained state came first), or a later takeover
            del self._rereading[hand]
            if self._fixed is None:
                self.client.unsubscribe(self.topics.hand(hand).state)  # the wildcard stays
            lease = self.leases.hands.get(hand)
            if lease is None or lease.phase is not Phase.SERVING or lease.epoch != epoch:
                return  # taken by another meanwhile
            seen = self._seen.get(hand)
            if seen is not None and seen.answers is not None:
                # The retained state may be all that came of the last commands' states.
                lease.ledger.answered_through(seen.answers)
            self._restore(hand)

    def _restore(self, hand: str) -> None:
        """Serve a hand that is ours from the newest state known for it."""
        if hand in self._ready:
            return
        pending = self._pending_state.pop(hand, None)
        if pending is not None and hand not in self._seen:
            self._restore_from(hand, pending)
            return
        if hand in self._unreadable:
            return
        known = self._best_known(hand)
        # A new hand of --all-hands takes its slot with its first accepted command.
        self._serve(
            hand, known or self._open(), announce=known is not None or self._fixed is not None
        )

    def _step_down(self, hand: str) -> None:
        """Another arbiter claimed a hand we serve: every command before its claim is answered
        (they ran in order on this thread), so hand it over and keep the rest in the ledger."""
        self._end_gesture(hand)
        self._ready.discard(hand)
        if self._fixed is not None:
            topics = self.topics.hand(hand)
            self.client.subscribe(topics.state, self._on_retained_state)
            self.client.subscribe(topics.error, self._on_error_report)
        lease = self.leases.hand(hand)
        state = self._states.get(hand)
        if state is not None:
            self._seen[hand] = state
        self._publish_lease(
            Lease(
                hand=hand,
                arbiter=lease.holder,
                epoch=lease.epoch,
                status="handed",
                previous=self.session,
            ),
            retain=False,
        )
        self.client.flush()
        logger.info("arbiter %s: handed %s to %s", self.session, hand, lease.holder)

    def _publish_lease(self, lease: Lease, *, retain: bool) -> None:
        topic, payload = self.topics.bridge_lease(lease.hand), lease.model_dump_json()
        if retain:
            self.client.publish(topic, payload, qos=1, retain=True)
        # Live, too: a cluster may never pass a retained message on to the subscribers that
        # are already there (Aedes stores it, and a later message can overtake it).
        self.client.publish(topic, payload, qos=1)

    # -- gestures --------------------------------------------------------------------------

    def _play(self, hand: str, command: Command, answers: str | None = None) -> None:
        assert command.gesture is not None
        self._end_gesture(hand)
        playing = Playing(
            hand, self.poses.gestures[command.gesture], command.repeat, command.transaction
        )
        self._playing[hand] = playing
        self._show_step(playing, answers)
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

    def _show_step(self, playing: Playing, answers: str | None = None) -> None:
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
            answers=answers,
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
        answers: str | None = None,
    ) -> None:
        """Make ``angles`` the hand's next desired state and publish it; the relaxed fingers
        and the lock stay as they are unless given. ``answers`` is the digest of the command
        it answers (a gesture's first step only)."""
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
            answers=answers,
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
        # Only a hand with an accepted command takes a slot (in _commit), or one being taken
        # for such a command: commands that are all refused, to any number of made-up hands,
        # take none.
        taken = set(self._states)
        taken.update(
            h for h, lease in self.leases.hands.items() if lease.phase is not Phase.STANDBY
        )
        if target.hand not in taken and len(taken) >= self.max_hands:
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
        self._seen.pop(hand, None)
        self.leases.hands.pop(hand, None)
        lease_topic = self.topics.bridge_lease(hand)
        for topic in [topics.state, *(topics.finger(finger) for finger in FINGERS), lease_topic]:
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
        report = ErrorReport.about(
            message.topic,
            message.payload,
            sentence,
            transaction,
            command_digest(message.topic, message.payload),
        )
        if hand is None:
            error_topic = f"{self.topics.base}/{BRIDGE}/error"
        else:
            error_topic = self._hand_topics.get(hand, self.topics.hand(hand)).error
        self.client.publish(error_topic, report.model_dump_json(), qos=1)
        return report
