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
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.driver import HandDriver
from hand_mqtt.hardware.firmata import FIRMATA_BAUDRATE, FirmataDriver
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.hardware.protocol import DeviceConfig
from harness.brokers import MosquittoProcess
from harness.waiting import wait_until
from tests.behaviour.wire import line_noise

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


def wait_pulses_since(
    hand: EmulatedHand, mark: float, count: int, timeout: float = 10.0
) -> dict[str, list[Pulse]]:
    """Wait until every finger has ``count`` pulses in the trace from ``mark`` (emulated
    seconds) on, however slowly a busy machine runs the emulator; return the pulses."""
    deadline = time.monotonic() + timeout
    while True:
        pulses = hand.pulses()
        short = [f for f in FINGERS if len(widths_since(pulses, f, mark)) < count]
        if not short:
            return pulses
        assert time.monotonic() < deadline, f"fewer than {count} pulses since {mark}: {short}"
        time.sleep(0.02)


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
def calibration() -> Calibration:
    """The device service's calibration (a test may override it)."""
    return Calibration()


@pytest.fixture
def device(
    url: BrokerUrl,
    topics: Topics,
    firmware_kind: str,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    links: list[NoisyLink],
    calibration: Calibration,
) -> Iterator[DeviceService]:
    # No failsafe, hence no heartbeats: the line is quiet between commands, so injected noise
    # never lands in the middle of one of the service's frames.
    settings = DeviceSettings(
        ack_timeout=0.25, firmware=DeviceConfig(failsafe_timeout_ms=0), calibration=calibration
    )
    driver: HandDriver
    if firmware_kind == FIRMATA:
        links.append(NoisyLink(hand.path, baudrate=FIRMATA_BAUDRATE))
        driver = FirmataDriver(links[-1], servos=[calibration[f] for f in FINGERS])
    else:
        links.append(NoisyLink(hand.path))
        driver = FramedDriver(
            links[-1], config=settings.firmware, ack_timeout=0.25, calibration=calibration
        )
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
            starts = [p.start_s for p in hand.pulses()["index"]]
            return any(
                later - earlier > 1.0 and later >= mark and len(starts) - position >= 3
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
        pulses = wait_pulses_since(hand, mark, 10)  # a dozen servo frames
        for finger, angle in zip(FINGERS, angles, strict=True):
            widths = widths_since(pulses, finger, mark)
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
            "--failsafe-timeout", "1.5",
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
        # Heartbeats (every third of the timeout) keep the failsafe quiet while all is well;
        # the timeout leaves a second of margin to a service slowed down by a busy machine.
        mark = now_emulated(hand)
        time.sleep(2.0)
        assert not any(r.get("failsafe") for r in plain.history())
        pulses = hand.pulses()
        for finger in FINGERS:
            assert not off_by(widths_since(pulses, finger, mark), 0), finger

        # The device service freezes: no more frames on the line. Its last heartbeat left at
        # most a third of the timeout before, and the emulated clock never runs ahead of ours.
        os.kill(process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        wait_pins(hand, safe, timeout=10.0)
        assert time.monotonic() - frozen >= 1.0 - 0.005, "the failsafe fired before its timeout"
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


# -- relax, the emergency stop, timed moves, calibration ----------------------------------------

FRAME_S = 0.020


def wait_for_reported(
    plain: PlainClient, what: str, match: Any, timeout: float = 5.0
) -> dict[str, Any]:
    wait_until(lambda: match(plain.last()), timeout, f"{what} (last reported: {plain.last()})")
    return plain.last()


def wait_more_pulses(hand: EmulatedHand, finger: str, count: int, timeout: float = 10.0) -> None:
    start = len(hand.pulses()[finger])
    wait_until(
        lambda: len(hand.pulses()[finger]) >= start + count,
        timeout,
        f"{count} more pulses of the {finger}",
    )


# The whole-pulse promise (no runt when a pin is relaxed) is the bundled firmware's; the
# Firmata suite checks StandardFirmata's relax on its own terms.
@pytest.mark.parametrize("firmware_kind", [BUNDLED])
def test_relax_and_the_emergency_stop_at_the_pins(
    device: DeviceService,
    firmware_kind: str,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
) -> None:
    t = topics.hand("hand1")
    angles = command(plain, hand, arbiter, t.set, json.dumps({"angles": [30, 60, 90, 120, 150]}))
    widths = dict(zip(FINGERS, (angle_to_pulse_us(a) for a in angles), strict=True))
    held_from = {f: len(found) for f, found in hand.pulses().items()}  # all at these angles

    # Relax two fingers: their pins go quiet for good while the others keep pulsing.
    plain.publish(t.set, json.dumps({"relax": ["index", "thumb"]}))
    wait_for_reported(
        plain, "index and thumb relaxed", lambda r: r.get("relaxed") == ["index", "thumb"]
    )
    wait_more_pulses(hand, "middle", 8)
    pulses = hand.pulses()
    for finger in ("index", "thumb"):
        last = pulses[finger][-1]
        after = [q for q in pulses["middle"] if q.start_s > last.start_s]
        assert len(after) >= 6, f"{finger}: pulsed within the last {len(after)} frames"
        # Every pulse it had, the last one too, was whole: no runt on the way out. (The
        # bundled firmware promises it; StandardFirmata drives the pin low at once, and may cut
        # the pulse in progress short: its last pulse is left out.)
        held = pulses[finger][held_from[finger] :]
        if firmware_kind == FIRMATA:
            held = held[:-1]
        assert all(abs(q.width_us - widths[finger]) <= 1.5 for q in held), finger
    for finger in ("middle", "ring", "pinky"):
        assert not off_by([q.width_us for q in pulses[finger][-6:]], angles[FINGERS.index(finger)])
    quiet_index = len(pulses["index"])

    # The emergency stop: every pin goes quiet; a set and a pose are refused and move nothing.
    plain.publish(t.set, json.dumps({"lock": True}))
    wait_for_reported(plain, "every finger relaxed", lambda r: len(r.get("relaxed") or []) == 5)
    version = arbiter.state("hand1").version
    plain.publish(t.finger_set("ring"), "10")
    plain.publish(t.set, json.dumps({"pose": "fist"}))
    # A sentinel on the same path: once it is through, the refused commands are behind it.
    plain.publish(t.set, json.dumps({"relax": True, "transaction": "sentinel"}))
    wait_until(lambda: arbiter.state("hand1").transaction == "sentinel", 5, "the sentinel")
    assert arbiter.state("hand1").version == version + 1  # the two motions were refused
    sentinel = wait_for_reported(
        plain, "the sentinel reported", lambda r: r.get("version") == version + 1
    )
    assert len(sentinel["relaxed"]) == 5  # the firmware drives nothing

    # Unlock and set: the index pulses again at the commanded width, and only the index.
    plain.publish(t.set, json.dumps({"lock": False}))
    plain.publish(t.finger_set("index"), "45")
    wait_for_reported(
        plain,
        "the index driven",
        lambda r: r.get("index") == 45 and r.get("relaxed") == ["middle", "ring", "pinky", "thumb"],
    )
    wait_more_pulses(hand, "index", 8)
    pulses = hand.pulses()
    resumed = pulses["index"][quiet_index:]
    assert len(resumed) >= 8
    assert not off_by([q.width_us for q in resumed], 45), off_by([q.width_us for q in resumed], 45)
    first_again = resumed[0].start_s
    for finger in ("middle", "ring", "pinky", "thumb"):
        # Quiet since the lock, through the refused commands, and after the unlock.
        assert pulses[finger][-1].start_s < first_again, f"{finger} pulsed after the lock"
        held = pulses[finger][held_from[finger] :]
        if firmware_kind == FIRMATA:
            held = held[:-1]  # the pulse the lock cut short, if it did
        assert all(abs(q.width_us - widths[finger]) <= 1.5 for q in held), finger


@pytest.mark.parametrize("firmware_kind", [BUNDLED])  # StandardFirmata cannot time a move
def test_a_timed_move_brings_every_finger_in_together(
    device: DeviceService, hand: EmulatedHand, arbiter: Arbiter, plain: PlainClient, topics: Topics
) -> None:
    t = topics.hand("hand1")
    command(plain, hand, arbiter, t.pose_set, "open")
    mark = now_emulated(hand)
    duration_s = 0.8
    plain.publish(t.set, json.dumps({"pose": "fist", "duration_ms": round(duration_s * 1000)}))
    wait_until(lambda: arbiter.state("hand1").pose == "fist", 5, "the move accepted")
    version = arbiter.state("hand1").version
    # (On a loaded machine the device may read the ACK and the ARRIVED at once and report the
    # arrival only: what a program waits for is moving false for this version.)
    wait_for_reported(
        plain,
        "the arrival",
        lambda r: r.get("version") == version and r.get("moving") is False,
    )
    wait_pins(hand, BUILTIN_POSES["fist"])
    pulses = {f: [q for q in hand.pulses()[f] if q.start_s >= mark] for f in FINGERS}
    frames = [q.start_s for q in pulses["index"]]
    open_us, fist_us = angle_to_pulse_us(180), angle_to_pulse_us(0)
    arrived: dict[str, int] = {}
    began: list[float] = []
    for finger in FINGERS:
        found = pulses[finger]
        began.append(next(q.start_s for q in found if abs(q.width_us - open_us) > 1.5))
        last_off = max(i for i, q in enumerate(found) if abs(q.width_us - fist_us) > 1.5)
        arrival = found[last_off + 1].start_s
        arrived[finger] = sum(1 for start in frames if start <= arrival + 1e-6)
    assert max(arrived.values()) - min(arrived.values()) <= 1, arrived
    length = frames[max(arrived.values()) - 1] - min(began)
    assert abs(length - duration_s) <= FRAME_S, f"the move took {length:.4f} s on the pins"
    print(f"timed move through MQTT: arrival frames {arrived}, {length * 1000:.1f} ms on the pins")


DOCUMENTED = Calibration.from_toml(
    "[fingers.index]\nservo_min = 160\nservo_max = 20\npulse_min_us = 500\npulse_max_us = 2500\n"
)


@pytest.mark.parametrize("calibration", [DOCUMENTED], ids=["docs-example"])
def test_the_calibration_reaches_the_pins(
    device: DeviceService,
    hand: EmulatedHand,
    arbiter: Arbiter,
    plain: PlainClient,
    topics: Topics,
    calibration: Calibration,
) -> None:
    t = topics.hand("hand1")
    for index, width in ((0, 2278.0), (90, 1500.0), (180, 722.0)):
        plain.publish(t.set, json.dumps({"angles": [index, 90, 90, 90, 90]}))
        # Logical angles everywhere on MQTT; the pulse is the calibrated one.
        plain.wait_reported((index, 90, 90, 90, 90))

        def at_width(width: float = width) -> bool:
            return all(abs(q.width_us - width) <= 1.5 for q in hand.pulses()["index"][-3:])

        wait_until(at_width, 5, f"the index at {width} us")
        assert not off_by([q.width_us for q in hand.pulses()["middle"][-3:]], 90)
    assert plain.last()["calibration"] == {"file": None, "digest": calibration.digest}
