"""`hand-mqtt up` and `hand-mqtt web` as a user runs them, and the page they serve in Chromium."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from hand_mqtt import BUILTIN_POSES, BrokerUrl, HandClient
from harness.brokers import RunningBroker, free_port, wait_for_port
from harness.browser import Page
from harness.waiting import wait_until

pytestmark = pytest.mark.web

DOCS = Path(__file__).resolve().parents[2] / "docs" / "web.md"


class Running:
    """A hand-mqtt command in a subprocess, stopped with SIGINT like Ctrl-C."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hand_mqtt", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(list(self._lines))

    def read_until(self, text: str, timeout: float = 30) -> str:
        wait_until(lambda: text in self.output or self.process.poll() is not None, timeout, text)
        assert text in self.output, f"never said {text!r}: {self.output}"
        return self.output

    def line_with(self, start: str, timeout: float = 30) -> str:
        """The first line that starts with ``start`` (log lines start with the time)."""

        def found() -> list[str]:
            return [line for line in self.output.splitlines() if line.startswith(start)]

        wait_until(lambda: found() or self.process.poll() is not None, timeout, start)
        assert found(), f"never printed a line starting {start!r}: {self.output}"
        return found()[0]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def fetch_json(url: str) -> object:
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture
def up() -> Iterator[tuple[Running, int]]:
    port = free_port()
    running = Running("up", "--port", str(port), "--web-port", "0", "--ws-port", "0", "--no-live")
    try:
        wait_for_port(port, 20)
        running.read_until("Ctrl-C stops everything")
        yield running, port
    finally:
        running.stop()


def test_up_serves_the_page_and_a_websockets_listener(
    up: tuple[Running, int], chromium: WebDriver
) -> None:
    running, port = up
    web_url = running.line_with("  web page").split()[-1]
    ws_url = running.line_with("  ws ").split()[1]
    assert web_url.startswith("http://127.0.0.1:")
    assert ws_url.startswith("ws://127.0.0.1:")
    assert fetch_json(web_url + "config.json") == {
        "broker": ws_url,
        "base": "hand",
        "hand": "hand1",
        "mqttjs": "5.16.0",
    }
    page = Page(chromium, web_url)
    try:
        page.open()
        page.wait_ready()
        page.wait_reported((180, 180, 180, 180, 180))
        page.click("point")
        with HandClient(BrokerUrl.parse(f"mqtt://127.0.0.1:{port}"), name="check") as client:
            client.connect(10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                reported = client.snapshot().reported
                if reported is not None and reported.angles == BUILTIN_POSES["point"]:
                    break
                time.sleep(0.05)
            assert reported is not None
            assert reported.angles == BUILTIN_POSES["point"]
    finally:
        page.leave()
    assert running.stop() == 0


def test_up_without_the_web_page() -> None:
    port = free_port()
    running = Running("up", "--port", str(port), "--no-web", "--no-live")
    try:
        running.read_until("Ctrl-C stops everything")
    finally:
        assert running.stop() == 0
    assert "web page" not in running.output
    assert "ws://" not in running.output


def test_web_serves_the_page_for_a_broker_of_its_own(
    broker: RunningBroker, chromium: WebDriver
) -> None:
    # 0.0.0.0 in the broker's address: the host the page was loaded from (here 127.0.0.1).
    anywhere = broker.ws_url.replace("127.0.0.1", "0.0.0.0")
    running = Running(
        "web", "--broker-ws", anywhere, "--port", "0", "--base", "lab", "--hand", "left"
    )
    try:
        running.read_until("web page on")
        url = running.line_with("web page on").split()[3]
        assert fetch_json(url + "config.json") == {
            "broker": anywhere,
            "base": "lab",
            "hand": "left",
            "mqttjs": "5.16.0",
        }
        page = Page(chromium, url)
        try:
            page.open()
            # Connected, with no arbiter on lab/: the controls stay off and the page says why.
            page.until(lambda: page.status()["broker"] == "connected", "connected")
            page.until(lambda: page.mode() == "waiting", "waiting for an arbiter")
            assert page.text("hand-title") == "left"
            assert page.text("broker-url") == broker.ws_url
        finally:
            page.leave()
    finally:
        assert running.stop() == 0


def test_web_refuses_a_bad_url_and_a_taken_port_with_a_sentence() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hand_mqtt", "web", "--broker-ws", "http://127.0.0.1:9001/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2  # a wrong option: a usage error
    assert "error: the broker's websocket URL must be ws://host:port/" in done.stderr
    assert "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "hand_mqtt", "web", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert f"error: cannot serve the web page on 127.0.0.1:{port}" in done.stderr


def test_the_web_commands_in_the_docs_run() -> None:
    """Every `hand-mqtt web` line of docs/web.md serves the page as it says (on a free port)."""
    lines = [
        line.split("#")[0].strip()
        for line in DOCS.read_text().splitlines()
        if line.startswith("hand-mqtt web ")
    ]
    assert len(lines) == 2
    for line in lines:
        args = shlex.split(line)[1:]
        if "--port" in args:
            args[args.index("--port") + 1] = "0"
        else:
            args += ["--port", "0"]
        running = Running(*args)
        try:
            running.read_until("web page on")
            url = running.line_with("web page on").split()[3]
            config = fetch_json(url.replace("0.0.0.0", "127.0.0.1") + "config.json")
        finally:
            assert running.stop() == 0
        assert isinstance(config, dict)
        assert config["broker"] == args[args.index("--broker-ws") + 1]
        assert config["hand"] == (args[args.index("--hand") + 1] if "--hand" in args else "hand1")
