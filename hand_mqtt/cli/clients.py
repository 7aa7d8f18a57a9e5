"""Commands for people: the desktop window, the web page, the 3D picture and Home Assistant
discovery."""

from __future__ import annotations

import enum
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from hand_mqtt.clients.client import HandClient
from hand_mqtt.clients.homeassistant import DEFAULT_PREFIX, Discovery
from hand_mqtt.errors import HandMqttError
from hand_mqtt.model import FINGERS, Angles, PoseBook, angles_of, is_angle
from hand_mqtt.mqtt import MqttClient
from hand_mqtt.topics import validate_hand_name

from .base import exit_status
from .common import (
    DEFAULT_BASE,
    DEFAULT_BROKER,
    DEFAULT_HAND,
    BaseOption,
    BrokerOption,
    CaFileOption,
    HandOption,
    TimeoutOption,
    VerboseOption,
    broker_url,
    fail,
    handle_errors,
    setup_logging,
    topics,
)
from .shutdown import StopSignals

__all__ = ["DiscoveryPrefixOption", "app"]

app = typer.Typer()

DiscoveryPrefixOption = Annotated[
    str,
    typer.Option(
        "--discovery-prefix",
        envvar="HAND_MQTT_DISCOVERY_PREFIX",
        metavar="TOPIC",
        help="Home Assistant's discovery prefix.",
        show_default=True,
    ),
]


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@app.command(rich_help_panel="Look at the hand", epilog=exit_status("gui"))
def gui(
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Open the desktop controller window for one hand."""
    setup_logging(verbose, service=False)
    if not _has_display():
        raise fail("no display to open a window on (DISPLAY is not set)")
    import tkinter as tk

    from hand_mqtt.clients.gui import HandWindow

    with handle_errors():
        client = HandClient(
            broker_url(broker, ca_file),
            topics=topics(base),
            hand=hand,
            name="gui",
            require_state=False,
        )
        client.connect(timeout)
    try:
        try:
            root = tk.Tk()
        except tk.TclError as exc:
            raise fail(f"cannot open a window: {exc}") from None
        window = HandWindow(root, client, command_timeout=timeout)
        root.protocol("WM_DELETE_WINDOW", root.quit)
        previous = signal.signal(signal.SIGINT, lambda _s, _f: root.quit())
        try:
            root.mainloop()
        finally:
            signal.signal(signal.SIGINT, previous)
            window.close()
            root.destroy()
    finally:
        client.close()


@app.command(rich_help_panel="Look at the hand", epilog=exit_status("web"))
def web(
    broker_ws: Annotated[
        str,
        typer.Option(
            "--broker-ws",
            envvar="HAND_MQTT_BROKER_WS",
            metavar="URL",
            help="The broker's MQTT-over-websockets URL as browsers reach it "
            "(a host of 0.0.0.0: the host the page was loaded from); a comma-separated list "
            "names brokers the page fails over to, in order.",
            show_default=True,
        ),
    ] = "ws://127.0.0.1:9001/",
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS", help="Address to serve the page on (0.0.0.0: every interface)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            metavar="PORT", help="Port to serve the page on (0: any free port).", min=0, max=65535
        ),
    ] = 8080,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    verbose: VerboseOption = 0,
) -> None:
    """Serve the web page alone; browsers talk to the broker over websockets."""
    setup_logging(verbose, service=True)
    from hand_mqtt.clients.web import WebServer

    with StopSignals() as signals:
        with handle_errors():
            server = WebServer(broker_ws, host=host, port=port, base=base, hand=hand)
            server.start()
        typer.echo(f"web page on {server.url} (broker {server.broker_ws})")
        sys.stdout.flush()
        try:
            signals.wait()
        finally:
            server.stop()


@app.command(rich_help_panel="Look at the hand", epilog=exit_status("plot"))
def plot(
    pose: Annotated[
        str | None,
        typer.Option(
            "--pose",
            metavar="NAME",
            help="Draw a named pose: a built-in one, one from --poses, or one the running "
            "arbiter announces (it was given them with its own --poses).",
        ),
    ] = None,
    angles: Annotated[
        tuple[int, int, int, int, int] | None,
        typer.Option(
            "--angles",
            metavar="INDEX MIDDLE RING PINKY THUMB",
            help="Draw these five angles, 0-180.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="FILE.png", help="Write a PNG here instead of opening a window."
        ),
    ] = None,
    width: Annotated[
        int, typer.Option(metavar="PIXELS", help="Picture width in pixels.", min=100)
    ] = 800,
    height: Annotated[
        int, typer.Option(metavar="PIXELS", help="Picture height in pixels.", min=100)
    ] = 700,
    poses: Annotated[
        Path | None,
        typer.Option(
            "--poses",
            envvar="HAND_MQTT_POSES",
            metavar="FILE",
            help="TOML file with extra poses, for --pose.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Draw the hand in 3D: a pose, five angles, or (by default) its current state."""
    setup_logging(verbose, service=False)
    from hand_mqtt.clients import plot as drawing

    if pose is not None and angles is not None:
        raise fail("give --pose or --angles, not both", 2)
    if not drawing.available():
        # With this interpreter, so that it lands where hand-mqtt runs (a venv, or not).
        python = shlex.quote(sys.executable)
        raise fail(f"matplotlib is not installed: {python} -m pip install 'matplotlib>=3.7'")
    if out is None and not _has_display():
        raise fail("no display to open a window on: give --out FILE.png")
    reported: tuple[int | None, ...] | None = None
    if angles is not None:
        bad = [f for f, a in zip(FINGERS, angles, strict=True) if not is_angle(a)]
        if bad:
            raise fail(f"{', '.join(bad)}: an angle is a whole number from 0 to 180", 2)
        drawn: tuple[int, ...] = tuple(angles)
        title = "angles " + " ".join(map(str, angles))
    elif pose is not None:
        with handle_errors():
            book = PoseBook.from_file(poses) if poses is not None else PoseBook()
        drawn = (
            book[pose]
            if pose in book
            else _announced_pose(pose, book, poses is not None, broker, ca_file, base)
        )
        title = f"pose {pose}"
    else:
        client = HandClient(
            broker_url(broker, ca_file),
            topics=topics(base),
            hand=hand,
            name="plot",
            require_state=False,
        )
        try:
            with handle_errors():
                client.connect(timeout)
            snap = client.snapshot()
            reason = client.unserved()
        finally:
            client.close()
        if snap.desired is None:
            raise fail(f"no state for {base}/{hand} on the broker: {reason or 'none yet'}", 3)
        drawn = snap.desired.angles
        reported = snap.reported.angles if snap.reported else None
        title = f"{base}/{hand}" + (f": {snap.desired.pose}" if snap.desired.pose else "")
    with handle_errors():
        if out is not None:
            drawing.save_png(drawn, out, title=title, reported=reported, size=(width, height))
            typer.echo(str(out))
            return
        _show_window(drawn, reported, title, (width, height))


def _announced_pose(
    pose: str, book: PoseBook, from_file: bool, broker: str, ca_file: str | None, base: str
) -> Angles:
    """A pose the running arbiter announces on ``bridge/poses``; exits 2 naming the known."""
    client = HandClient(
        broker_url(broker, ca_file), topics=topics(base), name="plot", require_state=False
    )
    try:
        client.connect(5.0)
        announced = dict(client.poses)
    except HandMqttError as exc:
        raise fail(
            f"unknown pose {pose!r}: it is not built in{' or in --poses' if from_file else ''}"
            f", and the running arbiter's poses could not be read ({exc}); "
            "give the arbiter's poses file with --poses",
            2,
        ) from None
    finally:
        client.close()
    if pose in announced:
        try:
            return angles_of(announced[pose])
        except ValueError as exc:
            raise fail(f"the arbiter announces pose {pose!r} as {exc}", 2) from None
    known = list(book) + [name for name in announced if name not in book]
    raise fail(f"unknown pose {pose!r}; known poses: {', '.join(known)}", 2)


def _show_window(
    angles: tuple[int, ...],
    reported: tuple[int | None, ...] | None,
    title: str,
    size: tuple[int, int],
) -> None:
    import tkinter as tk

    from hand_mqtt.clients import plot as drawing

    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise fail(f"cannot open a window ({exc}): give --out FILE.png") from None
    root.title(f"hand-mqtt: {title}")
    view = drawing.LivePlot(root, size=size)
    view.widget.pack(fill="both", expand=True)
    view.show(angles, reported, title=title)
    root.protocol("WM_DELETE_WINDOW", root.quit)
    previous = signal.signal(signal.SIGINT, lambda _s, _f: root.quit())
    try:
        root.mainloop()
    finally:
        signal.signal(signal.SIGINT, previous)
        root.destroy()


class HomeAssistantAction(enum.StrEnum):
    show = "show"
    remove = "remove"


@app.command(rich_help_panel="Production and hardware", epilog=exit_status("homeassistant"))
def homeassistant(
    action: Annotated[
        HomeAssistantAction,
        typer.Argument(
            metavar="show|remove",
            help="show: print the discovery configs as JSON; remove: delete them from the "
            "broker so Home Assistant forgets the hands.",
        ),
    ],
    hands: Annotated[
        list[str] | None,
        typer.Option("--hand", envvar="HAND_MQTT_HAND", metavar="NAME", help="Hand (repeatable)."),
    ] = None,
    prefix: DiscoveryPrefixOption = DEFAULT_PREFIX,
    poses: Annotated[
        Path | None,
        typer.Option(
            "--poses",
            envvar="HAND_MQTT_POSES",
            metavar="FILE",
            help="TOML file with extra poses (the select's options).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Show or remove the Home Assistant discovery configs of some hands.

    'hand-mqtt arbiter --homeassistant' publishes them; they stay (retained) until removed.
    """
    setup_logging(verbose, service=False)
    with handle_errors():
        served = [validate_hand_name(h) for h in hands or [DEFAULT_HAND]]
        book = PoseBook.from_file(poses) if poses is not None else PoseBook()
        client = MqttClient(broker_url(broker, ca_file), name="homeassistant")
        discovery = Discovery(client, topics=topics(base), hands=served, poses=book, prefix=prefix)
        if action is HomeAssistantAction.show:
            typer.echo(json.dumps(discovery.configs(), indent=2, ensure_ascii=False))
            return
        try:
            client.connect(timeout, wait_for_broker=False)
            removed = discovery.remove(wait=timeout)
        finally:
            client.stop()
    for topic in removed:
        typer.echo(f"removed {topic}")
