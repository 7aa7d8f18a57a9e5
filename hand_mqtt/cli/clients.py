"""Commands for people: the desktop window, the web page, the 3D picture and Home Assistant
discovery."""

from __future__ import annotations

import enum
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from hand_mqtt.clients.client import HandClient
from hand_mqtt.clients.homeassistant import DEFAULT_PREFIX, Discovery
from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS, PoseBook
from hand_mqtt.mqtt import MqttClient
from hand_mqtt.topics import validate_hand_name

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
        help="Home Assistant's discovery prefix.",
        show_default=True,
    ),
]


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@app.command()
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


@app.command()
def web(
    broker_ws: Annotated[
        str,
        typer.Option(
            "--broker-ws",
            envvar="HAND_MQTT_BROKER_WS",
            help="The broker's MQTT-over-websockets URL as browsers reach it "
            "(a host of 0.0.0.0: the host the page was loaded from).",
            show_default=True,
        ),
    ] = "ws://127.0.0.1:9001/",
    host: Annotated[
        str, typer.Option(help="Address to serve the page on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to serve the page on (0: any free port).", min=0, max=65535)
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


@app.command()
def plot(
    pose: Annotated[
        str | None, typer.Option("--pose", help="Draw a named pose instead of the live state.")
    ] = None,
    angles: Annotated[
        tuple[int, int, int, int, int] | None,
        typer.Option(
            "--angles",
            help=f"Draw these five angles ({' '.join(FINGERS)}), 0-180.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a PNG here instead of opening a window."),
    ] = None,
    width: Annotated[int, typer.Option(help="Picture width in pixels.", min=100)] = 800,
    height: Annotated[int, typer.Option(help="Picture height in pixels.", min=100)] = 700,
    poses: Annotated[
        Path | None,
        typer.Option(
            "--poses",
            envvar="HAND_MQTT_POSES",
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
    with handle_errors():
        drawing.require_matplotlib()
        if out is None and not _has_display():
            raise ConfigError("no display to open a window on: give --out FILE.png")
        reported: tuple[int | None, ...] | None = None
        if angles is not None:
            bad = [f for f, a in zip(FINGERS, angles, strict=True) if not 0 <= a <= 180]
            if bad:
                raise fail(f"{', '.join(bad)}: an angle is a whole number from 0 to 180", 2)
            drawn: tuple[int, ...] = tuple(angles)
            title = "angles " + " ".join(map(str, angles))
        elif pose is not None:
            book = PoseBook.from_file(poses) if poses is not None else PoseBook()
            if pose not in book:
                raise fail(f"unknown pose {pose!r}; known poses: {', '.join(book)}", 2)
            drawn = book[pose]
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
                client.connect(timeout)
                snap = client.snapshot()
            finally:
                client.close()
            if snap.desired is None:
                raise ConfigError(
                    f"no state for {base}/{hand} on the broker (is 'hand-mqtt arbiter' running?)"
                )
            drawn = snap.desired.angles
            reported = snap.reported.angles if snap.reported else None
            title = f"{base}/{hand}" + (f": {snap.desired.pose}" if snap.desired.pose else "")
        if out is not None:
            drawing.save_png(drawn, out, title=title, reported=reported, size=(width, height))
            typer.echo(str(out))
            return
        _show_window(drawn, reported, title, (width, height))


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
        raise ConfigError(f"cannot open a window ({exc}): give --out FILE.png") from None
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


@app.command()
def homeassistant(
    action: Annotated[
        HomeAssistantAction,
        typer.Argument(
            help="show: print the discovery configs as JSON; remove: delete them from the "
            "broker so Home Assistant forgets the hands."
        ),
    ],
    hands: Annotated[
        list[str] | None,
        typer.Option("--hand", envvar="HAND_MQTT_HAND", help="Hand (repeatable)."),
    ] = None,
    prefix: DiscoveryPrefixOption = DEFAULT_PREFIX,
    poses: Annotated[
        Path | None,
        typer.Option(
            "--poses",
            envvar="HAND_MQTT_POSES",
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
            client.connect(timeout)
            removed = discovery.remove(wait=timeout)
        finally:
            client.stop()
    for topic in removed:
        typer.echo(f"removed {topic}")
