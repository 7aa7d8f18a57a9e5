"""The 3D picture: geometry that follows the angles, PNGs, the command, a missing matplotlib."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt import BUILTIN_POSES, FINGERS, Arbiter, BrokerUrl, MqttClient, PoseBook, Topics
from hand_mqtt.cli import app
from hand_mqtt.clients.plot import (
    FINGER_GEOMETRY,
    finger_chains,
    require_matplotlib,
    save_png,
    tip_distance,
)
from hand_mqtt.errors import ConfigError
from harness.brokers import RunningBroker
from tests.support.system import System

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _colours(path: Path) -> int:
    pillow = pytest.importorskip("PIL.Image")
    with pillow.open(path) as image:
        found = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(found or [])


def _with_one(finger: int, angle: int) -> list[int]:
    angles = [180] * len(FINGERS)
    angles[finger] = angle
    return angles


# -- geometry -----------------------------------------------------------------------------


def test_every_finger_has_four_points() -> None:
    chains = finger_chains([180, 90, 0, 45, 135])
    assert len(chains) == len(FINGERS)
    for chain in chains:
        assert len(chain) == 4
        assert all(len(point) == 3 for point in chain)


@pytest.mark.parametrize("finger", FINGERS)
def test_a_straight_finger_reaches_the_sum_of_its_bones(finger: str) -> None:
    index = FINGERS.index(finger)
    chain = finger_chains([180] * 5)[index]
    assert tip_distance(chain) == pytest.approx(sum(FINGER_GEOMETRY[finger].segments))
    for (start, end), length in zip(
        itertools.pairwise(chain), FINGER_GEOMETRY[finger].segments, strict=True
    ):
        assert math.dist(start, end) == pytest.approx(length)


@pytest.mark.parametrize("finger", FINGERS)
def test_curling_brings_the_tip_closer_every_degree(finger: str) -> None:
    index = FINGERS.index(finger)
    distances = [
        tip_distance(finger_chains(_with_one(index, angle))[index]) for angle in range(180, -1, -1)
    ]
    assert all(a > b for a, b in itertools.pairwise(distances))
    assert distances[-1] < 0.8 * distances[0]


def test_only_the_commanded_finger_moves() -> None:
    straight = finger_chains([180] * 5)
    bent = finger_chains(_with_one(2, 0))
    for i in range(5):
        assert (straight[i] == bent[i]) is (i != 2)


def test_fingers_curl_towards_the_palm_side_and_the_thumb_across_it() -> None:
    open_hand = finger_chains([180] * 5)
    fist = finger_chains([0] * 5)
    for i in range(4):  # the four fingers point up the hand and fold into +z
        assert open_hand[i][-1][1] > open_hand[i][0][1]
        assert open_hand[i][-1][0] == pytest.approx(open_hand[i][0][0])
        assert fist[i][-1][2] > 10
        assert fist[i][-1][0] == pytest.approx(fist[i][0][0])  # stays in its own plane
    thumb_open, thumb_fist = open_hand[4], fist[4]
    # The thumb is unlike a finger: it starts low on the index side, points outwards, and
    # folds sideways across the palm towards the little finger.
    assert thumb_open[0][1] < min(chain[0][1] for chain in open_hand[:4]) - 30
    assert thumb_open[-1][0] < thumb_open[0][0] - 20
    assert thumb_fist[-1][0] > thumb_open[0][0] + 20
    assert thumb_fist[-1][2] > 10


def test_bad_angles_are_refused() -> None:
    with pytest.raises(ValueError, match="expected 5 angles"):
        finger_chains([180, 180])
    with pytest.raises(ValueError, match="thumb"):
        finger_chains([180, 180, 180, 180, 181])


# -- drawing --------------------------------------------------------------------------------


@pytest.fixture
def matplotlib_present() -> None:
    pytest.importorskip("matplotlib")


@pytest.mark.usefixtures("matplotlib_present")
def test_png_has_the_size_asked_for_and_is_not_blank(tmp_path: Path) -> None:
    out = tmp_path / "hand.png"
    save_png(BUILTIN_POSES["rockstar"], out, title="rockstar", size=(640, 480))
    assert _png_size(out) == (640, 480)
    assert _colours(out) > 50


@pytest.mark.usefixtures("matplotlib_present")
def test_plot_pose_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "peace.png"
    result = CliRunner().invoke(app, ["plot", "--pose", "peace", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _png_size(out) == (800, 700)
    assert _colours(out) > 50
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(out, ARTIFACTS / "plot-peace.png")
    if os.environ.get("HAND_MQTT_UPDATE_DOCS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, DOCS_IMAGES / "plot-peace.png")


@pytest.mark.usefixtures("matplotlib_present")
def test_plot_angles_and_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "a.png"
    result = runner.invoke(
        app, ["plot", "--angles", "0", "45", "90", "135", "180", "-o", str(out), "--width", "300"]
    )
    assert result.exit_code == 0, result.output
    assert _png_size(out) == (300, 700)

    result = runner.invoke(app, ["plot", "--angles", "0", "45", "90", "135", "181", "-o", "x.png"])
    assert result.exit_code == 2
    assert "thumb" in result.output

    # Not built in, and no broker to ask (nothing listens on port 1): said in one line.
    result = runner.invoke(
        app, ["plot", "--pose", "wave", "-o", str(out), "--broker", "mqtt://127.0.0.1:1"]
    )
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: unknown pose 'wave': it is not built in, and the running arbiter's poses could "
        "not be read (could not connect to the broker at mqtt://127.0.0.1:1: nothing is "
        "listening there (connection refused)); give the arbiter's poses file with --poses"
    ), result.output


@pytest.mark.usefixtures("matplotlib_present")
def test_plot_without_a_display_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(app, ["plot", "--pose", "fist"])
    assert result.exit_code == 1
    assert "no display" in result.output
    assert "--out" in result.output


@pytest.fixture
def system(mosquitto_broker: RunningBroker, topics: Topics) -> Iterator[System]:
    running = System(BrokerUrl.parse(mosquitto_broker.url), topics).start()
    yield running
    running.stop()


@pytest.mark.usefixtures("matplotlib_present")
def test_plot_current_state_from_the_broker(
    system: System, mosquitto_broker: RunningBroker, tmp_path: Path
) -> None:
    client = system.client()
    try:
        client.publish(system.hand_topics.pose_set, "okay")
        system.wait_reported(BUILTIN_POSES["okay"])
    finally:
        client.stop()
    out = tmp_path / "now.png"
    result = CliRunner().invoke(
        app,
        ["plot", "-o", str(out), "--broker", mosquitto_broker.url, "--base", system.topics.base],
    )
    assert result.exit_code == 0, result.output
    assert _colours(out) > 50

    result = CliRunner().invoke(
        app, ["plot", "-o", str(out), "--broker", mosquitto_broker.url, "--base", "nobody"]
    )
    assert result.exit_code == 3
    assert "error: no state for nobody/hand1 on the broker: no arbiter is running" in (
        result.output
    )


@pytest.mark.usefixtures("matplotlib_present")
def test_plot_a_pose_the_running_arbiter_announces(
    mosquitto_broker: RunningBroker, topics: Topics, tmp_path: Path
) -> None:
    poses = tmp_path / "poses.toml"
    poses.write_text("[poses]\nwave = [180, 90, 90, 90, 180]\n")
    url = BrokerUrl.parse(mosquitto_broker.url)
    arbiter = Arbiter(
        MqttClient(url, name="arbiter"), topics=topics, poses=PoseBook.from_file(poses)
    )
    arbiter.start()
    try:
        assert arbiter.wait_ready(10)
        runner = CliRunner(env={"HAND_MQTT_BROKER": mosquitto_broker.url})
        out = tmp_path / "wave.png"
        result = runner.invoke(
            app, ["plot", "--pose", "wave", "-o", str(out), "--base", topics.base]
        )
        assert result.exit_code == 0, result.output
        assert _colours(out) > 50
        result = runner.invoke(
            app, ["plot", "--pose", "dab", "-o", str(out), "--base", topics.base]
        )
        assert result.exit_code == 2
        assert "error: unknown pose 'dab'; known poses: open, fist, peace, rockstar, okay, " in (
            result.output
        )
        assert result.output.rstrip().endswith("phone, wave")
    finally:
        arbiter.stop()


# -- without matplotlib -----------------------------------------------------------------


def test_missing_matplotlib_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'matplotlib>=3.7'"):
        require_matplotlib()
    result = CliRunner().invoke(app, ["plot", "--pose", "peace", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    # The command to run names this interpreter, so it installs where hand-mqtt runs.
    assert result.output == (
        f"error: matplotlib is not installed: {sys.executable} -m pip install 'matplotlib>=3.7'\n"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()
