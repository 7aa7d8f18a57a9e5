"""The desktop controller: a Tkinter window that drives a hand through :class:`HandClient`.

Threads: :class:`HandClient` runs its own network thread; the window takes the hand's changes
from :meth:`HandClient.changes` on the Tk thread, which polls them (and a queue of finished
commands) with ``after`` and is the only thread that touches a widget. Commands run on one
worker thread (so they keep their order and the window never waits for the broker).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
import tkinter as tk
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from tkinter import ttk
from typing import Final, Literal

from hand_mqtt.clients import plot
from hand_mqtt.clients.client import HandClient, Snapshot
from hand_mqtt.errors import CommandError, HandMqttError
from hand_mqtt.model import (
    BUILTIN_POSES,
    FINGERS,
    MAX_ANGLE,
    MIN_ANGLE,
    ErrorReport,
    HandState,
)
from hand_mqtt.topics import OFFLINE_TEXT, ONLINE_TEXT

__all__ = ["HandWindow", "parse_custom_angles"]

logger = logging.getLogger("hand_mqtt")

NUDGE: Final = 15
"""Degrees of the Add and Subtract buttons (the original window's step)."""

Tone = Literal["info", "ok", "error"]

_GREEN: Final = "#15803d"
_RED: Final = "#b91c1c"
_GREY: Final = "#6b7280"
_AMBER: Final = "#b45309"
_DESIRED: Final = "#2563eb"
_REPORTED: Final = "#ea580c"
_TONES: Final[dict[Tone, str]] = {"info": "#374151", "ok": _GREEN, "error": _RED}

_BAR_WIDTH: Final = 250
_BAR_HEIGHT: Final = 28
_BAR_PAD: Final = 10


def parse_custom_angles(texts: Mapping[str, str]) -> tuple[list[int | None], list[str]]:
    """Read the custom-angle boxes: a whole number 0-180, or empty to leave a finger as is.

    Returns the five angles in finger order (None = leave) and the fingers whose box is invalid.
    """
    angles: list[int | None] = []
    bad: list[str] = []
    for finger in FINGERS:
        text = texts.get(finger, "").strip()
        if not text:
            angles.append(None)
        elif text.isascii() and text.isdigit() and MIN_ANGLE <= int(text) <= MAX_ANGLE:
            angles.append(int(text))
        else:
            angles.append(None)
            bad.append(finger)
    return angles, bad


@dataclass(frozen=True, slots=True)
class _News:
    """What the network thread hands to the Tk thread."""

    snapshot: Snapshot
    poses: dict[str, tuple[int, ...]]
    last_error: ErrorReport | None
    gestures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Done:
    """A finished command."""

    description: str
    future: Future[HandState]


class HandWindow:
    """The controller's widgets and their behaviour, inside ``root`` (a Tk or Toplevel).

    ``client`` must be connected (or connecting); the window does not close it. Call
    :meth:`close` before destroying ``root``.
    """

    def __init__(
        self,
        root: tk.Tk | tk.Toplevel,
        client: HandClient,
        *,
        poll_ms: int = 50,
        command_timeout: float = 5.0,
        allow_plot: bool = True,
    ) -> None:
        self.root = root
        self.client = client
        self.poll_ms = poll_ms
        self.command_timeout = command_timeout
        self._queue: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._changes = client.changes()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand-mqtt-gui")
        # The emergency stop never waits behind a command that is still waiting for its answer.
        self._urgent = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand-mqtt-gui-stop")
        self._closed = False
        self._after: str | None = None
        self._connected: bool | None = None
        self._snapshot: Snapshot | None = None
        self._last_error: ErrorReport | None = None
        self._pose_names: list[str] = []
        self._gesture_names: list[str] = []
        self._pending = 0
        self.live_plot: plot.LivePlot | None = None
        self.plot_available = allow_plot and plot.available()

        root.title(f"hand-mqtt: {client.hand_topics.root}")
        self._build()
        self._set_poses(list(BUILTIN_POSES))
        self._apply(self._news(client.snapshot()))
        self._tick()

    # -- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        style = ttk.Style(self.root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        style.configure("Title.TLabel", font=("TkDefaultFont", 14, "bold"))
        style.configure("Finger.TLabel", font=("TkDefaultFont", 11, "bold"))
        style.configure("Value.TLabel", font=("TkFixedFont", 11))
        style.configure("Bad.TEntry", fieldbackground="#fecaca")

        outer = ttk.Frame(self.root, padding=12)
        outer.grid(row=0, column=0, sticky="nsew")
        self.root.columnconfigure(0, weight=1)
        self.root.rowconfigure(0, weight=1)
        self.frame = outer

        main = ttk.Frame(outer)
        main.grid(row=0, column=0, sticky="nsew")
        self.plot_frame = ttk.Frame(outer)
        self.plot_frame.grid(row=0, column=1, sticky="nsew", padx=(12, 0))

        topics = self.client.hand_topics
        head = ttk.Frame(main)
        head.grid(row=0, column=0, sticky="ew")
        head.columnconfigure(0, weight=1)
        title = ttk.Frame(head)
        title.grid(row=0, column=0, sticky="w")
        ttk.Label(title, text=f"Robotic hand {topics.hand}", style="Title.TLabel").grid(
            row=0, column=0, sticky="w"
        )
        ttk.Label(title, text=f"  topics {topics.root}/...", foreground=_GREY).grid(
            row=0, column=1, sticky="sw"
        )
        self._build_safety(head).grid(row=0, column=1, sticky="e")
        # Escape is the emergency stop from anywhere in the window.
        self.root.bind("<Escape>", lambda _event: self.emergency_stop())
        self._build_status(main).grid(row=1, column=0, sticky="ew", pady=(6, 8))
        self._build_fingers(main).grid(row=2, column=0, sticky="ew")
        self._build_poses(main).grid(row=3, column=0, sticky="ew", pady=(10, 0))
        self._build_custom(main).grid(row=4, column=0, sticky="ew", pady=(10, 0))

        footer = ttk.Frame(main)
        footer.grid(row=5, column=0, sticky="ew", pady=(10, 0))
        footer.columnconfigure(0, weight=1)
        background = str(style.lookup("TFrame", "background") or "#dcdad5")
        self.message = tk.Label(
            footer, text="", anchor="w", justify="left", wraplength=760, bg=background
        )
        self.message.grid(row=0, column=0, sticky="ew")
        self.arbiter_error = tk.Label(
            footer, text="", anchor="w", justify="left", wraplength=760, fg=_AMBER, bg=background
        )
        self.arbiter_error.grid(row=1, column=0, sticky="ew")

    def _build_safety(self, parent: tk.Misc) -> ttk.Frame:
        frame = ttk.Frame(parent)
        self.relax_button = ttk.Button(frame, text="Relax", command=self.relax_all)
        self.relax_button.grid(row=0, column=0, padx=(0, 6))
        self.unlock_button = ttk.Button(frame, text="Unlock", command=self.unlock)
        self.unlock_button.grid(row=0, column=1, padx=(0, 6))
        self.unlock_button.state(["disabled"])
        self.stop_button = tk.Button(
            frame,
            text="STOP",
            command=self.emergency_stop,
            fg="white",
            bg=_RED,
            activeforeground="white",
            activebackground="#991b1b",
            font=("TkDefaultFont", 12, "bold"),
            padx=14,
            pady=4,
        )
        self.stop_button.grid(row=0, column=2)
        return frame

    def _build_status(self, parent: tk.Misc) -> ttk.Frame:
        frame = ttk.Frame(parent)
        self.status: dict[str, tk.Label] = {}
        for column, key in enumerate(("broker", "arbiter", "device", "link", "lock")):
            label = tk.Label(frame, text="", fg="white", bg=_GREY, padx=8, pady=3)
            label.grid(row=0, column=column, padx=(0, 6), sticky="w")
            self.status[key] = label
        self.firmware = ttk.Label(frame, text="")
        self.status["lock"].grid_remove()  # shown only while locked
        self.firmware.grid(row=1, column=0, columnspan=5, sticky="w", pady=(4, 0))
        return frame

    def _build_fingers(self, parent: tk.Misc) -> ttk.Labelframe:
        frame = ttk.Labelframe(parent, text="Fingers", padding=8)
        self.buttons: dict[str, dict[str, ttk.Button]] = {}
        self.bars: dict[str, tk.Canvas] = {}
        self.desired_labels: dict[str, ttk.Label] = {}
        self.reported_labels: dict[str, ttk.Label] = {}
        headings = ("", "", "", "", "", "desired ■ / reported ▲", "desired", "reported")
        for column, heading in enumerate(headings):
            ttk.Label(frame, text=heading, foreground=_GREY).grid(row=0, column=column, padx=3)
        for row, finger in enumerate(FINGERS, start=1):
            ttk.Label(frame, text=finger.capitalize(), style="Finger.TLabel", width=7).grid(
                row=row, column=0, sticky="w"
            )
            actions: list[tuple[str, str, Callable[[], None]]] = [
                ("contract", "Contract", self._setter(finger, MIN_ANGLE)),
                ("subtract", f"-{NUDGE}", self._nudger(finger, -NUDGE)),
                ("add", f"+{NUDGE}", self._nudger(finger, NUDGE)),
                ("extend", "Extend", self._setter(finger, MAX_ANGLE)),
            ]
            self.buttons[finger] = {}
            for column, (key, text, command) in enumerate(actions, start=1):
                width = 8 if key in ("contract", "extend") else 4
                button = ttk.Button(frame, text=text, width=width, command=command)
                button.grid(row=row, column=column, padx=2, pady=2)
                self.buttons[finger][key] = button
            bar = tk.Canvas(
                frame, width=_BAR_WIDTH, height=_BAR_HEIGHT, highlightthickness=0, bg="#f8fafc"
            )
            bar.grid(row=row, column=5, padx=(8, 4))
            self.bars[finger] = bar
            self._draw_bar(finger, None, None)
            desired = ttk.Label(frame, text="-", style="Value.TLabel", width=4, anchor="e")
            desired.grid(row=row, column=6, padx=3)
            reported = ttk.Label(frame, text="-", style="Value.TLabel", width=4, anchor="e")
            reported.grid(row=row, column=7, padx=3)
            self.desired_labels[finger] = desired
            self.reported_labels[finger] = reported
        self.pose_label = ttk.Label(frame, text="")
        self.pose_label.grid(row=len(FINGERS) + 1, column=0, columnspan=8, sticky="w", pady=(6, 0))
        return frame

    def _build_poses(self, parent: tk.Misc) -> ttk.Labelframe:
        frame = ttk.Labelframe(parent, text="Poses", padding=8)
        self.poses_frame = ttk.Frame(frame)
        self.poses_frame.grid(row=0, column=0, sticky="w")
        self.pose_buttons: dict[str, ttk.Button] = {}
        self.gestures_frame = ttk.Frame(frame)
        self.gestures_frame.grid(row=1, column=0, sticky="w", pady=(4, 0))
        ttk.Label(self.gestures_frame, text="Gestures:").grid(row=0, column=0, padx=(2, 6))
        self.gesture_buttons: dict[str, ttk.Button] = {}
        self.plot_button = ttk.Button(
            frame,
            text="Show 3D view" if self.plot_available else "3D view needs matplotlib",
            command=self.toggle_plot,
        )
        if not self.plot_available:
            self.plot_button.state(["disabled"])
        self.plot_button.grid(row=0, column=1, sticky="ne", padx=(12, 0))
        frame.columnconfigure(0, weight=1)
        return frame

    def _build_custom(self, parent: tk.Misc) -> ttk.Labelframe:
        frame = ttk.Labelframe(
            parent, text="Custom angles (0-180; leave a box empty to keep a finger)", padding=8
        )
        self.entries: dict[str, ttk.Entry] = {}
        for column, finger in enumerate(FINGERS):
            ttk.Label(frame, text=finger.capitalize()).grid(row=0, column=column, padx=4)
            entry = ttk.Entry(frame, width=6, justify="center")
            entry.grid(row=1, column=column, padx=4)
            entry.bind("<Return>", lambda _event: self.submit_custom())
            self.entries[finger] = entry
        self.submit_button = ttk.Button(frame, text="Submit", command=self.submit_custom)
        self.submit_button.grid(row=1, column=len(FINGERS), padx=(10, 0))
        return frame

    def _set_poses(self, names: Sequence[str]) -> None:
        if list(names) == self._pose_names:
            return
        self._pose_names = list(names)
        for button in self.pose_buttons.values():
            button.destroy()
        self.pose_buttons = {}
        for i, name in enumerate(names):
            button = ttk.Button(self.poses_frame, text=name, width=9, command=self._poser(name))
            button.grid(row=i // 5, column=i % 5, padx=2, pady=2, sticky="w")
            self.pose_buttons[name] = button

    def _set_gestures(self, names: Sequence[str]) -> None:
        if list(names) == self._gesture_names:
            return
        self._gesture_names = list(names)
        for button in self.gesture_buttons.values():
            button.destroy()
        self.gesture_buttons = {}
        for i, name in enumerate(names):
            button = ttk.Button(
                self.gestures_frame, text=name, width=9, command=self._gesturer(name)
            )
            button.grid(row=i // 4, column=1 + i % 4, padx=2, pady=2, sticky="w")
            self.gesture_buttons[name] = button

    # -- commands (Tk thread starts them, the worker runs them) ----------------------------

    def _setter(self, finger: str, angle: int) -> Callable[[], None]:
        def command() -> None:
            self.run_command(
                f"{finger} to {angle}",
                lambda: self.client.set({finger: angle}, timeout=self.command_timeout),
            )

        return command

    def _nudger(self, finger: str, delta: int) -> Callable[[], None]:
        def command() -> None:
            self.run_command(
                f"{finger} {delta:+d}",
                lambda: self.client.nudge(finger, delta, timeout=self.command_timeout),
            )

        return command

    def _poser(self, name: str) -> Callable[[], None]:
        def command() -> None:
            self.run_command(
                f"pose {name}", lambda: self.client.pose(name, timeout=self.command_timeout)
            )

        return command

    def _gesturer(self, name: str) -> Callable[[], None]:
        def command() -> None:
            self.run_command(
                f"gesture {name}", lambda: self.client.play(name, timeout=self.command_timeout)
            )

        return command

    def submit_custom(self) -> None:
        """Validate the five boxes; send them as one command only when all are valid."""
        texts = {finger: entry.get() for finger, entry in self.entries.items()}
        angles, bad = parse_custom_angles(texts)
        for finger, entry in self.entries.items():
            entry.configure(style="Bad.TEntry" if finger in bad else "TEntry")
        if bad:
            self.show_message(
                f"Not sent: {', '.join(bad)} must be a whole number from 0 to 180 "
                "(or empty to leave the finger as it is).",
                "error",
            )
            return
        if all(angle is None for angle in angles):
            self.show_message("Nothing to send: type an angle in at least one box.", "error")
            return
        shown = " ".join("-" if angle is None else str(angle) for angle in angles)
        self.run_command(
            f"angles {shown}", lambda: self.client.angles(angles, timeout=self.command_timeout)
        )

    def emergency_stop(self) -> None:
        """Lock the hand: every finger relaxes and every motion is refused until unlocked.
        Sent at once, on a thread of its own, whatever else is on its way."""
        self.run_command(
            "the emergency stop",
            lambda: self.client.stop(timeout=self.command_timeout),
            urgent=True,
        )

    def unlock(self) -> None:
        """End the emergency stop; the fingers stay relaxed until a command moves them."""
        self.run_command("unlock", lambda: self.client.unlock(timeout=self.command_timeout))

    def relax_all(self) -> None:
        """Relax every finger (the servos go limp) until a command moves them."""
        self.run_command("relax", lambda: self.client.relax(timeout=self.command_timeout))

    def run_command(
        self, description: str, action: Callable[[], HandState], *, urgent: bool = False
    ) -> None:
        """Run ``action`` on the worker thread and report its outcome in the window."""
        if self._closed:
            return
        self._pending += 1
        self.show_message(f"Sending {description}…", "info")
        future = (self._urgent if urgent else self._executor).submit(action)
        future.add_done_callback(lambda done: self._queue.put(_Done(description, done)))

    def toggle_plot(self) -> None:
        """Show or hide the live 3D picture (needs matplotlib)."""
        if not self.plot_available:
            return
        if self.live_plot is not None:
            self.live_plot.close()
            self.live_plot = None
            self.plot_button.configure(text="Show 3D view")
            return
        self.live_plot = plot.LivePlot(self.plot_frame, size=(440, 600), compact=True)
        self.live_plot.widget.grid(row=0, column=0, sticky="nsew")
        self.plot_button.configure(text="Hide 3D view")
        if self._snapshot is not None:
            self._update_plot(self._snapshot)

    # -- news (the client's changes, taken on the Tk thread) ---------------------------------

    def _news(self, snapshot: Snapshot) -> _News:
        errors = self.client.errors
        return _News(
            snapshot,
            dict(self.client.poses),
            errors[-1] if errors else None,
            tuple(self.client.gestures),
        )

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            self.process_events()
        except Exception:
            logger.exception("gui: updating the window failed")
        self._after = self.root.after(self.poll_ms, self._tick)

    def process_events(self) -> None:
        """Apply what arrived from the other threads (the ``after`` loop calls this)."""
        while True:
            try:
                done = self._queue.get_nowait()
            except queue.Empty:
                break
            self._finish(done)
        changes = self._changes.pending()
        if changes:  # only the latest matters: the window shows the hand as it is now
            self._apply(self._news(changes[-1]))
        connected = self.client.connected
        if connected != self._connected:
            self._connected = connected
            self._show_connection(connected)

    def _finish(self, done: _Done) -> None:
        self._pending -= 1
        try:
            state = done.future.result()
        except CommandError as exc:
            self.show_message(f"The arbiter rejected {done.description}: {exc}", "error")
        except HandMqttError as exc:
            self.show_message(f"{done.description} failed: {exc}", "error")
        except Exception as exc:
            logger.exception("gui: %s failed", done.description)
            self.show_message(f"{done.description} failed: {exc}", "error")
        else:
            pose = f" (pose {state.pose})" if state.pose else ""
            self.show_message(
                f"Done: {done.description} → {' '.join(map(str, state.angles))}{pose}", "ok"
            )

    def _apply(self, news: _News) -> None:
        snap = news.snapshot
        self._snapshot = snap
        desired = snap.desired.angles if snap.desired else (None,) * len(FINGERS)
        reported = snap.reported.angles if snap.reported else (None,) * len(FINGERS)
        for finger, want, have in zip(FINGERS, desired, reported, strict=True):
            self.desired_labels[finger].configure(text=_cell(want))
            self.reported_labels[finger].configure(text=_cell(have))
            self._draw_bar(finger, want, have)
        if snap.desired is not None:
            moving = " · moving" if snap.reported is not None and snap.reported.moving else ""
            gesture = snap.desired.gesture
            playing = (
                f" · playing {gesture.name} step {gesture.step}/{gesture.steps}"
                + (f" round {gesture.round}/{gesture.rounds}" if gesture.rounds > 1 else "")
                if gesture is not None
                else ""
            )
            relaxed = (
                f" · relaxed: {', '.join(snap.desired.relaxed)}" if snap.desired.relaxed else ""
            )
            self.pose_label.configure(
                text=f"Pose: {snap.desired.pose or '—'} · version {snap.desired.version}"
                f"{playing}{moving}{relaxed}"
            )
            self._show_lock(snap.desired.locked)
        names = list(BUILTIN_POSES) + [p for p in news.poses if p not in BUILTIN_POSES]
        self._set_poses(names)
        self._set_gestures(news.gestures)
        if self._connected is not False:
            self._show_availability(snap)
        if news.last_error is not None and news.last_error != self._last_error:
            self._last_error = news.last_error
            self.arbiter_error.configure(
                text=f"Last error from the arbiter ({time.strftime('%H:%M:%S')}): "
                f"{news.last_error.error}"
            )
        self._update_plot(snap)

    def _update_plot(self, snap: Snapshot) -> None:
        if self.live_plot is None or snap.desired is None:
            return
        reported = snap.reported.angles if snap.reported is not None else None
        self.live_plot.show(snap.desired.angles, reported, title=self.client.hand_topics.root)

    # -- drawing -----------------------------------------------------------------------------

    def _draw_bar(self, finger: str, desired: int | None, reported: int | None) -> None:
        canvas = self.bars[finger]
        canvas.delete("all")
        span = _BAR_WIDTH - 2 * _BAR_PAD

        def x(angle: int) -> float:
            return _BAR_PAD + span * (angle - MIN_ANGLE) / (MAX_ANGLE - MIN_ANGLE)

        canvas.create_rectangle(x(0), 7, x(180), 17, fill="#e5e7eb", outline="#cbd5e1")
        for tick in (0, 45, 90, 135, 180):
            canvas.create_line(x(tick), 17, x(tick), 20, fill="#94a3b8")
        if desired is not None:
            canvas.create_rectangle(
                x(0), 7, x(desired), 17, fill=_DESIRED, outline="", tags=("desired",)
            )
        if reported is not None:
            px = x(reported)
            canvas.create_polygon(
                px, 16, px - 6, 27, px + 6, 27, fill=_REPORTED, outline="", tags=("reported",)
            )

    def bar_values(self, finger: str) -> tuple[float | None, float | None]:
        """The angles the bar of ``finger`` shows (desired, reported), read from the canvas."""
        canvas = self.bars[finger]
        span = _BAR_WIDTH - 2 * _BAR_PAD

        def angle(x: float) -> float:
            return round((x - _BAR_PAD) / span * (MAX_ANGLE - MIN_ANGLE) + MIN_ANGLE, 1)

        desired = canvas.find_withtag("desired")
        reported = canvas.find_withtag("reported")
        return (
            angle(canvas.coords(desired[0])[2]) if desired else None,
            angle(canvas.coords(reported[0])[0]) if reported else None,
        )

    def show_message(self, text: str, tone: Tone = "info") -> None:
        self.message.configure(text=text, fg=_TONES[tone])

    def _show_lock(self, locked: bool) -> None:
        if locked:
            self._pill("lock", "LOCKED: emergency stop", _RED)
            self.status["lock"].grid()
            self.unlock_button.state(["!disabled"])
        else:
            self.status["lock"].grid_remove()
            self.unlock_button.state(["disabled"])

    @property
    def locked(self) -> bool:
        """Whether the window shows the hand locked (the emergency stop)."""
        return bool(self.status["lock"].winfo_manager())

    def _pill(self, key: str, text: str, colour: str) -> None:
        self.status[key].configure(text=text, bg=colour)

    def _show_connection(self, connected: bool) -> None:
        if connected:
            self._pill("broker", "Broker: connected", _GREEN)
            if self._snapshot is not None:
                self._show_availability(self._snapshot)
            return
        self._pill("broker", "Broker: connection lost, reconnecting…", _RED)
        for key, name in (("arbiter", "Arbiter"), ("device", "Device"), ("link", "Serial link")):
            self._pill(key, f"{name}: unknown", _GREY)

    def _show_availability(self, snap: Snapshot) -> None:
        for key, name, value in (
            ("arbiter", "Arbiter", snap.arbiter),
            ("device", "Device", snap.device),
        ):
            colour = _GREEN if value == ONLINE_TEXT else _RED if value == OFFLINE_TEXT else _GREY
            self._pill(key, f"{name}: {value or 'never seen'}", colour)
        reported = snap.reported
        if reported is None:
            self._pill("link", "Serial link: unknown", _GREY)
        elif snap.device != ONLINE_TEXT:
            self._pill("link", "Serial link: unknown (device offline)", _GREY)
        elif reported.link == "up":
            failsafe = reported.failsafe
            self._pill(
                "link",
                "Serial link: up" + (" (failsafe active)" if failsafe else ""),
                _AMBER if failsafe else _GREEN,
            )
        else:
            self._pill("link", "Serial link: down", _RED)
        if reported is not None and reported.firmware is not None:
            fw = reported.firmware
            self.firmware.configure(
                text=f"Firmware {fw.name} {fw.version} (protocol {fw.protocol})"
                + (f" on {reported.serial}" if reported.serial else "")
            )

    # -- life cycle ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a command is still on its way."""
        return self._pending > 0

    def close(self) -> None:
        """Stop polling and the worker thread; the client and ``root`` are the caller's."""
        if self._closed:
            return
        self._closed = True
        self._changes.close()
        if self._after is not None:
            with contextlib.suppress(tk.TclError):
                self.root.after_cancel(self._after)
            self._after = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._urgent.shutdown(wait=True, cancel_futures=True)
        if self.live_plot is not None:
            self.live_plot.close()
            self.live_plot = None


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
