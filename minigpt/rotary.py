"""Rotary position embeddings: tell attention where each token is by turning its query and key.

A learned position table adds a vector per position to the token embedding, so the model sees
absolute positions and knows none beyond `context_length`. Rotary embeddings (RoFormer, 2021)
instead split each head's query and key into pairs of numbers and turn pair i of the token at
position p by the angle p * base^(-2i / head_size): fast turns for the first pairs, slow ones for
the last. A dot product of two turned vectors depends only on the *difference* of their angles,
so the score of query position p against key position s depends on p - s alone: attention sees
relative positions, and shifting every position by the same amount changes no score.

Here the pairs are (x[i], x[i + head_size // 2]): the first half of the head against the second
half ("half-split", as in GPT-NeoX), the same maths as neighbouring pairs (x[2i], x[2i + 1]) (the
RoFormer paper, Meta's Llama code) with the dimensions listed in another order. To load weights of
a model that pairs neighbours, reorder the rows of each head's query and key weights by
`order = [0, 2, 4, ..., head_size - 2, 1, 3, ..., head_size - 1]` (new row j of a head = old row
order[j]); values and scores are unchanged, since q and k are permuted alike. `GPTConfig.rotary_base`
sets the base (10,000 by default).
"""

from __future__ import annotations

import torch

from minigpt.errors import MinigptError

ROTARY_BASE = 10_000.0  # GPTConfig.rotary_base's default


def rotary_frequencies(head_size: int, base: float = ROTARY_BASE,
                       device: str | torch.device | None = None) -> torch.Tensor:
    """(head_size // 2,) angles per position step, from 1 down to nearly 1 / base."""
    if head_size % 2:
        raise MinigptError(f"head_size must be even for rotary embeddings (it turns pairs), got {head_size}")
    exponents = torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size
    return base ** -exponents


def rotary_cos_sin(positions: torch.Tensor, frequencies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every angle, each (T, head_size // 2): position p, pair i turns by p * frequencies[i].

    Computed in float32 from the integer positions, so the same positions give the same numbers.
    """
    angles = positions.to(torch.float32)[:, None] * frequencies  # (T, head_size // 2)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn pair i = (x[i], x[i + half]) of x (..., T, head_size) by the angle whose cos and sin are given."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]  # the two numbers of each pair, each (..., T, half)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., T, head_size)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = ROTARY_BASE) -> torch.Tensor:
    """Turn each pair of x's last dimension by its position's angle: x (..., T, head_size), positions (T,).

    Returns a tensor of x's shape and dtype. (Attention computes the frequencies once, and the
    cos and sin once for q and k, with the two functions above: the same numbers.)
    """
    frequencies = rotary_frequencies(x.size(-1), base, x.device)  # (head_size // 2,)
    return rotate(x, *rotary_cos_sin(positions, frequencies))
