"""The exceptions hand-mqtt raises, all under one root.

```
HandMqttError
 ├── ConfigError         a configuration file, option or URL is wrong
 ├── CommandError        a command payload was rejected (carries the human sentence)
 ├── ProtocolError       a serial frame is well-formed but its content is not
 ├── LinkError           the serial port could not be opened, read or written
 │    └── HandshakeError the firmware did not answer the handshake, or is not what we drive
 ├── MqttError           the broker could not be reached or refused us
 │    └── NoAnswerError  nothing confirmed or rejected a command in time
 ├── DeviceBusyError     another device service already owns the hand
 ├── BrokerStartError    the embedded broker could not start
 ├── WebStartError       the web page's server could not start
 └── FirmwareError       building, emulating or flashing the firmware failed
```

Errors from outside libraries (paho, pyserial, amqtt, the OS) are turned into these where they
enter, in the module that wraps that library.
"""

from __future__ import annotations

__all__ = [
    "BrokerStartError",
    "CommandError",
    "ConfigError",
    "DeviceBusyError",
    "FirmwareError",
    "HandMqttError",
    "HandshakeError",
    "LinkError",
    "MqttError",
    "NoAnswerError",
    "ProtocolError",
    "WebStartError",
]


class HandMqttError(Exception):
    """The root of every error hand-mqtt raises on purpose."""


class ConfigError(HandMqttError):
    """A configuration file, option or URL is wrong."""


class CommandError(HandMqttError):
    """A command payload was rejected; ``str(error)`` is a sentence for a person.

    ``transaction`` is the request's transaction, when one could be read, so that the answer
    on the error topic can echo it.
    """

    def __init__(self, message: str, transaction: str | int | None = None) -> None:
        super().__init__(message)
        self.transaction = transaction


class ProtocolError(HandMqttError):
    """A serial frame passed its CRC but its content breaks the protocol."""


class LinkError(HandMqttError):
    """The serial port could not be opened, read or written."""


class HandshakeError(LinkError):
    """The firmware did not answer the handshake, or is not what the hand driver drives."""


class MqttError(HandMqttError):
    """The broker could not be reached, or refused the connection."""


class NoAnswerError(MqttError):
    """Nothing confirmed or rejected a command within the timeout."""


class DeviceBusyError(HandMqttError):
    """Another device service is online for the same hand."""


class BrokerStartError(HandMqttError):
    """The embedded broker could not start (port taken, bad configuration)."""


class WebStartError(HandMqttError):
    """The web page's server could not start (port taken, files missing)."""


class FirmwareError(HandMqttError):
    """Building, emulating or flashing the firmware failed."""
