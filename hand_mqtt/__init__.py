"""hand-mqtt: drive a servo-actuated robotic hand over MQTT.

The public surface is listed in ``__all__``; everything else is an implementation detail.
"""

from __future__ import annotations

import importlib
import typing

from .arbiter import Arbiter
from .client import HandClient, Snapshot
from .commands import Command, FingerChange, parse_command
from .device import DeviceService, DeviceSettings
from .errors import (
    BrokerStartError,
    CommandError,
    ConfigError,
    DeviceBusyError,
    FirmwareError,
    HandMqttError,
    HandshakeError,
    LinkError,
    MqttError,
    NoAnswerError,
    ProtocolError,
)
from .link import SerialLink
from .model import (
    BUILTIN_POSES,
    DEFAULT_PINS,
    FINGERS,
    Angles,
    ErrorReport,
    FirmwareInfo,
    HandState,
    PoseBook,
    Reported,
)
from .mqtt import BrokerUrl, Message, MqttClient, Will
from .topics import HandTopics, Topics

if typing.TYPE_CHECKING:
    from .broker import EmbeddedBroker
    from .simulator import PtyHand, SimulatedFirmware, SocketHand
    from .stack import Stack, StackSettings

# Loaded on first use: a service process that needs none of them (the arbiter, the device
# service) then carries neither asyncio and amqtt nor the simulator.
_LAZY = {
    "EmbeddedBroker": ".broker",
    "PtyHand": ".simulator",
    "SimulatedFirmware": ".simulator",
    "SocketHand": ".simulator",
    "Stack": ".stack",
    "StackSettings": ".stack",
}

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_POSES",
    "DEFAULT_PINS",
    "FINGERS",
    "Angles",
    "Arbiter",
    "BrokerStartError",
    "BrokerUrl",
    "Command",
    "CommandError",
    "ConfigError",
    "DeviceBusyError",
    "DeviceService",
    "DeviceSettings",
    "EmbeddedBroker",
    "ErrorReport",
    "FingerChange",
    "FirmwareError",
    "FirmwareInfo",
    "HandClient",
    "HandMqttError",
    "HandState",
    "HandTopics",
    "HandshakeError",
    "LinkError",
    "Message",
    "MqttClient",
    "MqttError",
    "NoAnswerError",
    "PoseBook",
    "ProtocolError",
    "PtyHand",
    "Reported",
    "SerialLink",
    "SimulatedFirmware",
    "Snapshot",
    "SocketHand",
    "Stack",
    "StackSettings",
    "Topics",
    "Will",
    "__version__",
    "parse_command",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
