"""The arbiter's journal of hand states: what is written is read back, after any crash."""

from __future__ import annotations

from pathlib import Path

from hand_mqtt import HandState
from hand_mqtt.services.journal import StateJournal


def state(version: int, index: int = 90, transaction: str | None = None) -> HandState:
    return HandState(index=index, version=version, transaction=transaction)


def loaded(path: Path) -> dict[str, HandState]:
    journal = StateJournal(path)
    try:
        return journal.load()
    finally:
        journal.close()


def test_states_are_read_back_the_last_one_winning(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    journal = StateJournal(path)
    assert journal.load() == {}
    journal.record("left", state(1, 10, "✌️"))
    journal.record("right", state(1, 20))
    journal.record("left", state(2, 30))
    # Read while the writer still has it open, as after a crash.
    reader = StateJournal(path)
    assert reader.load() == {"left": state(2, 30), "right": state(1, 20)}
    reader.close()
    journal.close()


def test_a_retired_hand_is_not_restored(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    journal = StateJournal(path)
    journal.load()
    journal.record("left", state(5))
    journal.record("gone", state(1))
    journal.retire("gone")
    journal.close()
    assert loaded(path) == {"left": state(5)}


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    journal = StateJournal(path)
    journal.load()
    journal.record("left", state(7))
    journal.close()
    with path.open("a") as cut:
        cut.write('{"hand":"left","state":{"index":1,"mid')
    again = StateJournal(path)
    assert again.load() == {"left": state(7)}
    again.record("left", state(8))  # appended after the broken line, read back all the same
    again.close()
    assert loaded(path) == {"left": state(8)}


def test_the_file_is_rewritten_when_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    journal = StateJournal(path)
    journal.load()
    for version in range(1, 2501):
        journal.record("left", state(version, version % 181))
    journal.close()
    assert len(path.read_text().splitlines()) < 1100
    assert loaded(path) == {"left": state(2500, 2500 % 181)}
