"""A broker list (``--broker a,b,c``): parsed, shown without passwords, and tried in turn."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState

from hand_mqtt import BrokerUrl
from hand_mqtt.errors import ConfigError
from hand_mqtt.mqtt import FAILOVER_AFTER_S, _PahoClient, redact_url
from harness.brokers import free_port


def test_a_list_is_the_first_broker_with_the_others_as_fallbacks() -> None:
    url = BrokerUrl.parse("mqtt://arbiter:s3cret@a:1884, b ,mqtt://c:1885")
    assert [(b.host, b.port) for b in url.brokers] == [("a", 1884), ("b", 1883), ("c", 1885)]
    assert url.username == "arbiter"
    assert url.password == "s3cret"
    assert url.brokers[1].username is None
    assert all(not b.fallbacks for b in url.brokers)
    assert str(url) == "mqtt://arbiter@a:1884,mqtt://b:1883,mqtt://c:1885"
    assert "s3cret" not in repr(url)


def test_one_url_has_no_fallbacks() -> None:
    url = BrokerUrl.parse("mqtts://host")
    assert url.fallbacks == ()
    assert url.brokers == (url,)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mqtt://a,,mqtt://b", "empty entry"),
        ("mqtt://a,ws://b", "same scheme"),
        ("mqtt://a,mqtt://b:notaport", "entry 2"),
        ("mqtt://a,ftp://b", "entry 2"),
    ],
)
def test_a_bad_list_is_refused_with_a_sentence(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        BrokerUrl.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "mqtt://u:Xq7,Zr9@h:1883",
        "mqtt://u:Xq7,Zr9@h:1883,mqtt://v:Kw3@b",
        "mqtt://a,mqtt://u:Xq7,Zr9@h",
    ],
)
def test_a_password_never_shows_even_cut_at_a_comma(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        BrokerUrl.parse(text)
    for secret in ("Xq7", "Zr9", "Kw3"):
        assert secret not in str(refused.value)
        assert secret not in redact_url(text)


def test_every_password_of_a_list_is_hidden() -> None:
    shown = redact_url("mqtt://u:one@a,mqtt://v:two@b:2")
    assert shown == "mqtt://u:***@a,mqtt://v:***@b:2"


def _client(url: str) -> _PahoClient:
    made = _PahoClient(CallbackAPIVersion.VERSION2, client_id="failover")
    made.reconnect_delay_set(1, 16)
    parsed = BrokerUrl.parse(url)
    made.brokers = parsed.brokers
    made.untried = len(parsed.brokers) - 1
    made.aim(parsed.brokers[0])
    return made


def _hop(made: _PahoClient) -> tuple[str, int | None]:
    """One failed attempt: the wait paho would make (its delay, None when it did not wait),
    then the broker the next attempt goes to."""
    made._state = _ConnectionState.MQTT_CS_DISCONNECTED  # so paho's wait returns at once
    made._reconnect_wait()
    waited = made._reconnect_delay
    with pytest.raises(ConnectionRefusedError):  # nothing listens on these ports
        made.reconnect()
    return f"{made.host}:{made.port}", waited


def _closed_ports(count: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(count)]


def test_brokers_are_tried_in_turn_and_the_delay_applies_once_none_answered() -> None:
    a, b, c = _closed_ports(3)
    made = _client(f"{a},{b},{c}")
    with pytest.raises(ConnectionRefusedError):
        made.reconnect()  # the first attempt goes to the first broker
    assert f"{made.host}:{made.port}" == a
    # a did not answer: b and c at once, then a again after the first delay.
    assert _hop(made) == (b, None)
    assert _hop(made) == (c, None)
    assert _hop(made) == (a, 1)


def test_losing_a_broker_that_served_moves_to_the_next_at_once() -> None:
    a, b = _closed_ports(2)
    made = _client(f"{a},{b}")
    with pytest.raises(ConnectionRefusedError):
        made.reconnect()
    made.connected_at = time.monotonic() - FAILOVER_AFTER_S - 1
    assert _hop(made) == (b, None)
