"""Diagrams of chapter 4: the pre-norm transformer block, and the GPT stack around it.

Drawn with the boxes and arrows of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
Both read from the bottom (input) to the top (output), as the residual stream flows.
"""

from __future__ import annotations

from matplotlib.patches import Circle

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, new_diagram


def _plus(ax, x: float, y: float) -> tuple[float, float]:
    """A circled + at (x, y): where a sub-layer's output is added to the residual stream."""
    ax.add_patch(Circle(
        (x, y), 0.2, facecolor="white", edgecolor="#333333", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=14)
    return x, y


def block_figure():
    """x -> (+ attn(ln1(x))) -> (+ ffwd(ln2(x))): the residual stream goes straight up, sub-layers branch off it."""
    fig, ax = new_diagram(7.4, 7.6)
    stream = 1.6  # the residual stream's x position
    ax.text(0.2, 7.25, "A pre-norm transformer block (Block)", fontsize=12)
    x_in = box(ax, stream - 0.85, 0.2, 1.7, 0.6, "x (B, T, d_model)", color=GREY, fontsize=10)
    ln1 = box(ax, 3.4, 1.35, 2.4, 0.6, "ln1: LayerNorm", color=ORANGE, fontsize=10)
    attn = box(ax, 3.4, 2.35, 2.4, 0.75, "attn:\nMultiHeadAttention", color=BLUE, fontsize=10)
    plus1 = _plus(ax, stream, 3.45)
    ln2 = box(ax, 3.4, 4.2, 2.4, 0.6, "ln2: LayerNorm", color=ORANGE, fontsize=10)
    ffwd = box(ax, 3.4, 5.2, 2.4, 0.75, "ffwd:\nFeedForward", color=GREEN, fontsize=10)
    plus2 = _plus(ax, stream, 6.3)
    x_out = box(ax, stream - 0.85, 6.75, 1.7, 0.4, "out (B, T, d_model)", color=GREY, fontsize=9)
    # The residual stream: straight up through both additions.
    arrow(ax, x_in.top, (stream, plus1[1] - 0.2))
    arrow(ax, (stream, plus1[1] + 0.2), (stream, plus2[1] - 0.2))
    arrow(ax, (stream, plus2[1] + 0.2), x_out.bottom)
    # Each branch: off the stream, through LayerNorm and the sub-layer, back into the +.
    for branch_y, ln, layer, plus in ((1.1, ln1, attn, plus1), (3.95, ln2, ffwd, plus2)):
        ax.plot([stream, ln.center[0]], [branch_y, branch_y], color="#333333", linewidth=1.4)
        arrow(ax, (ln.center[0], branch_y), ln.bottom)
        arrow(ax, ln.top, layer.bottom)
        ax.plot([layer.center[0], layer.center[0]], [layer.top[1], plus[1]], color="#333333", linewidth=1.4)
        arrow(ax, (layer.center[0], plus[1]), (plus[0] + 0.2, plus[1]))
    ax.text(0.2, 2.2, "residual\nstream", fontsize=10, color="#555555")
    ax.text(6.0, 2.65, "positions\nexchange\ninformation", fontsize=9, color="#555555", va="center")
    ax.text(6.0, 5.55, "each position\non its own", fontsize=9, color="#555555", va="center")
    ax.text(3.4, 6.8, "x = x + attn(ln1(x))\nx = x + ffwd(ln2(x))", fontsize=10, family="monospace",
            va="bottom")
    return fig


def gpt_figure():
    """ids -> token + position embedding -> num_blocks Blocks -> ln_f -> lm_head -> logits."""
    fig, ax = new_diagram(8.4, 7.6)
    ax.text(0.2, 7.25, "The GPT stack (TinyGPT and minigpt's GPT)", fontsize=12)
    left, width = 2.3, 3.0
    ids = box(ax, left, 0.2, width, 0.55, "idx: token ids (B, T)", color=GREY, fontsize=10)
    tok = box(ax, 0.3, 1.25, 3.2, 0.75, "token_embedding\nEmbedding(vocab_size, d_model)", fontsize=9)
    pos = box(ax, 4.1, 1.25, 3.6, 0.75, "position_embedding\nEmbedding(context_length, d_model)", fontsize=9)
    arrow(ax, (ids.center[0] - 0.6, ids.top[1]), tok.bottom)
    arrow(ax, (ids.center[0] + 0.6, ids.top[1]), pos.bottom)
    ax.text(6.2, 0.45, "positions 0..T-1", ha="center", fontsize=9, color="#555555")
    plus = _plus(ax, ids.center[0], 2.55)
    arrow(ax, tok.top, (plus[0] - 0.15, plus[1] - 0.12))
    arrow(ax, pos.top, (plus[0] + 0.15, plus[1] - 0.12))
    blocks = box(ax, left, 3.2, width, 1.2, "Block\n× num_blocks", color=BLUE, fontsize=11)
    arrow(ax, (plus[0], plus[1] + 0.2), blocks.bottom, "(B, T, d_model)")
    ln_f = box(ax, left, 4.9, width, 0.55, "ln_f: LayerNorm", color=ORANGE, fontsize=10)
    arrow(ax, blocks.top, ln_f.bottom)
    head = box(ax, left, 5.9, width, 0.6, "lm_head: Linear(d_model, vocab_size)", color=GREEN, fontsize=9)
    arrow(ax, ln_f.top, head.bottom)
    ax.text(ids.center[0], 6.75, "logits (B, T, vocab_size)", ha="center", fontsize=10)
    arrow(ax, head.top, (head.top[0], 6.7))
    ax.text(5.55, 6.2, "minigpt's GPT: lm_head shares the\ntoken_embedding's weight (tied);\nTinyGPT: its own"
                       " Linear, with a bias", fontsize=9, color="#555555", va="center")
    ax.text(5.55, 3.8, "each Block: the\npre-norm block", fontsize=9, color="#555555", va="center")
    return fig


def figures():
    return {"ch04_block.png": block_figure(), "ch04_gpt.png": gpt_figure()}
