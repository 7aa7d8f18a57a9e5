"""Options shared by every command, logging set-up, and turning errors into exit codes."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from hand_mqtt.clients.client import HandClient
from hand_mqtt.errors import ConfigError, HandMqttError, MqttError
from hand_mqtt.model import DEFAULT_PINS, FINGERS
from hand_mqtt.mqtt import DEFAULT_BROKER, BrokerUrl
from hand_mqtt.topics import ONLINE_TEXT, Topics

from .base import BROKER_UNREACHABLE, invocation

T = TypeVar("T")

BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        envvar="HAND_MQTT_BROKER",
        metavar="URL",
        help="Broker URL: mqtt://[user:password@]host[:port], mqtts://... for TLS, "
        "ws://... or wss://... for websockets; a comma-separated list names brokers to fail "
        "over to, in order (a cluster's nodes).",
        show_default=True,
    ),
]
CaFileOption = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        envvar="HAND_MQTT_CA_FILE",
        metavar="FILE",
        help="CA certificate that signed the broker's (implies TLS).",
    ),
]
BaseOption = Annotated[
    str,
    typer.Option(
        "--base",
        envvar="HAND_MQTT_BASE",
        metavar="TOPIC",
        help="Base topic.",
        show_default=True,
    ),
]
HandOption = Annotated[
    str,
    typer.Option(
        "--hand",
        envvar="HAND_MQTT_HAND",
        metavar="NAME",
        help="Hand name.",
        show_default=True,
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="-v: more log output and the traceback of an error; -vv: debug output.",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        "-t",
        metavar="SECONDS",
        help="Seconds to wait for the broker and the arbiter.",
        min=0.1,
    ),
]

FirmataOption = Annotated[
    bool,
    typer.Option(
        "--firmata",
        envvar="HAND_MQTT_FIRMATA",
        help="The board runs StandardFirmata (57600 baud) instead of the bundled firmware.",
    ),
]
PinsOption = Annotated[
    str,
    typer.Option(
        "--pins",
        envvar="HAND_MQTT_PINS",
        metavar="PINS",
        help="With --firmata: the board's pin for each finger, index to thumb.",
    ),
]
RelaxOnExitOption = Annotated[
    bool,
    typer.Option(
        "--relax-on-exit",
        help="Relax every finger when the device service stops cleanly.",
    ),
]


def parse_pins(text: str) -> tuple[int, ...]:
    """``"11,10,9,6,5"`` as five different pin numbers (ConfigError otherwise)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != len(FINGERS) or not all(part.isdigit() for part in parts):
        raise ConfigError(
            f"--pins takes {len(FINGERS)} pin numbers, {', '.join(FINGERS)}, like "
            f"{','.join(map(str, DEFAULT_PINS))}; not {text[:40]!r}"
        )
    pins = tuple(int(part) for part in parts)
    if len(set(pins)) != len(pins):
        raise ConfigError(f"--pins names a pin twice: {text[:40]}")
    return pins


DEFAULT_BASE = "hand"
DEFAULT_HAND = "hand1"
__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_BROKER",
    "DEFAULT_HAND",
    "broker_url",
    "cell",
    "fail",
    "handle_errors",
    "parse_pins",
    "setup_logging",
    "topics",
    "unserved",
]


# How many -v the command was given (set by setup_logging).
_verbose = [0]


def setup_logging(verbose: int, *, service: bool) -> None:
    """Services log INFO by default, one-shot commands only warnings."""
    _verbose[0] = verbose
    level = logging.INFO if service else logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("hand_mqtt").setLevel(level)


def cell(value: int | None) -> str:
    """An angle or a version for a table: ``-`` when not known yet."""
    return "-" if value is None else str(value)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextmanager
def handle_errors(*, broker_code: int = BROKER_UNREACHABLE) -> Iterator[None]:
    """Turn the package's errors into one sentence and an exit code (see ``base.EXIT_CODES``).

    A wrong option or file (:class:`ConfigError`) exits 2, like a usage error; a broker that
    cannot be reached exits with ``broker_code``; anything else with 1. The traceback is
    printed only with ``-v``.
    """
    try:
        yield
    except MqttError as exc:
        _show_traceback(exc)
        message = str(exc)
        if isinstance(exc.__cause__, ConnectionRefusedError):
            message += (
                f"; start the system with '{invocation()} up' (or 'make run' in a checkout), "
                "or give the broker's address with --broker"
            )
        raise fail(message, broker_code) from None
    except ConfigError as exc:
        _show_traceback(exc)
        raise fail(str(exc), 2) from None
    except HandMqttError as exc:
        _show_traceback(exc)
        raise fail(str(exc)) from None


def _show_traceback(exc: BaseException) -> None:
    """With -v, the whole story of an error (with the cause that led to it) on stderr."""
    if _verbose[0] > 0:
        traceback.print_exception(exc, file=sys.stderr)


def broker_url(url: str, ca_file: str | None = None) -> BrokerUrl:
    """The broker URL, with TLS client settings and a password file from the environment.

    ``HAND_MQTT_CERT_FILE`` / ``HAND_MQTT_KEY_FILE``: a client certificate;
    ``HAND_MQTT_INSECURE=1``: do not verify the broker's certificate (tests only);
    ``HAND_MQTT_PASSWORD_FILE``: read the password from a file (a Docker secret) instead of
    the URL.
    """
    parsed = BrokerUrl.parse(
        url,
        ca_file=ca_file,
        cert_file=os.environ.get("HAND_MQTT_CERT_FILE") or None,
        key_file=os.environ.get("HAND_MQTT_KEY_FILE") or None,
        insecure=os.environ.get("HAND_MQTT_INSECURE", "") in ("1", "true", "yes"),
    )
    password_file = os.environ.get("HAND_MQTT_PASSWORD_FILE")
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the password file {password_file}: {exc.strerror}"
            ) from None
        # The same login on every broker of a list.
        parsed = dataclasses.replace(
            parsed,
            password=password,
            fallbacks=tuple(dataclasses.replace(f, password=password) for f in parsed.fallbacks),
        )
    return parsed


def topics(base: str) -> Topics:
    return Topics(base)


def unserved(client: HandClient) -> str | None:
    """Why no arbiter will answer for the client's hand, with the way out; None if one will."""
    reason = client.unserved()
    if reason is not None and client.snapshot().arbiter != ONLINE_TEXT:
        reason += f"; start one with '{invocation()} up' or '{invocation()} arbiter'"
    elif reason is not None:
        reason += " (choose that hand with --hand, or start an arbiter for this one)"
    return reason
