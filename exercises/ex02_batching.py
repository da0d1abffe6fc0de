"""Chapter 2 exercises: split the token ids and cut them into windows and batches.

The model learns to predict, at every position, the next token. A batch is
therefore a set of windows ``x`` taken from the data, and targets ``y`` that
are the same windows moved one token to the right.
"""

from __future__ import annotations

import torch
import torch.utils.data


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
    # Your code here.
    raise NotImplementedError


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
    # Your code here.
    raise NotImplementedError


def sliding_windows(data: torch.Tensor, context_length: int,
                    stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window the data holds, in order, its starts ``stride`` ids apart.

    The windows start at 0, stride, 2 * stride, ... as long as the window and
    its target fit: a start ``s`` is used when ``s + T + 1 <= len(data)``
    (T = ``context_length``). So there are ``(len(data) - T - 1) // stride + 1``
    windows. ``stride=1`` gives every possible window (each overlaps the next
    in T - 1 ids); ``stride=T`` gives windows that touch without overlapping.

    Args:
        data: (N,) long tensor of token ids, N >= context_length + 1.
        context_length: window length T.
        stride: distance between two consecutive starts, >= 1.

    Returns:
        ``(x, y)``, each of shape (num_windows, T) and dtype torch.long; row i
        of ``x`` is ``data[i * stride : i * stride + T]`` and row i of ``y`` is
        the same window shifted by one.
    """
    # Your code here.
    raise NotImplementedError


def sequential_batches(data: torch.Tensor, batch_size: int,
                       context_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut ``data`` into non-overlapping windows, in order, grouped into batches.

    Used to evaluate on a whole split without randomness: no target is
    predicted twice, and every one is predicted once except the last few,
    where fewer than T + 1 ids are left for another window. The windows are
    those of ``sliding_windows`` with ``stride = context_length``:
    they start at 0, T, 2T, ... (T = ``context_length``) as long as the
    window and its target fit (``s + T + 1 <= len(data)``). Consecutive
    windows are grouped ``batch_size`` at a time; the last batch holds what
    is left and may be smaller.

    Args:
        data: (N,) long tensor of token ids.
        batch_size: most windows per batch.
        context_length: window length T.

    Returns:
        A list of ``(x, y)`` pairs, each of shape (b, T) with 1 <= b <= batch_size,
        dtype torch.long; ``y`` is ``x`` shifted by one as in ``get_batch``.
        Empty when ``len(data) < T + 1``.
    """
    # Your code here.
    raise NotImplementedError


class WindowDataset(torch.utils.data.Dataset):
    """The windows of ``sliding_windows`` as a PyTorch ``Dataset``: item i is one ``(x, y)`` pair.

    A ``torch.utils.data.DataLoader`` can then shuffle and batch them. Window
    i starts at ``i * stride``; there are ``(len(data) - T - 1) // stride + 1``
    of them (T = ``context_length``). Nothing is copied up front: each item is
    sliced from ``data`` when it is asked for.
    """

    def __init__(self, data: torch.Tensor, context_length: int, stride: int = 1) -> None:
        """Keep the data and the window settings.

        Args:
            data: (N,) long tensor of token ids, N >= context_length + 1.
            context_length: window length T.
            stride: distance between two consecutive starts, >= 1 (1: every window).
        """
        # Your code here.
        raise NotImplementedError

    def __len__(self) -> int:
        """The number of windows, ``(len(data) - T - 1) // stride + 1``."""
        # Your code here.
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``index``: ``(x, y)``, each of shape (T,) and dtype torch.long.

        ``x`` is ``data[s : s + T]`` with ``s = index * stride``, and ``y`` is
        ``data[s + 1 : s + T + 1]``. An index outside ``0 <= index < len(self)``
        raises ``IndexError`` (a ``for`` loop over the dataset stops there).
        """
        # Your code here.
        raise NotImplementedError
