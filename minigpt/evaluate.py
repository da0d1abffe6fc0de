"""How good is the model? Average loss on held-out text, and the same number in fairer units.

The loss is the mean negative log-probability (in nats) the model gives each next token. Its size
depends on what a token is: a character model and a cl100k model see different numbers of tokens
for the same text. Bits per character divides the total information by the number of characters
instead, so two tokenizers can be compared on the same text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.config import DataConfig
from minigpt.data import (check_whole_number, data_source, encode_corpus, get_batch, load_text,
                          train_val_split)
from minigpt.errors import MinigptError


@torch.no_grad()
def estimate_loss(model: nn.Module, splits: dict[str, torch.Tensor], eval_iters: int,
                  batch_size: int, context_length: int, generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean loss over `eval_iters` random batches of each split, e.g. {'train': 1.92, 'val': 2.01}.

    Runs in eval mode (dropout off) without building a graph, then puts the model back in the mode
    it was in, so a training loop can call it in the middle of training.
    """
    check_whole_number("eval_iters", eval_iters)
    was_training = model.training
    model.eval()
    try:
        result = {}
        for name, data in splits.items():
            losses = torch.zeros(eval_iters)
            for i in range(eval_iters):
                x, y = get_batch(data, batch_size, context_length, generator=generator, device=device)
                _, loss = model(x, y)
                losses[i] = loss.item()
            result[name] = losses.mean().item()
        return result
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_split(model: nn.Module, data: torch.Tensor, context_length: int, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> float:
    """Mean loss (nats per token) over every target of `data`, not a sample of random windows.

    The ids are cut into windows of context_length that do not overlap, so each token from the
    second on is predicted exactly once; the last, shorter window holds what is left. A token is
    predicted from the tokens since its window began, so the first positions of each window see
    little context: the figure is a little higher than with a sliding window, and the same for
    every model. `batch_size` windows go through the model at once. Eval mode, no graph; the
    model's mode is restored afterwards.
    """
    check_whole_number("context_length", context_length)
    check_whole_number("batch_size", batch_size)
    if len(data) < 2:
        raise MinigptError(f"data must hold at least 2 tokens (an input and its target), got "
                         f"{len(data)}")
    num_targets = len(data) - 1
    full = num_targets // context_length
    inputs = data[:full * context_length].view(full, context_length)
    targets = data[1:full * context_length + 1].view(full, context_length)
    chunks = list(zip(inputs.split(batch_size), targets.split(batch_size)))
    if num_targets > full * context_length:  # the shorter last window
        start = full * context_length
        chunks.append((data[start:-1].view(1, -1), data[start + 1:].view(1, -1)))
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for x, y in chunks:
            logits, _ = model(x.to(device))
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(),
                                     reduction="sum").item()
        return total / num_targets
    finally:
        model.train(was_training)


def perplexity(loss: float) -> float:
    """exp(loss): the model is as unsure as a fair choice among this many tokens."""
    return math.exp(loss)


def bits_per_char(loss: float, num_tokens: int, num_chars: int) -> float:
    """Bits per character of a text whose `num_tokens` tokens cost `loss` nats each on average.

    total information = loss * num_tokens nats = loss * num_tokens / ln 2 bits, spread over
    num_chars characters.
    """
    check_whole_number("num_tokens", num_tokens)
    check_whole_number("num_chars", num_chars)
    return loss * num_tokens / (num_chars * math.log(2))


def bits_per_byte(loss: float, num_tokens: int, num_bytes: int) -> float:
    """Like `bits_per_char`, per UTF-8 byte: fair across languages whose characters differ in size."""
    check_whole_number("num_bytes", num_bytes)
    return bits_per_char(loss, num_tokens, num_bytes)


EVAL_LOGITS = 2**22  # logits per forward pass: 64 windows of 64 characters; fewer for big vocabularies


def evaluate_text(model: nn.Module, tokenizer, saved: dict, data: str | None, split: str,
                  device: str | torch.device) -> list[str]:
    """`minigpt evaluate`'s report, as lines to print: loss, perplexity, bits per character of one
    split ('val': the held-out end, 'train': the rest, 'all') of `data` (None: the text the
    training state `saved` names), cut with the checkpoint's val_fraction."""
    option = "--data" if data is not None else "the checkpoint's data (give --data to use another text)"
    source = data_source(data if data is not None else saved["data"], option)
    text = load_text(source, option)
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as error:
        raise MinigptError(f"{option} {source!r} cannot be encoded by the checkpoint's tokenizer: "
                           f"{error}") from None
    val_fraction = DataConfig(val_fraction=saved.get("val_fraction", 0.1)).val_fraction
    if split != "all":
        train_ids, val_ids = train_val_split(ids, val_fraction)
        ids = val_ids if split == "val" else train_ids
    if len(ids) < 2:
        raise MinigptError(f"--split {split} of {source!r} holds {len(ids)} token(s); it needs "
                           f"at least 2 (an input and its target)")
    context_length, vocab_size = model.config.context_length, model.config.vocab_size
    batch_size = max(1, EVAL_LOGITS // (context_length * vocab_size))
    loss = evaluate_split(model, ids, context_length, batch_size, device)
    num_chars = len(tokenizer.decode(ids[1:].tolist()))  # the characters predicted
    return [f"{split} split of {source}: {len(ids) - 1:,} tokens predicted, windows of "
            f"{context_length}",
            f"loss: {loss:.4f}",
            f"perplexity: {perplexity(loss):.3f}",
            f"bits per character: {bits_per_char(loss, len(ids) - 1, max(1, num_chars)):.4f}"]
