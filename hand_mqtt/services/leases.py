"""Which arbiter serves which hand, when several run against one broker or cluster.

Each hand is served by one arbiter at a time: the holder of its lease, a retained message on
``<base>/bridge/lease/<hand>``. Every arbiter says it is alive on its own presence topic,
``<base>/bridge/arbiter/<id>``: ``online`` while it runs, ``offline`` from its will when it
vanishes. A lease whose holder is offline, or that its holder released, is free.

Taking a hand (see docs/deployment.md for the whole story):

1. the candidate publishes a ``claim`` for the next epoch, not retained;
2. the first claim of an epoch that the broker delivers wins: a candidate whose own claim comes
   back before any other for that epoch has it, and every other arbiter sees the same order;
3. a previous holder that is still alive answers with ``handed`` (not retained) once it has
   answered every command it received before the claim, and stops serving;
4. the winner reads the hand's retained state afresh, applies the commands that the previous
   holder never answered (an arbiter standing by keeps every command it receives, and forgets
   each one as its state or error comes by: :class:`Ledger`), and publishes ``serving``
   (retained): from then on it is the lease that late readers find.

Leases carry an epoch that only grows, so a late retained message (a clustered broker can
deliver one after a newer live one) never takes a hand back.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from hand_mqtt.model import Lease
from hand_mqtt.mqtt import Message

__all__ = [
    "DEFAULT_LEDGER_LIMIT",
    "HandLease",
    "LeaseKeeper",
    "Ledger",
    "Outcome",
    "Phase",
    "command_digest",
]

DEFAULT_LEDGER_LIMIT: Final = 1000
"""Commands an arbiter standing by keeps per hand until they are answered."""
EARLY_ANSWER_S: Final = 2.0
"""How long an answer that came before its command waits for it (a cluster's nodes reorder
messages by milliseconds; an answer kept longer could be taken for a later, equal command's)."""


def command_digest(topic: str, payload: bytes) -> str:
    """A short name for a command message, carried by the state or error that answers it."""
    digest = hashlib.blake2b(topic.encode("utf-8", "surrogateescape"), digest_size=8)
    digest.update(b"\0")
    digest.update(payload)
    return digest.hexdigest()


class Ledger:
    """The commands for one hand that an arbiter standing by received and nobody answered yet.

    When the arbiter takes the hand over, what is left was never answered by the previous
    holder (it died first, or never received them): those are applied, in arrival order.
    An answer may come before its command (on a cluster they travel by different nodes): it
    is kept, and the command is forgotten as it comes. Bounded: past ``limit`` the oldest is
    forgotten (it was answered long ago, by all odds).
    """

    def __init__(self, limit: int = DEFAULT_LEDGER_LIMIT) -> None:
        self.limit = limit
        self._entries: deque[tuple[str, Message]] = deque()
        self._early: deque[tuple[float, str]] = deque()
        """Answers whose command has not come yet, oldest first, with when they came."""
        self.forgotten = 0

    def add(self, message: Message) -> str:
        digest = command_digest(message.topic, message.payload)
        self._forget_early()
        for i, (_at, early) in enumerate(self._early):
            if early == digest:
                del self._early[i]
                return digest
        self._entries.append((digest, message))
        if len(self._entries) > self.limit:
            self._entries.popleft()
            self.forgotten += 1
        return digest

    def answered(self, digest: str) -> bool:
        """Forget the oldest command with this digest; False when none is kept (its answer
        is then remembered, for the command to be forgotten when it comes)."""
        for i, (kept, _message) in enumerate(self._entries):
            if kept == digest:
                del self._entries[i]
                return True
        self._remember_early(digest)
        return False

    def answered_through(self, digest: str) -> bool:
        """A state or error answers ``digest``: that command and every one kept before it were
        answered, since an arbiter answers its commands in the order they came, and every
        subscriber of one broker (or of a cluster ordered by one Redis) receives them in one
        order. False when the command is not kept (its answer is then remembered)."""
        for i, (kept, _message) in enumerate(self._entries):
            if kept == digest:
                for _ in range(i + 1):
                    self._entries.popleft()
                return True
        self._remember_early(digest)
        return False

    def _forget_early(self) -> None:
        limit = time.monotonic() - EARLY_ANSWER_S
        while self._early and self._early[0][0] < limit:
            self._early.popleft()

    def _remember_early(self, digest: str) -> None:
        self._forget_early()
        self._early.append((time.monotonic(), digest))
        if len(self._early) > self.limit:
            self._early.popleft()

    def drop_oldest(self, count: int) -> None:
        """Forget ``count`` commands whose answers were missed (a gap in the state's versions)."""
        for _ in range(min(count, len(self._entries))):
            self._entries.popleft()

    def take(self) -> list[Message]:
        """Every command still unanswered, oldest first; the ledger is empty afterwards."""
        taken = [message for _digest, message in self._entries]
        self._entries.clear()
        self._early.clear()
        return taken

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Message]:
        return (message for _digest, message in self._entries)


class Phase(enum.Enum):
    """Where this arbiter stands with one hand."""

    STANDBY = "standby"
    """Another arbiter holds the hand, or nobody does: keep its commands in the ledger."""
    CLAIMING = "claiming"
    """Our claim is on its way back to us."""
    HANDING = "handing"
    """Our claim won: waiting for the previous holder to stand down (or to be seen dead)."""
    SERVING = "serving"


class Outcome(enum.Enum):
    """What a lease or presence message means for this arbiter (see :class:`LeaseKeeper`)."""

    WON = "won"
    """Our claim came back first: take the hand over (after ``previous`` stood down)."""
    LOST = "lost"
    """Another claim of the same epoch came first: stand by."""
    TAKE_OVER = "take over"
    """Won, and nobody is left to stand down: read the state and serve."""
    STEP_DOWN = "step down"
    """We serve the hand and another arbiter claims it: answer ``handed`` and stand by."""
    FREE = "free"
    """The hand's holder released it or vanished: an arbiter that may take it claims it."""
    REASSERT = "reassert"
    """We serve the hand and a claim or lease ignores us: publish our lease again."""


@dataclass
class HandLease:
    """What this arbiter knows of one hand's lease."""

    hand: str
    epoch: int = 0
    holder: str | None = None
    """The arbiter that holds the hand at ``epoch`` (the first claim of it, or ``serving``)."""
    phase: Phase = Phase.STANDBY
    previous: str | None = None
    """While claiming or handing: the holder we take the hand from (None: nobody)."""
    seen: bool = False
    """A lease message for the hand has arrived (retained or live)."""
    ledger: Ledger = field(default_factory=Ledger)


class LeaseKeeper:
    """The leases of the hands one arbiter knows, and the rules that move them.

    Pure bookkeeping, no MQTT: the arbiter hands it every lease and presence message in
    arrival order and publishes what it is told. ``me`` is this arbiter's id.
    """

    def __init__(self, me: str) -> None:
        self.me = me
        self.hands: dict[str, HandLease] = {}
        self.online: set[str] = set()
        self.offline: set[str] = set()
        """Arbiters seen going away (their will, or their own goodbye)."""

    def hand(self, hand: str) -> HandLease:
        found = self.hands.get(hand)
        if found is None:
            found = self.hands[hand] = HandLease(hand)
        return found

    def alive(self, arbiter: str | None) -> bool:
        """Whether ``arbiter`` may still serve: not seen going away (or back since)."""
        return arbiter is not None and arbiter not in self.offline

    def is_free(self, hand: str) -> bool:
        """Nobody holds the hand: never leased, released, or its holder went away."""
        lease = self.hand(hand)
        return lease.holder is None or not self.alive(lease.holder)

    def claim(self, hand: str) -> Lease:
        """Start claiming ``hand``: the message to publish (not retained)."""
        lease = self.hand(hand)
        lease.previous = lease.holder if self.alive(lease.holder) else None
        if lease.previous == self.me:
            lease.previous = None
        lease.phase = Phase.CLAIMING
        return Lease(hand=hand, arbiter=self.me, epoch=lease.epoch + 1, status="claim")

    def serving(self, hand: str) -> Lease:
        """We serve ``hand`` now: the lease to publish, retained."""
        lease = self.hand(hand)
        lease.phase = Phase.SERVING
        lease.holder = self.me
        return Lease(
            hand=hand,
            arbiter=self.me,
            epoch=lease.epoch,
            status="serving",
            previous=lease.previous,
        )

    def release(self, hand: str) -> Lease:
        """We stop serving ``hand`` with nobody to take it: the release to publish, retained."""
        lease = self.hand(hand)
        lease.phase = Phase.STANDBY
        lease.holder = None
        return Lease(
            hand=hand, arbiter=None, epoch=lease.epoch, status="released", previous=self.me
        )

    def on_presence(self, arbiter: str, online: bool) -> list[str]:
        """An arbiter's presence; returns the hands it held that are free now."""
        if online:
            self.offline.discard(arbiter)
            self.online.add(arbiter)
            return []
        self.online.discard(arbiter)
        if arbiter == self.me:
            return []  # our own will, published late (a dead node's): we say online again
        self.offline.add(arbiter)
        freed = []
        for lease in self.hands.values():
            if lease.holder == arbiter and lease.phase is Phase.STANDBY:
                freed.append(lease.hand)
        return freed

    def handing_from(self, arbiter: str) -> list[str]:
        """The hands we wait to receive from ``arbiter`` (it went away: take them now)."""
        return [
            lease.hand
            for lease in self.hands.values()
            if lease.phase is Phase.HANDING and lease.previous == arbiter
        ]

    def on_lease(self, message: Lease) -> Outcome | None:
        """A message on a hand's lease topic, in arrival order; what it means for us."""
        lease = self.hand(message.hand)
        lease.seen = True
        if message.status == "handed":
            if (
                lease.phase is Phase.HANDING
                and message.arbiter == self.me
                and message.epoch == lease.epoch
            ):
                return Outcome.TAKE_OVER
            return None
        if message.epoch < lease.epoch:
            if message.status == "claim" and lease.phase is Phase.SERVING:
                return Outcome.REASSERT  # a claim made without knowing of us
            return None  # a late retained message of an older epoch
        newer = message.epoch > lease.epoch
        lease.epoch = message.epoch
        if message.status == "released":
            return self._released(lease, message, newer)
        if message.status == "claim":
            if not newer:
                # A second claim of the same epoch: the first in broker order won.
                if message.arbiter == self.me and lease.phase is Phase.CLAIMING:
                    lease.phase = Phase.STANDBY
                    return Outcome.LOST
                return None
            lease.holder = message.arbiter
            if message.arbiter == self.me:
                return self._won(lease) if lease.phase is Phase.CLAIMING else None
            return self._taken(lease)
        # serving: the holder's word, retained.
        if message.arbiter == self.me:
            lease.holder = self.me
            return None
        if (
            not newer
            and lease.phase is Phase.SERVING
            and lease.holder == self.me
            and (message.arbiter or "") < self.me
        ):
            # Two arbiters serve one epoch (one claimed without seeing the other's claim):
            # both keep the same rule, the greater id keeps the hand.
            return Outcome.REASSERT
        lease.holder = message.arbiter
        outcome = self._taken(lease)
        if outcome is None and not self.alive(message.arbiter):
            return Outcome.FREE
        return outcome

    def _taken(self, lease: HandLease) -> Outcome | None:
        """Another arbiter holds the epoch now."""
        mine, lease.phase = lease.phase, Phase.STANDBY
        if mine is Phase.SERVING:
            return Outcome.STEP_DOWN
        if mine in (Phase.CLAIMING, Phase.HANDING):
            return Outcome.LOST
        return None

    def _released(self, lease: HandLease, message: Lease, newer: bool) -> Outcome | None:
        if not newer and lease.holder not in (None, message.previous):
            return None  # a release by an arbiter that no longer held the hand
        lease.holder = None
        if lease.phase is Phase.HANDING and lease.previous == message.previous:
            return Outcome.TAKE_OVER  # it stopped instead of handing over: the same to us
        if lease.phase is Phase.STANDBY:
            return Outcome.FREE
        if lease.phase is Phase.SERVING:
            lease.phase = Phase.STANDBY  # our own release (we are stopping)
        return None

    def _won(self, lease: HandLease) -> Outcome:
        if lease.previous is None or not self.alive(lease.previous):
            lease.previous = None
            lease.phase = Phase.HANDING
            return Outcome.TAKE_OVER
        lease.phase = Phase.HANDING
        return Outcome.WON
