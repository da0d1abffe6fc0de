"""Chapter 9 — Beyond one process: the pieces of data-parallel training, by hand.

Six small pieces that `minigpt train --data DIR --grad-accum-steps N` and `torchrun` put together:
reading token ids from a file on disk without loading it, drawing a batch from it, one optimizer
step made of several micro-batches, which micro-batches and which rows a rank takes, and the
averaging of gradients across ranks with `torch.distributed.all_reduce`. Each is a plain function,
so it can be checked in one process: the grader plays the other ranks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def open_shard(path: str, dtype: str = "uint16") -> np.ndarray:
    """A token file's ids, mapped from disk and read-only: an ``np.memmap`` of shape (N,).

    The file holds N ids back to back as ``dtype`` (``"uint16"`` or ``"uint32"``), nothing else.
    Nothing is read yet: the operating system pages in only what is later indexed, so the file
    may be far larger than memory. Opened read-only (a training run never changes its data).
    """
    # Your code here.
    raise NotImplementedError


def shard_batch(tokens: np.ndarray, batch_size: int, context_length: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of a 1-D array of ids: x and y, (batch_size, context_length), int64.

    Draw the starts as chapter 2's ``get_batch`` does, with one call
    ``torch.randint(len(tokens) - context_length, (batch_size,), generator=generator)``, so the
    same generator gives the same windows as ``get_batch`` on the same ids. y is x shifted by one.
    Read only the windows (index the array with the start positions): never turn the whole array
    into a tensor, which would read the whole file. The ids are unsigned (uint16) on disk; the
    model's embedding wants int64.
    """
    # Your code here.
    raise NotImplementedError


def accumulation_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                      micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One optimizer step whose gradient is the mean over several micro-batches; returns the mean loss.

    ``model(x, y)`` returns ``(logits, loss)``, the loss a mean over the micro-batch. With N
    micro-batches of equal size, the step must equal one step on all of them stacked into one big
    batch: clear old gradients once, then for each micro-batch run the model and backpropagate its
    loss divided by N (gradients add up in ``.grad``), then step once. Return the mean of the N
    losses as a float (the big batch's loss).
    """
    # Your code here.
    raise NotImplementedError


def micro_steps_of_rank(grad_accum_steps: int, rank: int, world_size: int) -> list[int]:
    """The indices of the micro-batches that rank ``rank`` runs in one optimizer step, in order.

    The step is made of micro-batches 0 .. grad_accum_steps - 1 whatever the number of ranks;
    rank r takes every world_size-th one starting at r (rank 0 of 2 with 4 steps: [0, 2]).
    ``grad_accum_steps`` must be a multiple of ``world_size`` (every rank does the same number of
    backward passes), else ValueError naming grad_accum_steps; ``rank`` must be in
    [0, world_size), else ValueError naming rank.
    """
    # Your code here.
    raise NotImplementedError


def rank_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The rows of ``batch`` (B, ...) that rank ``rank`` of ``world_size`` works on: a contiguous block.

    Rank r gets rows r * B / world_size up to (r + 1) * B / world_size, so the blocks of ranks
    0, 1, ... put end to end are the batch. B must be a multiple of world_size, else ValueError
    naming world_size; rank must be in [0, world_size), else ValueError naming rank.
    """
    # Your code here.
    raise NotImplementedError


def average_gradients(model: nn.Module) -> None:
    """After backward on every rank: make each parameter's ``.grad`` the mean over all ranks, in place.

    For every parameter that has a gradient (skip those whose ``.grad`` is None), call
    ``dist.all_reduce`` on it (it sums the tensor across ranks, in place: every rank then holds the
    same sum) and divide by ``dist.get_world_size()``. Use the sum (``dist.ReduceOp.SUM``, the
    default): gloo, the CPU backend, has no average. Call ``dist.all_reduce`` through the module
    (``import torch.distributed as dist``): in a test the grader stands in for the other ranks there.
    """
    # Your code here.
    raise NotImplementedError
