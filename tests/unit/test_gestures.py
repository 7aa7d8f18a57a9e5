"""Gestures in the poses file, the gesture commands, and the player's clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from hand_mqtt import CommandError, ConfigError, PoseBook
from hand_mqtt.commands import parse_command
from hand_mqtt.gestures import BUILTIN_GESTURES, Gesture, GestureStep
from hand_mqtt.services.player import Playing
from hand_mqtt.topics import CommandTopic

HAND = CommandTopic("hand1", "hand")
POSE = CommandTopic("hand1", "pose")


def book(tmp_path: Path, text: str) -> PoseBook:
    path = tmp_path / "poses.toml"
    path.write_text(text)
    return PoseBook.from_file(path)


def test_builtin_count_counts_from_a_fist_to_an_open_hand() -> None:
    count = BUILTIN_GESTURES["count"]
    assert [step.angles for step in count.steps] == [
        (0, 0, 0, 0, 0),
        (180, 0, 0, 0, 0),
        (180, 180, 0, 0, 0),
        (180, 180, 180, 0, 0),
        (180, 180, 180, 180, 0),
        (180, 180, 180, 180, 180),
    ]
    assert count.duration_ms == sum(s.move_ms + s.hold_ms for s in count.steps)
    assert set(PoseBook().gestures) == {"count", "wave"}


def test_gestures_from_the_poses_file(tmp_path: Path) -> None:
    poses = book(
        tmp_path,
        """
        [poses]
        claw = [90, 90, 90, 90, 90]

        [gestures.hello]
        steps = [
          { pose = "claw", move_ms = 300, hold_ms = 200 },
          { angles = [0, 10, 20, 30, 40], hold_ms = 100 },
          { pose = "open", index = 0, move_ms = 50 },
          { thumb = 0, move_ms = 50 },
        ]
        """,
    )
    hello = poses.gestures["hello"]
    assert hello.steps == (
        GestureStep((90, 90, 90, 90, 90), 300, 200, "claw"),
        GestureStep((0, 10, 20, 30, 40), 0, 100),
        GestureStep((0, 180, 180, 180, 180), 50, 0),
        GestureStep((None, None, None, None, 0), 50, 0),
    )
    assert hello.to_dict()["duration_ms"] == 700
    assert set(poses.gestures) == {"count", "wave", "hello"}


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("[gestures.x]\nsteps = []", "gesture 'x': steps must be a list of 1 to 100 steps"),
        ("[gestures.X]\nsteps = [{pose='open', hold_ms=100}]", "gesture name 'X' must be"),
        ("[gestures.x]\nsteps = [{pose='salute', hold_ms=100}]", "step 1: unknown pose 'salute'"),
        ("[gestures.x]\nsteps = [{hold_ms=100}]", "step 1: the step names no pose"),
        ("[gestures.x]\nsteps = [{pose='open', hold_ms=10}]", "move_ms + hold_ms must be at least"),
        ("[gestures.x]\nsteps = [{pose='open', hold_ms=-1}]", "hold_ms must be a whole number"),
        ("[gestures.x]\nsteps = [{pose='open', move_ms=1.5}]", "move_ms must be a whole number"),
        ("[gestures.x]\nsteps = [{index=181, hold_ms=100}]", "index must be an angle from 0"),
        ("[gestures.x]\nsteps = [{angles=[1, 2], hold_ms=100}]", "angles must be a list of five"),
        ("[gestures.x]\nsteps = [{pose='open', speed=3}]", "unknown key(s) speed"),
        (
            "[gestures.x]\nsteps = [{angles=[1,2,3,4,5], pose='open', hold_ms=100}]",
            "give either angles or a pose",
        ),
        ("[gestures.x]\nrepeat = 2", "gesture 'x': give steps = [ ... ] and nothing else"),
        ("gestures = 3", "[gestures] must be a table"),
        (
            "[poses]\np = [1, 1, 1, 1, 1]\n[gestures.p]\nsteps = [{pose='open', hold_ms=100}]",
            "gesture 'p' has the name of a pose",
        ),
    ],
)
def test_bad_gestures_are_refused_with_a_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as error:
        book(tmp_path, text)
    assert sentence in str(error.value)


def test_a_users_pose_hides_the_builtin_gesture_of_its_name(tmp_path: Path) -> None:
    poses = book(tmp_path, "[poses]\nwave = [180, 90, 90, 90, 180]\n")
    assert poses["wave"] == (180, 90, 90, 90, 180)
    assert set(poses.gestures) == {"count"}
    assert parse_command(POSE, b"wave", poses).pose == "wave"


def test_gesture_commands() -> None:
    poses = PoseBook()
    command = parse_command(HAND, b'{"gesture": "count", "repeat": 3, "transaction": "t"}', poses)
    assert (command.gesture, command.repeat, command.transaction) == ("count", 3, "t")
    assert parse_command(HAND, b'{"gesture": "wave"}', poses).repeat == 1
    # A gesture's name on the pose topic plays it (Home Assistant's select sends names there).
    assert parse_command(POSE, b"count", poses).gesture == "count"
    assert parse_command(POSE, b'{"pose": "wave", "transaction": 4}', poses).gesture == "wave"
    assert parse_command(POSE, b"peace", poses).pose == "peace"


@pytest.mark.parametrize(
    ("topic", "payload", "sentence"),
    [
        (HAND, b'{"gesture": "salute"}', "unknown gesture 'salute'; gestures: count, wave"),
        (HAND, b'{"gesture": 7}', "unknown gesture 7"),
        (HAND, b'{"gesture": "count", "repeat": 0}', "repeat must be a whole number from 1 to 100"),
        (HAND, b'{"gesture": "count", "repeat": 101}', "repeat must be a whole number"),
        (HAND, b'{"gesture": "count", "repeat": true}', "repeat must be a whole number"),
        (HAND, b'{"gesture": "count", "pose": "fist"}', "a gesture is played on its own"),
        (HAND, b'{"repeat": 2}', "unknown field(s) 'repeat'"),
        (
            HAND,
            b'{"pose": "count"}',
            """'count' is a gesture, not a pose: send {"gesture": "count"}""",
        ),
        (POSE, b"salute", "unknown pose 'salute'; known poses: open, fist"),
        (POSE, b"salute", "phone; gestures: count, wave"),
    ],
)
def test_bad_gesture_commands(topic: CommandTopic, payload: bytes, sentence: str) -> None:
    with pytest.raises(CommandError) as error:
        parse_command(topic, payload, PoseBook())
    assert sentence in str(error.value)


def test_a_play_is_due_from_its_start_over_every_round() -> None:
    gesture = Gesture(
        "g",
        (GestureStep((0,) * 5, 100, 50), GestureStep((1,) * 5, 0, 250)),
    )
    playing = Playing("hand1", gesture, rounds=2, transaction=None, started=10.0)
    assert playing.length == 4
    assert [playing.due(n) for n in range(5)] == [10.0, 10.15, 10.4, 10.55, 10.8]
    playing.position = 3
    assert playing.progress.model_dump() == {
        "name": "g",
        "step": 2,
        "steps": 2,
        "round": 2,
        "rounds": 2,
    }
    assert playing.step.angles == (1,) * 5
