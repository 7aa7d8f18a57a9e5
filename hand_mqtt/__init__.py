"""hand-mqtt: drive a servo-actuated robotic hand over MQTT.

The public surface is listed in ``__all__``; everything else is an implementation detail.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import typing

from hand_mqtt.clients.client import Changes, HandClient, Snapshot
from hand_mqtt.commands import Command, FingerChange, parse_command
from hand_mqtt.errors import (
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
    WebStartError,
)
from hand_mqtt.gestures import Gesture, GestureStep
from hand_mqtt.hardware.calibration import Calibration, FingerCalibration
from hand_mqtt.hardware.driver import HandDriver, HandInfo
from hand_mqtt.hardware.framed import FramedDriver
from hand_mqtt.hardware.link import SerialLink
from hand_mqtt.model import (
    BUILTIN_POSES,
    DEFAULT_PINS,
    FINGERS,
    Angles,
    BridgeResponse,
    CalibrationInfo,
    ErrorReport,
    FirmwareInfo,
    GestureProgress,
    HandState,
    Lease,
    PoseBook,
    Reported,
    ServedHands,
)
from hand_mqtt.mqtt import BrokerUrl, Message, MqttClient, Will
from hand_mqtt.services.arbiter import Arbiter
from hand_mqtt.services.device import DeviceService, DeviceSettings
from hand_mqtt.topics import HandTopics, Topics

if typing.TYPE_CHECKING:
    from hand_mqtt.broker.embedded import EmbeddedBroker
    from hand_mqtt.clients.aio import AsyncChanges, AsyncHandClient
    from hand_mqtt.clients.web import WebServer
    from hand_mqtt.devtools.simulated_port import PtyHand, SocketHand
    from hand_mqtt.devtools.simulator import SimulatedFirmware
    from hand_mqtt.services.stack import Stack, StackSettings

# Loaded on first use: a service process that needs none of them (the arbiter, the device
# service) then carries neither asyncio and amqtt nor the simulator.
_LAZY = {
    "AsyncChanges": ".clients.aio",
    "AsyncHandClient": ".clients.aio",
    "EmbeddedBroker": ".broker.embedded",
    "PtyHand": ".devtools.simulated_port",
    "SimulatedFirmware": ".devtools.simulator",
    "SocketHand": ".devtools.simulated_port",
    "Stack": ".services.stack",
    "StackSettings": ".services.stack",
    "WebServer": ".clients.web",
}

__version__ = importlib.metadata.version("hand-mqtt")

__all__ = [
    "BUILTIN_POSES",
    "DEFAULT_PINS",
    "FINGERS",
    "Angles",
    "Arbiter",
    "AsyncChanges",
    "AsyncHandClient",
    "BridgeResponse",
    "BrokerStartError",
    "BrokerUrl",
    "Calibration",
    "CalibrationInfo",
    "Changes",
    "Command",
    "CommandError",
    "ConfigError",
    "DeviceBusyError",
    "DeviceService",
    "DeviceSettings",
    "EmbeddedBroker",
    "ErrorReport",
    "FingerCalibration",
    "FingerChange",
    "FirmwareError",
    "FirmwareInfo",
    "FramedDriver",
    "Gesture",
    "GestureProgress",
    "GestureStep",
    "HandClient",
    "HandDriver",
    "HandInfo",
    "HandMqttError",
    "HandState",
    "HandTopics",
    "HandshakeError",
    "Lease",
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
    "ServedHands",
    "SimulatedFirmware",
    "Snapshot",
    "SocketHand",
    "Stack",
    "StackSettings",
    "Topics",
    "WebServer",
    "WebStartError",
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
