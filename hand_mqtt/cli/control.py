"""Commands that drive a hand and show its state: set, nudge, pose, angles, relax, stop,
unlock, state, watch."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Annotated

import typer

from hand_mqtt.clients.client import HandClient, Snapshot
from hand_mqtt.model import FINGERS, HandState

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
    cell,
    fail,
    handle_errors,
    setup_logging,
    topics,
)
from .shutdown import StopSignals

app = typer.Typer()

FingerArgument = Annotated[
    str, typer.Argument(help=f"One of: {', '.join(FINGERS)}.", show_default=False)
]
DurationOption = Annotated[
    float | None,
    typer.Option(
        "--duration",
        help="Seconds the move takes: every finger that moves arrives at the same time.",
        min=0,
        max=60,
    ),
]


def _timed(command: dict[str, object], duration: float | None) -> dict[str, object]:
    return command if duration is None else {**command, "duration_ms": round(duration * 1000)}


def _client(broker: str, ca_file: str | None, base: str, hand: str) -> HandClient:
    return HandClient(
        broker_url(broker, ca_file), topics=topics(base), hand=hand, require_state=False
    )


def _describe(state: HandState) -> str:
    angles = "  ".join(f"{f} {a}" for f, a in zip(FINGERS, state.angles, strict=True))
    extra = ""
    if state.relaxed:
        extra += f"  relaxed {','.join(state.relaxed)}"
    if state.locked:
        extra += "  LOCKED"
    return f"{angles}  pose {state.pose or '-'}  version {state.version}{extra}"


def _run(
    broker: str,
    ca_file: str | None,
    base: str,
    hand: str,
    timeout: float,
    verbose: int,
    command: dict[str, object],
) -> None:
    setup_logging(verbose, service=False)
    with handle_errors():
        client = _client(broker, ca_file, base, hand)
        try:
            client.connect(timeout)
            state = client.send(command, timeout=timeout)
        finally:
            client.close()
    typer.echo(f"{base}/{hand}: {_describe(state)}")


@app.command("set")
def set_finger(
    finger: FingerArgument,
    angle: Annotated[int, typer.Argument(help="0 (contracted) to 180 (extended).")],
    duration: DurationOption = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Set one finger to an angle."""
    if finger not in FINGERS:
        raise fail(f"unknown finger {finger!r}; fingers are {', '.join(FINGERS)}", 2)
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({finger: angle}, duration))


@app.command(context_settings={"ignore_unknown_options": True})
def nudge(
    finger: FingerArgument,
    delta: Annotated[
        str, typer.Argument(help="Degrees to add, e.g. 15, +15 or -15 (clamped to 0-180).")
    ],
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Move one finger by a number of degrees, clamped to 0-180."""
    if finger not in FINGERS:
        raise fail(f"unknown finger {finger!r}; fingers are {', '.join(FINGERS)}", 2)
    digits = delta[1:] if delta[:1] in ("+", "-") else delta
    if not (digits.isascii() and digits.isdigit()):
        raise fail(f"delta {delta!r} is not a whole number of degrees such as 15 or -15", 2)
    _run(broker, ca_file, base, hand, timeout, verbose, {finger: {"delta": int(delta)}})


@app.command()
def pose(
    name: Annotated[str, typer.Argument(help="open, fist, peace, rockstar, okay, point, phone…")],
    duration: DurationOption = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Put the hand in a named pose."""
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({"pose": name}, duration))


@app.command()
def angles(
    values: Annotated[
        list[str],
        typer.Argument(
            help="Five values for index middle ring pinky thumb: 0-180, or - to leave one.",
            show_default=False,
        ),
    ],
    duration: DurationOption = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Set all five fingers at once (a '-' leaves a finger as it is)."""
    if len(values) != len(FINGERS):
        raise fail(f"give five values ({' '.join(FINGERS)}), got {len(values)}", 2)
    parsed: list[int | None] = []
    bad: list[str] = []
    for finger, value in zip(FINGERS, values, strict=True):
        if value == "-":
            parsed.append(None)
        elif value.isdigit() and int(value) <= 180:
            parsed.append(int(value))
        else:
            bad.append(f"{finger}: {value!r} is not an angle from 0 to 180 or '-'")
    if bad:
        raise fail("; ".join(bad), 2)
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({"angles": parsed}, duration))


@app.command()
def relax(
    fingers: Annotated[
        list[str] | None,
        typer.Argument(help="Fingers to relax (default: all five).", show_default=False),
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Stop driving fingers (the servos go limp) until a command moves them."""
    unknown = [f for f in fingers or [] if f not in FINGERS]
    if unknown:
        raise fail(f"unknown finger {unknown[0]!r}; fingers are {', '.join(FINGERS)}", 2)
    command: dict[str, object] = {"relax": list(dict.fromkeys(fingers)) if fingers else True}
    _run(broker, ca_file, base, hand, timeout, verbose, command)


@app.command()
def stop(
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Emergency stop: relax every finger and refuse every motion until `unlock`."""
    _run(broker, ca_file, base, hand, timeout, verbose, {"lock": True})


@app.command()
def unlock(
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Undo `stop`: commands move the hand again (the fingers stay relaxed until then)."""
    _run(broker, ca_file, base, hand, timeout, verbose, {"lock": False})


def _table(base: str, hand: str, snap: Snapshot) -> str:
    reported = snap.reported
    link = reported.link if reported else "unknown"
    firmware = f", firmware {reported.firmware.version}" if reported and reported.firmware else ""
    lines = [
        f"{base}/{hand}  arbiter: {snap.arbiter or 'unknown'}  "
        f"device: {snap.device or 'unknown'} (link {link}{firmware})",
        f"{'finger':<8}{'desired':>9}{'reported':>10}",
    ]
    for i, finger in enumerate(FINGERS):
        want = snap.desired.angles[i] if snap.desired else None
        have = reported.angles[i] if reported else None
        mark = "" if want is None or have is None or want == have else "  *"
        lines.append(f"{finger:<8}{cell(want):>9}{cell(have):>10}{mark}")
    pose_name = snap.desired.pose if snap.desired else None
    version = snap.desired.version if snap.desired else None
    reported_version = reported.version if reported else None
    lines.append(
        f"pose {pose_name or '-'}  version {cell(version)} (reported {cell(reported_version)})"
        + ("  failsafe!" if reported and reported.failsafe else "")
    )
    return "\n".join(lines)


@app.command()
def state(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Show desired and reported angles and who is online."""
    setup_logging(verbose, service=False)
    with handle_errors():
        client = _client(broker, ca_file, base, hand)
        try:
            client.connect(timeout)
            snap = client.snapshot()
        finally:
            client.close()
    if as_json:
        typer.echo(json.dumps(snap.as_dict(), indent=2))
    else:
        typer.echo(_table(base, hand, snap))
    if snap.desired is None:
        raise typer.Exit(3)


@app.command()
def watch(
    duration: Annotated[
        float | None, typer.Option("--for", help="Stop after this many seconds.", min=0)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    verbose: VerboseOption = 0,
) -> None:
    """Print the hand's state every time it changes, until Ctrl-C."""
    setup_logging(verbose, service=False)
    lock = threading.Lock()
    last: list[str] = []

    def show(snap: Snapshot) -> None:
        line = json.dumps(snap.as_dict()) if as_json else _line(snap)
        with lock:
            if last and last[-1] == line:
                return
            last.append(line)
            del last[:-1]
            typer.echo(line)
            sys.stdout.flush()

    with handle_errors(), StopSignals() as signals:
        client = _client(broker, ca_file, base, hand)
        client.add_listener(show)
        try:
            client.connect(5.0)
            show(client.snapshot())
            deadline = None if duration is None else time.monotonic() + duration
            signals.wait(lambda: deadline is None or time.monotonic() < deadline)
        finally:
            client.close()


def _line(snap: Snapshot) -> str:
    desired = " ".join(f"{a:>3}" for a in snap.desired.angles) if snap.desired else "  -"
    reported = " ".join(cell(a).rjust(3) for a in snap.reported.angles) if snap.reported else "  -"
    pose_name = (snap.desired.pose if snap.desired else None) or "-"
    link = snap.reported.link if snap.reported else "?"
    return (
        f"{time.strftime('%H:%M:%S')}  desired [{desired}] {pose_name:<9} "
        f"reported [{reported}] link {link}  arbiter {snap.arbiter or '?'}  "
        f"device {snap.device or '?'}"
    )
