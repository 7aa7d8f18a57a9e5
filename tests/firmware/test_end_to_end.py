"""From a plain MQTT client to the servo pins of the real firmware, for both hand drivers.

client (paho) → Mosquitto → arbiter → Mosquitto → device service → pty → firmware in simavr
(realtime) → servo pulses on pins 11/10/9/6/5, read back from the emulator's VCD trace.

Each test runs on the bundled firmware (its ELF, driven by the framed driver) and on the real
StandardFirmata 2.4 (fetched from npm, driven by the Firmata driver), unless it is about what
only one of them has. Every command form is checked at the pins: each finger's pulse width is
its commanded angle's within one degree's worth of microseconds, and the retained ``reported``
agrees. The failsafe is checked with the device service in its own process, frozen with
SIGSTOP; garbage goes on the line through the device service's own port (its link seam).
"""

from __future__ import annotations

import itertools
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
from hand_mqtt.errors import LinkError
from hand_mqtt.hardware.driver import HandDriver
from hand_mqtt.hardware.firmata import FIRMATA_BAUDRATE, FirmataDriver
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.hardware.protocol import DeviceConfig
from tests.behaviour.wire import line_noise
from tests.support.brokers import MosquittoProcess
from tests.support.system import wait_until

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

FINGERS = ("index", "middle", "ring", "pinky", "thumb")
BUNDLED = "bundled"
FIRMATA = "standard-firmata"
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
    """The device service's serial link, with a way to put line noise on its wire and to pull
    the cable."""

    unplugged = False

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the firmware, between the device service's own frames."""
        for start in range(0, len(data), 64):  # at the pace of a busy line
            self.write(data[start : start + 64])
            time.sleep(0.01)

    def read_available(self) -> bytes:
        if self.unplugged:
            self.unplugged = False
            raise LinkError(f"{self.url} was unplugged")
        return super().read_available()


def widths_since(pulses: dict[str, list[Pulse]], finger: str, start_s: float) -> list[float]:
    return [pulse.width_us for pulse in pulses[finger] if pulse.start_s >= start_s]


def now_emulated(hand: EmulatedHand) -> float:
    """The latest pulse start in the trace: 'now' in emulated time."""
    return max((p.start_s for found in hand.pulses().values() for p in found), default=0.0)


def off_by(widths: Sequence[float], angle: int) -> list[float]:
    expected = angle_to_pulse_us(angle)
    return [round(w - expected, 2) for w in widths if abs(w - expected) > ONE_DEGREE_US]


def wait_pins(
    hand: EmulatedHand,
    angles: Sequence[int],
    timeout: float = 3.0,
    fingers: Sequence[str] = FINGERS,
) -> None:
    """Wait until the last three pulses of every finger (of ``fingers``) stand for its angle
    (±1 degree)."""
    deadline = time.monotonic() + timeout
    while True:
        pulses = hand.pulses()
        recent = {f: [p.width_us for p in pulses[f][-3:]] for f in FINGERS}
        wrong = {
            f: (angle, [round(w, 1) for w in recent[f]])
            for f, angle in zip(FINGERS, angles, strict=True)
            if f in fingers and (len(recent[f]) < 3 or off_by(recent[f], angle))
        }
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pins do not match the angles: finger: (angle, widths) {wrong}")
        time.sleep(0.02)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(params=[BUNDLED, FIRMATA])
def firmware_kind(request: pytest.FixtureRequest) -> str:
    """Which firmware the emulated Uno runs (and which driver the device service uses)."""
    kind: str = request.param
    return kind


@pytest.fixture
def hand(
    firmware_kind: str, request: pytest.FixtureRequest, sim_runner: Path, tmp_path: Path
) -> Iterator[EmulatedHand]:
    elf: Path = (
        request.getfixturevalue("standard_firmata_elf")
        if firmware_kind == FIRMATA
        else request.getfixturevalue("firmware_build").elf
    )
    with EmulatedHand(
        elf, runner=sim_runner, realtime=True, vcd=tmp_path / "servos.vcd"
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
    firmware_kind: str,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    links: list[NoisyLink],
) -> Iterator[DeviceService]:
    # No failsafe, hence no heartbeats: the line is quiet between commands, so injected noise
    # never lands in the middle of one of the service's frames.
    settings = DeviceSettings(ack_timeout=0.25, firmware=DeviceConfig(failsafe_timeout_ms=0))
    driver: HandDriver
    if firmware_kind == FIRMATA:
        links.append(NoisyLink(hand.path, baudrate=FIRMATA_BAUDRATE))
        driver = FirmataDriver(links[-1])
    else:
        links.append(NoisyLink(hand.path))
        driver = FramedDriver(links[-1], config=settings.firmware, ack_timeout=0.25)
    service = DeviceService(
        MqttClient(url, name="device"),
        hand.path,
        topics=topics,
        hand="hand1",
        settings=settings,
        driver=driver,
    )
    service.start()
    try:
        wait_until(lambda: service.link_up, 10, "the device service's handshake")
        yield service
    finally:
        service.stop()


def command(
    plain: PlainClient,
    hand: EmulatedHand,
    arbiter: Arbiter,
    topic: str,
    payload: str,
    fingers: Sequence[str] = FINGERS,
) -> Angles:
    """Publish a command, wait for reported and the pins (of ``fingers``) to follow; return
    the new angles."""
    before = arbiter.state("hand1").version
    plain.publish(topic, payload)
    wait_until(lambda: arbiter.state("hand1").version > before, 5, f"{payload} accepted")
    angles = arbiter.state("hand1").angles
    reported = plain.wait_reported(angles)
    assert reported["link"] == "up"
    wait_until(lambda: plain.last().get("version") == arbiter.state("hand1").version, 5)
    wait_pins(hand, angles, fingers=fingers)
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


def wait_version(plain: PlainClient, arbiter: Arbiter, what: str, timeout: float = 10.0) -> None:
    """Wait until ``reported`` names the arbiter's current version (the hand applied it)."""
    wait_until(
        lambda: (
            plain.last().get("version") == arbiter.state("hand1").version
            and plain.last().get("link") == "up"
        ),
        timeout,
        f"{what} (last reported: {plain.last()})",
    )


def publish_accepted(plain: PlainClient, arbiter: Arbiter, topic: str, payload: str) -> None:
    before = arbiter.state("hand1").version
    plain.publish(topic, payload)
    wait_until(lambda: arbiter.state("hand1").version > before, 5, f"{payload} accepted")


def pulse_counts_since(hand: EmulatedHand, mark: float) -> dict[str, int]:
    pulses = hand.pulses()
    return {finger: len(widths_since(pulses, finger, mark)) for finger in FINGERS}


@pytest.mark.parametrize("firmware_kind", [FIRMATA])
def test_relaxed_fingers_get_no_pulses_and_are_held_low_until_driven_again(
    device: DeviceService, hand: EmulatedHand, arbiter: Arbiter, plain: PlainClient, topics: Topics
) -> None:
    t = topics.hand("hand1")
    angles = command(plain, hand, arbiter, t.set, json.dumps({"angles": [30, 60, 90, 120, 150]}))
    publish_accepted(plain, arbiter, t.set, json.dumps({"relax": ["index", "ring"]}))
    wait_version(plain, arbiter, "the relaxed fingers confirmed")
    assert plain.last()["relaxed"] == ["index", "ring"]
    assert [plain.last()[f] for f in FINGERS] == list(angles)
    # From now on the relaxed fingers' pins stay low while the others keep their pulses. The
    # trace is written every 20 ms of emulated time: one flush after the time it shows, the
    # relax confirmed before is in the past.
    mark = hand.trace_time() + 0.02
    wait_until(lambda: hand.trace_time() > mark + 0.2, 10, "ten servo frames in the trace")
    counts = pulse_counts_since(hand, mark)
    assert min(counts[f] for f in ("middle", "pinky", "thumb")) >= 5, counts
    assert counts["index"] == counts["ring"] == 0, counts
    levels = hand.pin_levels()
    assert levels["index"] == levels["ring"] == 0, levels
    wait_pins(hand, angles, fingers=("middle", "pinky", "thumb"))

    # A command that names a relaxed finger drives it again; the other stays relaxed.
    command_angles = command(
        plain, hand, arbiter, t.finger_set("index"), "45", fingers=("index", "middle")
    )
    assert plain.last()["relaxed"] == ["ring"]
    assert command_angles[0] == 45
    publish_accepted(plain, arbiter, t.pose_set, "open")
    wait_version(plain, arbiter, "every finger driven again")
    assert plain.last()["relaxed"] == []
    wait_pins(hand, BUILTIN_POSES["open"])


def test_a_board_reset_on_reopen_brings_the_hand_back_to_the_desired_state(
    device: DeviceService,
    links: list[NoisyLink],
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    command(plain, hand, arbiter, t.pose_set, "rockstar")
    (link,) = links
    seen = len(plain.history())
    # The cable is pulled as the next command comes: the device service loses its port, opens
    # it again, and that open resets the Uno (the emulator's DTR reset), whose firmware starts
    # afresh and knows nothing of the servos.
    link.unplugged = True
    publish_accepted(plain, arbiter, t.set, json.dumps({"angles": [10, 170, 20, 160, 90]}))
    wait_until(
        lambda: any(r.get("link") == "down" for r in plain.history()[seen:]),
        10,
        "reported link down",
    )
    wait_version(plain, arbiter, "the hand back at the desired state after the reset", 20)
    assert [plain.last()[f] for f in FINGERS] == [10, 170, 20, 160, 90]
    assert plain.last()["relaxed"] == []
    wait_pins(hand, (10, 170, 20, 160, 90))


def test_a_board_that_restarts_unannounced_is_driven_again(
    device: DeviceService,
    firmware_kind: str,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    angles = command(plain, hand, arbiter, t.pose_set, "okay")
    seen = len(plain.history())
    mark = now_emulated(hand)
    # The reset button (or a brown-out): the port stays open, nobody tells the device service.
    hand.reset()

    def restart_reported() -> bool:
        return any(r.get("index") is None for r in plain.history()[seen:])

    # The firmware announces itself as it starts; the device service stops vouching for the
    # angles, configures the servos again and drives them to the desired state.
    wait_until(restart_reported, 20, f"a reported without angles (saw {plain.history()[seen:]})")
    wait_version(plain, arbiter, "the hand back at the desired state", 20)
    assert [plain.last()[f] for f in FINGERS] == list(angles)
    assert plain.last()["link"] == "up"
    wait_pins(hand, angles)
    if firmware_kind == FIRMATA:
        # The restarted board drove no servo through its start-up blink (about 2 s), then the
        # pulses came back.
        def stopped_and_back() -> bool:
            starts = [p.start_s for p in hand.pulses()["index"] if p.start_s >= mark]
            return any(
                later - earlier > 1.0 and len(starts) - position >= 3
                for position, (earlier, later) in enumerate(itertools.pairwise(starts), 1)
            )

        wait_until(stopped_and_back, 10, "a pause of the index's pulses, and three after it")


# StandardFirmata has no checksum: line noise can move its servos. Only the bundled firmware
# promises this.
@pytest.mark.parametrize("firmware_kind", [BUNDLED])
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


@pytest.mark.parametrize("firmware_kind", [BUNDLED])  # StandardFirmata has no failsafe
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
