"""How good is the model? Average loss on held-out text, and the same number in fairer units.

The loss is the mean negative log-probability (in nats) the model gives each next token. Its size
depends on what a token is: a character model and a cl100k model see different numbers of tokens
for the same text. Bits per character divides the total information by the number of characters
instead, so two tokenizers can be compared on the same text.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minigpt.data import check_whole_number, get_batch


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
