"""Pictures the course uses: loss curves and attention heat maps.

Each function draws on a matplotlib Axes (a new figure if none is given) and returns the Figure,
so a notebook shows it inline and a script can `savefig` it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from minigpt.errors import MinigptError


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_loss_curves(history: Sequence[dict[str, float]], train_losses: Sequence[float] | None = None,
                     ax: Axes | None = None, title: str = "Loss") -> Figure:
    """Train and val loss at each evaluation (and, faintly, the loss of every step if given)."""
    fig, ax = _axes(ax, (7, 4))
    if train_losses:
        ax.plot(range(len(train_losses)), train_losses, color="tab:blue", alpha=0.25, lw=0.8,
                label="train (each step)")
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train"] for h in history], "o-", color="tab:blue", label="train (estimate)")
    ax.plot(steps, [h["val"] for h in history], "o-", color="tab:orange", label="val (estimate)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attention(weights: torch.Tensor, tokens: Sequence[str] | None = None,
                   ax: Axes | None = None, title: str = "Attention weights") -> Figure:
    """Heat map of one head's (T, T) weights: row = query position, column = key it looks at."""
    if weights.dim() != 2 or weights.size(0) != weights.size(1):
        raise MinigptError(f"weights must be one head's (T, T) matrix, got shape {tuple(weights.shape)}")
    fig, ax = _axes(ax, (5, 4.5))
    image = ax.imshow(weights.detach().cpu().float().numpy(), cmap="viridis", vmin=0.0)
    if tokens is not None:
        labels = [repr(t)[1:-1] for t in tokens]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG (or whatever the suffix says) and close, so scripts do not pile up figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
