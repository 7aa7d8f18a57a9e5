"""Signing in on the page, on brokers that check passwords and rights (Mosquitto with the shipped
configuration, and the embedded broker with the same files).

The broker decides what an account may do: a viewer's page is read-only because the broker drops
its commands, an operator's page moves the hand. The password stays in the tab: never in a URL,
a log, the page's markup or local storage.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from hand_mqtt import BUILTIN_POSES, BrokerUrl, Topics, WebServer
from hand_mqtt.accounts import Account, Role
from harness.brokers import AmqttProcess, free_port, mosquitto_binary
from harness.browser import Page
from harness.waiting import wait_until
from tests.conftest import need
from tests.deploy.support import ShippedMosquitto, make_users
from tests.support.system import Recorder, System

pytestmark = pytest.mark.web

HAND = "web1"
USERS: dict[str, Account | Role] = {
    "arbiter": Role.arbiter,
    "device": Account(Role.device, HAND),  # a device account drives one hand
    "alice": Role.operator,
    "kiosk": Role.viewer,
}


@dataclass
class AccountsBroker:
    kind: str
    port: int
    ws_port: int
    passwords: dict[str, str]

    def url(self, user: str) -> BrokerUrl:
        return BrokerUrl.parse(f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"


@pytest.fixture(scope="module")
def mosquitto_with_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsBroker]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    folder = tmp_path_factory.mktemp("web-mosquitto")
    passwords = make_users(folder, USERS)
    broker = ShippedMosquitto(folder)
    broker.start()
    try:
        yield AccountsBroker("mosquitto", broker.port, broker.ws_port, passwords)
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def amqtt_with_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsBroker]:
    folder: Path = tmp_path_factory.mktemp("web-amqtt")
    passwords = make_users(folder, USERS)
    broker = AmqttProcess(
        websockets_port=free_port(), password_file=folder / "passwd", acl_file=folder / "acl"
    )
    broker.start()
    try:
        assert broker.websockets_port is not None
        yield AccountsBroker("amqtt", broker.port, broker.websockets_port, passwords)
    finally:
        broker.stop()


@pytest.fixture(params=["amqtt", "mosquitto"])
def accounts_broker(request: pytest.FixtureRequest) -> AccountsBroker:
    found: AccountsBroker = request.getfixturevalue(f"{request.param}_with_accounts")
    return found


def test_sign_in_a_viewer_gets_a_read_only_page_and_an_operator_moves_the_hand(
    accounts_broker: AccountsBroker, chromium: WebDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hand_mqtt")
    broker = accounts_broker
    topics = Topics("hand")  # the base topic the accounts' rights are written for
    system = System(
        broker.url("arbiter"),
        topics,
        hand=HAND,  # each broker here serves this one test
        device_url=broker.url("device"),
    ).start()
    hand = system.hand_topics
    server = WebServer(broker.ws_url, port=0, base="hand", hand=system.hand_name)
    server.start()
    # The independent subscriber is an operator: it may read every topic under hand/.
    recorder = Recorder(broker.url("alice"), hand.set, f"{hand.root}/+/set", "hand/bridge/set")
    page = Page(chromium, server.url)
    secrets = list(broker.passwords.values())
    try:
        page.open()
        # The broker refuses clients without a user name: the page asks for one.
        page.until(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "the form")
        assert page.text("login-reason") == "This broker needs a user name and password."
        assert page.status()["broker"] == "refused"

        sign_in(page, "kiosk", "not the password")
        page.until(
            lambda: "refused kiosk" in page.text("login-reason"), "the refusal of a bad password"
        )

        sign_in(page, "kiosk", broker.passwords["kiosk"])
        page.until(lambda: page.mode() == "readonly", "a read-only page")
        notice = page.text("readonly")
        assert notice.startswith("Read-only: the broker does not let kiosk send commands.")
        assert page.text("account-text") == "Signed in as kiosk"
        page.wait_desired((180, 180, 180, 180, 180))  # a viewer sees everything
        page.until(lambda: page.status()["device"] == "online", "the device seen")
        disabled = page.js(
            "return [...document.querySelectorAll('main button:not(.link-button), main input,"
            " main select')].filter(e => e.closest('#login') === null && !e.closest('[hidden]'))"
            ".map(e => [e.id || e.textContent, e.disabled])"
        )
        assert disabled, "no controls found"
        assert all(is_disabled for _name, is_disabled in disabled), disabled
        assert page.driver.find_elements(By.CSS_SELECTOR, "#pose-list .pose[disabled]")
        # The broker dropped the page's probe: the operator's subscriber never saw it. Its own
        # message on the same topic, published after the viewer's page knew, is the sentinel.
        sentinel = b"sentinel"
        recorder.client.publish("hand/bridge/set", sentinel, qos=1)
        wait_until(lambda: recorder.on("hand/bridge/set"), 10, "the sentinel")
        assert [m.payload for m in recorder.on("hand/bridge/set")] == [sentinel]
        assert recorder.on(hand.set) == []

        # Signed out, the page goes back to the form; an operator's page moves the hand.
        page.click("Sign out")
        page.until(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "the form")
        sign_in(page, "alice", broker.passwords["alice"])
        page.wait_ready()
        assert page.text("readonly") == ""
        page.click("peace")
        wait_until(lambda: recorder.on(hand.set), 10, "the operator's command")
        system.wait_hand(BUILTIN_POSES["peace"])
        page.wait_desired(BUILTIN_POSES["peace"])

        # The password stays in this tab's session storage and nowhere else.
        assert page.js("return localStorage.length") == 0
        assert broker.passwords["alice"] in page.js(
            "return sessionStorage.getItem('hand-mqtt.login')"
        )
        assert page.js("return document.getElementById('login-password').value") == ""
        html = page.js("return document.documentElement.outerHTML")
        url = page.driver.current_url
        logs = page.console() + [record.getMessage() for record in caplog.records]
        for secret in secrets:
            assert secret not in html
            assert secret not in url
            assert not any(secret in line for line in logs)
        # Another tab of the same page is not signed in.
        first = page.driver.current_window_handle
        page.driver.switch_to.new_window("tab")
        try:
            page.open()
            page.until(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "a form")
            assert page.js("return sessionStorage.length") == 0
        finally:
            page.driver.close()
            page.driver.switch_to.window(first)
    finally:
        page.leave()
        recorder.close()
        server.stop()
        system.stop()


def sign_in(page: Page, user: str, password: str) -> None:
    page.type_into("login-user", user)
    page.type_into("login-password", password)
    page.driver.find_element(By.ID, "login-submit").click()
