"""Chapter 3 exercises: causal self-attention, from the mask to multi-head attention.

Each position builds a query ("what am I looking for?"), a key ("what do I
contain?") and a value ("what do I pass on?"). A position's output is an
average of the values of the positions it may look at, weighted by how well
its query matches their keys. In a language model a position may only look
at itself and earlier positions: that is the causal mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def causal_mask(T: int) -> torch.Tensor:
    """The causal attention mask for a sequence of length ``T``.

    Entry ``[i, j]`` is True when position i may attend to position j, that is
    when ``j <= i`` (the lower triangle, diagonal included).

    Args:
        T: sequence length.

    Returns:
        (T, T) tensor of dtype torch.bool.
    """
    # Your code here.
    raise NotImplementedError


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention by hand: ``softmax(q @ k^T / sqrt(head_size)) @ v``.

    Where ``mask`` is False the score is set to -inf before the softmax, so
    that position gets weight 0. The softmax runs over the last axis (the keys),
    so every row of weights sums to one.

    "By hand" means without PyTorch's fused attention: no name containing
    ``scaled_dot_product_attention``, ``multi_head_attention_forward`` or
    ``MultiheadAttention`` anywhere in this file (attribute, import, or a
    string given to getattr). ``torch.softmax`` is allowed: it subtracts each
    row's maximum before exp. A softmax you write yourself must subtract it
    too, or scores in the hundreds overflow float32 (exp(89) is inf) and the
    weights become NaN. Do not change q, k, v or mask in place.

    Args:
        q: (..., T, head_size) queries.
        k: (..., T, head_size) keys.
        v: (..., T, head_size) values.
        mask: optional (T, T) bool tensor, True where attention is allowed
            (broadcast over the leading dimensions).

    Returns:
        ``(out, weights)``: out (..., T, head_size), weights (..., T, T).
    """
    # Your code here.
    raise NotImplementedError


class Head(nn.Module):
    """One head of causal self-attention.

    Attributes:
        key, query, value: ``nn.Linear(d_model, head_size, bias=False)`` each.

    The causal mask must follow the module to another device (``.to(device)``):
    keep it as a buffer (``self.register_buffer``, built once for
    ``context_length`` positions and cropped to T), or build it in ``forward``
    on the input's device (``device=x.device``). A tensor kept as a plain
    attribute stays behind and fails the grader's device check; the mask must
    not be a parameter either.
    """

    def __init__(self, d_model: int, head_size: int, context_length: int) -> None:
        """Create the three projections (and the mask) for one head."""
        # Your code here.
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention over ``x``.

        Args:
            x: (B, T, d_model) with T <= context_length.

        Returns:
            (B, T, head_size).
        """
        # Your code here.
        raise NotImplementedError


class MultiHeadAttention(nn.Module):
    """Several heads side by side, then a linear projection that mixes them.

    Attributes:
        heads: ``nn.ModuleList`` of ``num_heads`` ``Head(d_model, d_model // num_heads, context_length)``.
        proj: ``nn.Linear(d_model, d_model)`` (with bias), applied to the heads'
            outputs concatenated along the last axis, in the order of ``heads``.

    Raises ValueError when ``d_model`` is not divisible by ``num_heads``.
    """

    def __init__(self, d_model: int, num_heads: int, context_length: int) -> None:
        """Create the heads and the output projection."""
        # Your code here.
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every head on ``x``, concatenate, project.

        Args:
            x: (B, T, d_model).

        Returns:
            (B, T, d_model).
        """
        # Your code here.
        raise NotImplementedError
