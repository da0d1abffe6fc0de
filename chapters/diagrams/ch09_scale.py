"""Diagrams of chapter 9: data parallelism (every rank holds everything) beside sharding (each rank holds 1/N).

Left: DistributedDataParallel, as the chapter builds it. Each rank keeps the whole model, the whole
gradient and the whole optimizer state; only the batch is split, and `all_reduce` makes the
gradients equal. Right: what comes next (ZeRO, FSDP): each rank keeps one slice of each, gathers
the weights of a layer just before using them and receives only its slice of the summed gradient.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, new_diagram

FULL, SLICE = 2.2, 1.1  # widths of a whole tensor and of one rank's half


def _rank(ax, x: float, title: str, sharded: bool, part: int) -> dict:
    """One rank's memory, bottom to top: its batch, the weights, the gradients, AdamW's two moments."""
    ax.text(x, 5.55, title, fontsize=11, weight="bold")
    batch = box(ax, x, 0.3, FULL, 0.55, f"its micro-batches", color=GREY, fontsize=9)
    rows = {}
    for i, (name, color) in enumerate((("weights", BLUE), ("gradients", GREEN), ("AdamW m, v", ORANGE))):
        y = 1.3 + i * 1.2
        if sharded:
            ax.add_patch(_outline(x, y, FULL, 0.8))
            left = x + part * SLICE
            rows[name] = box(ax, left, y, SLICE, 0.8, f"{name}\nslice {part}", color=color, fontsize=8)
        else:
            rows[name] = box(ax, x, y, FULL, 0.8, f"{name} (all)", color=color, fontsize=9)
    arrow(ax, batch.top, (batch.top[0], 1.3))
    return rows


def _outline(x: float, y: float, w: float, h: float):
    from matplotlib.patches import Rectangle
    return Rectangle((x, y), w, h, fill=False, linestyle=":", edgecolor="#888888", linewidth=1.0)


def _exchange(ax, a, b, color: str, text: str, at: tuple[float, float]) -> None:
    """A two-headed arrow between two ranks' boxes, with what the collective does written at `at`."""
    ax.annotate("", xy=b.left, xytext=a.right, arrowprops={"arrowstyle": "<|-|>", "color": color, "linewidth": 1.6})
    ax.text(*at, text, ha="center", fontsize=8, color=color)


def parallel_figure():
    fig, ax = new_diagram(11.0, 6.2)
    ax.text(0.2, 6.0, "Data parallel (DDP): each rank holds everything", fontsize=12, weight="bold")
    left = _rank(ax, 0.3, "rank 0", sharded=False, part=0)
    right = _rank(ax, 3.0, "rank 1", sharded=False, part=1)
    _exchange(ax, left["gradients"], right["gradients"], "#b03030", "all_reduce\n(sum, / N)", (2.55, 2.95))
    ax.text(5.75, 6.0, "Sharded (ZeRO-3, FSDP): each rank holds 1/N", fontsize=12, weight="bold")
    s0 = _rank(ax, 5.9, "rank 0", sharded=True, part=0)
    s1 = _rank(ax, 8.6, "rank 1", sharded=True, part=1)
    _exchange(ax, s0["weights"], s1["weights"], "#2060a0", "all_gather a layer's\nweights before use", (8.15, 1.0))
    _exchange(ax, s0["gradients"], s1["gradients"], "#b03030", "reduce_scatter:\neach its slice of the sum",
              (8.15, 3.05))
    ax.text(8.15, 4.95, "each rank steps\nits own slice", ha="center", fontsize=8, color="#555555")
    return fig


def figures():
    return {"ch09_parallel.png": parallel_figure()}
