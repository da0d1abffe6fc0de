"""Diagrams of chapter 3: the data flow of one attention head, and multi-head attention two ways.

Drawn with the boxes and arrows of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, GREY, ORANGE, RED, arrow, box, new_diagram


def one_head_figure():
    """x -> query/key/value Linears -> scores q·kᵀ/√head_size -> mask -> softmax -> weights·v."""
    fig, ax = new_diagram(12.4, 4.4)
    ax.text(0.2, 4.05, "One attention head: every arrow carries a tensor, its shape beside it", fontsize=12)
    x = box(ax, 0.2, 1.65, 1.3, 0.9, "x\n(B, T, d_model)", color=GREY, fontsize=10)
    rows = {"query": 3.0, "key": 1.65, "value": 0.3}
    linears = {name: box(ax, 2.3, y, 1.9, 0.75, f"{name}\nLinear(d_model, hs)", fontsize=10)
               for name, y in rows.items()}
    for layer in linears.values():
        arrow(ax, x.right, layer.left)
    scores = box(ax, 5.4, 2.15, 1.9, 0.95, "scores\nq @ kᵀ / √hs", color=ORANGE, fontsize=10)
    arrow(ax, linears["query"].right, (scores.x, scores.y + 0.75))
    arrow(ax, linears["key"].right, (scores.x, scores.y + 0.2))
    ax.text(4.3, 3.5, "q (B, T, hs)", fontsize=10)
    ax.text(4.3, 1.55, "k (B, T, hs)", fontsize=10)
    mask = box(ax, 7.9, 2.15, 1.75, 0.95, "mask\nfuture → −∞", color=RED, fontsize=10)
    arrow(ax, scores.right, mask.left)
    ax.text(7.6, 2.75, "(B, T, T)", ha="center", fontsize=10)
    softmax = box(ax, 10.3, 2.15, 1.85, 0.95, "softmax\nover the keys", color=ORANGE, fontsize=10)
    arrow(ax, mask.right, softmax.left)
    weighted = box(ax, 10.3, 0.3, 1.85, 0.95, "weights @ v", color=GREEN, fontsize=10)
    arrow(ax, softmax.bottom, weighted.top, "weights (B, T, T),\nrows sum to 1")
    arrow(ax, linears["value"].right, weighted.left, "v (B, T, hs)")
    ax.text(weighted.center[0], 0.08, "out (B, T, hs)", ha="center", fontsize=10)
    ax.text(8.0, 3.55, "hs = head_size", fontsize=9, color="#555555")
    return fig


def multi_head_figure():
    """Top: a ModuleList of Heads, outputs concatenated, then proj. Bottom: the same with one qkv Linear."""
    fig, ax = new_diagram(12.4, 6.2)
    ax.text(0.2, 5.85, "Multi-head attention as a ModuleList of Heads (what you build in ex03)", fontsize=12)
    x = box(ax, 0.2, 3.75, 1.3, 0.9, "x\n(B, T, d_model)", color=GREY, fontsize=10)
    heads = [box(ax, 2.6, y, 2.0, 0.55, f"heads[{i}]: Head", fontsize=10)
             for i, y in ((0, 5.05), (1, 4.3), ("H-1", 3.25))]
    ax.text(3.6, 3.9, "⋮", ha="center", va="center", fontsize=14)
    cat = box(ax, 6.6, 3.75, 1.7, 0.9, "torch.cat\n(dim=-1)", color=ORANGE, fontsize=10)
    for head in heads:
        arrow(ax, x.right, head.left)
        arrow(ax, head.right, cat.left)
    ax.text(4.75, 5.45, "(B, T, hs) each", fontsize=9, color="#555555")
    proj = box(ax, 9.6, 3.75, 1.2, 0.9, "proj\nLinear", color=GREEN, fontsize=10)
    arrow(ax, cat.right, proj.left)
    ax.text(8.95, 4.35, "(B, T, d_model)", ha="center", fontsize=9)
    ax.text(10.95, 4.2, "out\n(B, T, d_model)", va="center", fontsize=10)
    ax.plot([0.2, 12.2], [2.85, 2.85], color="#bbbbbb", linewidth=1, linestyle="--")

    ax.text(0.2, 2.45, "The same, batched (minigpt): one qkv Linear, heads moved into a batch axis", fontsize=12)
    steps = [("x\n(B, T, d_model)", GREY, 1.3), ("qkv Linear\n→ split in 3", BLUE, 1.55),
             ("view, transpose\n(B, H, T, hs)", ORANGE, 1.75), ("attention of\nevery head", GREEN, 1.5),
             ("transpose, view\n(B, T, d_model)", ORANGE, 1.8), ("proj\nLinear", GREEN, 1.1)]
    left, previous = 0.2, None
    for text, color, width in steps:
        current = box(ax, left, 0.75, width, 0.95, text, color=color, fontsize=10)
        if previous is not None:
            arrow(ax, previous.right, current.left)
        previous, left = current, left + width + 0.5
    ax.text(0.2, 0.25, "hs = head_size = d_model // num_heads;  H = num_heads;  the same numbers "
                       "once the weights are copied across (section 7)", fontsize=9, color="#555555")
    return fig


def figures():
    return {"ch03_one_head.png": one_head_figure(), "ch03_multi_head.png": multi_head_figure()}
