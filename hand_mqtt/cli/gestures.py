"""Commands for gestures: play one, record one from the hand's desired states."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from hand_mqtt.clients.client import HandClient
from hand_mqtt.errors import ConfigError
from hand_mqtt.gestures import MAX_REPEAT, MAX_STEPS, check_name, recorded_gesture
from hand_mqtt.model import FINGERS, HandState, PoseBook

from .base import NOT_SERVED, exit_status
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
    unserved,
)
from .shutdown import StopSignals

__all__ = ["app"]

app = typer.Typer()


def _client(broker: str, ca_file: str | None, base: str, hand: str, timeout: float) -> HandClient:
    return HandClient(
        broker_url(broker, ca_file),
        topics=topics(base),
        hand=hand,
        name="cli",
        timeout=timeout,
        require_state=False,
    )


def _angles(state: HandState) -> str:
    return "  ".join(f"{f} {a}" for f, a in zip(FINGERS, state.angles, strict=True))


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("play"))
def play(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="count, wave, or a gesture from the arbiter's poses file."
        ),
    ],
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            "-n",
            metavar="N",
            min=1,
            max=MAX_REPEAT,
            help="Play it this many times.",
        ),
    ] = 1,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Return when it has finished (exit 1 if a command ended it first)."
        ),
    ] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Have the arbiter play a gesture; any later command ends it."""
    setup_logging(verbose, service=False)
    with handle_errors(), _client(broker, ca_file, base, hand, timeout) as client:
        reason = unserved(client)
        if reason is not None:
            raise fail(reason, NOT_SERVED)
        state = client.play(name, repeat=repeat, wait="finished" if wait else "accepted")
        gesture = client.gestures.get(name)
    if wait:
        typer.echo(f"{base}/{hand}: played {name}; {_angles(state)}  version {state.version}")
        return
    length = (
        f" ({len(gesture.steps)} steps, {gesture.duration_ms * repeat / 1000:g} s)"
        if gesture is not None
        else ""
    )
    typer.echo(f"{base}/{hand}: playing {name}{length}; step 1 version {state.version}")


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("record"))
def record(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Poses file (TOML) to add the gesture to; made if it does not exist.",
            dir_okay=False,
        ),
    ],
    name: Annotated[
        str,
        typer.Option("--name", metavar="NAME", help="The gesture's name.", show_default=False),
    ],
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            metavar="N",
            min=1,
            max=MAX_STEPS,
            help="Stop after this many changes.",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--for", metavar="SECONDS", min=0, help="Stop after this many seconds."),
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Record the hand's desired states, with their timing, as a gesture in FILE.

    Move the hand with any client meanwhile (the CLI, the desktop window, Home Assistant);
    Ctrl-C, --steps or --for ends the recording. Then 'hand-mqtt arbiter --poses FILE' plays
    it with 'hand-mqtt play NAME'.
    """
    setup_logging(verbose, service=False)
    with handle_errors():
        check_name(name)
        existing = _existing_text(file, name)
        states: list[tuple[float, tuple[int, ...]]] = []
        with StopSignals() as signals, _client(broker, ca_file, base, hand, timeout) as client:
            root = client.hand_topics.root
            typer.echo(f"recording {root} as {name!r}: move the hand; Ctrl-C to stop", err=True)
            started = time.monotonic()
            last = client.state.version if client.state is not None else None
            with client.changes() as changes:
                while not signals.requested.is_set():
                    now = time.monotonic()
                    if duration is not None and now - started >= duration:
                        break
                    if steps is not None and len(states) >= steps:
                        break
                    snapshot = changes.get(timeout=0.2)
                    desired = snapshot.desired if snapshot is not None else None
                    if desired is None or desired.version == last:
                        continue
                    last = desired.version
                    states.append((time.monotonic(), desired.angles))
                    at = states[-1][0] - states[0][0]
                    typer.echo(f"  {at:7.2f} s  {_angles(desired)}  {desired.pose or ''}")
            try:
                gesture = recorded_gesture(name, states, time.monotonic())
            except ConfigError as exc:  # nothing recorded: a failure, not a usage error
                raise fail(str(exc), 1) from None
        _write(
            file,
            existing,
            gesture.to_toml(f"recorded from {root} with hand-mqtt record"),
        )
    typer.echo(
        f"saved {name!r}: {len(gesture.steps)} steps, {gesture.duration_ms / 1000:g} s, in "
        f"{file}\nplay it: hand-mqtt arbiter --poses {file}, then hand-mqtt play {name}"
    )


def _existing_text(file: Path, name: str) -> str:
    """The file's text, checked: a poses file without a pose or gesture called ``name``."""
    if not file.exists():
        if not file.parent.is_dir():
            raise ConfigError(f"cannot write {file}: {file.parent} is not a folder")
        return ""
    book = PoseBook.from_file(file)
    if name in book or name in book.gestures:
        raise ConfigError(
            f"{file} already has a pose or gesture called {name!r}: choose another --name"
        )
    return file.read_text(encoding="utf-8")


def _write(file: Path, existing: str, gesture: str) -> None:
    """Add ``gesture`` to the file, making sure the result still reads as a poses file."""
    text = (existing.rstrip("\n") + "\n\n" if existing.strip() else "") + gesture
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        PoseBook.from_file(Path(temporary))
        os.replace(temporary, file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
