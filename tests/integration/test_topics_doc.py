"""docs/topics.md as data: every example row of its command tables, sent as written.

The doc and the parser can never disagree: a row whose result the arbiter does not give fails
here, and so does a rule written in the doc that the code does not follow.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from hand_mqtt import (
    BUILTIN_POSES,
    BrokerUrl,
    CommandError,
    ErrorReport,
    HandClient,
    MqttClient,
    PoseBook,
    Snapshot,
    Topics,
    parse_command,
)
from tests.support.system import System

TOPICS_MD = Path(__file__).resolve().parents[2] / "docs" / "topics.md"
START = (100, 100, 100, 100, 100)
"""Every example starts from this hand, as the doc says."""


@dataclass(frozen=True)
class Example:
    topic: str
    """The topic under ``<base>/<hand>/``: ``index/set``, ``set``, ``pose/set``."""
    payload: str
    angles: tuple[int, ...] | None
    """The hand after the command, or None when it is rejected."""
    error: str | None
    """A part of the arbiter's sentence, for a rejected command."""


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _tables(text: str, header: str) -> list[list[list[str]]]:
    """Every table of ``text`` whose header row is ``header``, as rows of cells."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.strip() != header:
            continue
        rows: list[list[str]] = []
        for row in lines[number + 2 :]:
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in row.strip().strip("|").split(" | ")])
        tables.append(rows)
    return tables


def _examples() -> list[Example]:
    examples: list[Example] = []
    for table in _tables(TOPICS_MD.read_text(encoding="utf-8"), "| topic | payload | result |"):
        for topic, payload, result in table:
            (topic_text,) = _code(topic)[:1]
            assert topic_text.startswith("<base>/<hand>/"), topic
            (payload_text,) = _code(payload)
            expected = _code(result)[0]
            if result.startswith("rejected:"):
                examples.append(Example(topic_text[14:], payload_text, None, expected))
            else:
                angles = tuple(int(a) for a in expected.split())
                assert len(angles) == 5, result
                examples.append(Example(topic_text[14:], payload_text, angles, None))
    return examples


EXAMPLES = _examples()


def test_the_doc_has_examples_of_every_command_topic() -> None:
    topics = {example.topic for example in EXAMPLES}
    assert {"index/set", "set", "pose/set"} <= topics
    assert sum(example.error is not None for example in EXAMPLES) >= 10
    assert sum(example.angles is not None for example in EXAMPLES) >= 15


def test_the_built_in_poses_table_is_the_code() -> None:
    (table,) = _tables(TOPICS_MD.read_text(encoding="utf-8"), "| pose | angles |")
    assert {name: tuple(int(a) for a in angles.split()) for name, angles in table} == dict(
        BUILTIN_POSES
    )


class _Errors:
    def __init__(self) -> None:
        self.reports: list[ErrorReport] = []
        self.changed = threading.Condition()

    def add(self, snapshot: Snapshot) -> None:
        if snapshot.error is None:
            return
        with self.changed:
            self.reports.append(snapshot.error)
            self.changed.notify_all()

    def wait_for(self, payload: str, timeout: float = 10) -> ErrorReport:
        with self.changed:
            self.changed.wait_for(lambda: any(r.payload == payload for r in self.reports), timeout)
            found = [r for r in self.reports if r.payload == payload]
        assert found, f"no error for {payload!r}"
        return found[-1]


def test_every_example_in_the_doc_gives_its_result(
    system: System, broker_url: BrokerUrl, topics: Topics
) -> None:
    client = HandClient(broker_url, topics=topics, hand=system.hand_name, name="doc")
    errors = _Errors()
    client.add_listener(errors.add)
    client.connect(10)
    publisher = MqttClient(broker_url, name="doc-publisher")
    publisher.connect()
    wrong: list[str] = []
    try:
        for example in EXAMPLES:
            start = client.send({"angles": list(START)}, timeout=10)
            topic = f"{system.hand_topics.root}/{example.topic}"
            publisher.publish(topic, example.payload, qos=1, wait=10)
            # A barrier on the same path: once the arbiter answers this (it changes no
            # finger), it has dealt with the example.
            after = client.send({"angles": [None] * 5}, timeout=10)
            applied = after.version - start.version == 2
            if example.angles is not None:
                if not applied or after.angles != example.angles:
                    wrong.append(f"{example}: the hand is {after.angles}")
                continue
            if applied:
                wrong.append(f"{example}: it was applied, the hand is {after.angles}")
                continue
            report = errors.wait_for(example.payload)
            assert example.error is not None
            if example.error not in report.error or report.topic != topic:
                wrong.append(f"{example}: the arbiter said {report.error!r} on {report.topic}")
    finally:
        publisher.stop()
        client.close()
    assert not wrong, "docs/topics.md and the arbiter disagree:\n" + "\n".join(wrong)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.topic} {e.payload}")
def test_every_example_in_the_doc_parses_as_it_says(example: Example) -> None:
    """The same rows through the parser alone, so that a failure names its row at once."""
    target = Topics("hand").parse_command(f"hand/hand1/{example.topic}")
    assert target is not None
    poses = PoseBook()
    if example.error is not None:
        with pytest.raises(CommandError) as rejected:
            parse_command(target, example.payload.encode(), poses)
        assert example.error in str(rejected.value)
        return
    command = parse_command(target, example.payload.encode(), poses)
    assert command.apply(START, poses) == example.angles
