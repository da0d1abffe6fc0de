"""Causal self-attention: each position mixes in information from itself and the positions before it.

Two ways to compute the same thing live here, and the tests prove they agree:

- the explicit maths, for reading: scores = q @ k^T / sqrt(head_size), mask the future with -inf,
  softmax over the keys, weights @ v (`scaled_dot_product_attention`, `Head`);
- PyTorch's fused kernel `torch.nn.functional.scaled_dot_product_attention`, for speed
  (`MultiHeadAttention(..., fused=True)`, the default).

Options from `GPTConfig`: QK-norm (`qk_norm`) and rotary positions (`position="rotary"`, see
`minigpt.rotary`), applied to the queries and keys in both paths. With a `KVCache`
(`minigpt.kvcache`, used by sampling) the queries are the newest tokens' and the keys reach back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.config import GPTConfig
from minigpt.kvcache import KVCache
from minigpt.rotary import rotary_cos_sin, rotary_frequencies, rotate


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


class MultiHeadAttention(nn.Module):
    """num_heads heads side by side, computed as one batched matmul, then mixed by a projection.

    With `config.qk_norm`, each head's queries and keys are RMS-normalised (no learned gain) before
    the scores, which keeps the scores bounded however large q and k grow; with
    `config.position == "rotary"` they are then turned by their positions (`apply_rotary`).
    `fused=True` (the default) calls PyTorch's kernel; `fused=False` the explicit maths above.
    """

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        self.fused = fused
        self.qk_norm_eps = config.eps("rms") if config.qk_norm else None
        self.rotary_base = config.rotary_base if config.position == "rotary" else None
        # Rotary frequencies, computed once per device. Not a buffer: model.to(torch.bfloat16)
        # would round them, and every angle p * frequency with them.
        self._frequencies: torch.Tensor | None = None
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _split_heads(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v for x (B, T, d_model), each (B, num_heads, T, head_size); `start` is x's first position."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.num_heads * self.head_size, dim=2)  # each (B, T, d_model)
        # (B, T, d_model) -> (B, num_heads, T, head_size): the heads become a batch dimension
        q, k, v = (t.view(B, T, self.num_heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm_eps is not None:  # x / sqrt(mean(x ** 2) + eps), per head, no gain
            q = F.rms_norm(q, (self.head_size,), eps=self.qk_norm_eps)
            k = F.rms_norm(k, (self.head_size,), eps=self.qk_norm_eps)
        if self.rotary_base is not None:
            positions = torch.arange(start, start + T, device=x.device)  # (T,)
            cos, sin = rotary_cos_sin(positions, self._rotary_frequencies(x.device))  # (T, head_size // 2) each
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # what apply_rotary(q, positions) gives
        return q, k, v

    def _rotary_frequencies(self, device: torch.device) -> torch.Tensor:
        if self._frequencies is None or self._frequencies.device != device:
            self._frequencies = rotary_frequencies(self.head_size, self.rotary_base, device)  # float32
        return self._frequencies

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._split_heads(x, start=kv_cache.seen if kv_cache is not None else 0)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, num_heads, past + T, head_size)
        past = k.size(2) - T  # keys of earlier tokens, from the cache; the T queries come after them
        if self.fused:  # PyTorch's kernel; is_causal (no cache) is its fastest path
            mask = None if past == 0 or T == 1 else causal_mask(past + T, x.device)[past:]  # (T, past + T)
            dropout_p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                 is_causal=past == 0)
        else:  # the maths written out
            mask = causal_mask(past + T, x.device)[past:]  # (T, past + T)
            out, _ = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout)
        out = out.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, d_model): heads side by side
        return self.resid_dropout(self.proj(out))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The weights each head puts on each earlier position: (B, num_heads, T, T), for plots."""
        q, k, v = self._split_heads(x)
        _, weights = scaled_dot_product_attention(q, k, v, causal_mask(x.size(1), device=x.device))
        return weights
