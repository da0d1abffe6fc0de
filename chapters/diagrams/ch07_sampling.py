"""Diagrams of chapter 7: the KV cache growing step by step, and the sampling pipeline.

Drawn with matplotlib boxes and arrows only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

CACHED = "#cfe2f3"  # blue: read back from the cache
NEW = "#f9cb9c"  # orange: computed at this step
EDGE = "#444444"
PROMPT = "ROMEO"  # the tokens of the example, one character each


def _cell(ax, x, y, w, h, text, color, fontsize=10):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor=EDGE, linewidth=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, text="", color=EDGE, rad=0.0, fontsize=9):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color,
                                 linewidth=1.2, connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + 0.1, (start[1] + end[1]) / 2, text, fontsize=fontsize,
                ha="left", va="center", color=color)


def _cache_step(ax, x0, n):
    """One step with n tokens known: n - 1 cached keys/values plus the new token's."""
    width, gap = 0.55, 0.12
    col = [x0 + 1.3 + j * (width + gap) for j in range(n)]
    ax.text(x0 + 2.6, 9.3, f"step {n - 2}: token {n} ({PROMPT[n - 1]!r}) is new", ha="center",
            fontsize=11, weight="bold")
    for j in range(n):
        color = NEW if j == n - 1 else CACHED
        _cell(ax, col[j], 6.4, width, 1.5, f"k{j + 1}", color, fontsize=9)  # keys
        _cell(ax, col[j], 3.9, width, 1.5, f"v{j + 1}", color, fontsize=9)  # values
        _cell(ax, col[j], 0.6, width, 0.8, PROMPT[j], color)  # the tokens
    _cell(ax, x0 + 0.1, 6.4, width, 1.5, "q", NEW, fontsize=9)
    new = col[-1] + width / 2
    _arrow(ax, (new, 1.45), (new, 3.85))  # the new token -> its k and v (and q)
    _arrow(ax, (new - 0.1, 1.45), (x0 + 0.1 + width / 2, 6.35), rad=-0.25)
    ax.text(new + 0.1, 2.6, "new token:\nits q, k, v", fontsize=8.5, color=EDGE, va="center")
    ax.text(x0 + 1.3, 8.15, "q · k for all " + str(n) + " keys", fontsize=8.5, color=EDGE)
    ax.text(x0 + 1.3, 3.35, "weights × values", fontsize=8.5, color=EDGE)


def kv_cache_figure() -> plt.Figure:
    fig, ax = plt.subplots(figsize=(12, 4.4))
    for i, n in enumerate((3, 4, 5)):
        _cache_step(ax, 0.3 + 5.4 * i, n)
    ax.text(0.3, 7.15, "K", fontsize=11, ha="right", va="center", weight="bold")
    ax.text(0.3, 4.65, "V", fontsize=11, ha="right", va="center", weight="bold")
    ax.add_patch(Rectangle((10.6, -0.55), 0.35, 0.35, facecolor=CACHED, edgecolor=EDGE))
    ax.text(11.05, -0.38, "read from the cache (computed at an earlier step)", va="center", fontsize=9)
    ax.add_patch(Rectangle((0.3, -0.55), 0.35, 0.35, facecolor=NEW, edgecolor=EDGE))
    ax.text(0.75, -0.38, "computed at this step, then appended to the cache (one column per step)",
            va="center", fontsize=9)
    ax.set_xlim(-0.3, 16.6)
    ax.set_ylim(-0.8, 9.8)
    ax.axis("off")
    fig.suptitle("The KV cache (one attention head): each step feeds only the newest token", fontsize=12)
    fig.tight_layout()
    return fig


def _box(ax, x, y, text, color="#eeeeee", w=1.7, h=1.1):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", facecolor=color,
                                edgecolor=EDGE))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5)


def pipeline_figure() -> plt.Figure:
    steps = [("model\n(last position)", "#d9ead3"), ("logits\n(B, V)", "#eeeeee"),
             ("penalties\n− freq·count\n− presence", "#fff2cc"), ("temperature\n÷ τ", "#fff2cc"),
             ("top-k, top-p\nthe rest → −∞", "#fff2cc"), ("softmax\nprobabilities", "#eeeeee"),
             ("draw\nmultinomial", NEW), ("next token\n(B, 1)", "#eeeeee")]
    fig, ax = plt.subplots(figsize=(12, 2.6))
    w, step = 1.25, 1.55
    for i, (text, color) in enumerate(steps):
        _box(ax, i * step, 1.0, text, color, w=w, h=1.2)
        if i:
            _arrow(ax, ((i - 1) * step + w + 0.07, 1.6), (i * step - 0.07, 1.6))
    last = (len(steps) - 1) * step + w / 2
    _arrow(ax, (last, 0.93), (w / 2, 0.93), rad=-0.12)
    ax.text(last / 2 + w / 4, -0.35, "append the token to the sequence, crop to context_length, run again",
            ha="center", fontsize=9.5)
    ax.annotate("", (3 * step, 2.35), (6 * step + w, 2.35),
                arrowprops=dict(arrowstyle="-", color=EDGE, linewidth=1))
    ax.text(3 * step, 2.5, "temperature = 0 (greedy): one argmax in place of these four steps", fontsize=9)
    ax.set_xlim(-0.2, len(steps) * step)
    ax.set_ylim(-0.6, 2.9)
    ax.axis("off")
    fig.tight_layout()
    return fig


def figures() -> dict[str, plt.Figure]:
    """The chapter's diagrams by file name."""
    return {"ch07_kv_cache.png": kv_cache_figure(), "ch07_sampling_pipeline.png": pipeline_figure()}

