"""Commands that drive a hand and show its state: set, nudge, pose, angles, relax, stop,
unlock, state, watch."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from hand_mqtt.clients.client import HandClient, Snapshot
from hand_mqtt.commands import read_angle, read_delta
from hand_mqtt.errors import CommandError
from hand_mqtt.model import FINGERS, HandState

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
    cell,
    fail,
    handle_errors,
    setup_logging,
    topics,
    unserved,
)
from .shutdown import StopSignals

app = typer.Typer()

FingerArgument = Annotated[
    str,
    typer.Argument(metavar="FINGER", help=f"One of: {', '.join(FINGERS)}.", show_default=False),
]
DurationOption = Annotated[
    float | None,
    typer.Option(
        "--duration",
        metavar="SECONDS",
        help="Seconds the move takes: every finger that moves arrives at the same time.",
        min=0,
        max=60,
    ),
]


def _timed(command: dict[str, object], duration: float | None) -> dict[str, object]:
    return command if duration is None else {**command, "duration_ms": round(duration * 1000)}


def _finger(name: str) -> str:
    if name not in FINGERS:
        raise fail(f"unknown finger {name!r}; fingers are {', '.join(FINGERS)}", 2)
    return name


def _number(read: Any, text: str, what: str) -> int:
    """A number by the rule every command form follows (hand_mqtt.commands); else exit 2."""
    try:
        value: int = read(text, what)
    except CommandError as exc:
        raise fail(str(exc), 2) from None
    return value


def _connected(
    broker: str, ca_file: str | None, base: str, hand: str, timeout: float, name: str = "cli"
) -> HandClient:
    """A client that has the broker's retained view of the hand; exits 2 or 4 if it cannot."""
    with handle_errors():
        client = HandClient(
            broker_url(broker, ca_file),
            topics=topics(base),
            hand=hand,
            name=name,
            require_state=False,
        )
        try:
            client.connect(timeout)
        except BaseException:
            client.close()
            raise
    return client


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
    client = _connected(broker, ca_file, base, hand, timeout)
    try:
        reason = unserved(client)
        if reason is not None:
            raise fail(reason, NOT_SERVED)
        with handle_errors():
            state = client.send(command, timeout=timeout)
    finally:
        client.close()
    typer.echo(f"{base}/{hand}: {_describe(state)}")


@app.command("set", rich_help_panel="Drive the hand", epilog=exit_status("set"))
def set_finger(
    finger: FingerArgument,
    angle: Annotated[
        str,
        typer.Argument(
            metavar="ANGLE", help="0 (contracted) to 180 (extended).", show_default=False
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
    """Set one finger to an angle."""
    name = _finger(finger)
    value = _number(read_angle, angle, name)
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({name: value}, duration))


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("nudge"))
def nudge(
    finger: FingerArgument,
    delta: Annotated[
        str,
        typer.Argument(
            metavar="DELTA",
            help="Degrees to add: 15, +15 or -15 (the result is clamped to 0-180).",
            show_default=False,
        ),
    ],
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Move one finger by a number of degrees, clamped to 0-180."""
    name = _finger(finger)
    value = _number(read_delta, delta, name)
    _run(broker, ca_file, base, hand, timeout, verbose, {name: {"delta": value}})


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("pose"))
def pose(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="open, fist, peace, rockstar, okay, point, phone, or one the arbiter "
            "was given with --poses.",
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
    """Put the hand in a named pose."""
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({"pose": name}, duration))


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("angles"))
def angles(
    values: Annotated[
        list[str],
        typer.Argument(
            metavar="INDEX MIDDLE RING PINKY THUMB",
            help="Five angles, 0-180, or - to leave a finger as it is.",
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
            continue
        try:
            parsed.append(read_angle(value, finger))
        except CommandError as exc:
            bad.append(str(exc))
    if bad:
        raise fail("; ".join(bad), 2)
    _run(broker, ca_file, base, hand, timeout, verbose, _timed({"angles": parsed}, duration))


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("relax"))
def relax(
    fingers: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FINGER...", help="Fingers to relax (default: all five).", show_default=False
        ),
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


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("stop"))
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


@app.command(rich_help_panel="Drive the hand", epilog=exit_status("unlock"))
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
        f"{base}/{hand}  arbiter: {snap.arbiter or 'unknown'}"
        + (f" (served by {snap.served_by})" if snap.served_by else "")
        + "  "
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


def _as_json(base: str, hand: str, snap: Snapshot) -> dict[str, Any]:
    return {"base": base, "hand": hand, **snap.as_dict()}


@app.command(rich_help_panel="Look at the hand", epilog=exit_status("state"))
def state(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the hand it describes included).")
    ] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Show desired and reported angles and who is online."""
    setup_logging(verbose, service=False)
    client = _connected(broker, ca_file, base, hand, timeout)
    try:
        snap = client.snapshot()
        reason = unserved(client)
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps(_as_json(base, hand, snap), indent=2))
    if snap.desired is None:
        raise fail(f"no state for {base}/{hand} on the broker: {reason or 'none published yet'}", 3)
    if not as_json:
        typer.echo(_table(base, hand, snap))


@app.command(rich_help_panel="Look at the hand", epilog=exit_status("watch"))
def watch(
    duration: Annotated[
        float | None,
        typer.Option("--for", metavar="SECONDS", help="Stop after this many seconds.", min=0),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line: every state, and every rejection as "
            '{"base", "hand", "error"}.',
        ),
    ] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    timeout: TimeoutOption = 5.0,
    verbose: VerboseOption = 0,
) -> None:
    """Follow the hand: its state as it changes, and every command the arbiter rejects.

    On a terminal the view is redrawn in place; otherwise one line is added per change.
    """
    from .live import LiveView  # rich, only for the commands that show the view

    setup_logging(verbose, service=False)
    client = _connected(broker, ca_file, base, hand, timeout, name="watch")
    deadline = None if duration is None else time.monotonic() + duration
    reason = unserved(client)
    if reason is not None:  # watch anyway: the arbiter may be on its way
        typer.secho(f"note: {reason}", fg=typer.colors.YELLOW, err=True)
    try:
        with StopSignals() as signals:
            view: _JsonLines | LiveView = (
                _JsonLines(base, hand, client.snapshot)
                if as_json
                else LiveView(f"{base}/{hand}", client.snapshot)
            )
            client.add_listener(view.changed)
            with view:
                signals.wait(lambda: deadline is None or time.monotonic() < deadline)
    finally:
        client.close()


class _JsonLines:
    """``watch --json``: one object per distinct state, one per rejection."""

    def __init__(self, base: str, hand: str, snapshot: Callable[[], Snapshot]) -> None:
        self._base = base
        self._hand = hand
        self._source = snapshot
        self._lock = threading.Lock()
        self._started = False
        self._last = ""

    def __enter__(self) -> _JsonLines:
        """The state as it is now; read under the lock, so no change slips in between."""
        with self._lock:
            self._started = True
            self._emit(self._source())
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._started = False

    def changed(self, snap: Snapshot) -> None:
        with self._lock:
            if not self._started:
                return
            if snap.error is not None:
                report = snap.error.model_dump()
                self._write(json.dumps({"base": self._base, "hand": self._hand, "error": report}))
            else:
                self._emit(snap)

    def _emit(self, snap: Snapshot) -> None:
        line = json.dumps(_as_json(self._base, self._hand, snap))
        if line != self._last:
            self._last = line
            self._write(line)

    @staticmethod
    def _write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
