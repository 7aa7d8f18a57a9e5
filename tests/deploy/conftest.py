"""Fixtures for the deployment tests: secured brokers with the shipped users and rights."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hand_mqtt import EmbeddedBroker
from hand_mqtt.accounts import Account, Role, default_users
from harness.brokers import free_port, mosquitto_binary
from tests.conftest import need
from tests.deploy.support import ShippedMosquitto, make_users

# A device account drives one hand, so each test's hand has its own: device-h000, device-h001...
HANDS = [f"h{number:03d}" for number in range(300)]
_next_hand = itertools.count()

USERS: dict[str, Account | Role] = {
    **default_users(),
    "nobody": Role.none,
    "operator2": Role.operator,
    **{f"device-{hand}": Account(Role.device, hand) for hand in HANDS},
}


def unique_hand() -> str:
    """A hand no test used before in this run, with its own device account ``device-<hand>``."""
    return HANDS[next(_next_hand)]


@dataclass
class SecuredBroker:
    """A broker that checks users and rights, with a password for each user of :data:`USERS`."""

    kind: str
    port: int
    ws_port: int
    passwords: dict[str, str]

    def url(self, user: str | None, *, scheme: str = "mqtt", password: str | None = None) -> str:
        port = self.ws_port if scheme == "ws" else self.port
        if user is None:
            return f"{scheme}://127.0.0.1:{port}"
        secret = password if password is not None else self.passwords[user]
        return f"{scheme}://{user}:{secret}@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def shipped_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    folder = tmp_path_factory.mktemp("mosquitto-secured")
    passwords = make_users(folder, USERS)
    broker = ShippedMosquitto(folder)
    broker.start()
    try:
        yield SecuredBroker("mosquitto", broker.port, broker.ws_port, passwords)
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def secured_amqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    folder: Path = tmp_path_factory.mktemp("amqtt-secured")
    passwords = make_users(folder, USERS)
    broker = EmbeddedBroker(
        "127.0.0.1",
        free_port(),
        password_file=folder / "passwd",
        acl_file=folder / "acl",
        websockets_port=free_port(),
    )
    broker.start()
    try:
        assert broker.websockets_port is not None
        yield SecuredBroker("amqtt", broker.port, broker.websockets_port, passwords)
    finally:
        broker.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
def secured(request: pytest.FixtureRequest) -> SecuredBroker:
    """Each test using this runs on Mosquitto (shipped config) and on amqtt's secured mode."""
    name = "shipped_mosquitto" if request.param == "mosquitto" else "secured_amqtt"
    found: SecuredBroker = request.getfixturevalue(name)
    return found
