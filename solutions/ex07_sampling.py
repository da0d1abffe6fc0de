"""Chapter 7 exercises: from next-token logits to text.

Every step the model gives logits for the next token. We reshape that
distribution (temperature, top-k, top-p, penalties), sample one token,
append it, and run again.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature`` (before any softmax).

    Below 1 the distribution gets sharper, above 1 flatter.

    Args:
        logits: (..., V) float tensor.
        temperature: > 0 (otherwise raise ValueError).

    Returns:
        (..., V) tensor ``logits / temperature``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row; set the others to -inf.

    Kept logits keep their values. If ``k >= V`` nothing is removed. (When
    several logits tie with the k-th largest, all of them are kept.) The input
    is not modified.

    Args:
        logits: (..., V) float tensor.
        k: number of tokens to keep, >= 1.

    Returns:
        (..., V) tensor.
    """
    if k >= logits.shape[-1]:
        return logits.clone()
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the most probable tokens until their probability reaches ``p``.

    For each row, sort the tokens by probability (softmax of the logits),
    largest first, and keep the smallest prefix whose total probability is
    >= ``p``. The most probable token is always kept, and ``p = 1`` keeps every
    token (even one whose probability is lost in float32 rounding of the sum).
    Kept logits keep their values; the others become -inf. The input is not
    modified.

    Args:
        logits: (..., V) float tensor.
        p: 0 < p <= 1.

    Returns:
        (..., V) tensor.
    """
    if p >= 1:
        return logits.clone()  # every token; float rounding of the running sum must not drop a tiny tail
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
    remove_sorted = mass_before >= p  # the prefix already reached p without this token
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor,
                    frequency_penalty: float, presence_penalty: float) -> torch.Tensor:
    """Discourage repetition: lower the logits of tokens already generated.

    ``logits - frequency_penalty * counts - presence_penalty * (counts > 0)``:
    the frequency penalty grows with every repetition, the presence penalty
    is paid once by any token that has appeared at all.

    Args:
        logits: (..., V) float tensor.
        counts: (..., V) tensor, how many times each token has appeared so far.
        frequency_penalty, presence_penalty: floats (0 means no penalty).

    Returns:
        (..., V) float tensor.
    """
    counts = counts.to(logits.dtype)
    return logits - frequency_penalty * counts - presence_penalty * (counts > 0).to(logits.dtype)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_length: int,
             temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend ``idx`` by ``max_new_tokens`` tokens sampled from ``model``.

    Each step: crop the sequence to its last ``context_length`` tokens, run
    ``model(cropped)`` (it returns ``(logits, loss)``), take the logits of the
    last position, (B, V). Then:
    - ``temperature == 0``: pick the argmax (greedy; no random draw);
    - otherwise apply ``apply_temperature``, then ``top_k_filter`` if ``top_k``
      is given, softmax, and draw with exactly one call
      ``torch.multinomial(probs, num_samples=1, generator=generator)``.
    Append the new token and go on. Runs under ``torch.no_grad()``.

    Args:
        model: forward ``idx (B, T) -> (logits (B, T, V), loss)``.
        idx: (B, T0) long tensor, the prompt.
        max_new_tokens: how many tokens to add.
        context_length: the longest sequence the model accepts.
        temperature: >= 0.
        top_k: optional, keep only the k most likely tokens.
        generator: optional ``torch.Generator`` for reproducible sampling.

    Returns:
        (B, T0 + max_new_tokens) long tensor that starts with ``idx``.
    """
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -context_length:])
        logits = logits[:, -1, :]  # (B, V)
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = apply_temperature(logits, temperature)
            if top_k is not None:
                logits = top_k_filter(logits, top_k)
            probs = torch.softmax(logits, dim=-1)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat([idx, next_id], dim=1)
    return idx
