"""A 3D picture of the hand: pure geometry, and drawing with matplotlib (optional).

The geometry (:func:`finger_chains`) needs nothing but the standard library. Drawing needs
matplotlib (the ``plot`` extra, or ``pip install matplotlib``); :func:`require_matplotlib`
turns its absence into one :class:`~hand_mqtt.errors.ConfigError` with that advice.

Coordinates are millimetres in the hand's own frame, seen from the palm side: ``x`` runs across
the palm from the index finger towards the little finger, ``y`` from the wrist towards the
fingertips and ``z`` out of the palm, the side the fingers curl towards.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS, MAX_ANGLE, MIN_ANGLE, is_angle

if TYPE_CHECKING:
    import tkinter as tk

    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "FINGER_GEOMETRY",
    "FingerGeometry",
    "LivePlot",
    "Point",
    "finger_chains",
    "palm_outline",
    "render",
    "require_matplotlib",
    "save_png",
    "tip_distance",
]

Point = tuple[float, float, float]

INSTALL_HINT: Final = "matplotlib is not installed: pip install 'matplotlib>=3.7'"


@dataclass(frozen=True, slots=True)
class FingerGeometry:
    """Where a finger starts, which way it points, how it bends and how long its bones are."""

    base: Point
    direction: Point
    """Unit vector of the straight finger (angle 180)."""
    towards: Point
    """A direction the finger curls towards; the bending plane holds it and ``direction``."""
    segments: tuple[float, float, float]
    """Lengths of the three bones from the knuckle out."""
    bends: tuple[float, float, float]
    """Degrees each joint bends when the finger is fully contracted (angle 0)."""


_FINGER_BENDS: Final = (80.0, 100.0, 65.0)

FINGER_GEOMETRY: Final[dict[str, FingerGeometry]] = {
    "index": FingerGeometry((0.0, 78.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                            (40.0, 25.0, 19.0), _FINGER_BENDS),
    "middle": FingerGeometry((22.0, 80.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                             (44.0, 28.0, 21.0), _FINGER_BENDS),
    "ring": FingerGeometry((43.0, 76.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                           (41.0, 26.0, 20.0), _FINGER_BENDS),
    "pinky": FingerGeometry((62.0, 69.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                            (33.0, 20.0, 17.0), _FINGER_BENDS),
    # The thumb leaves the palm low on the index side, points out and up, and folds
    # sideways across the palm rather than straight down onto it.
    "thumb": FingerGeometry((-8.0, 18.0, 6.0), (-0.62, 0.74, 0.26), (1.0, -0.15, 0.55),
                            (38.0, 30.0, 24.0), (45.0, 50.0, 60.0)),
}  # fmt: skip

_PALM: Final[tuple[Point, ...]] = (
    (-8.0, 0.0, 0.0),
    (62.0, 0.0, 0.0),
    (68.0, 69.0, 0.0),
    (43.0, 76.0, 0.0),
    (22.0, 80.0, 0.0),
    (-6.0, 78.0, 0.0),
    (-12.0, 30.0, 0.0),
)


def _sub(a: Point, b: Point) -> Point:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _add(a: Point, b: Point) -> Point:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _scale(a: Point, k: float) -> Point:
    return (a[0] * k, a[1] * k, a[2] * k)


def _dot(a: Point, b: Point) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Point, b: Point) -> Point:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _unit(a: Point) -> Point:
    length = math.sqrt(_dot(a, a))
    return _scale(a, 1.0 / length)


def _rotate(v: Point, axis: Point, degrees: float) -> Point:
    """Rotate ``v`` about the unit vector ``axis`` (Rodrigues' formula)."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    return _add(
        _add(_scale(v, cos), _scale(_cross(axis, v), sin)),
        _scale(axis, _dot(axis, v) * (1.0 - cos)),
    )


def _chain(geometry: FingerGeometry, angle: float) -> list[Point]:
    curl = (MAX_ANGLE - angle) / (MAX_ANGLE - MIN_ANGLE)
    direction = _unit(geometry.direction)
    axis = _unit(_cross(direction, _unit(geometry.towards)))
    points = [geometry.base]
    for length, bend in zip(geometry.segments, geometry.bends, strict=True):
        direction = _rotate(direction, axis, bend * curl)
        points.append(_add(points[-1], _scale(direction, length)))
    return points


def finger_chains(angles: Sequence[float]) -> list[list[Point]]:
    """The joint points of each finger, in finger order: knuckle, two joints, fingertip.

    ``angles`` are logical angles in finger order: 180 is a straight finger, 0 fully curled.
    Each of the three joints bends by the same fraction of its own range.
    """
    if len(angles) != len(FINGERS):
        raise ValueError(f"expected {len(FINGERS)} angles, got {len(angles)}")
    chains: list[list[Point]] = []
    for finger, angle in zip(FINGERS, angles, strict=True):
        if not is_angle(angle):
            raise ValueError(f"{finger}: {angle!r} is not an angle from 0 to 180")
        chains.append(_chain(FINGER_GEOMETRY[finger], angle))
    return chains


def tip_distance(chain: Sequence[Point]) -> float:
    """Straight-line distance from a finger's knuckle to its tip."""
    offset = _sub(chain[-1], chain[0])
    return math.sqrt(_dot(offset, offset))


def palm_outline() -> list[Point]:
    """The corners of the palm, a closed polygon in the ``z = 0`` plane."""
    return [*_PALM, _PALM[0]]


# -- drawing (matplotlib) -----------------------------------------------------------------


def require_matplotlib() -> None:
    """Raise :class:`ConfigError` with the install command when matplotlib is missing."""
    try:
        importlib.import_module("matplotlib")
        importlib.import_module("mpl_toolkits.mplot3d")  # registers the 3d projection
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        require_matplotlib()
    except ConfigError:
        return False
    return True


_COLOURS: Final = {
    "index": "#1f77b4",
    "middle": "#2ca02c",
    "ring": "#9467bd",
    "pinky": "#d62728",
    "thumb": "#ff7f0e",
}


_LABEL_SIDE: Final = {
    "index": "right",
    "middle": "center",
    "ring": "left",
    "pinky": "left",
    "thumb": "right",
}
_LABEL_SHIFT: Final = {"right": -4.0, "center": 0.0, "left": 4.0}


def _screen(points: Sequence[Point]) -> tuple[list[float], list[float], list[float]]:
    """Hand frame to plot axes: fingers point up, the palm faces the viewer."""
    return [p[0] for p in points], [-p[2] for p in points], [p[1] for p in points]


def _draw(
    axes: Any,
    angles: Sequence[float],
    title: str | None,
    reported: Sequence[float | None] | None,
    *,
    compact: bool = False,
) -> None:
    art3d: Any = importlib.import_module("mpl_toolkits.mplot3d.art3d")
    axes.clear()
    # The palm faces the viewer, so anything curled is in front of it: draw in call order.
    axes.computed_zorder = False
    xs, ys, zs = _screen(palm_outline())
    palm = art3d.Poly3DCollection(
        [list(zip(xs, ys, zs, strict=True))],
        facecolor="#f3d9c4",
        edgecolor="#8a6a55",
        alpha=0.85,
        zorder=1,
    )
    axes.add_collection3d(palm)
    if reported is not None and all(a is not None for a in reported):
        known = [float(a) for a in reported if a is not None]
        if known != [float(a) for a in angles]:
            for chain in finger_chains(known):
                axes.plot(*_screen(chain), color="#9ca3af", lw=2, ls="--", zorder=2)
    for finger, chain, angle in zip(FINGERS, finger_chains(angles), angles, strict=True):
        xs, ys, zs = _screen(chain)
        axes.plot(xs, ys, zs, color=_COLOURS[finger], lw=6, solid_capstyle="round", zorder=3)
        axes.scatter(xs, ys, zs, color=_COLOURS[finger], s=30, depthshade=False, zorder=4)
        if not compact:
            # Beside the fingertip, away from its neighbours (index and thumb to the left,
            # ring and pinky to the right), and drawn last, so no finger hides a label.
            align = _LABEL_SIDE[finger]
            axes.text(
                xs[-1] + _LABEL_SHIFT[align],
                ys[-1],
                zs[-1] + 6,
                f"{finger} {angle:g}",
                fontsize=8,
                ha=align,
                zorder=10,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    axes.set_xlim(-60, 90)
    axes.set_ylim(-110, 40)
    axes.set_zlim(-10, 170)
    # Zoomed out a little, so the axis titles fit inside the figure.
    axes.set_box_aspect((150, 150, 180), zoom=0.88)
    if compact:
        axes.set_xticklabels([])
        axes.set_yticklabels([])
        axes.set_zticklabels([])
    else:
        axes.set_xlabel("across the palm (mm)")
        axes.set_ylabel("towards the viewer (mm)")
        axes.set_zlabel("wrist to fingertips (mm)")
    axes.view_init(elev=20, azim=-72)
    if title:
        axes.set_title(title)


def render(
    angles: Sequence[float],
    *,
    title: str | None = None,
    reported: Sequence[float | None] | None = None,
    size: tuple[int, int] = (800, 700),
    dpi: int = 100,
) -> Figure:
    """A matplotlib figure of the hand at ``angles`` (``reported`` drawn dashed when it differs).

    The figure is not registered with pyplot, so nothing global is touched.
    """
    require_matplotlib()
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    axes = figure.add_subplot(projection="3d")
    _draw(axes, angles, title, reported)
    figure.subplots_adjust(left=0, right=1, bottom=0, top=0.95)
    return figure


def save_png(
    angles: Sequence[float],
    path: Path,
    *,
    title: str | None = None,
    reported: Sequence[float | None] | None = None,
    size: tuple[int, int] = (800, 700),
) -> None:
    """Write a PNG of ``size`` pixels (width, height) showing the hand at ``angles``."""
    figure = render(angles, title=title, reported=reported, size=size)
    from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found, unused-ignore]
        FigureCanvasAgg,
    )

    FigureCanvasAgg(figure)
    try:
        figure.savefig(path, format="png", dpi=figure.dpi)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


class LivePlot:
    """The 3D picture embedded in a Tk widget (TkAgg), redrawn by :meth:`show`."""

    def __init__(
        self, master: tk.Misc, *, size: tuple[int, int] = (480, 420), compact: bool = False
    ) -> None:
        require_matplotlib()
        backend: Any = importlib.import_module("matplotlib.backends.backend_tkagg")

        self.compact = compact
        self.figure = render((MAX_ANGLE,) * len(FINGERS), size=size)
        self.canvas: Any = backend.FigureCanvasTkAgg(self.figure, master=master)
        self.widget: tk.Widget = self.canvas.get_tk_widget()
        self._last: tuple[tuple[float, ...], tuple[float | None, ...] | None] | None = None

    def show(
        self,
        angles: Sequence[float],
        reported: Sequence[float | None] | None = None,
        title: str | None = None,
    ) -> None:
        key = (tuple(angles), tuple(reported) if reported is not None else None)
        if key == self._last:
            return
        self._last = key
        axes = self.figure.axes[0]
        _draw(axes, angles, title, reported, compact=self.compact)
        self.canvas.draw_idle()

    def close(self) -> None:
        """Destroy the widget (the figure goes with it)."""
        self.widget.destroy()
