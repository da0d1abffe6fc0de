"""Chapter 6 exercises: turning a loss into numbers people can compare, and looking inside it.

The loss is a mean cross-entropy in nats per token. Perplexity reads it as
"how many tokens the model is hesitating between"; bits per character (or per
UTF-8 byte) makes models with different tokenizers comparable, because it
counts characters (or bytes), which every tokenizer shares, instead of tokens.
``best_step`` picks the checkpoint to keep, ``dropout`` is the regulariser the
chapter uses against overfitting, ``evaluate_split`` measures the loss over a
whole split with every target predicted exactly once, and ``loss_by_position``
splits the loss by how much context the model had.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def perplexity(loss: float) -> float:
    """Perplexity of a mean cross-entropy loss: ``exp(loss)``.

    A model that spreads its bets evenly over V tokens has loss ln(V) and
    perplexity V.

    Args:
        loss: mean cross-entropy in nats per token (a Python float).

    Returns:
        The perplexity as a Python float.
    """
    return math.exp(loss)


def bits_per_char(loss: float, num_tokens: int, num_chars: int) -> float:
    """Convert a loss in nats per token into bits per character.

    The total information is ``loss * num_tokens`` nats; one bit is ln(2)
    nats; divide by the number of characters the tokens encode.

    Args:
        loss: mean cross-entropy in nats per token.
        num_tokens: how many tokens the text was encoded into.
        num_chars: how many characters the text has.

    Returns:
        ``loss * num_tokens / (num_chars * ln 2)`` as a float.
    """
    return loss * num_tokens / (num_chars * math.log(2))


def bits_per_byte(loss: float, num_tokens: int, num_bytes: int) -> float:
    """Convert a loss in nats per token into bits per UTF-8 byte.

    The same total information as in ``bits_per_char``, spread over the
    bytes of the text's UTF-8 encoding (``len(text.encode("utf-8"))``)
    instead of its characters. Bytes are what every tokenizer, byte-level
    ones included, can be measured on, so this compares tokenizers on the
    same text. It does not make languages comparable: a Greek letter is
    2 bytes, so on Greek text bits per byte is about half of bits per
    character. Comparing models needs the same text, in any unit.

    Args:
        loss: mean cross-entropy in nats per token.
        num_tokens: how many tokens the text was encoded into.
        num_bytes: how many bytes the text's UTF-8 encoding has; a whole
            number >= 1.

    Returns:
        ``loss * num_tokens / (num_bytes * ln 2)`` as a float.

    Raises:
        ValueError: naming ``num_bytes`` if it is not a whole number >= 1.
    """
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int) or num_bytes < 1:
        raise ValueError(f"num_bytes must be a whole number >= 1, got {num_bytes!r}")
    return loss * num_tokens / (num_bytes * math.log(2))


def best_step(history: list[dict]) -> int:
    """The step at which the validation loss was lowest.

    Args:
        history: a list of records like ``{"step": 200, "train": 1.9, "val": 2.0}``,
            in the order they were logged.

    Returns:
        The ``"step"`` of the record with the smallest ``"val"``; on a tie,
        the record that comes first in the list.
    """
    best = min(history, key=lambda record: record["val"])
    return best["step"]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by ``1 / (1 - p)``.

    The scaling keeps every entry's expected value equal to ``x``, so the
    network sees the same sizes in training and in evaluation, where dropout
    does nothing. Write it by hand: use no torch function or class whose
    name contains ``dropout``, ``Dropout``, ``native_dropout``,
    ``alpha_dropout`` or ``feature_alpha_dropout`` (``F.dropout``,
    ``nn.Dropout``, ``torch.dropout``, ``F.dropout1d``, ...), whether called,
    imported or named in a string. Draw the random numbers from torch's
    global generator (``torch.rand``, ``torch.bernoulli``, ...), one
    independent draw per entry.

    Args:
        x: a float tensor of any shape; it is not changed.
        p: the probability of zeroing an entry, 0 <= p <= 1.
        training: if False, return ``x`` unchanged (evaluation mode).

    Returns:
        A new tensor of the shape of ``x``: each entry 0 or ``x / (1 - p)``;
        all zeros when ``p == 1`` (never NaN); ``x`` itself when not training.

    Raises:
        ValueError: naming ``p`` if it is outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep / (1.0 - p)


@torch.no_grad()
def evaluate_split(model: nn.Module, data: torch.Tensor, context_length: int,
                   batch_size: int = 64) -> float:
    """The mean loss over every target of ``data``, each predicted exactly once.

    ``estimate_loss`` averages a few random windows, so some targets are
    counted twice and most never. Here the targets ``data[1:]`` are cut into
    windows that do not overlap: inputs ``data[s : s + T]`` and targets
    ``data[s + 1 : s + T + 1]`` for ``s = 0, T, 2T, ...`` (T =
    ``context_length``). When ``len(data) - 1`` is not a multiple of T, the
    last window is shorter: inputs ``data[s : -1]``, targets ``data[s + 1 :]``.
    Run the full windows ``batch_size`` at a time and the shorter one on its
    own, in eval mode (dropout off) and without building a graph, then put the
    model back in the mode it was in. The result is the sum of every target's
    cross-entropy divided by the number of targets, ``len(data) - 1`` (a
    short window counts for its tokens, not as much as a full one).

    Args:
        model: called as ``model(x)``, returns ``(logits, loss)`` with logits of
            shape (B, t, vocab_size) for x of shape (B, t), t <= context_length.
        data: 1-D long tensor of token ids, at least 2 long.
        context_length: T, the longest window; a whole number >= 1.
        batch_size: most windows per call of the model; a whole number >= 1
            (only memory and speed depend on it).

    Returns:
        The mean loss in nats per target, as a Python float.

    Raises:
        ValueError: naming ``context_length`` or ``batch_size`` if it is not a
            whole number >= 1, or ``data`` if it holds fewer than 2 tokens.
    """
    for name, value in (("context_length", context_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if len(data) < 2:
        raise ValueError(f"data has {len(data)} tokens but needs at least 2 (an input and its target)")
    num_targets = len(data) - 1
    full = num_targets // context_length  # windows of exactly context_length targets
    x = data[: full * context_length].view(full, context_length)  # (full, T)
    y = data[1 : full * context_length + 1].view(full, context_length)  # (full, T)
    chunks = list(zip(x.split(batch_size), y.split(batch_size)))
    if full * context_length < num_targets:  # what is left: one shorter window
        chunks.append((data[full * context_length : -1][None], data[full * context_length + 1 :][None]))
    was_training = model.training
    model.eval()
    try:
        nats = 0.0  # the sum of every target's loss
        for xb, yb in chunks:
            logits, _ = model(xb)  # (b, t, V)
            nats += F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum").item()
        return nats / num_targets
    finally:
        model.train(was_training)


@torch.no_grad()
def loss_by_position(model: nn.Module, data: torch.Tensor, context_length: int,
                     batch_size: int = 32) -> torch.Tensor:
    """The mean loss at each position of the context, over every window of ``data``.

    Cut ``data`` into consecutive, non-overlapping windows: x starts at 0,
    context_length, 2 * context_length, ... as long as its targets fit (the
    windows of chapter 2's ``sequential_batches``). Run the model on them
    ``batch_size`` windows at a time, in eval mode (dropout off) and without
    building a graph, and average the cross-entropy of position t over all
    windows. Position 0 predicts from one token of context, the last position
    from ``context_length`` tokens. Put the model back in the mode it was in.

    Args:
        model: called as ``model(x)``, returns ``(logits, loss)`` with logits of
            shape (B, T, vocab_size).
        data: 1-D tensor of token ids, at least ``context_length + 1`` long.
        context_length: T, the length of each window; a whole number >= 1.
        batch_size: how many windows to run at once (only memory depends on it).

    Returns:
        A float tensor of shape (context_length,): entry t is the mean loss, in
        nats, of predicting the token after position t.

    Raises:
        ValueError: naming ``context_length`` if it is not a whole number >= 1,
            or ``data`` if it is shorter than ``context_length + 1``.
    """
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a whole number >= 1, got {context_length!r}")
    if len(data) < context_length + 1:
        raise ValueError(f"data has {len(data)} tokens but needs at least context_length + 1 = {context_length + 1}")
    starts = list(range(0, len(data) - context_length, context_length))
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros(context_length)
        for i in range(0, len(starts), batch_size):
            batch = starts[i : i + batch_size]
            x = torch.stack([data[s : s + context_length] for s in batch])
            y = torch.stack([data[s + 1 : s + context_length + 1] for s in batch])
            logits, _ = model(x)
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
            total += losses.sum(dim=0)
        return total / len(starts)
    finally:
        model.train(was_training)
