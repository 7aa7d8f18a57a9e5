"""Firmware that lies, through the whole path: client → broker → arbiter → device service → pty.

Each firmware here has one fault (tests/support/firmwares.py). Every test runs against the
embedded amqtt broker and against a real Mosquitto.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from hand_mqtt import BrokerUrl, DeviceSettings, Reported, Topics
from hand_mqtt.hardware import protocol as p
from harness.waiting import wait_until
from tests.support.firmwares import ClampingFirmware, FalseStartFirmware
from tests.support.system import Recorder, System

SETS = (p.FrameType.SET_ALL, p.FrameType.SET_SOME)
OPEN = (180, 180, 180, 180, 180)
FIST = (0, 0, 0, 0, 0)


class SetLog:
    """The SET frames the firmware received, with the time each arrived."""

    def __init__(self) -> None:
        self.sets: list[tuple[float, p.Frame]] = []
        self._lock = threading.Lock()

    def __call__(self, frame: p.Frame) -> None:
        if frame.type in SETS:
            with self._lock:
                self.sets.append((time.monotonic(), frame))

    def times(self, frame: p.Frame) -> list[float]:
        """When frames with this type and payload arrived."""
        with self._lock:
            return [t for t, f in self.sets if (f.type, f.payload) == (frame.type, frame.payload)]

    def seqs(self) -> list[int]:
        with self._lock:
            return [f.seq for _, f in self.sets]


def reported_history(recorder: Recorder, topic: str) -> list[Reported]:
    return [Reported.model_validate_json(m.payload) for m in recorder.on(topic)]


@pytest.fixture
def log() -> SetLog:
    return SetLog()


def test_false_start_before_every_answer_costs_no_retransmission(
    broker_url: BrokerUrl, topics: Topics, log: SetLog
) -> None:
    """The host's decoder follows the 50 ms rule: an ACK behind ``A5 10`` is found once the
    false start is stale, not when the frame is retransmitted after the ACK timeout."""
    settings = DeviceSettings(ack_timeout=1.0, firmware=p.DeviceConfig(failsafe_timeout_ms=0))
    system = System(
        broker_url, topics, settings=settings, firmware=FalseStartFirmware(), on_frame=log
    ).start()
    client = system.client()
    try:
        for angle in (33, 66, 99):
            client.publish(system.hand_topics.finger_set("index"), str(angle))
            system.wait_reported((angle, 180, 180, 180, 180))
        seqs = log.seqs()
        assert len(seqs) == len(set(seqs)), f"frames sent twice: {seqs}"
    finally:
        client.stop()
        system.stop()


def test_a_firmware_that_acks_other_angles_is_not_flooded_nor_believed(
    broker_url: BrokerUrl, topics: Topics, log: SetLog
) -> None:
    system = System(broker_url, topics, firmware=ClampingFirmware(10, 170), on_frame=log).start()
    t = system.hand_topics
    recorder = Recorder(system.url, t.reported)
    client = system.client()
    try:
        client.publish(t.set, json.dumps({"pose": "fist"}))
        fist = p.set_all(0, FIST)
        wait_until(lambda: len(log.times(fist)) >= 4, what="four tries")
        times = log.times(fist)
        # The device service's backoff starts at 0.05 s and doubles: never a busy loop.
        assert times[3] - times[0] >= 0.05 + 0.1 + 0.2 - 0.01, f"tries at {times[:4]}"
        wait_until(
            lambda: any(r.mismatch for r in reported_history(recorder, t.reported)),
            what="the mismatch reported",
        )
        # A sentinel the firmware takes as it is: after it, nothing is pending.
        client.publish(t.set, json.dumps({"angles": [90, 90, 90, 90, 90]}))
        wait_until(
            lambda: (
                (history := reported_history(recorder, t.reported))
                and history[-1].version == system.state().version == 2
            ),
            what="the sentinel reported",
        )
        history = reported_history(recorder, t.reported)
        lies = [r for r in history if r.angles == (10, 10, 10, 10, 10)]
        assert lies, "the angles the firmware confirmed are reported"
        assert all(r.version is None and r.mismatch for r in lies), lies
        assert not history[-1].mismatch
    finally:
        client.stop()
        recorder.close()
        system.stop()


def test_the_failsafe_pose_is_never_reported_with_the_state_version(
    broker_url: BrokerUrl, topics: Topics
) -> None:
    settings = DeviceSettings(
        ack_timeout=0.2,
        backoff_initial=0.05,
        backoff_max=0.5,
        firmware=p.DeviceConfig(
            failsafe_timeout_ms=60_000, failsafe_action=p.FailsafeAction.SAFE_POSE, safe_pose=OPEN
        ),
    )
    system = System(broker_url, topics, settings=settings).start()
    t = system.hand_topics
    recorder = Recorder(system.url, t.reported)
    client = system.client()
    try:
        client.publish(t.set, json.dumps({"pose": "fist"}))
        system.wait_reported(FIST)
        wait_until(lambda: recorder.on(t.reported), what="reported")
        before = len(recorder.on(t.reported))
        system.sim.inject(system.sim.firmware.fire_failsafe())
        wait_until(
            lambda: any(r.failsafe for r in reported_history(recorder, t.reported)[before:]),
            what="the failsafe reported",
        )
        # The device service drives the hand back to its state and reports it with its version.
        wait_until(
            lambda: (
                (history := reported_history(recorder, t.reported))
                and history[-1].angles == FIST
                and history[-1].version == 1
                and not history[-1].failsafe
            ),
            what="state 1 reported again",
        )
        safe = [r for r in reported_history(recorder, t.reported)[before:] if r.angles == OPEN]
        assert safe, "the safe pose is reported"
        assert all(r.version is None for r in safe), safe
        assert system.sim.firmware.targets == FIST
    finally:
        client.stop()
        recorder.close()
        system.stop()
