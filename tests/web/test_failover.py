"""The page given two brokers (no bridge between them) moves to the second when the first dies,
as the arbiter and the device service do, and drives the hand through it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from hand_mqtt import BUILTIN_POSES, BrokerUrl, Topics, WebServer
from harness.brokers import MosquittoProcess, free_port, mosquitto_binary
from harness.browser import Page
from tests.conftest import need
from tests.support.system import System

pytestmark = pytest.mark.web


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[MosquittoProcess, MosquittoProcess]]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    brokers = (
        MosquittoProcess(websockets_port=free_port(), workdir=tmp_path / "a"),
        MosquittoProcess(websockets_port=free_port(), workdir=tmp_path / "b"),
    )
    for broker in brokers:
        broker.workdir.mkdir()
        broker.start()
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.cleanup()


def test_the_page_moves_to_the_second_broker_when_the_first_dies(
    pair: tuple[MosquittoProcess, MosquittoProcess], chromium: WebDriver
) -> None:
    a, b = pair
    topics = Topics(f"t{uuid.uuid4().hex[:12]}")
    system = System(BrokerUrl.parse(f"{a.url},{b.url}"), topics).start()
    server = WebServer(f"{a.ws_url},{b.ws_url}", port=0, base=topics.base, hand="hand1")
    server.start()
    page = Page(chromium, server.url)
    try:
        page.open()
        page.wait_ready()
        page.click("okay")
        system.wait_hand(BUILTIN_POSES["okay"])
        a.kill()
        page.wait_ready(30)
        page.until(lambda: page.status()["device"] == "online", "the device on B")
        page.click("phone")
        system.wait_hand(BUILTIN_POSES["phone"])
        page.wait_reported(BUILTIN_POSES["phone"])
    finally:
        page.stop_emulating()
        page.leave()
        server.stop()
        system.stop()
