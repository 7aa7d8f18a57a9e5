"""The topic layout for one base topic and its hands (see docs/topics.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS

__all__ = [
    "BRIDGE",
    "DISCOVERY_PREFIX",
    "OFFLINE",
    "OFFLINE_TEXT",
    "ONLINE",
    "ONLINE_TEXT",
    "CommandTopic",
    "HandTopics",
    "Topics",
    "validate_hand_name",
]

BRIDGE: Final = "bridge"
DISCOVERY_PREFIX: Final = "homeassistant"
"""Home Assistant's MQTT discovery prefix, unless configured otherwise."""
ONLINE: Final = b"online"
"""``bridge/state`` and a hand's ``availability`` while the service runs."""
OFFLINE: Final = b"offline"
"""Their payload once it stopped (its will, when it vanished)."""
ONLINE_TEXT: Final = ONLINE.decode()
OFFLINE_TEXT: Final = OFFLINE.decode()
"""The same two payloads as the text a client's snapshot holds."""
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FINGER_SET = frozenset(FINGERS)


def validate_hand_name(hand: str) -> str:
    """Return ``hand`` if it can name a hand, else raise :class:`ConfigError`."""
    if not _SEGMENT.match(hand) or hand == BRIDGE:
        raise ConfigError(
            f"hand name {hand!r} must be 1-64 letters, digits, '-' or '_' and not {BRIDGE!r}"
        )
    return hand


@dataclass(frozen=True, slots=True)
class CommandTopic:
    """What a command topic addresses: a hand, and a finger or the pose or the whole hand."""

    hand: str
    target: Literal["hand", "pose", "finger"]
    finger: str | None = None


@dataclass(frozen=True, slots=True)
class HandTopics:
    """Every topic of one hand."""

    base: str
    hand: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.hand}"

    @property
    def set(self) -> str:
        return f"{self.root}/set"

    @property
    def pose_set(self) -> str:
        return f"{self.root}/pose/set"

    def finger_set(self, finger: str) -> str:
        return f"{self.root}/{finger}/set"

    def finger(self, finger: str) -> str:
        return f"{self.root}/{finger}"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def error(self) -> str:
        return f"{self.root}/error"

    @property
    def reported(self) -> str:
        return f"{self.root}/reported"

    @property
    def availability(self) -> str:
        return f"{self.root}/availability"

    @property
    def command_filters(self) -> tuple[str, str]:
        """Subscription filters covering every command topic of this hand."""
        return (self.set, f"{self.root}/+/set")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic layout under one base topic."""

    base: str = "hand"

    def __post_init__(self) -> None:
        segments = self.base.split("/")
        if not all(_SEGMENT.match(segment) for segment in segments):
            raise ConfigError(
                f"base topic {self.base!r} must be '/'-separated letters, digits, '-' or '_'"
            )

    def hand(self, hand: str) -> HandTopics:
        return HandTopics(self.base, validate_hand_name(hand))

    @property
    def bridge_state(self) -> str:
        return f"{self.base}/{BRIDGE}/state"

    @property
    def bridge_poses(self) -> str:
        return f"{self.base}/{BRIDGE}/poses"

    @property
    def bridge_gestures(self) -> str:
        return f"{self.base}/{BRIDGE}/gestures"

    def bridge_request(self, name: str) -> str:
        """Where a request to the arbiter itself goes (``+`` for all of them)."""
        return f"{self.base}/{BRIDGE}/request/{name}"

    def bridge_response(self, name: str) -> str:
        """Where the arbiter answers a request."""
        return f"{self.base}/{BRIDGE}/response/{name}"

    @property
    def bridge_hands(self) -> str:
        """Which hands the arbiter serves (retained JSON, see ``model.ServedHands``)."""
        return f"{self.base}/{BRIDGE}/hands"

    def bridge_lease(self, hand: str) -> str:
        """Which arbiter serves ``hand`` (``+`` for every hand; see ``model.Lease``)."""
        return f"{self.base}/{BRIDGE}/lease/{hand}"

    def bridge_arbiter(self, arbiter: str) -> str:
        """Whether the arbiter ``arbiter`` runs: ``online``, or ``offline`` (its will)."""
        return f"{self.base}/{BRIDGE}/arbiter/{arbiter}"

    def sync(self, client_id: str) -> str:
        """A client's own echo topic: a message to it comes back after the retained ones."""
        return f"{self.base}/{BRIDGE}/sync/{client_id}"

    @property
    def all_command_filters(self) -> tuple[str, str]:
        """Subscription filters covering the command topics of every hand."""
        return (f"{self.base}/+/set", f"{self.base}/+/+/set")

    def parse_command(self, topic: str) -> CommandTopic | None:
        """Tell which hand and part a command topic addresses; None if it is not one."""
        prefix = self.base + "/"
        if not topic.startswith(prefix) or not topic.endswith("/set"):
            return None
        parts = topic[len(prefix) : -len("/set")].split("/")
        hand = parts[0]
        if not _SEGMENT.match(hand) or hand == BRIDGE:
            return None
        if len(parts) == 1:
            return CommandTopic(hand, "hand")
        if len(parts) == 2:
            if parts[1] == "pose":
                return CommandTopic(hand, "pose")
            if parts[1] in _FINGER_SET:
                return CommandTopic(hand, "finger", parts[1])
        return None

    def bridge_item(self, topic: str, kind: str) -> str | None:
        """The last segment of ``<base>/bridge/<kind>/<name>`` (a hand, an arbiter), or None."""
        prefix = f"{self.base}/{BRIDGE}/{kind}/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if _SEGMENT.match(name) else None

    def hand_of(self, topic: str, suffix: str) -> str | None:
        """The hand named by ``<base>/<hand>/<suffix>``, or None."""
        prefix = self.base + "/"
        tail = "/" + suffix
        if not topic.startswith(prefix) or not topic.endswith(tail):
            return None
        hand = topic[len(prefix) : -len(tail)]
        if not _SEGMENT.match(hand) or hand == BRIDGE:
            return None
        return hand
