"""The one client core under :class:`HandClient` and :class:`AsyncHandClient`.

It follows one hand's retained topics, publishes commands with a transaction, and turns what
the arbiter and the device answer into :class:`concurrent.futures.Future` objects. Nothing here
waits: the handlers run on the MQTT network thread and only update state, resolve futures and
tell listeners. The two faces differ only in how they wait for a future (a blocking
``result()`` in the caller's thread, or ``await`` on the caller's event loop).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import ValidationError

from hand_mqtt.errors import CommandError, MqttError, NoAnswerError
from hand_mqtt.gestures import Gesture, GestureStep
from hand_mqtt.model import FINGERS, ErrorReport, HandState, Lease, Reported, ServedHands
from hand_mqtt.mqtt import BrokerUrl, Message, MqttClient
from hand_mqtt.topics import ONLINE_TEXT, HandTopics, Topics

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientCore",
    "Listener",
    "Pending",
    "PlayWait",
    "Snapshot",
    "Wait",
]

Wait = Literal["accepted", "reported"]
"""How long a command call waits: for the arbiter's verdict, or until the device reports the
hand at the new desired angles."""
PlayWait = Literal["accepted", "finished", "reported"]
"""How long :meth:`play` waits: for the first step, for the gesture's end, or until the device
reports the hand where the gesture ended."""

DEFAULT_TIMEOUT: Final = 5.0
_ERRORS_KEPT: Final = 50


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the broker holds about one hand, at one moment."""

    desired: HandState | None
    """The arbiter's desired state (None until an arbiter has published one)."""
    reported: Reported | None
    """What the device service last heard from the firmware (None: never reported)."""
    device: str | None
    """The device service's availability: ``online``, ``offline`` or None (never seen)."""
    arbiter: str | None
    """The arbiter's bridge state: ``online``, ``offline`` or None."""
    error: ErrorReport | None = None
    """The arbiter's answer to a refused command, when that refusal is what changed."""
    served_by: str | None = None
    """The id of the arbiter that holds the hand's lease (None: no arbiter says it does)."""

    @property
    def online(self) -> bool:
        """True when the hand can move: arbiter and device online and the serial link up."""
        return (
            self.arbiter == ONLINE_TEXT
            and self.device == ONLINE_TEXT
            and self.reported is not None
            and self.reported.link == "up"
        )

    def arrived(self, target: HandState) -> bool:
        """True when the device reports the hand at ``target``'s angles, not older ones, no
        longer moving (a timed move has ended), with ``target``'s relaxed fingers limp."""
        reported = self.reported
        if (
            reported is None
            or reported.link != "up"
            or reported.angles != target.angles
            or reported.moving
            or not set(target.relaxed) <= set(reported.relaxed)
        ):
            return False
        return reported.version is None or reported.version >= target.version

    def as_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired.model_dump() if self.desired else None,
            "reported": self.reported.model_dump() if self.reported else None,
            "device": self.device,
            "arbiter": self.arbiter,
            "online": self.online,
            "error": self.error.model_dump() if self.error else None,
            "served_by": self.served_by,
        }


Listener = Callable[[Snapshot], None]


@dataclass(eq=False)
class Pending:
    """A command on its way: its future resolves to the new desired state or an error."""

    transaction: str
    wait: PlayWait
    gesture: str | None = None
    """The gesture this command plays, if it plays one."""
    future: Future[HandState] = field(default_factory=Future)
    accepted: HandState | None = None
    """The state the arbiter answered with, once it accepted; for a gesture that was waited
    to its end, the state that ended it."""
    finished: bool = False


class ClientCore:
    """State tracking, command publishing and answer matching for one hand."""

    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        hand: str = "hand1",
        base: str | None = None,
        topics: Topics | None = None,
        name: str = "client",
    ) -> None:
        if topics is not None and base is not None and topics.base != base:
            raise ValueError("give base or topics, not both")
        self.url = url if isinstance(url, BrokerUrl) else BrokerUrl.parse(url)
        self.topics = topics or Topics(base or "hand")
        self.hand_topics: HandTopics = self.topics.hand(hand)
        self.mqtt = MqttClient(self.url, name=name)
        self._lock = threading.Lock()
        self._desired: HandState | None = None
        self._reported: Reported | None = None
        self._device: str | None = None
        self._arbiter: str | None = None
        self._poses: dict[str, tuple[int, ...]] = {}
        self._served: ServedHands | None = None
        self._served_by: str | None = None
        self._errors: list[ErrorReport] = []
        self._pending: dict[str, Pending] = {}
        self._arriving: list[Pending] = []
        self._playing: list[Pending] = []
        self._gestures: dict[str, Gesture] = {}
        self._listeners: list[Listener] = []
        self._close_hooks: list[Callable[[], None]] = []
        self._closed = False
        self._started = False

    # -- connection (blocking; the async face runs these in a worker thread) ---------------

    def connect(self, timeout: float, *, require_state: bool = True) -> None:
        """Connect, and return once the broker has delivered the retained topics.

        Raises :class:`MqttError` when the broker cannot be reached or refuses us, and
        :class:`NoAnswerError` when ``require_state`` and no arbiter has published a state for
        this hand.
        """
        if self._closed:
            raise MqttError("this client was closed; make a new one to connect again")
        deadline = time.monotonic() + timeout
        if not self._started:
            self._subscribe()
            self._started = True
        # A refused connection is final: say so now, not after the timeout.
        self.mqtt.connect(timeout, wait_for_broker=False)
        if not self.mqtt.wait_synced(
            self.topics.sync(self.mqtt.client_id),
            max(0.0, deadline - time.monotonic()),
            have_all=self._have_all,
        ):
            self.mqtt.stop()
            raise NoAnswerError(
                f"connected to {self.url}, but the broker did not send back the retained "
                f"topics within {timeout:g} s"
            )
        if require_state and self.snapshot().desired is None:
            self.mqtt.stop()
            why = self.unserved() or (
                f"is 'hand-mqtt arbiter' running and serving {self.hand_topics.hand}?"
            )
            raise NoAnswerError(
                f"no state for {self.hand_topics.root} on the broker at {self.url}: {why}"
            )

    def close(self) -> None:
        """Disconnect; every command still waiting fails with :class:`MqttError`."""
        with self._lock:
            self._closed = True
            waiting = [*self._pending.values(), *self._arriving, *self._playing]
            self._pending.clear()
            self._arriving.clear()
            self._playing.clear()
        for pending in waiting:
            _fail(pending.future, MqttError("the client was closed before the answer came"))
        self.mqtt.stop()
        with self._lock:
            hooks = list(self._close_hooks)
        for hook in hooks:
            hook()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self.mqtt.connected

    def _subscribe(self) -> None:
        t = self.hand_topics
        self.mqtt.subscribe(t.state, self._on_state)
        self.mqtt.subscribe(self.topics.bridge_lease(t.hand), self._on_lease)
        self.mqtt.subscribe(t.reported, self._on_reported)
        self.mqtt.subscribe(t.availability, self._on_device)
        self.mqtt.subscribe(t.error, self._on_error)
        self.mqtt.subscribe(self.topics.bridge_state, self._on_bridge)
        self.mqtt.subscribe(self.topics.bridge_poses, self._on_poses)
        self.mqtt.subscribe(self.topics.bridge_gestures, self._on_gestures)
        self.mqtt.subscribe(self.topics.bridge_hands, self._on_served)

    def _have_all(self) -> bool:
        """Whether every retained topic has arrived: then connecting need not wait longer."""
        known = (self._desired, self._reported, self._device, self._arbiter)
        return None not in known and bool(self._poses) and bool(self._gestures)

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap()

    def _snap(self, error: ErrorReport | None = None) -> Snapshot:
        """What is known now (under the lock)."""
        return Snapshot(
            self._desired, self._reported, self._device, self._arbiter, error, self._served_by
        )

    @property
    def poses(self) -> dict[str, tuple[int, ...]]:
        """The poses the arbiter announced (name → five angles)."""
        with self._lock:
            return dict(self._poses)

    @property
    def gestures(self) -> dict[str, Gesture]:
        """The gestures the arbiter plays, by name."""
        with self._lock:
            return dict(self._gestures)

    @property
    def errors(self) -> list[ErrorReport]:
        """The latest refusals seen for this hand, oldest first (at most 50)."""
        with self._lock:
            return list(self._errors)

    @property
    def served(self) -> ServedHands | None:
        """Which hands the arbiter announced it serves (None: not announced)."""
        with self._lock:
            return self._served

    def unserved(self) -> str | None:
        """Why no arbiter will answer a command for this hand, or None when one should.

        Known at once from the retained ``bridge/state`` and ``bridge/hands``, so a caller
        need not wait for a timeout to say so.
        """
        with self._lock:
            arbiter, served = self._arbiter, self._served
        if arbiter != ONLINE_TEXT:
            said = "never started" if arbiter is None else f"says {arbiter[:16]}"
            return (
                f"no arbiter is running for the base topic {self.topics.base!r} at "
                f"{self.url} (its bridge/state: {said})"
            )
        hand = self.hand_topics.hand
        with self._lock:
            leased = self._served_by is not None
        # bridge/hands is one arbiter's word; with several, the hand's lease is the truth.
        if served is not None and not served.serves(hand) and not leased:
            names = ", ".join(served.hands) or "no hand"
            return f"the arbiter at {self.url} serves {names}, not {hand}"
        return None

    def listen(
        self, listener: Listener, on_close: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``listener`` (on the network thread) with every change, and ``on_close`` when
        the client closes; returns a function that stops both."""
        with self._lock:
            self._listeners.append(listener)
            if on_close is not None:
                self._close_hooks.append(on_close)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
                if on_close is not None and on_close in self._close_hooks:
                    self._close_hooks.remove(on_close)

        return remove

    # -- commands --------------------------------------------------------------------------

    def submit(
        self, command: Mapping[str, Any], wait: PlayWait = "accepted", gesture: str | None = None
    ) -> Pending:
        """Publish a whole-hand command; the returned future says how it ended.

        ``gesture`` names the gesture the command plays: then ``wait="finished"`` waits for its
        end, and ``wait="reported"`` for the device to report the hand where it ended.
        """
        allowed = ("accepted", "finished", "reported") if gesture else ("accepted", "reported")
        if wait not in allowed:
            raise ValueError(f"wait must be one of {', '.join(map(repr, allowed))}, not {wait!r}")
        if self._closed:
            raise MqttError("this client was closed")
        pending = Pending(uuid.uuid4().hex[:16], wait, gesture)
        payload = json.dumps({**command, "transaction": pending.transaction})
        pending.future.add_done_callback(lambda _f: self._forget(pending))
        with self._lock:
            self._pending[pending.transaction] = pending
        self.mqtt.publish(self.hand_topics.set, payload, qos=1)
        return pending

    def play_time(self, gesture: str, repeat: int) -> float:
        """Seconds the arbiter takes to play ``gesture`` ``repeat`` times (0 if unknown)."""
        with self._lock:
            known = self._gestures.get(gesture)
        return known.duration_ms * repeat / 1000.0 if known is not None else 0.0

    def no_answer(self, pending: Pending, timeout: float) -> NoAnswerError:
        """The error for a command whose future did not resolve within ``timeout``."""
        if pending.accepted is None:
            return NoAnswerError(
                f"no answer from the arbiter within {timeout:g} s (is 'hand-mqtt arbiter' "
                f"running for {self.hand_topics.root}?)"
            )
        if pending.gesture is not None and not pending.finished:
            return NoAnswerError(
                f"the gesture {pending.gesture!r} started at version {pending.accepted.version} "
                f"but had not finished after {timeout:g} s"
            )
        snap = self.snapshot()
        why = (
            "the device service is not online"
            if snap.device != ONLINE_TEXT
            else "the serial link is down"
            if snap.reported is None or snap.reported.link != "up"
            else f"it reports version {snap.reported.version}"
        )
        return NoAnswerError(
            f"the arbiter accepted version {pending.accepted.version}, but the device did not "
            f"report the hand there within {timeout:g} s ({why})"
        )

    def _forget(self, pending: Pending) -> None:
        with self._lock:
            if self._pending.get(pending.transaction) is pending:
                del self._pending[pending.transaction]
            if pending in self._arriving:
                self._arriving.remove(pending)
            if pending in self._playing:
                self._playing.remove(pending)

    # -- handlers (network thread) ---------------------------------------------------------

    def _tell(self, snapshot: Snapshot) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(snapshot)

    def _settle_arrivals(self) -> list[tuple[Pending, HandState | Exception]]:
        """Under the lock: the ``wait="reported"`` commands that are now decided."""
        snap = self._snap()
        decided: list[tuple[Pending, HandState | Exception]] = []
        for pending in list(self._arriving):
            target = pending.accepted
            assert target is not None
            if snap.arrived(target):
                decided.append((pending, target))
            elif (
                snap.reported is not None
                and snap.reported.version is not None
                and snap.reported.version > target.version
            ):
                decided.append(
                    (
                        pending,
                        CommandError(
                            f"version {target.version} was replaced by a newer command before "
                            "the device reported the hand there",
                            pending.transaction,
                        ),
                    )
                )
        for pending, _ in decided:
            self._arriving.remove(pending)
        return decided

    def _settle_plays(self, state: HandState) -> list[tuple[Pending, HandState | Exception]]:
        """Under the lock: the gestures waited for that ``state`` finishes or interrupts."""
        decided: list[tuple[Pending, HandState | Exception]] = []
        for pending in list(self._playing):
            first = pending.accepted
            assert first is not None
            ours = state.transaction == pending.transaction
            if ours and state.gesture is not None and state.version >= first.version:
                continue  # a step (or the same state once more, after a reconnect)
            self._playing.remove(pending)
            progress = first.gesture
            length = progress.steps * progress.rounds if progress is not None else 1
            if ours and state.gesture is None and state.version == first.version + length:
                pending.finished = True
                pending.accepted = state
                if pending.wait == "finished":
                    decided.append((pending, state))
                else:
                    self._arriving.append(pending)
                continue
            decided.append(
                (
                    pending,
                    CommandError(
                        f"the gesture {pending.gesture!r} was ended by another command "
                        f"(version {state.version}) before it finished",
                        pending.transaction,
                    ),
                )
            )
        return decided

    def _on_state(self, message: Message) -> None:
        try:
            state = HandState.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._desired = state
            pending = (
                self._pending.pop(str(state.transaction), None)
                if state.transaction is not None
                else None
            )
            decided = self._settle_plays(state)
            if pending is not None and pending.wait != "accepted":
                pending.accepted = state
                if pending.gesture is not None:
                    self._playing.append(pending)
                else:
                    self._arriving.append(pending)
            decided += self._settle_arrivals()
            snapshot = self._snap()
        if pending is not None and pending.wait == "accepted":
            _resolve(pending.future, state)
        _decide(decided)
        self._tell(snapshot)

    def _on_error(self, message: Message) -> None:
        try:
            report = ErrorReport.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._errors.append(report)
            del self._errors[:-_ERRORS_KEPT]
            pending = (
                self._pending.pop(str(report.transaction), None)
                if report.transaction is not None
                else None
            )
            snapshot = self._snap(report)
        if pending is not None:
            _fail(pending.future, CommandError(report.error, report.transaction))
        self._tell(snapshot)

    def _on_reported(self, message: Message) -> None:
        try:
            reported = Reported.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._reported = reported
            decided = self._settle_arrivals()
            snapshot = self._snap()
        _decide(decided)
        self._tell(snapshot)

    def _on_device(self, message: Message) -> None:
        with self._lock:
            self._device = message.payload.decode("utf-8", "replace") or None
            snapshot = self._snap()
        self._tell(snapshot)

    def _on_lease(self, message: Message) -> None:
        try:
            lease = Lease.model_validate_json(message.payload) if message.payload else None
        except ValidationError:
            return
        if lease is not None and lease.status not in ("serving", "released"):
            return  # a claim or a handover on its way: the next serving lease says who won
        with self._lock:
            self._served_by = lease.arbiter if lease is not None else None
            snapshot = self._snap()
        self._tell(snapshot)

    def _on_bridge(self, message: Message) -> None:
        with self._lock:
            self._arbiter = message.payload.decode("utf-8", "replace") or None
            snapshot = self._snap()
        self._tell(snapshot)

    def _on_gestures(self, message: Message) -> None:
        try:
            announced = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(announced, dict):
            return
        gestures = {
            str(name): gesture
            for name, data in announced.items()
            if (gesture := _gesture_from(str(name), data)) is not None
        }
        with self._lock:
            self._gestures = gestures
            snapshot = self._snap()
        self._tell(snapshot)

    def _on_served(self, message: Message) -> None:
        try:
            served: ServedHands | None = ServedHands.model_validate_json(message.payload)
        except ValidationError:
            served = None
        with self._lock:
            self._served = served

    def _on_poses(self, message: Message) -> None:
        try:
            poses = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(poses, dict):
            return
        with self._lock:
            self._poses = {
                str(name): tuple(angles)
                for name, angles in poses.items()
                if isinstance(angles, list) and all(isinstance(a, int) for a in angles)
            }
            snapshot = self._snap()
        self._tell(snapshot)


def _gesture_from(name: str, data: Any) -> Gesture | None:
    """A gesture as ``bridge/gestures`` announces it, or None if it does not read as one."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return None
    steps: list[GestureStep] = []
    for step in data["steps"]:
        try:
            angles = tuple(step["angles"])
            if len(angles) != len(FINGERS) or not all(
                a is None or isinstance(a, int) for a in angles
            ):
                return None
            steps.append(
                GestureStep(
                    angles,
                    int(step["move_ms"]),
                    int(step["hold_ms"]),
                    step.get("pose") if isinstance(step.get("pose"), str) else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            return None
    return Gesture(name, tuple(steps)) if steps else None


def _resolve(future: Future[HandState], state: HandState) -> None:
    # A caller's timeout may cancel the future at this very moment: then nobody is waiting.
    with contextlib.suppress(InvalidStateError):
        future.set_result(state)


def _fail(future: Future[HandState], error: Exception) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


def _decide(decided: list[tuple[Pending, HandState | Exception]]) -> None:
    for pending, outcome in decided:
        if isinstance(outcome, Exception):
            _fail(pending.future, outcome)
        else:
            _resolve(pending.future, outcome)
