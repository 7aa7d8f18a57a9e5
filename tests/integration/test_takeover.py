"""Arbiters that share a hand: one serves it, the other stands by and takes it over.

Every command of a stream is sent with its own transaction and a delta, so a command applied
twice or lost shows in the final angle; every one must be answered exactly once, by a state or
an error, and the versions must follow each other with no gap and no repeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from hand_mqtt import Arbiter, BrokerUrl, MqttClient, Topics
from hand_mqtt.cli import app
from harness.waiting import wait_until
from tests.support.stream import HAND, Stream


@pytest.fixture
def stream(broker_url: BrokerUrl, topics: Topics) -> Iterator[Stream]:
    made = Stream(broker_url, topics)
    yield made
    made.close()


def _arbiter(url: BrokerUrl, topics: Topics, **options: object) -> Arbiter:
    arbiter = Arbiter(MqttClient(url, name="arbiter"), topics=topics, hands=[HAND], **options)  # type: ignore[arg-type]
    arbiter.start()
    assert arbiter.wait_ready(15)
    return arbiter


def _state_json(url: BrokerUrl, topics: Topics) -> dict[str, Any]:
    """What ``hand-mqtt state --json`` prints."""
    result = CliRunner().invoke(
        app, ["state", "--json", "--broker", str(url), "--base", topics.base, "--hand", HAND]
    )
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


def _fist(stream: Stream, arbiter: Arbiter) -> None:
    stream.client.publish(stream.hand.set, b'{"pose": "fist"}', qos=1)
    wait_until(lambda: arbiter.state(HAND).pose == "fist", 10, "the fist")
    stream.start_index = 0


def test_a_standby_takes_over_a_vanished_arbiter_mid_stream(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    active = _arbiter(broker_url, topics)
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, active)
        assert active.serves(HAND)
        assert not standby.serves(HAND)
        stream.send(40)
        wait_until(lambda: active.state(HAND).index >= 10, 10, "the stream under way")
        active.abort()  # killed: no goodbye, the broker sends its wills
        stream.send(40)
        stream.wait_answered(80)
        assert standby.serves(HAND)
        stream.check()
        lease = stream.lease()
        assert lease is not None
        assert lease.arbiter == standby.session
        shown = _state_json(broker_url, topics)
        assert shown["served_by"] == standby.session
        assert shown["desired"]["version"] == max(s.version for s in stream.states())
    finally:
        active.stop()
        standby.stop()


def test_a_stopped_arbiter_releases_its_hand_to_the_standby(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    active = _arbiter(broker_url, topics)
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, active)
        stream.send(10)
        stream.wait_answered(10)
        active.stop()
        stream.send(10)
        stream.wait_answered(20)
        assert standby.serves(HAND)
        stream.check()
    finally:
        standby.stop()


def test_an_arbiter_started_for_a_served_hand_takes_it_over_and_the_holder_stands_by(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    first = _arbiter(broker_url, topics)
    second: Arbiter | None = None
    try:
        _fist(stream, first)
        stream.send(30)
        second = _arbiter(broker_url, topics)  # not a standby: it claims the hand at start
        stream.send(30)
        stream.wait_answered(60)
        wait_until(lambda: second is not None and second.serves(HAND), 10, "the handover")
        assert not first.serves(HAND)
        stream.check()
        # The first stands by now: when the second vanishes, it takes the hand back.
        second.abort()
        stream.send(10)
        stream.wait_answered(70)
        assert first.serves(HAND)
        stream.check()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_standby_alone_serves_a_hand_nobody_holds(
    stream: Stream, broker_url: BrokerUrl, topics: Topics
) -> None:
    standby = _arbiter(broker_url, topics, standby=True)
    try:
        _fist(stream, standby)
        stream.send(5)
        stream.wait_answered(5)
        stream.check()
    finally:
        standby.stop()
