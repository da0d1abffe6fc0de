"""Causal self-attention: each position mixes in information from itself and the positions before it.

Two ways to compute the same thing live here, and the tests prove they agree:

- the explicit maths, for reading: scores = q @ k^T / sqrt(head_size), mask the future with -inf,
  softmax over the keys, weights @ v (`scaled_dot_product_attention`, `Head`);
- PyTorch's fused kernel `torch.nn.functional.scaled_dot_product_attention`, for speed
  (`MultiHeadAttention(..., fused=True)`, the default).

`KVCache` keeps the keys and values of tokens already seen, so sampling one more token only needs
the new token's query, key and value. Options from `GPTConfig`: QK-norm (`qk_norm`) and rotary
positions (`position="rotary"`, see `minigpt.rotary`), applied to the queries and keys in both paths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.config import GPTConfig
from minigpt.rotary import rotary_cos_sin, rotary_frequencies, rotate

RMS_EPS = 1e-6  # added to the mean square before the square root, so a zero vector stays finite


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = RMS_EPS) -> torch.Tensor:
    """x / sqrt(mean(x ** 2) + eps) over the last dimension, times `weight` (d,) if given.

    Without a weight it is the QK-norm; with one it is what nn.RMSNorm computes (chapter 8).
    """
    return F.rms_norm(x, (x.size(-1),), weight, eps)


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
    """The keys and values one attention layer has computed so far, written in place.

    The buffers, (B, num_heads, capacity, head_size) each, are allocated once, at the first
    `append`; slot s holds the s-th cached token, oldest first, and `length` slots are filled. A
    query looks at the last `window` of them at most (the model's context_length). `seen` counts
    every token ever appended: the position of the next one.

    With `slide=False` (learned positions) the cache holds at most `window` tokens and refuses
    more: a token's key depends on its absolute position, so once the window moves, the caller
    must start again. With `slide=True` (rotary positions: scores depend only on the distance
    between positions) the oldest token drops out of view as each new one arrives; the buffers
    have room for 2 * window tokens, and when they are full the last window - 1 move to the front:
    one copy every window + 1 tokens instead of one per token.
    """

    def __init__(self, window: int, slide: bool = False) -> None:
        self.window, self.slide = window, slide
        self.capacity = 2 * window if slide else window
        self.k: torch.Tensor | None = None  # (B, num_heads, capacity, head_size) once allocated
        self.v: torch.Tensor | None = None
        self.length = 0
        self.seen = 0

    def __len__(self) -> int:
        """How many cached tokens the next query can look at (at most `window`)."""
        return min(self.length, self.window)

    def reset(self) -> None:
        """Forget every token (the buffers stay, to be written again)."""
        self.length = self.seen = 0

    def room_for(self, T: int) -> bool:
        """Whether T new tokens can be appended with every query still seeing all it should."""
        return len(self) + T <= self.window or (self.slide and T == 1)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens' keys and values (B, num_heads, T, head_size) into the buffers.

        Returns the keys and values the new queries look at, (B, num_heads, <= window, head_size),
        as views of the buffers (no copy).
        """
        T = k.size(2)
        if not self.room_for(T):
            raise ValueError(f"the KV cache holds {len(self)} tokens; {T} more would exceed its "
                             f"window of {self.window} (context_length)")
        if self.k is None:
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.capacity, D)
            self.v = v.new_empty(B, H, self.capacity, D)
        elif k.shape[:2] != self.k.shape[:2]:
            raise ValueError(f"the KV cache holds batch size {self.k.size(0)}, got a batch of "
                             f"{k.size(0)}: start new caches (model.new_kv_caches()) for another batch")
        if self.length + T > self.capacity:  # sliding and full: keep the newest window - 1
            keep = self.window - 1  # slots [window + 1, 2 * window) -> [0, window - 1): no overlap
            self.k[:, :, :keep] = self.k[:, :, self.length - keep:self.length]
            self.v[:, :, :keep] = self.v[:, :, self.length - keep:self.length]
            self.length = keep
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        self.seen += T
        first = max(0, self.length - self.window)
        return self.k[:, :, first:self.length], self.v[:, :, first:self.length]


class MultiHeadAttention(nn.Module):
    """num_heads heads side by side, computed as one batched matmul, then mixed by a projection.

    With `config.qk_norm`, each head's queries and keys are RMS-normalised (no learned gain) before
    the scores, which keeps the scores bounded however large q and k grow; with
    `config.position == "rotary"` they are then turned by their positions (`apply_rotary`).
    """

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        self.fused = fused
        self.qk_norm = config.qk_norm
        self.rotary = config.position == "rotary"
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
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        if self.rotary:
            positions = torch.arange(start, start + T, device=x.device)  # (T,)
            cos, sin = rotary_cos_sin(positions, self._rotary_frequencies(x.device))  # (T, head_size // 2) each
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # what apply_rotary(q, positions) gives
        return q, k, v

    def _rotary_frequencies(self, device: torch.device) -> torch.Tensor:
        if self._frequencies is None or self._frequencies.device != device:
            self._frequencies = rotary_frequencies(self.head_size, device=device)  # float32
        return self._frequencies

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._split_heads(x, start=kv_cache.seen if kv_cache is not None else 0)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, num_heads, cached + T, head_size)
        out = self._attend(q, k, v)  # (B, num_heads, T, head_size)
        out = out.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(out))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The T queries are the last T of the T_k keys' tokens: each looks at the keys up to its own."""
        T, T_k = q.size(2), k.size(2)
        past = T_k - T  # keys of earlier tokens, from the cache
        dropout_p = self.dropout if self.training else 0.0
        if self.fused and past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        if T == 1:  # one new token, the latest: it may look at every key, no mask needed
            if self.fused:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            return scaled_dot_product_attention(q, k, v, None, self.attn_dropout)[0]
        mask = causal_mask(T_k, device=q.device)[past:]  # (T, T_k)
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
