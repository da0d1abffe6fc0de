"""Diagrams of chapter 2: targets are the inputs shifted by one, and windows cut with a stride.

Drawn with the boxes and cells of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

from matplotlib.patches import Rectangle

from _draw import BLUE, ORANGE, arrow, cells, new_diagram

CELL = 0.55
WORD = "THESEUS:"  # the first characters of the corpus, as in the notebook


def xy_shift_figure():
    """One window of T + 1 ids: x is its first T, y its last T; x[t] is asked to predict y[t]."""
    T = len(WORD)
    fig, ax = new_diagram(9.4, 3.8)
    left = 1.3
    ax.text(0.15, 2.6 + CELL / 2, "data", va="center", fontsize=11, weight="bold")
    cells(ax, left, 2.6, list(WORD) + ["\\n"], size=CELL)
    for t in range(T + 1):
        ax.text(left + (t + 0.5) * CELL, 2.6 + CELL + 0.12, str(t), ha="center", fontsize=8, color="#666666")
    ax.text(0.15, 1.5 + CELL / 2, "x", va="center", fontsize=12, weight="bold")
    xs = cells(ax, left, 1.5, list(WORD), size=CELL, colors=BLUE)
    ax.text(0.15, 0.4 + CELL / 2, "y", va="center", fontsize=12, weight="bold")
    ys = cells(ax, left + CELL, 0.4, list(WORD[1:]) + ["\\n"], size=CELL, colors=ORANGE)
    for x_cell, y_cell in zip(xs, ys):
        arrow(ax, (x_cell.center[0], x_cell.y), (y_cell.center[0] - 0.05, y_cell.y + y_cell.h), color="#888888")
    end = left + (T + 1) * CELL + 0.3
    ax.text(end, 1.5 + CELL / 2, f"x = data[s : s + T]   (T = {T})", va="center", fontsize=10)
    ax.text(end, 0.4 + CELL / 2, "y = data[s + 1 : s + T + 1]", va="center", fontsize=10)
    ax.text(end, 1.05, "each arrow: predict y[t]\nfrom x[0], ..., x[t]", va="center", fontsize=9, color="#555555")
    ax.text(0.15, 3.55, f"One window of T + 1 = {T + 1} ids gives T = {T} training examples", fontsize=11,
            va="center")
    return fig


def sliding_windows_figure():
    """The windows of a 13-id corpus with T = 4, for strides 1, 2 and 4: x in blue, its extra target id in orange."""
    n, T, size, step = 13, 4, 0.5, 0.28
    strides = {1: "overlapping", 2: "overlapping", 4: "x windows touch, no overlap"}
    counts = {stride: len(range(0, n - T, stride)) for stride in strides}
    height = 1.6 + sum(count * step + 0.35 for count in counts.values())
    fig, ax = new_diagram(9.2, height)
    left, top = 2.6, height - 0.7
    ax.text(0.15, top + size / 2, f"data (N = {n})", va="center", fontsize=10, weight="bold")
    cells(ax, left, top, [str(i) for i in range(n)], size=size, fontsize=9)
    y = top - 0.45
    for stride, kind in strides.items():
        ax.text(0.15, y, f"stride {stride}: {counts[stride]} windows", fontsize=10, weight="bold", va="center")
        ax.text(0.15, y - 0.25, kind, fontsize=9, color="#555555", va="center")
        for i, start in enumerate(range(0, n - T, stride)):
            row_y = y - 0.11 - i * step
            ax.add_patch(_bar(left + start * size, row_y, T * size, BLUE))
            ax.add_patch(_bar(left + (start + T) * size, row_y, size, ORANGE))
        y -= counts[stride] * step + 0.35
    y -= 0.1
    ax.add_patch(_bar(0.15, y - 0.11, size, BLUE))
    ax.text(0.8, y, f"x (T = {T} ids)", va="center", fontsize=9)
    ax.add_patch(_bar(2.3, y - 0.11, size, ORANGE))
    ax.text(2.95, y, "the one more id that y needs", va="center", fontsize=9)
    ax.text(5.5, y, "number of windows = (N - T - 1) // stride + 1", va="center", fontsize=10)
    return fig


def _bar(x, y, w, color):
    """A thin bar w inches long: one window (or its extra target id) in the stride picture."""
    return Rectangle((x, y), w, 0.22, facecolor=color, edgecolor="#333333", linewidth=0.8)


def figures():
    return {"ch02_xy_shift.png": xy_shift_figure(), "ch02_sliding_windows.png": sliding_windows_figure()}

