"""Chapter 5 exercises: the loss, one training step, the learning-rate schedule, evaluation.

``estimate_loss`` draws its batches with your ``get_batch`` from chapter 2
(``ex02_batching.py`` in the same folder).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ex02_batching import get_batch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy written by hand, numerically stable.

    For each row: ``loss_i = logsumexp(logits_i) - logits_i[targets_i]``.
    Compute logsumexp stably: subtract the row's maximum before ``exp`` and
    add it back after ``log``, so logits in the thousands do not overflow.
    Write it by hand: use no torch function or class whose name contains
    ``cross_entropy``, ``log_softmax``, ``logsumexp``, ``nll_loss``,
    ``CrossEntropyLoss``, ``NLLLoss`` or ``LogSoftmax`` (``F.cross_entropy``,
    ``F.log_softmax``, ``.log_softmax()``, ``torch.logsumexp``, ``F.nll_loss``,
    ...), whether called, imported or named in a string.

    Args:
        logits: (N, V) float tensor of unnormalised scores.
        targets: (N,) long tensor of class ids in [0, V).

    Returns:
        Scalar (0-dim) tensor: the mean of the N losses, differentiable.
    """
    row_max = logits.max(dim=-1, keepdim=True).values.detach()  # (N, 1)
    shifted = logits - row_max
    log_sum_exp = shifted.exp().sum(dim=-1).log() + row_max.squeeze(-1)  # (N,)
    correct = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    return (log_sum_exp - correct).mean()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimisation step on the batch ``(x, y)``.

    Clear the old gradients, run ``model(x, y)`` (which returns
    ``(logits, loss)``), backpropagate the loss, let the optimizer update the
    parameters.

    Args:
        model: a module whose forward is ``(idx, targets) -> (logits, loss)``.
        optimizer: an optimizer over the model's parameters.
        x: (B, T) long tensor of inputs.
        y: (B, T) long tensor of targets.

    Returns:
        The loss of this batch before the update, as a Python float.
    """
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def learning_rate(step: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """Linear warm-up, then cosine decay, then a floor.

    - ``step < warmup_iters``: ``max_lr * (step + 1) / warmup_iters``
      (so step 0 already gets a small non-zero rate and step ``warmup_iters - 1`` gets ``max_lr``);
    - ``warmup_iters <= step <= max_iters``: with ``ratio = (step - warmup_iters) / (max_iters - warmup_iters)``,
      ``min_lr + 0.5 * (1 + cos(pi * ratio)) * (max_lr - min_lr)``
      (``max_lr`` at ``warmup_iters``, halfway between at the middle, ``min_lr`` at ``max_iters``);
    - ``step > max_iters``: ``min_lr``.

    Args:
        step: the current step, >= 0.
        max_lr, min_lr: the highest and the final learning rate.
        warmup_iters: number of warm-up steps, 0 <= warmup_iters < max_iters.
        max_iters: the step at which the decay reaches ``min_lr``.

    Returns:
        The learning rate as a Python float.
    """
    if step < warmup_iters:
        return max_lr * (step + 1) / warmup_iters
    if step > max_iters:
        return min_lr
    ratio = (step - warmup_iters) / (max_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def estimate_loss(model: nn.Module, splits: dict[str, torch.Tensor], eval_iters: int,
                  batch_size: int, context_length: int,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Average loss of ``model`` over a few random batches of each split.

    For each split, in the dict's order, draw ``eval_iters`` batches with
    ``get_batch(data, batch_size, context_length, generator)`` and average the
    losses from ``model(x, y)``. Run the model in eval mode (dropout off) and
    under ``torch.no_grad()`` (no graph is built), then put the model back in
    the mode it was in (train or eval).

    Args:
        model: forward ``(idx, targets) -> (logits, loss)``.
        splits: split name -> (N,) long tensor, e.g. ``{"train": ..., "val": ...}``.
        eval_iters: batches per split.
        batch_size, context_length: passed to ``get_batch``.
        generator: optional ``torch.Generator`` passed to ``get_batch``.

    Returns:
        Split name -> mean loss as a Python float, same keys as ``splits``.
    """
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for name, data in splits.items():
            losses = []
            for _ in range(eval_iters):
                x, y = get_batch(data, batch_size, context_length, generator)
                _, loss = model(x, y)
                losses.append(loss.item())
            out[name] = sum(losses) / len(losses)
    model.train(was_training)
    return out
