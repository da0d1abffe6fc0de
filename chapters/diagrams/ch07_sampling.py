"""Diagrams of chapter 7: the KV cache growing step by step, and the sampling pipeline.

Drawn with the boxes and arrows of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, new_diagram

TOKENS = "ROMEO"  # the example's tokens, one character each
EDGE = "#333333"


def _cache_step(ax, x0: float, n: int) -> None:
    """One step with n tokens known: the cache holds n - 1 keys and values, the newest is computed."""
    width, pitch = 0.45, 0.55
    ax.text(x0 + 1.3, 4.3, f"step {n - 2}: token {n} ({TOKENS[n - 1]!r}) is new", ha="center",
            fontsize=11, weight="bold")
    for j in range(n):
        color = ORANGE if j == n - 1 else BLUE
        x = x0 + j * pitch
        token = box(ax, x, 0.7, width, 0.4, TOKENS[j], color=color)
        value = box(ax, x, 1.5, width, 0.7, f"v{j + 1}", color=color, fontsize=10)
        key = box(ax, x, 2.4, width, 0.7, f"k{j + 1}", color=color, fontsize=10)
    arrow(ax, token.top, value.bottom, "its q, k, v")
    query = box(ax, key.x, 3.35, width, 0.45, "q", color=ORANGE, fontsize=10)
    arrow(ax, query.left, (x0, query.center[1]))
    ax.text(x0, 3.9, f"q · k for all {n} keys", fontsize=9, color=EDGE)


def kv_cache_figure():
    fig, ax = new_diagram(12.4, 4.8)
    for i, n in enumerate((3, 4, 5)):
        _cache_step(ax, 0.8 + 4.0 * i, n)
    for y, name in ((0.9, "tokens"), (1.85, "V"), (2.75, "K")):
        ax.text(0.65, y, name, ha="right", va="center", fontsize=11, weight="bold")
    box(ax, 0.8, 0.12, 0.3, 0.25, color=ORANGE)
    ax.text(1.2, 0.245, "computed at this step, then appended to the cache (one column per step)",
            va="center", fontsize=10)
    box(ax, 7.6, 0.12, 0.3, 0.25, color=BLUE)
    ax.text(8.0, 0.245, "read from the cache (computed at an earlier step)", va="center", fontsize=10)
    ax.text(6.2, 4.62, "The KV cache, for one attention head: each step feeds the model only the newest token",
            ha="center", fontsize=12)
    return fig


def pipeline_figure():
    steps = [("model\n(last position)", GREEN), ("logits\n(B, V)", GREY),
             ("penalties\n− freq·count\n− presence", ORANGE), ("temperature\n÷ τ", ORANGE),
             ("top-k, top-p\nthe rest → −∞", ORANGE), ("softmax\nprobabilities", GREY),
             ("draw\nmultinomial", BLUE), ("next token\n(B, 1)", GREY)]
    fig, ax = new_diagram(12.6, 2.9)
    boxes = [box(ax, 0.2 + i * 1.55, 0.95, 1.3, 1.15, text, color=color, fontsize=10)
             for i, (text, color) in enumerate(steps)]
    for before, after in zip(boxes, boxes[1:]):
        arrow(ax, before.right, after.left)
    first, last = boxes[0], boxes[-1]
    loop_y = 0.5
    ax.plot([last.bottom[0], last.bottom[0], first.bottom[0]], [last.bottom[1], loop_y, loop_y],
            color=EDGE, linewidth=1.4)
    arrow(ax, (first.bottom[0], loop_y), first.bottom)
    ax.text((first.bottom[0] + last.bottom[0]) / 2, 0.2,
            "append the token to the sequence, crop to context_length, run the model again",
            ha="center", fontsize=10)
    greedy = boxes[3:7]
    ax.plot([greedy[0].x, greedy[-1].x + greedy[-1].w], [2.3, 2.3], color=EDGE, linewidth=1)
    ax.text(greedy[0].x, 2.42, "temperature = 0 (greedy): one argmax in place of these four steps",
            fontsize=10)
    return fig


def figures() -> dict:
    """The chapter's diagrams by file name."""
    return {"ch07_kv_cache.png": kv_cache_figure(), "ch07_sampling_pipeline.png": pipeline_figure()}
