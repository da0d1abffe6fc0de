"""Tiny drawing helpers for the course's diagrams (boxes, arrows, rows of cells).

A diagram is drawn in inches: ``new_diagram(8, 3)`` gives a figure 8 inches
wide and 3 high whose axes fill it, with x running 0..8 and y 0..3, so
positions read as they will look. Saved at dpi 110 by ``make_diagrams.py``,
an 8-inch diagram is 880 pixels wide. A chapter's module uses them like this::

    from _draw import GREEN, arrow, box, new_diagram

    def figures():
        fig, ax = new_diagram(6, 2)
        ids = box(ax, 0.5, 0.5, 2, 1, "token ids\\n(B, T)")
        emb = box(ax, 3.5, 0.5, 2, 1, "embeddings\\n(B, T, d_model)", color=GREEN)
        arrow(ax, ids.right, emb.left, "lookup")
        return {"ch04_embedding.png": fig}
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

BLUE, GREEN, ORANGE, GREY, RED = "#dbe9f6", "#dcefd9", "#fde4c8", "#eeeeee", "#f8d3d3"
FONT_SIZE = 11

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """Where a drawn box is, with the midpoints of its sides for arrows to start and end at."""

    x: float
    y: float
    w: float
    h: float

    @property
    def center(self) -> Point:
        return (self.x + self.w / 2, self.y + self.h / 2)

    @property
    def left(self) -> Point:
        return (self.x, self.y + self.h / 2)

    @property
    def right(self) -> Point:
        return (self.x + self.w, self.y + self.h / 2)

    @property
    def top(self) -> Point:
        return (self.x + self.w / 2, self.y + self.h)

    @property
    def bottom(self) -> Point:
        return (self.x + self.w / 2, self.y)


def new_diagram(width: float, height: float) -> tuple[plt.Figure, plt.Axes]:
    """A blank figure ``width`` x ``height`` inches, axes in inches, no axis lines or ticks."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be > 0 inches, got {width} x {height}")
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str = "",
        color: str = BLUE, fontsize: float = FONT_SIZE) -> Box:
    """A rounded box with its lower-left corner at (x, y) and ``text`` centred in it."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=color, edgecolor="#333333", linewidth=1.2))
    placed = Box(x, y, w, h)
    if text:
        ax.text(*placed.center, text, ha="center", va="center", fontsize=fontsize)
    return placed


def arrow(ax: plt.Axes, start: Point, end: Point, text: str | None = None,
          color: str = "#333333", fontsize: float = FONT_SIZE - 1) -> None:
    """An arrow from ``start`` to ``end``, with ``text`` written beside its middle."""
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": color, "linewidth": 1.4, "shrinkA": 0, "shrinkB": 0})
    if text:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.annotate(text, middle, xytext=(4, 4), textcoords="offset points", fontsize=fontsize, color=color)


def cells(ax: plt.Axes, x: float, y: float, texts: list[str], size: float = 0.5,
          colors: list[str] | str = GREY, fontsize: float = FONT_SIZE) -> list[Box]:
    """A row of square cells (tokens, ids, positions) starting at (x, y), left to right."""
    fills = [colors] * len(texts) if isinstance(colors, str) else list(colors)
    if len(fills) != len(texts):
        raise ValueError(f"colors must be one colour or one per cell ({len(texts)}), got {len(fills)}")
    return [box(ax, x + i * size, y, size, size, text, color=fill, fontsize=fontsize)
            for i, (text, fill) in enumerate(zip(texts, fills))]
