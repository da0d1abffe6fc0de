"""Diagram of chapter 5: one turn of the training loop, and the evaluation every few steps.

The boxes follow minigpt's `Trainer` (`minigpt.trainer`) in order: every `eval_interval` steps a measurement
(`estimate_loss`) and the checkpoints; then the learning rate for this step, a batch, forward,
loss, fresh gradients, backward, clipping, the update.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, new_diagram

W, H = 2.1, 0.95  # every box
STEP = W + 0.5  # from one column to the next
BOTTOM, TOP, EVAL = 0.3, 1.9, 3.5  # the rows: update half, forward half, evaluation


def _row(ax, y, texts, colors):
    """Boxes in columns 0, 1, 2, ... at height y."""
    return [box(ax, 0.3 + i * STEP, y, W, H, text, color=color, fontsize=10)
            for i, (text, color) in enumerate(zip(texts, colors))]


def loop_figure():
    fig, ax = new_diagram(13.1, 5.2)
    ax.text(0.3, 4.9, "The training loop of minigpt's Trainer: one turn per step, max_iters turns",
            fontsize=13, weight="bold", va="center")
    check, *forward = _row(ax, TOP, [
        "evaluate now?\nstep % eval_interval\n== 0",
        "1. learning rate\nlearning_rate(step)\nwarm-up, then cosine",
        "2. a batch\nget_batch(train)\nx, y: (B, T)",
        "3. forward\nmodel(x) -> logits\n(B, T, V)",
        "4. loss\ncross_entropy(\nlogits, y)"], [GREY, ORANGE, BLUE, BLUE, BLUE])
    count, *backward = _row(ax, BOTTOM, [
        "step += 1",
        "8. update\noptimizer.step()\n(AdamW)",
        "7. clip\nclip_grad_norm_(\ngrad_clip)",
        "6. backward\nloss.backward()\nfills .grad",
        "5. fresh gradients\noptimizer.zero_grad()\n(.grad adds up)"], [GREY, GREEN, GREEN, GREEN, GREEN])
    measure, save = _row(ax, EVAL, [
        "estimate_loss(\nmodel, splits)\neval mode, no_grad",
        "save ckpt.pt, and\nbest.pt if val loss\nis the lowest yet"], [ORANGE, ORANGE])
    arrow(ax, check.right, forward[0].left, "no")
    arrow(ax, check.top, measure.bottom, "yes")
    arrow(ax, measure.right, save.left)
    arrow(ax, save.bottom, forward[0].top)
    for a, b in zip(forward, forward[1:]):
        arrow(ax, a.right, b.left)
    arrow(ax, forward[-1].bottom, backward[-1].top)
    steps_back = [*reversed(backward), count]
    for a, b in zip(steps_back, steps_back[1:]):
        arrow(ax, a.left, b.right)
    arrow(ax, count.top, check.bottom)
    ax.text(save.right[0] + 0.3, EVAL + H / 2,
            "every eval_interval steps and at the end:\nthe history of train and val loss,\n"
            "and a run that can be resumed", fontsize=10, va="center", color="#333333")
    return fig


def figures():
    """{"ch05_training_loop.png": the loop}."""
    return {"ch05_training_loop.png": loop_figure()}
