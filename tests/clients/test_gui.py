"""The desktop controller in a real X server (Xvfb), against the whole system on Mosquitto.

Buttons are pressed with ``invoke()`` and with real X events (xdotool); assertions look at what
reaches the simulated hand and at what the window shows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt import (
    BUILTIN_POSES,
    FINGERS,
    Arbiter,
    BrokerUrl,
    HandClient,
    HandState,
    MqttClient,
    PoseBook,
    Topics,
)
from hand_mqtt.cli import app
from hand_mqtt.clients.gui import HandWindow, parse_custom_angles
from harness.brokers import MosquittoProcess, RunningBroker, mosquitto_binary
from tests.conftest import need
from tests.support.system import System

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"
WAVE = (180, 90, 90, 90, 180)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X server; Xvfb picks a free display number and tells us through a pipe."""
    need(shutil.which("Xvfb") is not None, "Xvfb is not installed (apt-get install xvfb)")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    number = b""
    try:
        while not number.endswith(b"\n"):
            chunk = os.read(read_end, 16)
            if not chunk:
                raise RuntimeError("Xvfb exited before it chose a display")
            number += chunk
    finally:
        os.close(read_end)
    try:
        yield f":{number.decode().strip()}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PosedSystem(System):
    """The test system with an arbiter that knows one user-defined pose."""

    def start_arbiter(self) -> Arbiter:
        self.arbiter = Arbiter(
            MqttClient(self.url, name="arbiter"),
            topics=self.topics,
            hands=[self.hand_name],
            poses=PoseBook({"wave": WAVE}),
        )
        self.arbiter.start()
        assert self.arbiter.wait_ready(10), "arbiter did not become ready"
        return self.arbiter


@dataclass
class Ui:
    """A running system and the window connected to it."""

    system: System
    root: tk.Tk
    window: HandWindow
    client: HandClient
    display: str

    def pump(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        """Run the Tk event loop until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.root.update()
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")

    def hand_at(self, angles: tuple[int, ...]) -> None:
        self.pump(
            lambda: self.system.sim.firmware.targets == angles,
            what=f"hand at {angles} (now {self.system.sim.firmware.targets})",
        )

    def shows(self, widget: tk.Misc, text: str, timeout: float = 10.0) -> None:
        self.pump(
            lambda: text in str(widget.cget("text")),
            timeout,
            f"{text!r} in the window (shows {widget.cget('text')!r})",
        )

    def idle(self) -> None:
        self.pump(lambda: not self.window.busy, what="the command to finish")

    def click(self, widget: tk.Misc) -> None:
        """A real mouse click, through the X server."""
        self.root.update()
        x = widget.winfo_rootx() + widget.winfo_width() // 2
        y = widget.winfo_rooty() + widget.winfo_height() // 2
        self.xdotool("mousemove", str(x), str(y), "click", "1")

    def xdotool(self, *args: str) -> None:
        need(shutil.which("xdotool") is not None, "xdotool is not installed")
        subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": self.display}, check=True)
        self.root.update()

    def screenshot(self, name: str, *, docs: bool = False) -> Path:
        try:
            from PIL import ImageGrab
        except ImportError:
            need(False, "Pillow is not installed (pip install Pillow) for screenshots")
            raise
        self.root.update()
        x, y = self.root.winfo_rootx(), self.root.winfo_rooty()
        box = (x, y, x + self.root.winfo_width(), y + self.root.winfo_height())
        image = ImageGrab.grab(bbox=box, xdisplay=self.display)
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        image.save(path)
        if docs and os.environ.get("HAND_MQTT_UPDATE_DOCS") == "1":
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            image.save(DOCS_IMAGES / name)
        return path


@contextmanager
def open_ui(url: BrokerUrl, topics: Topics, display: str) -> Iterator[Ui]:
    system = PosedSystem(url, topics).start()
    client = HandClient(url, topics=topics, name="gui")
    root: tk.Tk | None = None
    window: HandWindow | None = None
    try:
        client.connect(5.0)
        root = tk.Tk(screenName=display)
        window = HandWindow(root, client)
        yield Ui(system, root, window, client, display)
    finally:
        if window is not None:
            window.close()
        if root is not None:
            root.destroy()
        client.close()
        system.stop()


@pytest.fixture
def ui(mosquitto_broker: RunningBroker, topics: Topics, display: str) -> Iterator[Ui]:
    with open_ui(BrokerUrl.parse(mosquitto_broker.url), topics, display) as running:
        running.pump(lambda: "wave" in running.window.pose_buttons, what="the arbiter's poses")
        yield running


# -- tests ----------------------------------------------------------------------------------


def test_parse_custom_angles() -> None:
    texts = {"index": "90", "middle": "", "ring": " 7 ", "pinky": "180", "thumb": "0"}
    assert parse_custom_angles(texts) == ([90, None, 7, 180, 0], [])
    bad = {"index": "7.5", "middle": "-5", "ring": "181", "pinky": "abc", "thumb": "٣"}
    assert parse_custom_angles(bad) == ([None] * 5, list(FINGERS))
    assert parse_custom_angles({}) == ([None] * 5, [])


def test_finger_and_pose_buttons_drive_the_hand(ui: Ui) -> None:
    window = ui.window
    window.buttons["index"]["contract"].invoke()
    ui.hand_at((0, 180, 180, 180, 180))
    window.buttons["thumb"]["subtract"].invoke()
    window.buttons["thumb"]["subtract"].invoke()
    window.buttons["thumb"]["add"].invoke()
    ui.hand_at((0, 180, 180, 180, 165))
    window.buttons["middle"]["add"].invoke()  # already extended: clamped at 180
    window.buttons["pinky"]["contract"].invoke()
    window.buttons["pinky"]["extend"].invoke()
    window.buttons["ring"]["subtract"].invoke()
    ui.hand_at((0, 180, 165, 180, 165))
    ui.idle()
    ui.shows(window.message, "Done: ring -15")

    assert list(window.pose_buttons) == [*BUILTIN_POSES, "wave"]
    window.pose_buttons["peace"].invoke()
    ui.hand_at(BUILTIN_POSES["peace"])
    window.pose_buttons["wave"].invoke()  # a user-defined pose from the arbiter
    ui.hand_at(WAVE)

    ui.click(window.pose_buttons["rockstar"])  # a real X mouse click
    ui.hand_at(BUILTIN_POSES["rockstar"])
    ui.shows(window.message, "Done: pose rockstar")
    ui.shows(window.pose_label, "Pose: rockstar")
    for finger, angle in zip(FINGERS, BUILTIN_POSES["rockstar"], strict=True):
        ui.shows(window.reported_labels[finger], str(angle))
        assert window.desired_labels[finger].cget("text") == str(angle)


def test_gesture_buttons_play_the_arbiters_gestures(ui: Ui) -> None:
    window = ui.window
    # The arbiter's user pose "wave" hides the built-in gesture of that name.
    ui.pump(lambda: list(window.gesture_buttons) == ["count"], what="the arbiter's gestures")
    window.pose_buttons["fist"].invoke()
    ui.hand_at(BUILTIN_POSES["fist"])
    ui.click(window.gesture_buttons["count"])
    ui.shows(window.pose_label, "playing count step 2/6")
    ui.shows(window.message, "Done: gesture count")
    ui.pump(
        lambda: (
            str(window.pose_label.cget("text")).startswith("Pose: open")
            and "playing" not in str(window.pose_label.cget("text"))
        ),
        20,
        "the end of the gesture",
    )
    ui.hand_at(BUILTIN_POSES["open"])


def test_stop_is_always_there_and_goes_out_at_once(ui: Ui) -> None:
    arbiter = ui.system.arbiter
    assert arbiter is not None
    window = ui.window
    ui.root.update()
    stop = window.stop_button
    assert stop.winfo_ismapped()
    inside_x = 0 <= stop.winfo_rootx() - ui.root.winfo_rootx() < ui.root.winfo_width()
    inside_y = 0 <= stop.winfo_rooty() - ui.root.winfo_rooty() < ui.root.winfo_height()
    assert inside_x, "the STOP button is outside the window"
    assert inside_y, "the STOP button is outside the window"
    assert not window.locked
    # A command still waiting for its answer does not hold the emergency stop back.
    release = threading.Event()
    state = ui.client.state
    assert state is not None

    def blocked() -> HandState:
        release.wait(10)
        return state

    window.run_command("a slow command", blocked)
    ui.click(stop)  # a real X mouse click
    ui.pump(lambda: arbiter.state("hand1").locked, what="the arbiter locked")
    release.set()
    ui.pump(lambda: window.locked, what="the window to show the lock")
    ui.shows(window.status["lock"], "LOCKED")
    ui.shows(window.pose_label, "relaxed: index, middle, ring, pinky, thumb")
    assert "disabled" not in window.unlock_button.state()
    window.pose_buttons["fist"].invoke()
    ui.shows(window.message, "the hand is locked (emergency stop)")
    window.unlock_button.invoke()
    ui.pump(lambda: not window.locked, what="the window to show the unlock")
    assert "disabled" in window.unlock_button.state()
    window.pose_buttons["fist"].invoke()
    ui.hand_at(BUILTIN_POSES["fist"])
    # Escape is the emergency stop too; Relax relaxes without locking.
    ui.xdotool("key", "--window", str(ui.root.winfo_id()), "Escape")
    ui.pump(lambda: window.locked, what="Escape to lock the hand")
    window.unlock_button.invoke()
    ui.pump(lambda: not arbiter.state("hand1").locked, what="the unlock")
    window.pose_buttons["open"].invoke()
    ui.pump(lambda: arbiter.state("hand1").relaxed == (), what="the fingers driven")
    window.relax_button.invoke()
    ui.pump(lambda: len(arbiter.state("hand1").relaxed) == 5, what="relax")
    assert not arbiter.state("hand1").locked
    ui.idle()


def test_window_follows_another_client(ui: Ui) -> None:
    window = ui.window
    angles = (180, 150, 20, 0, 60)
    other = ui.system.client("someone-else")
    try:
        other.publish(ui.system.hand_topics.set, json.dumps({"angles": list(angles)}))
        ui.hand_at(angles)
        for finger, angle in zip(FINGERS, angles, strict=True):
            ui.shows(window.desired_labels[finger], str(angle))
            ui.shows(window.reported_labels[finger], str(angle))
            assert window.bar_values(finger) == pytest.approx((angle, angle), abs=0.5)
        ui.shows(window.pose_label, "Pose: —")
        other.publish(ui.system.hand_topics.pose_set, "peace")
        ui.shows(window.pose_label, "Pose: peace")
        ui.shows(window.desired_labels["thumb"], "0")
    finally:
        other.stop()

    assert window.status["broker"].cget("text") == "Broker: connected"
    ui.shows(window.status["arbiter"], "Arbiter: online")
    ui.shows(window.status["device"], "Device: online")
    ui.shows(window.status["link"], "Serial link: up")
    ui.shows(window.firmware, "Firmware")

    # The picture for the documentation: a pose, a nudge of our own, and the 3D view.
    window.buttons["thumb"]["add"].invoke()
    window.buttons["thumb"]["add"].invoke()
    window.buttons["thumb"]["add"].invoke()
    ui.hand_at((180, 180, 0, 0, 45))
    ui.idle()
    ui.shows(window.reported_labels["thumb"], "45")
    if window.plot_available:
        window.toggle_plot()
        assert window.live_plot is not None
        ui.pump(lambda: window.live_plot is not None and window.live_plot.widget.winfo_ismapped())
        time.sleep(0.3)
    path = ui.screenshot("gui.png", docs=True)
    assert path.stat().st_size > 10_000


def test_custom_angles_are_checked_before_anything_is_sent(ui: Ui) -> None:
    window = ui.window
    version = ui.system.state().version
    before = ui.system.sim.firmware.targets
    for finger, text in zip(FINGERS, ("90", "", "abc", "200", " 45 "), strict=True):
        window.entries[finger].insert(0, text)
    window.submit_button.invoke()
    ui.root.update()
    message = window.message.cget("text")
    assert message.startswith("Not sent: ring, pinky ")
    for fine in ("index", "middle", "thumb"):
        assert fine not in message
    assert str(window.entries["ring"].cget("style")) == "Bad.TEntry"
    assert str(window.entries["index"].cget("style")) == "TEntry"
    assert not window.busy
    assert ui.system.sim.firmware.targets == before

    for finger, text in (("ring", "10"), ("pinky", "20")):
        window.entries[finger].delete(0, "end")
        window.entries[finger].insert(0, text)
    window.submit_button.invoke()
    ui.hand_at((90, 180, 10, 20, 45))
    ui.shows(window.message, "Done: angles 90 - 10 20 45")
    # The only command that went out is this one: the refused boxes sent nothing.
    assert ui.system.state().version == version + 1

    # Typed with the real keyboard: click into the box, type, press Return.
    window.entries["index"].delete(0, "end")
    ui.click(window.entries["index"])
    ui.xdotool("type", "--delay", "20", "120")
    ui.xdotool("key", "Return")
    ui.hand_at((120, 180, 10, 20, 45))
    ui.idle()  # its "Done" is shown before the next message, not over it

    for entry in window.entries.values():
        entry.delete(0, "end")
    window.submit_button.invoke()
    ui.shows(window.message, "Nothing to send")


def test_arbiter_errors_are_shown(ui: Ui) -> None:
    window = ui.window
    # A stale pose list (say, from before the arbiter was restarted with other poses).
    poses = {name: list(angles) for name, angles in BUILTIN_POSES.items()}
    poses["ghost"] = [1, 2, 3, 4, 5]
    other = ui.system.client("stale")
    try:
        other.publish(ui.system.topics.bridge_poses, json.dumps(poses), retain=True, wait=5)
    finally:
        other.stop()
    ui.pump(lambda: "ghost" in window.pose_buttons, what="the ghost pose button")
    assert "wave" not in window.pose_buttons
    window.pose_buttons["ghost"].invoke()
    ui.shows(window.message, "The arbiter rejected pose ghost: unknown pose 'ghost'")
    ui.shows(window.arbiter_error, "unknown pose 'ghost'")
    assert ui.system.sim.firmware.targets == (180, 180, 180, 180, 180)


def test_availability_and_a_lost_broker(topics: Topics, display: str) -> None:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    broker = MosquittoProcess()
    broker.start()
    try:
        with open_ui(BrokerUrl.parse(broker.url), topics, display) as ui:
            window = ui.window
            ui.shows(window.status["device"], "Device: online")
            ui.shows(window.status["link"], "Serial link: up")

            device = ui.system.device
            assert device is not None
            device.stop()
            ui.shows(window.status["device"], "Device: offline")
            ui.shows(window.status["link"], "Serial link: unknown (device offline)")
            ui.system.start_device()
            ui.shows(window.status["device"], "Device: online")
            ui.shows(window.status["link"], "Serial link: up")

            broker.stop()
            ui.shows(window.status["broker"], "Broker: connection lost")
            ui.shows(window.status["arbiter"], "Arbiter: unknown")
            # The window keeps answering: a press returns at once and says what it does.
            window.buttons["index"]["contract"].invoke()
            ui.root.update()
            assert window.busy  # the press returned while the command is still on its way
            ui.shows(window.message, "Sending index to 0")

            broker.start()
            ui.shows(window.status["broker"], "Broker: connected", timeout=20)
            ui.shows(window.status["arbiter"], "Arbiter: online", timeout=20)
            ui.shows(window.status["device"], "Device: online", timeout=20)
            ui.idle()
            window.buttons["index"]["extend"].invoke()
            window.buttons["middle"]["contract"].invoke()
            ui.hand_at((180, 0, 180, 180, 180))
            ui.shows(window.message, "Done: middle to 0")
    finally:
        broker.cleanup()


def test_gui_command_opens_and_closes(
    mosquitto_broker: RunningBroker, topics: Topics, display: str
) -> None:
    need(shutil.which("xdotool") is not None, "xdotool is not installed")
    system = PosedSystem(BrokerUrl.parse(mosquitto_broker.url), topics).start()
    env = {
        **os.environ,
        "DISPLAY": display,
        "HAND_MQTT_BROKER": mosquitto_broker.url,
        "HAND_MQTT_BASE": topics.base,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", "gui"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        title = f"hand-mqtt: {topics.base}/hand1"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["xdotool", "search", "--name", title],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            if found.stdout.strip():
                break
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.1)
        else:
            raise AssertionError("the window did not appear")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
        assert process.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        system.stop()


def test_gui_command_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(app, ["gui"])
    assert result.exit_code == 1
    assert "no display" in result.output
