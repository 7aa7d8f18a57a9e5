"""The live view of one hand, shared by ``hand-mqtt watch`` and ``hand-mqtt up``.

On a terminal it is redrawn in place with rich, 60 columns wide (narrower if the terminal is):
who is online, the pose, desired and reported angles side by side, and the last few commands
the arbiter rejected, in red. When the output is not a terminal (a pipe, a file, a dumb
terminal) it degrades to plain lines appended one per change, and one per rejection.

The only module that imports rich; everything else prints plain text.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.constrain import Constrain
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hand_mqtt.clients.client import Snapshot
from hand_mqtt.model import FINGERS, ErrorReport, GestureProgress
from hand_mqtt.topics import ONLINE_TEXT

__all__ = ["LiveView"]

_ERRORS_SHOWN: Final = 3
_MIN_REDRAW_S: Final = 0.05
"""At most 20 redraws a second: a burst of commands costs a few frames, not one each."""
_RESIZE_CHECK_S: Final = 0.5
_WIDTH: Final = 60
"""The picture is never wider than this, so narrowing a terminal to 60 columns never makes it
re-wrap lines already drawn (which would leave stale copies behind when it is redrawn)."""


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _status_style(value: str | None, good: str) -> str:
    if value is None:
        return "yellow"
    return "green" if value == good else "bold red"


class LiveView:
    """Shows one hand's :class:`Snapshot` and the arbiter's rejections as they come.

    Feed it with :meth:`changed` (a ``HandClient`` listener: a snapshot that carries an
    ``error`` is a rejection); nothing is shown before :meth:`start`, which shows one complete
    picture.
    """

    def __init__(
        self,
        root: str,
        snapshot: Callable[[], Snapshot],
        *,
        console: Console | None = None,
    ) -> None:
        self.root = root
        self._source = snapshot
        self.console = console or Console(highlight=False)
        self.plain = not self.console.is_terminal or self.console.is_dumb_terminal
        self._lock = threading.Condition()
        self._started = False
        self._stopping = False
        self._dirty = False
        self._last_line = ""
        self._errors: deque[tuple[str, ErrorReport]] = deque(maxlen=_ERRORS_SHOWN)
        self._live: Live | None = None
        self._painter: threading.Thread | None = None
        self._handlers: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []

    # -- feeding it (any thread) --------------------------------------------------------

    def changed(self, snap: Snapshot) -> None:
        if snap.error is not None:
            self.rejected(snap.error)
            return
        with self._lock:
            if not self._started:
                return
            if self.plain:
                self._print_line(snap)
            else:
                self._dirty = True
                self._lock.notify_all()

    def rejected(self, report: ErrorReport) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            if not self._started:
                return
            if self.plain:
                self._write(f"{stamp} {self.root} {_rejection(report)}")
            else:
                self._errors.append((stamp, report))
                self._dirty = True
                self._lock.notify_all()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Show the hand as it is now, then follow it."""
        with self._lock:
            self._started = True
            if self.plain:
                self._print_line(self._source())
                return
            self._live = Live(
                self._render(),
                console=self.console,
                auto_refresh=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start(refresh=True)
            self._route_logging_through_live()
        self._painter = threading.Thread(target=self._paint, name="hand-mqtt-live", daemon=True)
        self._painter.start()

    def stop(self) -> None:
        """Stop redrawing; the last picture stays on the screen."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._painter is not None:
            self._painter.join(2.0)
        with self._lock:
            if self._live is not None:
                self._live.update(self._render(), refresh=True)
                self._restore_logging()
                self._live.stop()
                self._live = None

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- plain lines -----------------------------------------------------------------------

    def _print_line(self, snap: Snapshot) -> None:
        line = plain_line(snap)
        if line == self._last_line:
            return
        self._last_line = line
        self._write(f"{time.strftime('%H:%M:%S')} {self.root} {line}")

    def _write(self, line: str) -> None:
        stream = self.console.file
        stream.write(line + "\n")
        stream.flush()

    # -- the terminal view -------------------------------------------------------------

    def _paint(self) -> None:
        width = self.console.width
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._dirty or self._stopping, _RESIZE_CHECK_S)
                if self._stopping or self._live is None:
                    return
                resized = self.console.width != width
                if self._dirty or resized:
                    self._dirty = False
                    width = self.console.width
                    self._live.update(self._render(), refresh=True)
            time.sleep(_MIN_REDRAW_S)

    def _render(self) -> RenderableType:
        return Constrain(render(self.root, self._source(), list(self._errors)), _WIDTH)

    def _route_logging_through_live(self) -> None:
        # Log records written straight to the terminal would tear the picture; sys.stderr is
        # now rich's proxy, which prints them above it.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.__stderr__,
                sys.__stdout__,
            ):
                previous = handler.setStream(sys.stderr)
                if previous is not None:
                    self._handlers.append((handler, previous))

    def _restore_logging(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()


def _progress(gesture: GestureProgress) -> str:
    rounds = f", round {gesture.round}/{gesture.rounds}" if gesture.rounds > 1 else ""
    return f"{gesture.name} step {gesture.step}/{gesture.steps}{rounds}"


def _rejection(report: ErrorReport) -> str:
    return f"rejected {report.payload[:60]} on {report.topic}: {report.error}"


def plain_line(snap: Snapshot) -> str:
    """One line that says everything the terminal view shows (but the rejections)."""
    desired = snap.desired
    reported = snap.reported
    wanted = " ".join(map(str, desired.angles)) if desired else "- - - - -"
    pose = f" {desired.pose}" if desired and desired.pose else ""
    if desired is not None and desired.gesture is not None:
        pose += f" gesture {_progress(desired.gesture)}"
    version = f" v{desired.version}" if desired else ""
    have = " ".join(_cell(a) for a in reported.angles) if reported else "- - - - -"
    link = reported.link if reported else "?"
    extra = ""
    if reported is not None and reported.failsafe:
        extra += " failsafe"
    if reported is not None and reported.moving:
        extra += " moving"
    return (
        f"desired {wanted}{pose}{version} | reported {have} link {link}{extra} | "
        f"arbiter {snap.arbiter or '?'}, device {snap.device or '?'}"
    )


def render(root: str, snap: Snapshot, errors: list[tuple[str, ErrorReport]]) -> RenderableType:
    """The terminal picture: two status lines, the angles table, the last rejections."""
    desired = snap.desired
    reported = snap.reported
    head = Text.assemble(
        (root, "bold"),
        "  pose ",
        ((desired.pose or "-") if desired else "-", "bold cyan"),
        "  version ",
        (str(desired.version) if desired else "-", "bold"),
    )
    if desired is not None and desired.gesture is not None:
        head.append(f"  gesture {_progress(desired.gesture)}", style="cyan")
    if reported is not None and reported.failsafe:
        head.append("  failsafe!", style="bold red")
    if reported is not None and reported.moving:
        head.append("  moving", style="yellow")
    link = reported.link if reported else None
    who = Text.assemble(
        "arbiter ",
        (snap.arbiter or "?", _status_style(snap.arbiter, ONLINE_TEXT)),
        "  device ",
        (snap.device or "?", _status_style(snap.device, ONLINE_TEXT)),
        "  link ",
        (link or "?", _status_style(link, "up")),
    )
    if reported is not None and reported.firmware is not None:
        who.append(f"  firmware {reported.firmware.version}")

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False)
    table.add_column("")
    for finger in FINGERS:
        table.add_column(finger, justify="right")
    wanted = desired.angles if desired else (None,) * len(FINGERS)
    have = reported.angles if reported else (None,) * len(FINGERS)
    table.add_row("desired", *(_cell(a) for a in wanted))
    table.add_row(
        "reported",
        *(
            Text(_cell(h), style="yellow" if w is not None and h != w else "")
            for w, h in zip(wanted, have, strict=True)
        ),
    )
    parts: list[RenderableType] = [head, who, table]
    if errors:
        parts.append(Text(""))
    for stamp, report in errors:
        parts.append(Text(f"{stamp} {_rejection(report)}", style="red"))
    return Group(*parts)
