"""Causal self-attention: each position mixes in information from itself and the positions before it.

Two ways to compute the same thing live here, and the tests prove they agree:

- the explicit maths, for reading: scores = q @ k^T / sqrt(head_size), mask the future with -inf,
  softmax over the keys, weights @ v (`scaled_dot_product_attention`, `Head`);
- PyTorch's fused kernel `torch.nn.functional.scaled_dot_product_attention`, for speed
  (`MultiHeadAttention(..., fused=True)`, the default).

`KVCache` keeps the keys and values of tokens already seen, so sampling one more token only needs
the new token's query, key and value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.config import GPTConfig


def causal_mask(T: int, device: str | torch.device | None = None) -> torch.Tensor:
    """(T, T) booleans, True where query t may look at key s, i.e. s <= t (the lower triangle)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 dropout: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: returns the output (..., T_q, head_size) and the weights (..., T_q, T_k).

    Scores are divided by sqrt(head_size) so that their spread does not grow with head_size; without
    it the softmax saturates and each query looks at a single key. `mask` is True where attending is
    allowed.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # each row sums to 1 over the keys
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights  # (..., T_q, head_size), (..., T_q, T_k)


class Head(nn.Module):
    """One head of causal self-attention, the version chapter 3 builds first."""

    def __init__(self, d_model: int, head_size: int, context_length: int):
        super().__init__()
        self.query = nn.Linear(d_model, head_size, bias=False)
        self.key = nn.Linear(d_model, head_size, bias=False)
        self.value = nn.Linear(d_model, head_size, bias=False)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, head_size)
        out, _ = scaled_dot_product_attention(q, k, v, self.mask[:T, :T])
        return out  # (B, T, head_size)


class KVCache:
    """The keys and values one attention layer has computed so far, each (B, num_heads, T_seen, head_size)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' keys and values; return all of them, old and new."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class MultiHeadAttention(nn.Module):
    """num_heads heads side by side, computed as one batched matmul, then mixed by a projection."""

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        self.fused = fused
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.num_heads * self.head_size, dim=2)  # each (B, T, d_model)
        # (B, T, d_model) -> (B, num_heads, T, head_size): the heads become a batch dimension
        return tuple(t.view(B, T, self.num_heads, self.head_size).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._split_heads(x)
        past = 0
        if kv_cache is not None:
            past = len(kv_cache)
            k, v = kv_cache.append(k, v)  # (B, num_heads, past + T, head_size)
        out = self._attend(q, k, v, past)  # (B, num_heads, T, head_size)
        out = out.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(out))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        """Queries at positions past..past+T-1 look at keys 0..their own position."""
        T, T_k = q.size(2), k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        if self.fused and past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        mask = causal_mask(T_k, device=q.device)[past:past + T]  # (T, T_k)
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out, _ = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout)
        return out

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The weights each head puts on each earlier position: (B, num_heads, T, T), for plots."""
        q, k, v = self._split_heads(x)
        _, weights = scaled_dot_product_attention(q, k, v, causal_mask(x.size(1), device=x.device))
        return weights
