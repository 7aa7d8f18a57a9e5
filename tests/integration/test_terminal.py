"""The live view as a person sees it: `watch` and `up` in a real pty, read back as a screen."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.brokers import RunningBroker
from tests.conftest import need
from tests.support.output import banner_port
from tests.support.system import System
from tests.support.terminal import Screen

ROOT = Path(__file__).resolve().parents[2]
"""The checkout, where `make run` starts `hand-mqtt up`."""


class Terminal:
    """A process on a pty of a given width; what it writes is fed to a :class:`Screen`."""

    def __init__(self, process: subprocess.Popen[bytes], master: int, columns: int) -> None:
        self.process = process
        self.screen = Screen(columns)
        self._master = master
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # the process closed its side
                return
            if not data:
                return
            with self._lock:
                self.screen.feed(data.decode("utf-8", "replace"))

    def wait_for(self, what: Callable[[list[str]], bool], timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                shown = self.screen.text()
            if what(shown):
                return shown
            time.sleep(0.02)
        raise AssertionError("the screen never showed it:\n" + "\n".join(shown))

    def finish(self) -> list[str]:
        """Ctrl-C, then the screen once the process has exited."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(20) == 0
        self._reader.join(5)
        with self._lock:
            return self.screen.text()


@contextmanager
def _terminal(
    args: list[str],
    columns: int,
    env: dict[str, str],
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Terminal]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    environment.update(env, TERM="xterm-256color")
    process = subprocess.Popen(
        [*(command or [sys.executable, "-m", "hand_mqtt"]), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    try:
        yield Terminal(process, master, columns)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def _row(shown: list[str], name: str) -> list[str]:
    rows = [line.split() for line in shown if line.split()[:1] == [name]]
    assert len(rows) <= 1, f"more than one {name} row: a stale copy was left on the screen"
    return rows[0][1:] if rows else []


@pytest.mark.parametrize("columns", [60, 80, 132])
def test_watch_redraws_in_place_and_fits_the_terminal(
    system: System, broker: RunningBroker, columns: int
) -> None:
    system.wait_reported((180, 180, 180, 180, 180))
    root = f"{system.topics.base}/hand1"
    env = {"HAND_MQTT_BROKER": broker.url, "HAND_MQTT_BASE": system.topics.base}
    with _terminal(["watch"], columns, env) as terminal:
        shown = terminal.wait_for(lambda s: _row(s, "reported") == ["180"] * 5)
        assert shown[0] == f"{root}  pose open  version 0"
        assert shown[1].startswith("arbiter online  device online  link up  firmware ")
        assert shown[2].split() == ["index", "middle", "ring", "pinky", "thumb"]
        other = system.client("other")
        try:
            other.publish(system.hand_topics.pose_set, b"peace")
            terminal.wait_for(lambda s: _row(s, "reported") == ["180", "180", "0", "0", "0"])
            other.publish(system.hand_topics.finger_set("index"), b"999")
            terminal.wait_for(lambda s: any(" rejected 999 on " in line for line in s))
        finally:
            other.stop()
        shown = terminal.finish()
    assert terminal.screen.wrapped == 0, "a line was wider than the terminal"
    assert [line for line in shown if line.startswith(root)] == [
        f"{root}  pose peace  version 1"
    ], "\n".join(shown)
    assert _row(shown, "desired") == ["180", "180", "0", "0", "0"]
    rejection = " ".join(line.strip() for line in shown[shown.index("") + 1 :])
    assert rejection.endswith(
        f"rejected 999 on {root}/index/set: index: 999 is out of range (an angle is 0 to 180)"
    ), shown


def test_up_shows_the_banner_then_the_live_view_at_80_columns() -> None:
    """As `make run` starts it: the console script in .venv/bin."""
    script = Path(sys.executable).parent / "hand-mqtt"
    need(script.exists(), "the hand-mqtt console script is not installed")
    up = ["up", "--port", "0", "--web-port", "0", "--ws-port", "0"]
    with _terminal(up, 80, {}, [str(script)], cwd=ROOT) as terminal:
        shown = terminal.wait_for(lambda s: _row(s, "reported") == ["180"] * 5, 30)
        assert shown[0] == "hand-mqtt is up"
        port = banner_port("\n".join(shown))
        assert shown[1] == f"  broker   mqtt://127.0.0.1:{port} (embedded)"
        assert "Try, in another terminal (in this folder):" in shown
        assert f"  .venv/bin/hand-mqtt pose peace --broker mqtt://127.0.0.1:{port}" in shown
        assert "Ctrl-C stops everything." in shown
        shown = terminal.finish()
    assert terminal.screen.wrapped == 0, "\n".join(shown)
    assert shown[-1] == "stopping…"
    assert _row(shown, "desired") == ["180"] * 5
