"""Chapter 6 exercises: turning a loss into numbers people can compare.

The loss is a mean cross-entropy in nats per token. Perplexity reads it as
"how many tokens the model is hesitating between"; bits per character makes
models with different tokenizers comparable, because it counts characters,
which every tokenizer shares, instead of tokens.
"""

from __future__ import annotations

import math


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


def bits_per_char(loss_nats_per_token: float, num_tokens: int, num_chars: int) -> float:
    """Convert a loss in nats per token into bits per character.

    The total information is ``loss_nats_per_token * num_tokens`` nats; one
    bit is ln(2) nats; divide by the number of characters the tokens encode.

    Args:
        loss_nats_per_token: mean cross-entropy in nats per token.
        num_tokens: how many tokens the text was encoded into.
        num_chars: how many characters the text has.

    Returns:
        ``loss_nats_per_token * num_tokens / (num_chars * ln 2)`` as a float.
    """
    return loss_nats_per_token * num_tokens / (num_chars * math.log(2))


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
