"""Requests to the arbiter itself, on ``<base>/bridge/request/<name>`` (see docs/topics.md).

- ``ping``: "are you there?". The answer proves the arbiter runs now, which a retained
  ``bridge/state`` of ``online`` cannot: after a broker restart it is back from the broker's disk
  before the arbiter has reconnected (or whether it ever will).
- ``retire``: forget a hand (``{"hand": "left"}``) that an arbiter serving every hand
  (``--all-hands``) holds a slot for: its retained state and finger topics are cleared.

Each request is a JSON object with an optional ``transaction`` (a string or an integer, echoed);
a ping may also be empty. The answer is a :class:`~hand_mqtt.model.BridgeResponse` on
``<base>/bridge/response/<name>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from hand_mqtt.commands import MAX_PAYLOAD_BYTES, request_transaction
from hand_mqtt.errors import CommandError, ConfigError
from hand_mqtt.model import excerpt
from hand_mqtt.topics import validate_hand_name

__all__ = ["REQUESTS", "Request", "parse_request"]

REQUESTS: Final = ("ping", "retire")


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    transaction: str | int | None = None
    hand: str | None = None


def parse_request(name: str, payload: bytes) -> Request:
    """Read a request; raise :class:`CommandError` with a sentence (and the transaction when
    it could be read) when it is not one."""
    if name not in REQUESTS:
        raise CommandError(
            f"unknown request {excerpt(repr(name), 40)}; requests: {', '.join(REQUESTS)}"
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"the request is {len(payload)} bytes; at most 4096 are accepted")
    data: Any = {}
    if payload.strip():
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            raise CommandError("the request is not a JSON object") from None
    if not isinstance(data, dict):
        raise CommandError("the request is not a JSON object")
    transaction = request_transaction(data)
    allowed = {"transaction", "hand"} if name == "retire" else {"transaction"}
    if set(data) - allowed:
        raise CommandError(
            f"a {name} request holds only {' and '.join(sorted(allowed))}", transaction
        )
    hand = None
    if name == "retire":
        value = data.get("hand")
        if not isinstance(value, str):
            raise CommandError('give the hand to retire: {"hand": "left"}', transaction)
        try:
            hand = validate_hand_name(value)
        except ConfigError as exc:
            raise CommandError(excerpt(str(exc), 200), transaction) from None
    return Request(name, transaction, hand)
