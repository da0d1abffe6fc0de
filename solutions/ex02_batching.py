"""Chapter 2 exercises: split the token ids and cut them into training batches.

The model learns to predict, at every position, the next token. A batch is
therefore a set of windows ``x`` taken from the data, and targets ``y`` that
are the same windows moved one token to the right.
"""

from __future__ import annotations

import torch


def train_val_split(data: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D tensor of token ids into a training part and a validation part.

    No shuffling: the first ``n_train = int(len(data) * (1 - val_fraction))``
    ids are the training part and the rest is the validation part (so with the
    default, the first 90% train and the last 10% validate).

    Args:
        data: (N,) long tensor of token ids.
        val_fraction: share of the data kept for validation, 0 < val_fraction < 1.

    Returns:
        ``(train, val)``: shapes (n_train,) and (N - n_train,), same dtype as ``data``.
    """
    n_train = int(len(data) * (1 - val_fraction))
    return data[:n_train], data[n_train:]


def get_batch(data: torch.Tensor, batch_size: int, context_length: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a random batch of input windows and their next-token targets.

    Draw the start offsets with exactly this call (so that your batches match
    the reference seed for seed):
    ``torch.randint(len(data) - context_length, (batch_size,), generator=generator)``.
    Row i of ``x`` is ``data[s : s + context_length]`` for the i-th start ``s``;
    row i of ``y`` is the same window shifted by one, ``data[s + 1 : s + context_length + 1]``.
    Every start from 0 to ``len(data) - context_length - 1`` can be drawn.

    Args:
        data: (N,) long tensor of token ids, N > context_length.
        batch_size: number of windows B.
        context_length: window length T.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        ``(x, y)``, each of shape (B, T) and dtype torch.long.
    """
    starts = torch.randint(len(data) - context_length, (batch_size,), generator=generator)
    x = torch.stack([data[s : s + context_length] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + context_length + 1] for s in starts.tolist()])
    return x.long(), y.long()


def sequential_batches(data: torch.Tensor, batch_size: int,
                       context_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut ``data`` into non-overlapping windows, in order, grouped into batches.

    Used to evaluate on a whole split exactly once, without randomness. The
    windows start at 0, T, 2T, ... (T = ``context_length``) as long as the
    window and its target fit: a start ``s`` is used when ``s + T + 1 <= len(data)``.
    Consecutive windows are grouped ``batch_size`` at a time; the last batch
    holds what is left and may be smaller.

    Args:
        data: (N,) long tensor of token ids.
        batch_size: most windows per batch.
        context_length: window length T.

    Returns:
        A list of ``(x, y)`` pairs, each of shape (b, T) with 1 <= b <= batch_size,
        dtype torch.long; ``y`` is ``x`` shifted by one as in ``get_batch``.
        Empty when ``len(data) < T + 1``.
    """
    starts = list(range(0, len(data) - context_length, context_length))
    batches = []
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        x = torch.stack([data[s : s + context_length] for s in chunk])
        y = torch.stack([data[s + 1 : s + context_length + 1] for s in chunk])
        batches.append((x.long(), y.long()))
    return batches
