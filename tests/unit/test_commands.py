"""Every accepted command form, and a broad set of rejected ones with their sentences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hand_mqtt import Angles, Command, CommandError, FingerChange, PoseBook, parse_command
from hand_mqtt.model import excerpt
from hand_mqtt.topics import CommandTopic

POSES = PoseBook({"wave": (180, 90, 90, 90, 180)})
HAND = CommandTopic("hand1", "hand")
POSE = CommandTopic("hand1", "pose")
OPEN: Angles = (180, 180, 180, 180, 180)


def finger(name: str) -> CommandTopic:
    return CommandTopic("hand1", "finger", name)


def apply(topic: CommandTopic, payload: str | bytes, start: Angles = OPEN) -> Angles:
    data = payload.encode() if isinstance(payload, str) else payload
    return parse_command(topic, data, POSES).apply(start, POSES)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("90", (90, 180, 180, 180, 180)),
        (" 0\n", (0, 180, 180, 180, 180)),
        ("-15", (165, 180, 180, 180, 180)),
        ("+15", (180, 180, 180, 180, 180)),  # clamped at 180
        ('{"angle": 45}', (45, 180, 180, 180, 180)),
        ('{"delta": -30}', (150, 180, 180, 180, 180)),
        ('{"angle": 90.0}', (90, 180, 180, 180, 180)),
        ('{"angle": "45"}', (45, 180, 180, 180, 180)),
        ('{"delta": "-15"}', (165, 180, 180, 180, 180)),
        ("90.0", (90, 180, 180, 180, 180)),
        ("-15.00", (165, 180, 180, 180, 180)),
        ('{"angle": 10, "transaction": "t1"}', (10, 180, 180, 180, 180)),
    ],
)
def test_finger_topic_forms(payload: str, expected: tuple[int, ...]) -> None:
    assert apply(finger("index"), payload) == expected


def test_nudge_clamps_at_zero() -> None:
    assert apply(finger("thumb"), "-15", start=(0, 0, 0, 0, 10)) == (0, 0, 0, 0, 0)
    assert apply(finger("thumb"), "-15", start=(0, 0, 0, 0, 0)) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"index": 90, "thumb": 0}', (90, 180, 180, 180, 0)),
        ('{"pose": "peace"}', (180, 180, 0, 0, 0)),
        ('{"pose": "wave"}', (180, 90, 90, 90, 180)),
        ('{"pose": "fist", "thumb": 180}', (0, 0, 0, 0, 180)),
        ('{"angles": [180, null, 0, 0, 0]}', (180, 180, 0, 0, 0)),
        ('{"angles": [null, null, null, null, null]}', OPEN),
        ('{"ring": {"delta": -15}, "pinky": {"angle": 5}}', (180, 180, 165, 5, 180)),
        ('{"middle": "-15"}', (180, 165, 180, 180, 180)),
    ],
)
def test_hand_topic_forms(payload: str, expected: tuple[int, ...]) -> None:
    assert apply(HAND, payload) == expected


@pytest.mark.parametrize("payload", ["peace", " peace\n", '"peace"', '{"pose": "peace"}'])
def test_pose_topic_forms(payload: str) -> None:
    assert apply(POSE, payload) == (180, 180, 0, 0, 0)


@pytest.mark.parametrize("name", ["open", "fist", "peace", "rockstar", "okay", "point", "phone"])
def test_builtin_poses(name: str) -> None:
    assert apply(POSE, name, start=(1, 2, 3, 4, 5)) == POSES[name]


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        (HAND, '{"relax": true}', Command(relax=(0, 1, 2, 3, 4))),
        (HAND, '{"relax": ["thumb", "index", "thumb"]}', Command(relax=(0, 4))),
        (HAND, '{"relax": ["ring"], "transaction": "r"}', Command(relax=(2,), transaction="r")),
        (HAND, '{"lock": true}', Command(lock=True)),
        (HAND, '{"lock": false, "transaction": 3}', Command(lock=False, transaction=3)),
        (HAND, '{"pose": "fist", "duration_ms": 800}', Command(pose="fist", duration_ms=800)),
        (POSE, '{"pose": "fist", "duration_ms": 800.0}', Command(pose="fist", duration_ms=800)),
        # The one rule for numbers: text that reads as a whole number is one.
        (POSE, '{"pose": "fist", "duration_ms": "800"}', Command(pose="fist", duration_ms=800)),
        (
            HAND,
            '{"angles": [0, null, 0, null, 0], "duration_ms": 0}',
            Command(changes=tuple(FingerChange(i, "angle", 0) for i in (0, 2, 4)), duration_ms=0),
        ),
        (
            HAND,
            '{"index": 10, "thumb": {"delta": -15}, "duration_ms": 60000}',
            Command(
                changes=(FingerChange(0, "angle", 10), FingerChange(4, "delta", -15)),
                duration_ms=60000,
            ),
        ),
        (
            finger("ring"),
            '{"angle": 5, "duration_ms": 250}',
            Command(changes=(FingerChange(2, "angle", 5),), duration_ms=250),
        ),
    ],
)
def test_relax_lock_and_timed_forms(topic: CommandTopic, payload: str, expected: Command) -> None:
    assert parse_command(topic, payload.encode(), POSES) == expected


def test_which_fingers_a_command_drives() -> None:
    def driven(topic: CommandTopic, payload: str) -> frozenset[int]:
        return parse_command(topic, payload.encode(), POSES).driven

    assert driven(HAND, '{"pose": "fist"}') == frozenset(range(5))
    assert driven(HAND, '{"angles": [1, null, null, null, 1]}') == {0, 4}
    assert driven(finger("ring"), "+15") == {2}  # a nudge drives, even when clamped
    assert driven(HAND, '{"relax": true}') == frozenset()
    assert not parse_command(HAND, b'{"lock": true}', POSES).moves
    assert parse_command(finger("ring"), b"-15", POSES).moves


def test_transaction_is_kept() -> None:
    command = parse_command(HAND, b'{"index": 1, "transaction": 42}', POSES)
    assert command == Command(changes=(FingerChange(0, "angle", 1),), transaction=42)


@pytest.mark.parametrize(
    ("topic", "payload", "sentence"),
    [
        (finger("index"), "181", "out of range"),
        (finger("index"), "-181", "out of range"),
        (finger("index"), "abc", "expected an angle"),
        (finger("index"), "9 0", "expected an angle"),
        (finger("index"), "1e3", "expected an angle"),
        (finger("index"), "٣", "expected an angle"),
        (finger("index"), "", "empty"),
        (finger("index"), "   ", "empty"),
        (finger("index"), '{"angle": 90.5}', "whole number"),
        (finger("index"), '{"angle": true}', "whole number"),
        (finger("index"), '{"angle": "90.5"}', "whole number"),
        (finger("index"), '{"angle": 1e2}', "not 1e2"),
        (finger("index"), '{"angle": 100E0}', "not 100E0"),
        (finger("index"), "90.5", "expected an angle"),
        (finger("index"), "0x5A", "expected an angle"),
        (
            HAND,
            '{"index": true}',
            "index: an angle must be a whole number of degrees such as 90, not true",
        ),
        (HAND, '{"index": null}', "not null"),
        (HAND, '{"index": [90]}', "not [90]"),
        (HAND, '{"index": ' + "9" * 300 + "}", "…"),
        (HAND, '{"pose": false}', "pose must be a name, not false"),
        (finger("index"), '{"angle": NaN}', "not valid JSON"),
        (finger("index"), '{"angle": Infinity}', "not valid JSON"),
        (finger("index"), '{"angle": 1, "delta": 2}', "give"),
        (finger("index"), '{"transaction": "x"}', "give"),
        (finger("index"), "{", "not valid JSON"),
        (HAND, "[1, 2]", "expected a JSON object"),
        (HAND, "90", "expected a JSON object"),
        (HAND, "{}", "names no finger"),
        (HAND, '{"elbow": 3}', "unknown field"),
        (
            HAND,
            '{"index": 400, "thumb": -1}',
            "index: 400 is out of range (an angle is 0 to 180); thumb: -1",
        ),
        (HAND, '{"pose": "dab"}', "unknown pose 'dab'"),
        (HAND, '{"pose": 3}', "pose must be a name"),
        (HAND, '{"angles": [1, 2, 3]}', "five values"),
        (HAND, '{"angles": "180"}', "five values"),
        (HAND, '{"angles": [1, 2, 3, 4, 999]}', "thumb: 999 is out of range"),
        (HAND, '{"angles": [1, 2, 3, 4, 5], "index": 3}', "either angles"),
        (HAND, '{"index": 1, "transaction": [1]}', "transaction must be"),
        (HAND, '{"index": 1, "transaction": ""}', "transaction must be"),
        (HAND, '{"index": 1, "transaction": "\\ud800"}', "lone surrogates"),
        (HAND, '{"index": 1, "transaction": "a\\u0007"}', "control characters"),
        (HAND, '{"elbow": 1, "knee": 2, "hip": 3, "toe": 4}', "'knee' and 1 more"),
        (HAND, "[" * 5000, "4096"),
        (HAND, "[" * 3000 + "]" * 3000, "4096"),
        (HAND, "[" * 2000 + "]" * 2000, "nested too deeply"),
        (POSE, "dab", "unknown pose"),
        (POSE, "[1]", "unknown pose"),
        (POSE, "[1]" + "x" * 100, "unknown pose '[1]xxx"),
        (POSE, '{"pose": "peace", "x": 1}', "expected a pose name"),
        (HAND, '{"relax": false}', 'relax must be true or a list of finger names such as ["index"'),
        (HAND, '{"relax": []}', "relax must be true or a list"),
        (HAND, '{"relax": "index"}', "relax must be true or a list"),
        (HAND, '{"relax": [1]}', "relax must be true or a list"),
        (HAND, '{"relax": ["elbow"]}', "relax: unknown finger 'elbow'; fingers are index"),
        (HAND, '{"relax": true, "index": 90}', "relax cannot be combined with finger names"),
        (HAND, '{"relax": true, "pose": "fist"}', "relax cannot be combined"),
        (HAND, '{"relax": true, "duration_ms": 5}', "relax cannot be combined"),
        (HAND, '{"lock": 1}', "lock must be true (emergency stop) or false (unlock)"),
        (HAND, '{"lock": "yes"}', "lock must be true"),
        (HAND, '{"lock": true, "relax": true}', "lock goes alone"),
        (HAND, '{"lock": false, "index": 3}', "lock goes alone"),
        (HAND, '{"duration_ms": 800}', "duration_ms needs a pose, angles or finger names"),
        (HAND, '{"pose": "fist", "duration_ms": -1}', "whole number of milliseconds from 0"),
        (HAND, '{"pose": "fist", "duration_ms": 60001}', "from 0 to 60000, not 60001"),
        (HAND, '{"pose": "fist", "duration_ms": 0.5}', "milliseconds from 0 to 60000, not 0.5"),
        (HAND, '{"pose": "fist", "duration_ms": "8e2"}', "not '8e2'"),
        (HAND, '{"pose": "fist", "duration_ms": true}', "not true"),
        (HAND, '{"pose": "fist", "duration_ms": null}', "not null"),
        (POSE, '{"pose": "fist", "duration_ms": -5}', "whole number of milliseconds"),
        (finger("index"), '{"angle": 5, "duration_ms": 1e9}', "milliseconds"),
    ],
)
def test_rejections_say_why(topic: CommandTopic, payload: str, sentence: str) -> None:
    with pytest.raises(CommandError, match=None) as info:
        parse_command(topic, payload.encode(), POSES)
    assert sentence in str(info.value)


def test_binary_payload_is_rejected() -> None:
    with pytest.raises(CommandError, match="not UTF-8"):
        parse_command(HAND, b"\xff\xfe\x00", POSES)


def test_rejection_echoes_transaction() -> None:
    with pytest.raises(CommandError) as info:
        parse_command(HAND, b'{"index": 999, "transaction": "abc"}', POSES)
    assert info.value.transaction == "abc"


def test_negative_zero_is_zero() -> None:
    assert apply(HAND, '{"index": -0}') == (0, 180, 180, 180, 180)
    assert apply(HAND, '{"index": -0.0}') == (0, 180, 180, 180, 180)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RELAXED
@given(st.binary(max_size=300))
def test_any_bytes_give_a_command_or_a_clear_error(payload: bytes) -> None:
    for topic in (HAND, POSE, finger("ring")):
        try:
            command = parse_command(topic, payload, POSES)
        except CommandError as exc:
            if not str(exc):
                pytest.fail("a rejection without a sentence")
        else:
            assert all(0 <= a <= 180 for a in command.apply(OPEN, POSES))


@RELAXED
@given(
    st.dictionaries(
        st.sampled_from(
            [
                *("index", "middle", "ring", "pinky", "thumb", "pose", "angles"),
                *("transaction", "relax", "lock", "duration_ms", "other"),
            ]
        ),
        json_values,
    )
)
def test_any_json_object_gives_a_command_or_a_clear_error(data: dict[str, object]) -> None:
    payload = json.dumps(data).encode()
    try:
        command = parse_command(HAND, payload, POSES)
    except CommandError as exc:
        if not str(exc):
            pytest.fail("a rejection without a sentence")
    else:
        assert all(0 <= a <= 180 for a in command.apply((0, 90, 180, 45, 135), POSES))


def test_a_bad_transaction_is_not_echoed() -> None:
    with pytest.raises(CommandError) as info:
        parse_command(HAND, b'{"index": 999, "transaction": "\\ud800"}', POSES)
    assert info.value.transaction is None
    assert "lone surrogates" in str(info.value)


def test_printable_transactions_are_kept() -> None:
    for text in ["✌️", "peace sign ☮", "שלום", "𝄞", "a b"]:
        payload = json.dumps({"index": 1, "transaction": text}).encode()
        assert parse_command(HAND, payload, POSES).transaction == text


@RELAXED
@given(st.dictionaries(st.text(max_size=40), json_values, min_size=1, max_size=60))
def test_sentences_stay_short_whatever_the_object(data: dict[str, object]) -> None:
    payload = json.dumps(data).encode()[:4096]
    for topic in (HAND, POSE, finger("index")):
        sentence = ""
        try:
            parse_command(topic, payload, POSES)
        except CommandError as exc:
            sentence = str(exc)
        assert len(sentence) <= 1000
        assert sentence.isprintable()


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("hello", 10, "hello"),
        ("a\x00b", 10, "a\\x00b"),
        ("\ud800", 10, "\\ud800"),
        ("\u202eevil", 20, "\\u202eevil"),
        ("x" * 20, 10, "x" * 9 + "…"),
        ("\x01" * 10, 10, "\\x01\\x01…"),
        ("✌️ ok", 10, "✌️ ok"),
    ],
)
def test_excerpts_are_printable_and_short(text: str, limit: int, shown: str) -> None:
    assert excerpt(text, limit) == shown


TOPICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"


def test_the_documented_hand_examples_are_accepted() -> None:
    # The tables' rows are sent to a running arbiter by tests/integration/test_topics_doc.py;
    # the lock commands and the duration forms stand in sentences around them.
    text = TOPICS_DOC.read_text(encoding="utf-8")
    lock_sentence = text.split('\n`{"lock": true}` and', 1)[1].split("\n", 1)[0]
    locking, unlocking = ['{"lock": true}', *re.findall(r"`([^`]+)`", lock_sentence)]
    assert parse_command(HAND, locking.encode(), POSES).lock is True
    assert parse_command(HAND, unlocking.encode(), POSES).lock is False
    finger_form, pose_form = re.findall(
        r"`([^`]+)`", text.split("topics take `duration_ms` too:", 1)[1].split("\n\n", 1)[0]
    )
    assert parse_command(finger("index"), finger_form.encode(), POSES).duration_ms == 500
    assert parse_command(POSE, pose_form.encode(), POSES).duration_ms == 800


def test_the_documented_lock_sentence_is_the_arbiters() -> None:
    from hand_mqtt.services import arbiter

    text = " ".join(TOPICS_DOC.read_text(encoding="utf-8").split())
    assert f"the error `{arbiter._LOCKED}`" in text
