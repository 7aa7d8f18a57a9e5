"""Scenario 7: the two hand drivers side by side, on the real firmwares in the emulator.

For the bundled firmware (its ELF, the framed driver at 115200 baud) and for the real
StandardFirmata (the Firmata driver at 57600 baud), each in the simavr runner at wall-clock
pace, with the arbiter and the device service as processes on one Mosquitto:

- command → pulse: from publishing a full-hand command (all five fingers change) to the start
  of the first servo pulse of the new width on the last of the five pins. The runner stamps the
  wall clock into its trace at every flush, so emulated pulse times map onto this process's
  clock. Includes waiting for the next servo frame (a pulse every 20 ms, 0-20 ms).
- command → reported: until the device service publishes the confirmation.
- bytes per full update: what the board's UART took in and sent between publishing and the
  confirmation (the runner counts them), the least over all samples (an idle read-back of
  StandardFirmata's five pins, once a second, can fall into a sample and only ever adds).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Service, Summary, Watcher, wait_until
from hand_mqtt import Reported, Topics
from hand_mqtt.devtools.emulator import (
    EmulatedHand,
    Pulse,
    TraceMark,
    angle_to_pulse_us,
    servo_pulses,
    trace_marks,
)

FINGERS = ("index", "middle", "ring", "pinky", "thumb")
ONE_DEGREE_US = (2400 - 544) / 180
KINDS = ("bundled", "standard-firmata")


def _elf(kind: str) -> Path:
    if kind == "standard-firmata":
        from hand_mqtt.devtools.standard_firmata import standard_firmata

        return standard_firmata()
    from hand_mqtt.devtools import firmware

    return firmware.build().elf


def _wall_of(emulated_s: float, marks: list[TraceMark]) -> float | None:
    """The wall-clock time of an emulated instant, from the first mark at or after it."""
    for mark in marks:
        if mark.emulated_s >= emulated_s:
            return mark.wall_s - (mark.emulated_s - emulated_s)
    return None


def _first_new_pulse(pulses: list[Pulse], after_s: float, angle: int) -> Pulse | None:
    want = angle_to_pulse_us(angle)
    for pulse in pulses:
        if pulse.start_s > after_s and abs(pulse.width_us - want) <= ONE_DEGREE_US:
            return pulse
    return None


def _emulated_of(wall_s: float, marks: list[TraceMark]) -> float:
    """The emulated time at a wall-clock instant (the last mark before it)."""
    before = [mark for mark in marks if mark.wall_s <= wall_s]
    if not before:
        return 0.0
    mark = before[-1]
    return mark.emulated_s + (wall_s - mark.wall_s)


def one_driver(kind: str, url: str, samples: int) -> dict[str, Any]:
    topics = Topics(f"d{uuid.uuid4().hex[:8]}")
    hand_topics = topics.hand("hand1")
    with tempfile.TemporaryDirectory(prefix="bench-drivers-") as tmp:
        vcd = Path(tmp) / "servos.vcd"
        with EmulatedHand(_elf(kind), realtime=True, vcd=vcd) as hand:
            common = ("--broker", url, "--base", topics.base)
            extra = ("--firmata",) if kind == "standard-firmata" else ("--failsafe-timeout", "0")
            arbiter = Service("arbiter", *common)
            device = Service("device", "--serial", hand.path, *extra, *common)
            watcher = Watcher(url, hand_topics.reported, hand_topics.state)
            arrived = threading.Condition()
            reported: list[Reported] = []

            def on_message(message: Any) -> None:
                if message.topic == hand_topics.reported:
                    with arrived:
                        reported.append(Reported.model_validate_json(message.payload))
                        arrived.notify_all()

            watcher.hooks.append(on_message)
            try:
                wait_until(
                    lambda: bool(reported) and reported[-1].link == "up", 30, f"{kind} link up"
                )
                pulse_ms: list[float] = []
                reported_ms: list[float] = []
                received: list[int] = []
                sent: list[int] = []
                for n in range(samples + 1):
                    # Every finger changes, by at least 20 degrees, each time.
                    base = 20 + (n % 2) * 120
                    angles = [base + 5 * finger for finger in range(len(FINGERS))]
                    with arrived:
                        seen = len(reported)
                    start = time.monotonic()
                    watcher.client.publish(hand_topics.set, json.dumps({"angles": angles}))

                    def confirmed(seen: int = seen, angles: list[int] = angles) -> bool:
                        return any(
                            list(r.angles) == angles and r.version is not None
                            for r in reported[seen:]
                        )

                    with arrived:
                        if not arrived.wait_for(confirmed, 10):
                            raise TimeoutError(f"{kind}: no confirmation of {angles}")
                    done = time.monotonic()
                    # The trace is written every 20 ms of emulated time: wait until it covers
                    # the new pulses of every finger.
                    firsts: dict[str, Pulse] = {}
                    deadline = time.monotonic() + 5
                    while len(firsts) < len(FINGERS):
                        marks = trace_marks(vcd)
                        pulses = servo_pulses(vcd)
                        after = _emulated_of(start, marks) - 0.002
                        for finger, angle in zip(FINGERS, angles, strict=True):
                            found = _first_new_pulse(pulses[finger], after, angle)
                            if found is not None:
                                firsts[finger] = found
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{kind}: the pins never showed {angles}")
                        time.sleep(0.01)
                    marks = trace_marks(vcd)
                    last = max(pulse.start_s for pulse in firsts.values())
                    wall = _wall_of(last, marks)
                    before = [m for m in marks if m.wall_s <= start]
                    after_marks = [m for m in marks if m.wall_s >= done]
                    if n == 0 or wall is None or not before or not after_marks:
                        continue  # the first one configures the servos; skip it
                    pulse_ms.append((wall - start) * 1000)
                    reported_ms.append((done - start) * 1000)
                    received.append(after_marks[0].received - before[-1].received)
                    sent.append(after_marks[0].sent - before[-1].sent)
                    time.sleep(0.05)  # let the servo frame settle between samples
            finally:
                watcher.close()
                device.stop()
                arbiter.stop()
    return {
        "pulse_ms": Summary.of(pulse_ms),
        "reported_ms": Summary.of(reported_ms),
        "bytes_to_board": min(received),
        "bytes_from_board": min(sent),
        "samples": len(pulse_ms),
    }


def drivers(url: str, samples: int) -> dict[str, Any]:
    """Both drivers, one after the other, on the same broker."""
    return {kind: one_driver(kind, url, samples) for kind in KINDS}
