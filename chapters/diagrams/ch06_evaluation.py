"""Diagrams of chapter 6: where each loss is measured, a whole split in windows, the context along a window.

Drawn with the boxes and cells of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, GREY, ORANGE, arrow, box, cells, new_diagram

WORD = "THESEUS:"  # the first characters of the corpus, as in the notebook


def split_figure():
    """The ids cut 90 / 10: the optimizer learns from the first part only; both are measured the same way."""
    fig, ax = new_diagram(9.0, 3.4)
    train = box(ax, 0.4, 1.5, 7.2, 0.7, "train split: first 90% of the ids", color=BLUE)
    val = box(ax, 7.6, 1.5, 1.0, 0.7, "val\n10%", color=ORANGE, fontsize=10)
    ax.text(0.4, 3.0, "One text, cut once (train_val_split): the model never takes a gradient step on the val part",
            fontsize=10.5, va="center")
    step = box(ax, 0.9, 0.2, 3.2, 0.75, "training step: loss.backward()\noptimizer.step()", color=GREEN, fontsize=9.5)
    arrow(ax, (2.5, train.y), step.top, "get_batch")
    measure = box(ax, 4.9, 0.2, 3.7, 0.75, "estimate_loss (eval mode, no graph)\n-> train loss and val loss",
                  color=GREY, fontsize=9.5)
    arrow(ax, (6.2, train.y), (6.2, measure.y + measure.h), "train")
    arrow(ax, val.bottom, (8.1, measure.y + measure.h), "val")
    ax.text(4.45, 2.55, "the train loss says how well it fits what it saw; "
            "the val loss, how well it predicts new text", ha="center", fontsize=9.5, color="#555555")
    return fig


def whole_split_figure():
    """evaluate_split's windows: T = 4 over 11 ids, two full windows and a shorter last one; every target once."""
    text, T = "THESEUS:\nNo", 4
    shown = [c if c != "\n" else "\\n" for c in text]
    size, left = 0.55, 2.3
    fig, ax = new_diagram(9.6, 4.7)
    ax.text(0.15, 4.4, f"A split of {len(text)} ids, windows of T = {T} that do not overlap: "
            f"every id from the second on is a target exactly once", fontsize=10.5, va="center")
    ax.text(0.15, 3.65 + size / 2, "the ids", va="center", fontsize=9.5)
    cells(ax, left, 3.65, shown, size=size, fontsize=9)
    for i in range(len(text)):
        ax.text(left + (i + 0.5) * size, 3.5, str(i), ha="center", va="center", fontsize=7.5, color="#555555")
    for k, start in enumerate(range(0, len(text) - 1, T)):
        stop = min(start + T, len(text) - 1)  # the last window holds what is left
        y = 2.6 - k * 0.95
        label = f"window {k}" + (" (shorter)" if stop - start < T else "")
        ax.text(0.15, y + size / 2, label, va="center", fontsize=9.5)
        colors = ["white"] * start + [BLUE] * (stop - start) + ["white"] * (len(text) - stop)
        cells(ax, left, y, [shown[i] if start <= i < stop else "" for i in range(len(text))], size=size,
              colors=colors, fontsize=9)
        for i in range(start + 1, stop + 1):
            box(ax, left + i * size + 0.05, y - 0.3, size - 0.1, 0.22, color=ORANGE)
        ax.text(left + len(text) * size + 0.25, y + 0.05, f"inputs {start}..{stop - 1}\ntargets {start + 1}..{stop}",
                va="center", fontsize=8.5, color="#555555")
    ax.text(0.15, 0.1, "blue: the window's inputs; orange bar: its targets (the same ids shifted by one). "
            "Mean loss = sum over all 10 targets / 10", fontsize=9, color="#555555", va="center")
    return fig


def context_figure():
    """Along one window, position t predicts the next id from t + 1 ids of context: early positions know less."""
    T = len(WORD)
    size, step = 0.48, 0.5
    height = 1.3 + T * step
    fig, ax = new_diagram(9.4, height)
    left = 1.8
    ax.text(0.15, height - 0.35, f"One window, T = {T}: the model predicts the next character at every position",
            fontsize=10.5, va="center")
    for t in range(T):
        y = height - 1.1 - t * step
        ax.text(0.15, y + size / 2, f"position {t}", va="center", fontsize=9.5)
        colors = [BLUE] * (t + 1) + [ORANGE] + ["white"] * (T - t - 1)
        texts = list(WORD[: t + 1]) + ["?"] + [""] * (T - t - 1)
        cells(ax, left, y, texts, size=size, colors=colors, fontsize=9)
        seen = "1 character" if t == 0 else f"{t + 1} characters"
        ax.text(left + (T + 1) * size + 0.25, y + size / 2, f"sees {seen}", va="center", fontsize=9,
                color="#555555")
    note_x = left + (T + 1) * size + 1.75
    ax.text(note_x, height - 1.1 - 0.5 * step, "little context:\nhigher loss", fontsize=9.5, va="center")
    ax.text(note_x, height - 1.1 - (T - 1.5) * step, "more context:\nlower loss", fontsize=9.5, va="center")
    arrow(ax, (note_x + 0.5, height - 1.1 - 1.2 * step), (note_x + 0.5, height - 1.1 - (T - 2.6) * step))
    ax.text(0.15, 0.25, "loss_by_position averages each row's loss over every window of the validation split",
            fontsize=9.5, color="#555555", va="center")
    return fig


def figures():
    return {"ch06_split.png": split_figure(), "ch06_whole_split.png": whole_split_figure(),
            "ch06_context.png": context_figure()}
