"""Fixtures for the browser page: one headless Chromium per session, the page served next to a
running system (arbiter, device service, simulated hand) on a real broker's websockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from hand_mqtt import FINGERS, BrokerUrl, Message, Topics, WebServer
from harness.brokers import RunningBroker
from harness.browser import Page, chromium_available, start_chromium
from harness.waiting import wait_until
from tests.conftest import need
from tests.support.system import Recorder, System


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    need(chromium_available(), "Debian's chromium and chromium-driver are not installed")
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class WebRig:
    """A running system, the page served for it, an independent subscriber, and the browser."""

    broker: RunningBroker
    system: System
    server: WebServer
    recorder: Recorder
    page: Page

    @property
    def hand(self) -> str:
        return self.system.hand_name

    def commands(self) -> list[Message]:
        """Every command the independent subscriber has seen, in order."""
        root = self.system.hand_topics.root
        return [
            m
            for m in list(self.recorder.messages)
            if m.topic.startswith(root + "/") and m.topic.endswith("/set")
        ]

    def command_bodies(self, since: int = 0) -> list[tuple[str, dict[str, object]]]:
        """(topic suffix, JSON body without the transaction) of each command the page sent
        (the page's transactions start with ``web-``) after the first ``since`` commands."""
        root = self.system.hand_topics.root + "/"
        found = []
        for message in self.commands()[since:]:
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue  # another client's plain-text command
            if not isinstance(body, dict) or not str(body.pop("transaction", "")).startswith(
                "web-"
            ):
                continue
            found.append((message.topic.removeprefix(root), body))
        return found

    def wait_command(self, what: str, predicate: object, since: int = 0) -> None:
        wait_until(
            lambda: any(body == predicate for _topic, body in self.command_bodies(since)),
            15,
            f"the command {what} at the broker",
        )

    def reported(self) -> tuple[int | None, ...]:
        found = self.recorder.last_json(self.system.hand_topics.reported)
        return tuple(found.get(f) for f in FINGERS) if found else (None,) * 5

    def wait_hand(self, angles: tuple[int, ...]) -> None:
        """The independent subscriber sees the hand report ``angles``, and the firmware has them."""
        wait_until(lambda: self.reported() == angles, 15, f"reported {angles}")
        self.system.wait_hand(angles)


def open_rig(
    broker: RunningBroker, topics: Topics, chromium: WebDriver, **system_options: object
) -> Iterator[WebRig]:
    system = System(BrokerUrl.parse(broker.url), topics, **system_options)  # type: ignore[arg-type]
    system.start()
    server = WebServer(broker.ws_url, port=0, base=topics.base, hand=system.hand_name)
    recorder: Recorder | None = None
    page: Page | None = None
    try:
        server.start()
        hand = system.hand_topics
        recorder = Recorder(
            system.url, hand.set, f"{hand.root}/+/set", hand.reported, hand.state, hand.error
        )
        page = Page(chromium, server.url)
        yield WebRig(broker, system, server, recorder, page)
    finally:
        if page is not None:
            page.stop_emulating()
            page.leave()
        if recorder is not None:
            recorder.close()
        server.stop()
        system.stop()


@pytest.fixture
def rig(broker: RunningBroker, topics: Topics, chromium: WebDriver) -> Iterator[WebRig]:
    """Runs once on the embedded amqtt broker and once on Mosquitto."""
    yield from open_rig(broker, topics, chromium)
