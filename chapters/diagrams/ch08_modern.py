"""Diagram of chapter 8: GPT-2's block beside the modern (speedrun) block, what changed in orange.

Drawn with the boxes and arrows of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate it.
Both read from the bottom (input) to the top (output), as the residual stream flows.
"""

from __future__ import annotations

from matplotlib.patches import Circle

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, new_diagram

CHANGED = ORANGE


def _plus(ax, x: float, y: float) -> tuple[float, float]:
    """A circled + at (x, y): where a sub-layer's output joins the residual stream."""
    ax.add_patch(Circle((x, y), 0.18, facecolor="white", edgecolor="#333333", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=13)
    return x, y


def _column(ax, left: float, title: str, parts: dict[str, tuple[str, str]]) -> None:
    """One model, from the embeddings at the bottom to the logits at the top.

    ``parts`` maps each slot to (text, colour); the colour says whether it changed.
    """
    stream = left + 0.5  # the residual stream's x position
    branch = left + 1.2  # where the sub-layers sit
    width = 3.1
    ax.text(left, 9.55, title, fontsize=12, weight="bold")
    ids = box(ax, branch, 0.2, width, 0.5, "token ids (B, T)", color=GREY, fontsize=10)
    emb = box(ax, branch, 1.0, width, 0.75, parts["embed"][0], color=parts["embed"][1], fontsize=9)
    arrow(ax, ids.top, emb.bottom)
    ax.plot([emb.left[0], stream], [emb.center[1], emb.center[1]], color="#333333", linewidth=1.4)
    ax.plot([stream, stream], [emb.center[1], 2.1], color="#333333", linewidth=1.4)
    y = 2.1
    plus_top = y
    for norm, layer in (("norm1", "attn"), ("norm2", "ffwd")):
        n = box(ax, branch, y + 0.25, width, 0.55, parts[norm][0], color=parts[norm][1], fontsize=9)
        sub = box(ax, branch, y + 1.05, width, 0.9, parts[layer][0], color=parts[layer][1], fontsize=9)
        ax.plot([stream, n.center[0]], [y, y], color="#333333", linewidth=1.4)
        arrow(ax, (n.center[0], y), n.bottom)
        arrow(ax, n.top, sub.bottom)
        plus = _plus(ax, stream, y + 2.3)
        ax.plot([sub.center[0], sub.center[0]], [sub.top[1], plus[1]], color="#333333", linewidth=1.4)
        arrow(ax, (sub.center[0], plus[1]), (plus[0] + 0.18, plus[1]))
        arrow(ax, (stream, y), (stream, plus[1] - 0.18))
        y = plus[1] + 0.18
        plus_top = y
    ax.text(left + 0.05, 4.3, "× num_blocks", fontsize=9, color="#555555", rotation=90, va="center")
    final = box(ax, branch, plus_top + 0.35, width, 0.5, parts["norm_f"][0], color=parts["norm_f"][1], fontsize=9)
    ax.plot([stream, stream], [plus_top, final.center[1]], color="#333333", linewidth=1.4)
    arrow(ax, (stream, final.center[1]), final.left)
    head = box(ax, branch, final.top[1] + 0.3, width, 0.6, parts["head"][0], color=parts["head"][1], fontsize=9)
    arrow(ax, final.top, head.bottom)
    ax.text(head.center[0], head.top[1] + 0.12, "logits (B, T, vocab_size)", ha="center", fontsize=9)


def blocks_figure():
    fig, ax = new_diagram(9.4, 10.0)
    _column(ax, 0.2, "GPT-2 (preset baby)", {
        "embed": ("token + learned position\nembedding (context_length rows)", BLUE),
        "norm1": ("LayerNorm (centre, scale, bias)", BLUE),
        "attn": ("attention: q, k, v\nsoftmax(q k^T / sqrt(d)) v", BLUE),
        "norm2": ("LayerNorm", BLUE),
        "ffwd": ("feed-forward\ndown(GELU(up(x)))", GREEN),
        "norm_f": ("LayerNorm", BLUE),
        "head": ("lm_head = token embedding (tied)", BLUE),
    })
    _column(ax, 4.9, "Modern (preset speedrun)", {
        "embed": ("token embedding only\n(no position table)", CHANGED),
        "norm1": ("RMSNorm (scale only)", CHANGED),
        "attn": ("attention: rotary(q), rotary(k)\nQK-norm: rms_norm(q), rms_norm(k)", CHANGED),
        "norm2": ("RMSNorm", CHANGED),
        "ffwd": ("feed-forward\ndown(ReLU(up(x))²)", CHANGED),
        "norm_f": ("RMSNorm", CHANGED),
        "head": ("lm_head: its own weights (untied)", CHANGED),
    })
    ax.text(4.9, 9.15, "no biases; Muon for the blocks' matrices, AdamW for the rest", fontsize=9, color="#555555")
    ax.text(0.2, 9.15, "biases; AdamW for every weight", fontsize=9, color="#555555")
    return fig


def figures():
    return {"ch08_blocks.png": blocks_figure()}
