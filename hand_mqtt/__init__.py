"""hand-mqtt: drive a servo-actuated robotic hand over MQTT.

The public surface is listed in ``__all__``; everything else is an implementation detail.
"""

from __future__ import annotations

from .arbiter import Arbiter
from .broker import EmbeddedBroker
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
from .simulator import PtyHand, SimulatedFirmware, SocketHand
from .stack import Stack, StackSettings
from .topics import HandTopics, Topics

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
