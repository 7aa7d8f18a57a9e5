"""The page rides out a broker restart: it says so, keeps its controls off meanwhile, reconnects
by itself and drives the hand again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from hand_mqtt import BUILTIN_POSES, BrokerUrl, Topics
from harness.brokers import (
    AmqttProcess,
    MosquittoProcess,
    RunningBroker,
    free_port,
    mosquitto_binary,
)
from tests.conftest import need
from tests.web.conftest import WebRig, open_rig

pytestmark = pytest.mark.web


@pytest.fixture(params=["amqtt", "mosquitto"])
def own_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker of this test's own, on fixed ports, so that it can be restarted."""
    broker: AmqttProcess | MosquittoProcess
    if request.param == "mosquitto":
        need(mosquitto_binary() is not None, "mosquitto is not installed")
        broker = MosquittoProcess(websockets_port=free_port(), workdir=tmp_path)
    else:
        broker = AmqttProcess(websockets_port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def restart_rig(own_broker: RunningBroker, chromium: WebDriver) -> Iterator[WebRig]:
    yield from open_rig(own_broker, Topics(f"t{uuid.uuid4().hex[:12]}"), chromium)


def test_the_page_recovers_when_the_broker_restarts(restart_rig: WebRig) -> None:
    rig = restart_rig
    page = rig.page.open()
    page.wait_ready()
    page.click("okay")
    rig.wait_hand(BUILTIN_POSES["okay"])

    rig.broker.stop()
    page.until(lambda: page.status()["broker"] == "reconnecting\u2026", "the page noticing")
    assert page.mode() == "offline"
    assert page.status()["arbiter"] == "unknown"
    assert page.control("phone").get_attribute("disabled") is not None

    rig.broker.start()
    page.wait_ready(30)
    page.until(lambda: page.status()["device"] == "online", "the device back")
    page.click("phone")
    rig.system.wait_hand(BUILTIN_POSES["phone"])
    page.wait_desired(BUILTIN_POSES["phone"])
    page.wait_reported(BUILTIN_POSES["phone"])
    assert BrokerUrl.parse(rig.broker.url).port == rig.broker.port
