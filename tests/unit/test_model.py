from __future__ import annotations

import json
from pathlib import Path

import pytest

from hand_mqtt import BUILTIN_POSES, ConfigError, HandState, PoseBook, Topics
from hand_mqtt.model import is_angle
from hand_mqtt.topics import CommandTopic


def test_builtin_poses_match_the_original() -> None:
    assert BUILTIN_POSES["peace"] == (180, 180, 0, 0, 0)
    assert BUILTIN_POSES["rockstar"] == (180, 0, 0, 180, 180)
    assert BUILTIN_POSES["okay"] == (0, 180, 180, 180, 0)
    assert BUILTIN_POSES["point"] == (180, 0, 0, 0, 180)
    assert BUILTIN_POSES["phone"] == (0, 0, 0, 180, 180)


def test_pose_file(tmp_path: Path) -> None:
    path = tmp_path / "poses.toml"
    path.write_text(
        "[poses]\nwave = [180, 90, 90, 90, 180]\n"
        "thumbs-up = { thumb = 180, index = 0, middle = 0, ring = 0, pinky = 0 }\n"
    )
    book = PoseBook.from_file(path)
    assert book["wave"] == (180, 90, 90, 90, 180)
    assert book["thumbs-up"] == (0, 0, 0, 0, 180)
    assert book.name_of((180, 180, 0, 0, 0)) == "peace"
    assert book.name_of((1, 2, 3, 4, 5)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[poses]\nx = [1, 2]\n", "expected 5 angles"),
        ("[poses]\nx = [1, 2, 3, 4, 999]\n", "not an angle"),
        ("[poses]\nx = { elbow = 1 }\n", "unknown finger"),
        ("[poses]\nBad_Name = [1, 2, 3, 4, 5]\n", "lowercase"),
        ("[poses\n", "not valid TOML"),
        ("poses = 3\n", "must be a table"),
        ("[poses]\nx = 3\n", "list of five"),
    ],
)
def test_bad_pose_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "poses.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        PoseBook.from_file(path)


def test_missing_pose_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        PoseBook.from_file(tmp_path / "absent.toml")


def test_state_json_round_trip() -> None:
    state = HandState(index=1, middle=2, ring=3, pinky=4, thumb=5, version=7, transaction="x")
    assert HandState.model_validate_json(state.model_dump_json()) == state
    assert state.angles == (1, 2, 3, 4, 5)


def test_topics() -> None:
    topics = Topics("home/hand")
    hand = topics.hand("left")
    assert hand.finger_set("index") == "home/hand/left/index/set"
    assert hand.state == "home/hand/left/state"
    assert topics.parse_command("home/hand/left/set") == CommandTopic("left", "hand")
    assert topics.parse_command("home/hand/left/pose/set") == CommandTopic("left", "pose")
    assert topics.parse_command("home/hand/left/thumb/set") == CommandTopic(
        "left", "finger", "thumb"
    )
    assert topics.parse_command("home/hand/left/elbow/set") is None
    assert topics.parse_command("home/hand/bridge/set") is None
    assert topics.parse_command("other/left/set") is None
    assert topics.hand_of("home/hand/left/state", "state") == "left"


@pytest.mark.parametrize("name", ["", "bridge", "a/b", "+", "#", "x" * 65, "sp ace"])
def test_bad_hand_names(name: str) -> None:
    with pytest.raises(ConfigError):
        Topics().hand(name)


@pytest.mark.parametrize("base", ["", "a//b", "a/+", "#"])
def test_bad_base(base: str) -> None:
    with pytest.raises(ConfigError):
        Topics(base)


@pytest.mark.parametrize(
    "state",
    [
        HandState(),
        HandState(index=0, pose="fist", version=3, transaction="t-1"),
        HandState(thumb=7, pose='we"ird\\pose', version=2**40, transaction=-5),
        HandState(ring=1, pose=None, transaction="ünïcode ✋"),
        HandState(relaxed=("index", "thumb"), duration_ms=800),
        HandState(relaxed=("index", "middle", "ring", "pinky", "thumb"), locked=True),
    ],
)
def test_fast_state_json_matches_the_model(state: HandState) -> None:
    assert json.loads(state.to_json()) == json.loads(state.model_dump_json())
    assert HandState.model_validate_json(state.to_json()) == state


def test_a_state_from_before_relax_and_lock_still_reads() -> None:
    old = '{"index":1,"middle":2,"ring":3,"pinky":4,"thumb":5,"pose":null,"version":7}'
    state = HandState.model_validate_json(old)
    assert (state.relaxed, state.locked, state.duration_ms) == ((), False, None)


def test_relaxed_names_only_fingers() -> None:
    with pytest.raises(ValueError, match="relaxed"):
        HandState.model_validate({"relaxed": ["elbow"]})


@pytest.mark.parametrize("value", [0, 90, 180])
def test_a_whole_number_from_0_to_180_is_an_angle(value: int) -> None:
    assert is_angle(value)


@pytest.mark.parametrize("value", [-1, 181, True, False, 90.0, "90", None])
def test_anything_else_is_not_an_angle(value: object) -> None:
    assert not is_angle(value)
