"""The "Gestures" section of docs/topics.md says what the code does: its TOML loads, its
payloads parse, its JSON is what the arbiter publishes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hand_mqtt import CommandError, HandState, PoseBook
from hand_mqtt.commands import parse_command
from hand_mqtt.gestures import BUILTIN_GESTURES
from hand_mqtt.topics import CommandTopic

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"


def section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Gestures\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^ *```{kind}\n(.*?)^ *```", section(), re.MULTILINE | re.DOTALL)


def test_the_poses_file_example_loads(tmp_path: Path) -> None:
    (toml,) = blocks("toml")
    path = tmp_path / "poses.toml"
    path.write_text(toml)
    hello = PoseBook.from_file(path).gestures["hello"]
    assert [step.angles for step in hello.steps] == [
        (90, 90, 90, 90, 90),
        (0, 180, 180, 180, 0),
        (0, 180, 180, 180, 180),
        (None, None, None, None, 90),
    ]


def test_the_builtin_table_and_the_announcement() -> None:
    text = section()
    for name, gesture in BUILTIN_GESTURES.items():
        assert re.search(rf"\| `{name}` \| .*; {gesture.duration_ms / 1000:g} s \|", text), name
    state, announced = (json.loads(block) for block in blocks("json"))
    assert HandState.model_validate(state).gesture is not None
    assert announced == {"wave": BUILTIN_GESTURES["wave"].to_dict()}


def test_the_payloads_shown_are_accepted_and_the_refusals_are_said() -> None:
    text = section()
    hand = CommandTopic("hand1", "hand")
    for payload in re.findall(r"`(\{\"gesture\".*?\})`", text):
        assert parse_command(hand, payload.encode(), PoseBook()).gesture is not None
    for payload, sentence in [
        (b'{"gesture": "x"}', "unknown gesture 'x'; gestures: count, wave"),
        (b'{"gesture": "wave", "repeat": 0}', "repeat must be a whole number from 1"),
        (b'{"gesture": "wave", "pose": "fist"}', "a gesture is played on its own: "),
    ]:
        with pytest.raises(CommandError) as error:
            parse_command(hand, payload, PoseBook())
        assert str(error.value).startswith(sentence)
        assert sentence in " ".join(text.split())
