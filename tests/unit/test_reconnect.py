"""Reconnecting backs off until a connection lasts, so a service knocked off again and again
(its client id taken over, a broker at a limit) neither floods the broker nor flaps its
availability. Driven through the paho client's own wait, without a broker."""

from __future__ import annotations

import time

from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState

from hand_mqtt.mqtt import STABLE_CONNECTION_S, _PahoClient


def client() -> _PahoClient:
    made = _PahoClient(CallbackAPIVersion.VERSION2, client_id="backoff")
    made.reconnect_delay_set(1, 16)
    return made


def wait(made: _PahoClient) -> int | None:
    """One reconnect wait; returns the delay it chose (the state makes it return at once)."""
    made._state = _ConnectionState.MQTT_CS_DISCONNECTED
    made._reconnect_wait()
    return made._reconnect_delay


def accepted(made: _PahoClient, lasted: float) -> None:
    """What a CONNACK does: paho forgets its delay; we note when it happened."""
    made._reconnect_delay = None
    made.connected_at = time.monotonic() - lasted


def test_failed_attempts_double_the_delay() -> None:
    made = client()
    assert [wait(made) for _ in range(6)] == [1, 2, 4, 8, 16, 16]


def test_connections_dropped_at_once_keep_backing_off() -> None:
    made = client()
    delays = []
    for _ in range(6):
        accepted(made, lasted=0.0)
        delays.append(wait(made))
    assert delays == [1, 2, 4, 8, 16, 16]


def test_a_connection_that_lasted_starts_afresh() -> None:
    made = client()
    for _ in range(4):
        accepted(made, lasted=0.0)
        wait(made)
    accepted(made, lasted=STABLE_CONNECTION_S + 1)
    assert wait(made) == 1
