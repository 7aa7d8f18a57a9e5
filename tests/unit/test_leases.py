"""The lease rules, without a broker: each arbiter sees the same messages in the same order
(what one broker, or one Redis behind a cluster, gives every subscriber), and exactly one
arbiter serves a hand at a time."""

from __future__ import annotations

from pathlib import Path

from hand_mqtt.model import HandState, Lease
from hand_mqtt.mqtt import Message
from hand_mqtt.services.arbiter import HANDOVER_WAIT_S
from hand_mqtt.services.leases import LeaseKeeper, Ledger, Outcome, Phase, command_digest


def serving(arbiter: str, epoch: int, hand: str = "h") -> Lease:
    return Lease(hand=hand, arbiter=arbiter, epoch=epoch, status="serving")


def test_a_claim_that_comes_back_first_takes_a_free_hand() -> None:
    a = LeaseKeeper("a")
    claim = a.claim("h")
    assert claim.epoch == 1
    assert a.hand("h").phase is Phase.CLAIMING
    assert a.on_lease(claim) is Outcome.TAKE_OVER
    lease = a.serving("h")
    assert (lease.arbiter, lease.epoch, lease.status) == ("a", 1, "serving")
    assert a.on_lease(lease) is None  # our own retained lease, back from the broker


def test_of_two_claims_of_one_epoch_the_first_delivered_wins_for_everybody() -> None:
    a, b, watcher = LeaseKeeper("a"), LeaseKeeper("b"), LeaseKeeper("c")
    claim_a, claim_b = a.claim("h"), b.claim("h")
    assert claim_a.epoch == claim_b.epoch == 1
    order = [claim_b, claim_a]  # the broker delivered b's first, to everyone
    outcomes = {name: [k.on_lease(m) for m in order] for name, k in (("a", a), ("b", b))}
    assert outcomes["b"] == [Outcome.TAKE_OVER, None]
    assert outcomes["a"] == [Outcome.LOST, None]  # lost as soon as b's came
    assert a.hand("h").phase is Phase.STANDBY
    for message in order:
        watcher.on_lease(message)
    assert watcher.hand("h").holder == a.hand("h").holder == "b"


def test_a_live_holder_stands_down_and_hands_over() -> None:
    a, b = LeaseKeeper("a"), LeaseKeeper("b")
    for keeper in (a, b):
        keeper.on_lease(serving("a", 1))
    a.hand("h").phase = Phase.SERVING
    claim = b.claim("h")
    assert b.hand("h").previous == "a"
    assert a.on_lease(claim) is Outcome.STEP_DOWN
    assert a.hand("h").phase is Phase.STANDBY
    assert b.on_lease(claim) is Outcome.WON  # a is alive: wait for its word
    handed = Lease(hand="h", arbiter="b", epoch=2, status="handed", previous="a")
    assert b.on_lease(handed) is Outcome.TAKE_OVER


def test_a_holder_that_vanishes_frees_its_hands_and_ends_a_wait_for_it() -> None:
    b, c = LeaseKeeper("b"), LeaseKeeper("c")
    for keeper in (b, c):
        keeper.on_lease(serving("a", 3, "h1"))
        keeper.on_lease(serving("a", 1, "h2"))
    claim = c.claim("h1")
    assert c.on_lease(claim) is Outcome.WON
    assert c.on_presence("a", online=False) == ["h2"]  # h1 is being taken already
    assert c.handing_from("a") == ["h1"]
    assert sorted(b.on_presence("a", online=False)) == ["h1", "h2"]


def test_a_late_retained_lease_of_an_older_epoch_changes_nothing() -> None:
    b = LeaseKeeper("b")
    b.on_lease(serving("a", 5))
    assert b.on_lease(serving("old", 4)) is None
    assert b.hand("h").holder == "a"
    assert b.hand("h").epoch == 5


def test_a_claim_made_without_knowing_the_holder_is_answered() -> None:
    a = LeaseKeeper("a")
    a.on_lease(serving("a", 5))
    a.hand("h").phase = Phase.SERVING
    stale = Lease(hand="h", arbiter="z", epoch=1, status="claim")
    assert a.on_lease(stale) is Outcome.REASSERT


def test_two_servers_of_one_epoch_agree_which_keeps_the_hand() -> None:
    a, b = LeaseKeeper("a"), LeaseKeeper("b")
    for keeper in (a, b):
        keeper.on_lease(Lease(hand="h", arbiter=keeper.me, epoch=1, status="claim"))
        keeper.hand("h").phase = Phase.SERVING
    assert b.on_lease(serving("a", 1)) is Outcome.REASSERT
    assert a.on_lease(serving("b", 1)) is Outcome.STEP_DOWN


def test_a_release_frees_the_hand_for_those_standing_by() -> None:
    a, b = LeaseKeeper("a"), LeaseKeeper("b")
    for keeper in (a, b):
        keeper.on_lease(serving("a", 2))
    a.hand("h").phase = Phase.SERVING
    release = a.release("h")
    assert release.epoch == 2
    assert b.on_lease(release) is Outcome.FREE
    assert b.is_free("h")
    assert b.claim("h").epoch == 3


def test_an_arbiter_back_online_is_alive_again() -> None:
    b = LeaseKeeper("b")
    b.on_lease(serving("a", 1))
    b.on_presence("a", online=False)
    assert b.is_free("h")
    b.on_presence("a", online=True)
    assert not b.is_free("h")


def _command(payload: bytes) -> Message:
    return Message("hand/h/set", payload)


def test_the_ledger_keeps_what_nobody_answered_in_order() -> None:
    ledger = Ledger(limit=3)
    for payload in (b"1", b"2", b"2", b"3"):
        ledger.add(_command(payload))
    assert ledger.forgotten == 1  # past the limit, the oldest goes
    assert ledger.answered(command_digest("hand/h/set", b"2"))
    assert not ledger.answered(command_digest("hand/h/set", b"9"))
    assert [m.payload for m in ledger.take()] == [b"2", b"3"]
    assert len(ledger) == 0


def test_missed_answers_drop_the_oldest_commands() -> None:
    ledger = Ledger()
    for payload in (b"1", b"2", b"3"):
        ledger.add(_command(payload))
    ledger.drop_oldest(2)
    assert [m.payload for m in ledger] == [b"3"]


TOPICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"


def test_the_documented_lease_and_state_are_what_the_arbiter_writes() -> None:
    text = TOPICS_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Several arbiters\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    lease = Lease.model_validate_json(example)
    assert lease.status == "serving"
    words = " ".join(section.split())
    assert f"one that says nothing for {HANDOVER_WAIT_S:g} s is taken for dead" in words
    state = text.split("\n## Desired state\n", 1)[1].split("```json\n", 1)[1].split("\n```")[0]
    answers = HandState.model_validate_json(state).answers
    assert answers is not None
    assert len(answers) == len(command_digest("hand/hand1/set", b"{}"))
