"""Home Assistant MQTT discovery: each hand appears as one device with nine entities.

Attached to the arbiter's :class:`~hand_mqtt.mqtt.MqttClient`, a :class:`Discovery` publishes
retained configs under ``<prefix>/<component>/<object_id>/config``:

- one ``number`` per finger (0-180 °, slider), commanding ``<base>/<hand>/<finger>/set`` and
  following the retained ``<base>/<hand>/<finger>``;
- one ``select`` of the poses and gestures, commanding ``<base>/<hand>/pose/set`` (where a
  gesture's name plays it) and following ``<base>/<hand>/state``: the gesture while one plays,
  else the ``pose`` (``None``, i.e. unknown, when the angles match no pose);
- three ``button`` entities on ``<base>/<hand>/set``: Relax (``{"relax": true}``), Stop (the
  emergency stop, ``{"lock": true}``) and Unlock (``{"lock": false}``).

The numbers and the select are available only when the arbiter (``<base>/bridge/state``), the
device service (``<base>/<hand>/availability``) and its serial link (``link`` in
``<base>/<hand>/reported``) are all up. The buttons need only the arbiter: a stop must be
possible while the device is away (it is kept, and the hand stays limp when the device
returns). The configs are published on every (re)connect and again whenever Home Assistant
announces itself with ``online`` on ``<prefix>/status``. The state topics are not re-published
then: they are retained, so Home Assistant receives them when it subscribes, and only the
arbiter writes them (a copy re-sent from here could overwrite a newer state).

:meth:`Discovery.remove` publishes empty retained payloads on every config topic, which makes
Home Assistant delete the entities and the device.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from hand_mqtt import __version__
from hand_mqtt.model import FINGERS, PoseBook
from hand_mqtt.mqtt import Message, MqttClient
from hand_mqtt.topics import DISCOVERY_PREFIX, OFFLINE, ONLINE, HandTopics, Topics

__all__ = ["DEFAULT_PREFIX", "Discovery", "discovery_configs", "object_id", "select_options"]

logger = logging.getLogger("hand_mqtt")

DEFAULT_PREFIX: Final = DISCOVERY_PREFIX
HA_BIRTH: Final = b"online"
"""What Home Assistant itself publishes on ``<prefix>/status`` when it starts."""

LINK_TEMPLATE: Final = "{{ 'online' if value_json.link == 'up' else 'offline' }}"
POSE_TEMPLATE: Final = (
    "{{ value_json.gesture.name if value_json.gesture "
    "else (value_json.pose if value_json.pose else 'None') }}"
)
ANGLE_COMMAND_TEMPLATE: Final = "{{ value | int }}"


def object_id(topics: HandTopics, entity: str) -> str:
    """``<base>_<hand>_<entity>`` with any ``/`` of the base turned into ``_``."""
    return f"{topics.base.replace('/', '_')}_{topics.hand}_{entity}"


BUTTONS: Final = (
    ("relax", "Relax", {"relax": True}),
    ("stop", "Stop", {"lock": True}),
    ("unlock", "Unlock", {"lock": False}),
)
"""The buttons: object id suffix, name, and the command they publish on ``<base>/<hand>/set``."""


def _arbiter_availability(topics: Topics) -> dict[str, str]:
    return {
        "topic": topics.bridge_state,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
    }


def _availability(topics: Topics, hand: HandTopics) -> list[dict[str, str]]:
    return [
        _arbiter_availability(topics),
        {
            "topic": hand.availability,
            "payload_available": ONLINE.decode(),
            "payload_not_available": OFFLINE.decode(),
        },
        {
            "topic": hand.reported,
            "value_template": LINK_TEMPLATE,
            "payload_available": ONLINE.decode(),
            "payload_not_available": OFFLINE.decode(),
        },
    ]


def select_options(poses: Iterable[str]) -> list[str]:
    """The pose select's options: the poses, then (from a :class:`PoseBook`) the gestures."""
    names = list(poses)
    if isinstance(poses, PoseBook):
        names += [name for name in poses.gestures if name not in names]
    return names


def discovery_configs(
    topics: Topics,
    hand: str,
    poses: Iterable[str],
    *,
    prefix: str = DEFAULT_PREFIX,
) -> dict[str, dict[str, Any]]:
    """Every discovery config of one hand, keyed by its config topic (pure, no I/O)."""
    t = topics.hand(hand)
    device_id = f"hand_mqtt_{object_id(t, 'hand')}"
    device = {
        "identifiers": [device_id],
        "name": f"Robotic hand {t.root}",
        "manufacturer": "hand-mqtt",
        "model": "5-servo robotic hand",
        "sw_version": __version__,
    }
    common: dict[str, Any] = {
        "availability": _availability(topics, t),
        "availability_mode": "all",
        "device": device,
        "origin": {"name": "hand-mqtt", "sw_version": __version__},
        "qos": 1,
    }
    configs: dict[str, dict[str, Any]] = {}
    for finger in FINGERS:
        oid = object_id(t, finger)
        configs[f"{prefix}/number/{oid}/config"] = {
            "name": finger.capitalize(),
            "unique_id": f"hand_mqtt_{oid}",
            "default_entity_id": f"number.{oid}",
            "command_topic": t.finger_set(finger),
            "command_template": ANGLE_COMMAND_TEMPLATE,
            "state_topic": t.finger(finger),
            "min": 0,
            "max": 180,
            "step": 1,
            "mode": "slider",
            "unit_of_measurement": "°",
            **common,
        }
    oid = object_id(t, "pose")
    configs[f"{prefix}/select/{oid}/config"] = {
        "name": "Pose",
        "unique_id": f"hand_mqtt_{oid}",
        "default_entity_id": f"select.{oid}",
        "command_topic": t.pose_set,
        "state_topic": t.state,
        "value_template": POSE_TEMPLATE,
        "options": select_options(poses),
        **common,
    }
    for suffix, name, command in BUTTONS:
        oid = object_id(t, suffix)
        configs[f"{prefix}/button/{oid}/config"] = {
            "name": name,
            "unique_id": f"hand_mqtt_{oid}",
            "default_entity_id": f"button.{oid}",
            "command_topic": t.set,
            "payload_press": json.dumps(command),
            **common,
            "availability": [_arbiter_availability(topics)],
        }
    return configs


HandsSource = Sequence[str] | Callable[[], Iterable[str]]


class Discovery:
    """Publishes (and removes) the Home Assistant discovery configs of some hands.

    ``hands`` is a list, or a callable returning the hands to announce now (for an arbiter
    serving every hand); call :meth:`refresh` to announce hands that appeared since.
    """

    def __init__(
        self,
        client: MqttClient,
        *,
        topics: Topics | None = None,
        hands: HandsSource = ("hand1",),
        poses: Iterable[str] | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.client = client
        self.topics = topics or Topics()
        self.prefix = prefix.rstrip("/")
        self.poses = select_options(poses if poses is not None else PoseBook())
        self._hands = hands
        self._announced: set[str] = set()
        self._lock = threading.Lock()
        self._started = False
        self.published = 0
        """How many times the whole set of configs was published."""

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def hands(self) -> list[str]:
        """The hands to announce, checked and without duplicates."""
        found = self._hands() if callable(self._hands) else self._hands
        return sorted({self.topics.hand(hand).hand for hand in found})

    def configs(self) -> dict[str, dict[str, Any]]:
        """Every config this object publishes, keyed by topic."""
        configs: dict[str, dict[str, Any]] = {}
        for hand in self.hands():
            configs.update(discovery_configs(self.topics, hand, self.poses, prefix=self.prefix))
        return configs

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Follow Home Assistant's status and publish on every (re)connect."""
        if self._started:
            return
        self._started = True
        self.client.subscribe(self.status_topic, self._on_status)
        self.client.on_connect(self._on_connect)
        if self.client.connected:
            self.publish()

    def stop(self) -> None:
        """Stop following Home Assistant; the retained configs stay (see :meth:`remove`)."""
        if self._started:
            self._started = False
            self.client.unsubscribe(self.status_topic)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, *, wait: float | None = None) -> None:
        """Publish every config, retained."""
        with self._lock:
            hands = self.hands()
            for hand in hands:
                self._publish_hand(hand, wait)
            self._announced = set(hands)
            self.published += 1
        logger.info(
            "homeassistant: announced %s under %s/", ", ".join(hands) or "no hand", self.prefix
        )

    def refresh(self) -> None:
        """Announce hands that appeared since the last publish (for a callable ``hands``)."""
        if not self._started or not self.client.connected:
            return
        try:
            hands = self.hands()
        except RuntimeError:  # the source changed while we read it; next time
            return
        with self._lock:
            for hand in hands:
                if hand not in self._announced:
                    self._publish_hand(hand, None)
                    self._announced.add(hand)
                    logger.info("homeassistant: announced %s", hand)

    def remove(self, *, wait: float | None = 5.0) -> list[str]:
        """Publish an empty retained payload on every config topic; returns the topics."""
        topics = list(self.configs())
        for topic in topics:
            self.client.publish(topic, b"", retain=True, qos=1, wait=wait)
        with self._lock:
            self._announced.clear()
        logger.info("homeassistant: removed %d configs under %s/", len(topics), self.prefix)
        return topics

    def _publish_hand(self, hand: str, wait: float | None) -> None:
        configs = discovery_configs(self.topics, hand, self.poses, prefix=self.prefix)
        for topic, config in configs.items():
            self.client.publish(topic, json.dumps(config), retain=True, qos=1, wait=wait)

    # -- handlers (network thread) ---------------------------------------------------------

    def _on_connect(self) -> None:
        if self._started:
            self.publish()

    def _on_status(self, message: Message) -> None:
        if message.payload.strip() == HA_BIRTH and self._started:
            logger.info("homeassistant: Home Assistant is online; announcing again")
            self.publish()
