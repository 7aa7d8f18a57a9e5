"""Bad input, nothing lost: hostile payloads at the parser, the frame decoder and the services.

tests/unit covers any bytes and any JSON object on the hand topic, and the decoder on noise; here
are the properties they leave out (finger and pose topics, valid commands never refused, deep
nesting, the decoder's byte accounting) and a corpus published at the running services, on
both brokers, plus the arbiter's memory under a long hostile flood.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hand_mqtt import (
    BUILTIN_POSES,
    FINGERS,
    BrokerUrl,
    CommandError,
    HandState,
    MqttClient,
    PoseBook,
    Topics,
    commands,
    parse_command,
)
from hand_mqtt.commands import MAX_PAYLOAD_BYTES
from hand_mqtt.hardware import protocol as p
from hand_mqtt.topics import CommandTopic
from harness.brokers import MosquittoProcess, mosquitto_binary
from harness.waiting import wait_until
from harness.waiting import wait_until as eventually
from tests.conftest import need
from tests.deploy.support import ServiceProcess, Watcher
from tests.support.system import Recorder, System

POSES = PoseBook()
OPEN = (180, 180, 180, 180, 180)
HAND = CommandTopic("hand1", "hand")
POSE = CommandTopic("hand1", "pose")
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def finger(name: str) -> CommandTopic:
    return CommandTopic("hand1", "finger", name)


def outcome(topic: CommandTopic, payload: bytes) -> tuple[int, ...] | str:
    """The angles a payload leads to from an open hand, or the rejection sentence."""
    try:
        command = parse_command(topic, payload, POSES)
    except CommandError as exc:
        sentence = str(exc)
        assert sentence, "a rejection without a sentence"
        # Long enough to say what was wrong, never an echo of a huge payload.
        assert len(sentence) <= 2 * MAX_PAYLOAD_BYTES
        return sentence
    angles = command.apply(OPEN, POSES)
    assert all(type(a) is int and 0 <= a <= 180 for a in angles)
    return angles


# -- the command parser ------------------------------------------------------------------------


@RELAXED
@given(st.sampled_from(FINGERS), json_values)
def test_finger_topic_any_json_gives_a_command_or_a_sentence(name: str, value: object) -> None:
    for payload in (json.dumps(value), json.dumps({"angle": value}), json.dumps({"delta": value})):
        outcome(finger(name), payload.encode())


@RELAXED
@given(st.sampled_from(FINGERS), st.text(max_size=40))
def test_finger_topic_any_text_gives_a_command_or_a_sentence(name: str, text: str) -> None:
    result = outcome(finger(name), text.encode())
    if not isinstance(result, str):
        # Only plain ASCII digits are read as numbers (not Arabic-Indic or fullwidth ones).
        assert text.strip().lstrip("+-").isascii()


@RELAXED
@given(st.text(max_size=40))
def test_pose_topic_any_text_gives_a_pose_or_a_sentence(text: str) -> None:
    result = outcome(POSE, text.encode())
    if not isinstance(result, str):
        assert result in BUILTIN_POSES.values()


# What a transaction may hold: text that can travel in JSON and be read back.
TRANSACTION_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64
)


@RELAXED
@given(
    st.dictionaries(st.sampled_from(FINGERS), st.integers(0, 180), min_size=1),
    st.one_of(st.none(), TRANSACTION_TEXT, st.integers(-(2**52), 2**52)),
)
def test_valid_finger_maps_are_never_refused(angles: dict[str, int], txn: object) -> None:
    body: dict[str, object] = dict(angles)
    if txn is not None:
        body["transaction"] = txn
    command = parse_command(HAND, json.dumps(body).encode(), POSES)
    expected = tuple(angles.get(f, 180) for f in FINGERS)
    assert command.apply(OPEN, POSES) == expected
    assert command.transaction == txn


@RELAXED
@given(st.lists(st.one_of(st.none(), st.integers(0, 180)), min_size=5, max_size=5))
def test_valid_angle_lists_are_never_refused(angles: list[int | None]) -> None:
    command = parse_command(HAND, json.dumps({"angles": angles}).encode(), POSES)
    start = (10, 20, 30, 40, 50)
    assert command.apply(start, POSES) == tuple(
        s if a is None else a for s, a in zip(start, angles, strict=True)
    )


@RELAXED
@given(st.sampled_from(FINGERS), st.integers(-180, 180), st.integers(0, 180))
def test_nudges_are_never_refused_and_stay_in_range(name: str, delta: int, start: int) -> None:
    text = f"{delta:+d}"
    command = parse_command(finger(name), text.encode(), POSES)
    angles = command.apply((start,) * 5, POSES)
    assert angles[FINGERS.index(name)] == min(180, max(0, start + delta))


@pytest.mark.parametrize("depth", [10, 100, 1000, 2000, 4000])
@pytest.mark.parametrize("opener", ["[", '{"a":', '{"index":{"angle":'])
def test_deep_nesting_is_refused_cleanly(depth: int, opener: str) -> None:
    payload = (opener * depth).encode()[:MAX_PAYLOAD_BYTES]
    for topic in (HAND, POSE, finger("index")):
        assert isinstance(outcome(topic, payload), str)


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, 100_000, 5_000_000])
def test_oversized_payloads_are_refused_before_parsing(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(_text: str) -> object:
        raise AssertionError("an oversized payload was parsed")

    monkeypatch.setattr(commands, "_loads", never)
    sentence = outcome(HAND, b"[" * size)
    assert isinstance(sentence, str)
    assert "4096" in sentence


# -- the frame decoder -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=24),
            st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=16)).map(
                lambda k: p.Frame(k[0], k[1], k[2]).encode()
            ),
        ),
        max_size=20,
    ),
    st.lists(st.integers(1, 30), max_size=20),
)
def test_decoder_accounts_for_every_byte(pieces: list[bytes], chunks: list[int]) -> None:
    """Each byte ends up in a returned frame, counted as skipped, or held as pending."""
    data = b"".join(pieces)
    decoder = p.FrameDecoder()
    frames: list[p.Frame] = []
    pos = 0
    for size in chunks:
        frames += decoder.feed(data[pos : pos + size])
        pos += size
    frames += decoder.feed(data[pos:])
    used = sum(len(frame.encode()) for frame in frames)
    assert used + decoder.skipped_bytes + decoder.pending == len(data)
    assert decoder.frames == len(frames)


# -- the running services ------------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes]] = [
    ("set", b""),
    ("set", b"   \n\t"),
    # Above the parser's 4096 bytes, below the brokers' packet limit (64 KiB: bigger packets
    # never reach the arbiter, see test_broker_limits.py).
    ("set", b"9" * 60_000),
    ("set", b"[" * 60_000),
    ("set", b"[" * 3000 + b"]" * 3000),
    ("set", b'{"index": ' * 400 + b"1" + b"}" * 400),
    ("set", b'{"index": "ninety"}'),
    ("set", b'{"index": true}'),
    ("set", b'{"index": NaN}'),
    ("set", b'{"index": Infinity}'),
    ("set", b'{"index": 1e400}'),
    ("set", b'{"index": 90.5}'),
    ("set", b'{"ring": 0.0e1}'),  # whole, but numbers are written in decimal digits only
    ("set", b'{"angles": [1, 2, 3]}'),
    ("set", b'{"angles": "open"}'),
    ("set", b'{"pose": ["peace"]}'),
    ("set", b'{"pose": "\xe2\x80\xaepeace"}'),
    ("set", b'{"transaction": "' + b"x" * 200 + b'", "index": 1}'),
    ("set", b'{"__proto__": {"index": 0}}'),
    ("set", b"null"),
    ("set", b"[180, 180, 180, 180, 180]"),
    ("set", b"\x00\x01\x02\xff\xfe"),
    ("set", b"\xef\xbb\xbf{}"),
    ("index/set", b"NaN"),
    ("index/set", b"-0.0e"),
    ("index/set", b"\xd9\xa9\xd9\xa0"),  # Arabic-Indic digits 90
    ("index/set", b"\xef\xbc\x99\xef\xbc\x90"),  # fullwidth digits 90
    ("index/set", b"+-15"),
    ("index/set", b"181"),
    ("index/set", b"-181"),
    ("index/set", b"99999999999999999999999"),
    ("index/set", b'{"angle": 90, "delta": 5}'),
    ("pose/set", b"fist; DROP TABLE hands"),
    ("pose/set", "✌️".encode()),
    ("pose/set", b'"' + b"a" * 5000 + b'"'),
]
# Strange but valid: negative zero is zero.
ODD_BUT_VALID: list[tuple[str, bytes, tuple[int, ...]]] = [
    ("index/set", b"-0", (180, 180, 180, 180, 180)),  # a nudge of zero
    ("set", b'{"index": -0.0}', (0, 180, 180, 180, 180)),
    ("set", b'{"ring": 0.00, "pinky": 1.0}', (180, 180, 0, 1, 180)),
    ("set", b'{"index": "90"}', (90, 180, 180, 180, 180)),  # a finger's text form in JSON
]


@pytest.fixture
def system(broker_url: BrokerUrl, topics: Topics) -> Iterator[System]:
    running = System(broker_url, topics).start()
    yield running
    running.stop()


def test_hostile_corpus_is_refused_with_a_sentence_and_service_goes_on(system: System) -> None:
    t = system.hand_topics
    recorder = Recorder(system.url, t.error)
    attacker = system.client("attacker")
    try:
        for n, (suffix, payload) in enumerate(HOSTILE, 1):
            topic = f"{t.root}/{suffix}"
            attacker.publish(topic, payload, wait=5)
            answered = functools.partial(lambda count: len(recorder.on(t.error)) >= count, n)
            wait_until(answered, 10, f"error for {payload[:40]!r}")
            raw = recorder.on(t.error)[-1].payload
            report = json.loads(raw)
            assert report["topic"] == topic
            assert isinstance(report["error"], str)
            assert len(report["error"]) > 10
            assert_bounded(raw)
        assert system.state().version == 0
        system.wait_hand(OPEN)
        for suffix, payload, expected in ODD_BUT_VALID:
            attacker.publish(f"{t.root}/{suffix}", payload, wait=5)
            system.wait_hand(expected)
            attacker.publish(t.pose_set, b"open", wait=5)
            system.wait_hand(OPEN)
        attacker.publish(t.set, b'{"pose": "peace", "transaction": "ok"}', wait=5)
        system.wait_hand(BUILTIN_POSES["peace"])
        assert system.state().transaction == "ok"
    finally:
        attacker.stop()
        recorder.close()


def assert_bounded(raw: bytes) -> None:
    """An error message is short and holds only printable text, whatever the command held."""
    assert len(raw) <= ERROR_MESSAGE_BYTES, f"{len(raw)} bytes"
    report = json.loads(raw)
    for field in ("topic", "payload", "error"):
        assert report[field].isprintable(), report[field]
    assert len(report["payload"]) <= 100


ERROR_MESSAGE_BYTES = 3 * 1024
AMPLIFIERS: list[tuple[str, bytes]] = [
    # 4 kB of control characters: each would be six bytes as a JSON escape.
    ("set", bytes(range(32)) * 128),
    ("index/set", bytes(range(1, 32)) * 132),
    ("pose/set", b"\x1b[2J" * 800),
    # Hundreds of unknown fields, each named in the answer before.
    ("set", json.dumps({f"\u0001{i:03}": 0 for i in range(250)}).encode()),
    ("set", json.dumps({f"k{i}": 0 for i in range(370)}).encode()),
    ("set", json.dumps({"index": list(range(800))}).encode()),
    ("set", json.dumps({"pose": ["x" * 10] * 250}).encode()),
    ("set", json.dumps(dict.fromkeys(FINGERS, "\u202e" * 60)).encode()),
    ("index/set", "✌️".encode() * 600),
    ("set", json.dumps({"gesture": "count", **{f"k{i}": 0 for i in range(300)}}).encode()),
    ("set", json.dumps({"gesture": list(range(800))}).encode()),
]


def test_errors_stay_small_whatever_the_command_holds(system: System) -> None:
    t = system.hand_topics
    recorder = Recorder(system.url, t.error)
    attacker = system.client("attacker")
    try:
        for n, (suffix, payload) in enumerate(AMPLIFIERS, 1):
            assert len(payload) <= 4096
            attacker.publish(f"{t.root}/{suffix}", payload, wait=5)
            answered = functools.partial(lambda count: len(recorder.on(t.error)) >= count, n)
            wait_until(answered, 10, f"error for {payload[:40]!r}")
            assert_bounded(recorder.on(t.error)[-1].payload)
    finally:
        attacker.stop()
        recorder.close()


def test_a_transaction_that_cannot_be_read_back_is_refused_and_answered(system: System) -> None:
    """A lone surrogate is valid in a JSON string escape but not in the text it stands for:
    echoed in the state, it made the state unreadable to the device service. It is refused,
    and answered like any bad command, also beside a bad angle."""
    t = system.hand_topics
    recorder = Recorder(system.url, t.error)
    attacker = system.client("attacker")
    try:
        for n, payload in enumerate(
            [
                b'{"index": 77, "transaction": "\\ud800"}',
                b'{"index": 999, "transaction": "\\ud800"}',
                b'{"index": {"angle": 77}, "transaction": "a\\udfffb"}',
                b'{"pose": "fist", "transaction": "\\u0000"}',
            ],
            1,
        ):
            attacker.publish(t.set, payload, wait=5)
            answered = functools.partial(lambda count: len(recorder.on(t.error)) >= count, n)
            wait_until(answered, 10, f"error for {payload!r}")
            raw = recorder.on(t.error)[-1].payload
            assert_bounded(raw)
            assert json.loads(raw)["transaction"] is None
        assert system.state().version == 0
        attacker.publish(t.set, '{"index": 77, "transaction": "✌️ ok"}'.encode(), wait=5)
        system.wait_reported((77, 180, 180, 180, 180))
        assert system.state().transaction == "✌️ ok"
    finally:
        attacker.stop()
        recorder.close()


def test_retained_command_is_never_replayed(system: System) -> None:
    """A retained command reaches the arbiter once, live: MQTT 3.1.1 brokers clear the retain
    flag for clients already subscribed, so it cannot be told from a plain command then. What
    the arbiter guarantees is that it is never *replayed*: when the broker hands it to a
    (re)starting arbiter, flagged as retained, it is refused on ``error`` and the hand stays."""
    t = system.hand_topics
    recorder = Recorder(system.url, t.error)
    attacker = system.client("attacker")
    try:
        attacker.publish(t.set, b'{"pose": "fist"}', retain=True, wait=5)
        system.wait_hand(BUILTIN_POSES["fist"])
        attacker.publish(t.set, b'{"pose": "peace", "transaction": "later"}', wait=5)
        system.wait_hand(BUILTIN_POSES["peace"])
        assert system.arbiter is not None
        system.arbiter.stop()
        system.start_arbiter()
        wait_until(lambda: recorder.on(t.error), 10, "an error for the replayed command")
        assert "retained" in json.loads(recorder.on(t.error)[-1].payload)["error"]
        # The sentinel: a nudge after the replay, applied to peace, not to a replayed fist.
        attacker.publish(t.finger_set("index"), b"-1", wait=5)
        system.wait_hand((179, *BUILTIN_POSES["peace"][1:]))
        assert system.state().version == 3
        attacker.publish(t.set, b"", retain=True, wait=5)  # clears it from the broker
    finally:
        attacker.stop()
        recorder.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_arbiter_memory_stays_bounded_under_a_hostile_flood(tmp_path: Path) -> None:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    need(Path("/proc/self/status").exists(), "needs /proc")
    broker = MosquittoProcess(workdir=tmp_path)
    broker.start()
    topics = Topics("flood")
    t = topics.hand("hand1")
    arbiter = ServiceProcess(
        ["arbiter", "--broker", broker.url, "--base", topics.base], tmp_path / "arbiter.log"
    ).start()
    watcher = Watcher(broker.url, topics.bridge_state, t.state)
    attacker = MqttClient(BrokerUrl.parse(broker.url), name="attacker")
    flood = [payload for _, payload in HOSTILE if len(payload) <= 64_000]
    flood += [b"\x00" * 60_000, b"{" * 60_000, json.dumps({"x" * 1000: 1}).encode()]

    def burst(n: int, transaction: str) -> None:
        for i in range(n):
            attacker.publish(f"{t.root}/{'set' if i % 2 else 'index/set'}", flood[i % len(flood)])
        # Same client, so the arbiter sees this after the whole burst.
        attacker.publish(t.set, json.dumps({"thumb": len(transaction), "transaction": transaction}))
        eventually(
            lambda: (
                (raw := watcher.last(t.state)) is not None
                and HandState.model_validate_json(raw).transaction == transaction
            ),
            120,
            f"the arbiter through the {transaction} burst",
        )

    try:
        attacker.connect()
        eventually(lambda: watcher.last(topics.bridge_state) == b"online", 15, "arbiter online")
        burst(5000, "warm")
        before = rss_kib(arbiter.pid)
        burst(5000, "flood-1")
        middle = rss_kib(arbiter.pid)
        burst(5000, "flood-2")
        after = rss_kib(arbiter.pid)
        print(f"\narbiter RSS {before} -> {middle} -> {after} KiB, 5000 hostile messages each")
        assert arbiter.alive()
        # Warmed up, a second and third flood of the same size cost next to nothing; an
        # unbounded buffer would grow by the flood's size (tens of MB each).
        assert after - before < 12 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        # The allocator does not hand every page back at once, and a flood's transient
        # buffers differ with the machine's load: a few MB of noise, not tens.
        assert after - middle < 8 * 1024, f"RSS grew from {middle} KiB to {after} KiB"
    finally:
        attacker.stop()
        watcher.close()
        arbiter.stop()
        broker.cleanup()
