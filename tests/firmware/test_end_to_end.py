"""From a plain MQTT client to the servo pins of the real firmware.

client (paho) → Mosquitto → arbiter → Mosquitto → device service → pty → firmware ELF in simavr
(realtime) → Timer1 pulses on pins 11/10/9/6/5, read back from the emulator's VCD trace.

Every command form is checked at the pins: each finger's pulse width is its commanded angle's
within one degree's worth of microseconds, and the retained ``reported`` agrees. The failsafe
is checked with the device service in its own process, frozen with SIGSTOP; garbage goes on the
line through the device service's own port (its link seam).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hand_mqtt import (
    BUILTIN_POSES,
    Arbiter,
    BrokerUrl,
    DeviceService,
    DeviceSettings,
    MqttClient,
    Topics,
)
from hand_mqtt.devtools.emulator import EmulatedHand, Pulse, angle_to_pulse_us
from hand_mqtt.devtools.firmware import BuildResult
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.hardware.protocol import DeviceConfig
from tests.behaviour.wire import line_noise
from tests.support.brokers import MosquittoProcess
from tests.support.system import wait_until

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

FINGERS = ("index", "middle", "ring", "pinky", "thumb")
ONE_DEGREE_US = (2400 - 544) / 180
Angles = tuple[int, ...]


# -- helpers -----------------------------------------------------------------------------------


class PlainClient:
    """A bare paho client: publishes commands and keeps every ``reported`` it sees."""

    def __init__(self, port: int, reported_topic: str) -> None:
        self.reported_topic = reported_topic
        self.reported: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(reported_topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if message.topic == self.reported_topic:
            with self._lock:
                self.reported.append(json.loads(message.payload))

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.reported)

    def last(self) -> dict[str, Any]:
        found = self.history()
        return found[-1] if found else {}

    def wait_reported(self, angles: Sequence[int], timeout: float = 5.0) -> dict[str, Any]:
        expected = list(angles)

        def matches() -> bool:
            last = self.last()
            return [last.get(f) for f in FINGERS] == expected and not last.get("failsafe")

        wait_until(matches, timeout, f"reported {expected} (last: {self.last()})")
        return self.last()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class NoisyLink(SerialLink):
    """The device service's serial link, with a way to put line noise on its wire."""

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the firmware, between the device service's own frames."""
        for start in range(0, len(data), 64):  # at the pace of a busy line
            self.write(data[start : start + 64])
            time.sleep(0.01)


def widths_since(pulses: dict[str, list[Pulse]], finger: str, start_s: float) -> list[float]:
    return [pulse.width_us for pulse in pulses[finger] if pulse.start_s >= start_s]


def now_emulated(hand: EmulatedHand) -> float:
    """The latest pulse start in the trace: 'now' in emulated time."""
    return max((p.start_s for found in hand.pulses().values() for p in found), default=0.0)


def off_by(widths: Sequence[float], angle: int) -> list[float]:
    expected = angle_to_pulse_us(angle)
    return [round(w - expected, 2) for w in widths if abs(w - expected) > ONE_DEGREE_US]


def wait_pins(hand: EmulatedHand, angles: Sequence[int], timeout: float = 3.0) -> None:
    """Wait until the last three pulses of every finger stand for its angle (±1 degree)."""
    deadline = time.monotonic() + timeout
    while True:
        pulses = hand.pulses()
        recent = {f: [p.width_us for p in pulses[f][-3:]] for f in FINGERS}
        wrong = {
            f: (angle, [round(w, 1) for w in recent[f]])
            for f, angle in zip(FINGERS, angles, strict=True)
            if len(recent[f]) < 3 or off_by(recent[f], angle)
        }
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pins do not match the angles: finger: (angle, widths) {wrong}")
        time.sleep(0.02)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def hand(firmware_build: BuildResult, sim_runner: Path, tmp_path: Path) -> Iterator[EmulatedHand]:
    with EmulatedHand(
        firmware_build.elf, runner=sim_runner, realtime=True, vcd=tmp_path / "servos.vcd"
    ) as emulated:
        yield emulated


@pytest.fixture
def url(mosquitto_broker: MosquittoProcess) -> BrokerUrl:
    return BrokerUrl.parse(mosquitto_broker.url)


@pytest.fixture
def arbiter(url: BrokerUrl, topics: Topics) -> Iterator[Arbiter]:
    service = Arbiter(MqttClient(url, name="arbiter"), topics=topics, hands=["hand1"])
    service.start()
    assert service.wait_ready(10)
    yield service
    service.stop()


@pytest.fixture
def plain(mosquitto_broker: MosquittoProcess, topics: Topics) -> Iterator[PlainClient]:
    client = PlainClient(mosquitto_broker.port, topics.hand("hand1").reported)
    yield client
    client.close()


@pytest.fixture
def links() -> list[NoisyLink]:
    """The device service's link."""
    return []


@pytest.fixture
def device(
    url: BrokerUrl,
    topics: Topics,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    links: list[NoisyLink],
) -> Iterator[DeviceService]:
    # No failsafe, hence no heartbeats: the line is quiet between commands, so injected noise
    # never lands in the middle of one of the service's frames.
    settings = DeviceSettings(ack_timeout=0.25, firmware=DeviceConfig(failsafe_timeout_ms=0))
    links.append(NoisyLink(hand.path))
    service = DeviceService(
        MqttClient(url, name="device"),
        hand.path,
        topics=topics,
        hand="hand1",
        settings=settings,
        driver=FramedDriver(links[-1], config=settings.firmware, ack_timeout=0.25),
    )
    service.start()
    try:
        wait_until(lambda: service.link_up, 10, "the device service's handshake")
        yield service
    finally:
        service.stop()


def command(
    plain: PlainClient, hand: EmulatedHand, arbiter: Arbiter, topic: str, payload: str
) -> Angles:
    """Publish a command, wait for reported and the pins to follow; return the new angles."""
    before = arbiter.state("hand1").version
    plain.publish(topic, payload)
    wait_until(lambda: arbiter.state("hand1").version > before, 5, f"{payload} accepted")
    angles = arbiter.state("hand1").angles
    reported = plain.wait_reported(angles)
    assert reported["link"] == "up"
    wait_until(lambda: plain.last().get("version") == arbiter.state("hand1").version, 5)
    wait_pins(hand, angles)
    return angles


# -- tests -----------------------------------------------------------------------------------


def test_set_all_commands_reach_the_pins(
    device: DeviceService, hand: EmulatedHand, arbiter: Arbiter, plain: PlainClient, topics: Topics
) -> None:
    t = topics.hand("hand1")
    for angles in [(0, 45, 90, 135, 180), (180, 135, 90, 45, 0), (13, 57, 101, 149, 171)]:
        got = command(plain, hand, arbiter, t.set, json.dumps({"angles": list(angles)}))
        assert got == angles
    as_map = dict(zip(FINGERS, (1, 2, 179, 178, 90), strict=True))
    assert command(plain, hand, arbiter, t.set, json.dumps(as_map)) == (1, 2, 179, 178, 90)
    assert plain.last()["failsafe"] is False


def test_every_builtin_pose_reaches_the_pins(
    device: DeviceService, hand: EmulatedHand, arbiter: Arbiter, plain: PlainClient, topics: Topics
) -> None:
    t = topics.hand("hand1")
    for name, angles in BUILTIN_POSES.items():
        got = command(plain, hand, arbiter, t.pose_set, name)
        assert got == angles, name
        assert arbiter.state("hand1").pose == name


def test_partial_updates_move_only_their_fingers(
    device: DeviceService, hand: EmulatedHand, arbiter: Arbiter, plain: PlainClient, topics: Topics
) -> None:
    t = topics.hand("hand1")
    current = command(plain, hand, arbiter, t.set, json.dumps({"angles": [20, 40, 60, 80, 100]}))
    steps: list[tuple[str, str, Angles]] = [
        (t.set, json.dumps({"angles": [None, 150, None, None, 5]}), (20, 150, 60, 80, 5)),
        (t.finger_set("ring"), "170", (20, 150, 170, 80, 5)),
        (t.finger_set("index"), "+15", (35, 150, 170, 80, 5)),
        (t.finger_set("pinky"), json.dumps({"angle": 0}), (35, 150, 170, 0, 5)),
        (t.set, json.dumps({"thumb": 180, "middle": 90}), (35, 90, 170, 0, 180)),
    ]
    for topic, payload, expected in steps:
        mark = now_emulated(hand)
        got = command(plain, hand, arbiter, topic, payload)
        assert got == expected, payload
        pulses = hand.pulses()
        for finger, old, new in zip(FINGERS, current, got, strict=True):
            if old == new:  # untouched fingers never twitched
                widths = widths_since(pulses, finger, mark)
                assert widths, finger
                assert not off_by(widths, old), (payload, finger, off_by(widths, old))
        current = got


def test_garbage_on_the_line_moves_no_servo(
    device: DeviceService,
    links: list[NoisyLink],
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    angles = command(plain, hand, arbiter, t.set, json.dumps({"angles": [30, 60, 90, 120, 150]}))
    (link,) = links
    driver = device.driver
    assert isinstance(driver, FramedDriver)
    acks, sent = driver.acks, driver.frames_sent
    for seed in (1, 2, 3):
        mark = now_emulated(hand)
        link.inject(line_noise(seed))
        time.sleep(0.3)  # a dozen servo frames
        pulses = hand.pulses()
        for finger, angle in zip(FINGERS, angles, strict=True):
            widths = widths_since(pulses, finger, mark)
            assert len(widths) >= 10, finger
            assert not off_by(widths, angle), (seed, finger, off_by(widths, angle))
        assert (driver.acks, driver.frames_sent) == (acks, sent), "the firmware answered noise"
        assert device.link_up
        # Between bursts of noise, commands still get through.
        angles = command(plain, hand, arbiter, t.finger_set("thumb"), str(150 - 10 * seed))
        acks, sent = driver.acks, driver.frames_sent
    assert plain.last()["link"] == "up"
    assert plain.last()["thumb"] == 120


def test_failsafe_fires_when_the_device_service_goes_silent(
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    mosquitto_broker: MosquittoProcess,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    safe = BUILTIN_POSES["peace"]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "hand_mqtt", "device",
            "--serial", hand.path,
            "--broker", mosquitto_broker.url,
            "--base", topics.base,
            "--failsafe-timeout", "0.5",
            "--failsafe", "pose",
            "--safe-pose", "peace",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    try:
        wait_until(lambda: plain.last().get("link") == "up", 20, "the device service's link up")
        fist = command(plain, hand, arbiter, t.pose_set, "fist")
        # Heartbeats (every third of the timeout) keep the failsafe quiet while all is well.
        mark = now_emulated(hand)
        time.sleep(1.2)
        assert not any(r.get("failsafe") for r in plain.history())
        pulses = hand.pulses()
        for finger in FINGERS:
            assert not off_by(widths_since(pulses, finger, mark), 0), finger

        # The device service freezes: no more frames on the line.
        os.kill(process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        wait_pins(hand, safe, timeout=3.0)
        assert time.monotonic() - frozen >= 0.3, "the failsafe fired before its timeout"
        time.sleep(0.3)
        wait_pins(hand, safe)  # and stays there

        # It comes back: reported tells what happened, then the hand converges on desired.
        seen = len(plain.history())
        os.kill(process.pid, signal.SIGCONT)

        def fired() -> list[dict[str, Any]]:
            return [r for r in plain.history()[seen:] if r.get("failsafe")]

        wait_until(fired, 5, f"reported saying failsafe (saw {plain.history()[seen:]})")
        assert [fired()[0][f] for f in FINGERS] == list(safe)
        plain.wait_reported(fist)
        assert plain.last()["failsafe"] is False
        wait_pins(hand, fist)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            _out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _out, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
