"""Chapter 4 exercises: the feed-forward layer, the transformer block, a whole GPT.

This file uses your multi-head attention from chapter 3
(``ex03_attention.py`` in the same folder), so finish that one first.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ex03_attention import MultiHeadAttention


class FeedForward(nn.Module):
    """The position-wise feed-forward layer: widen, apply GELU, narrow back.

    Attributes:
        up: ``nn.Linear(d_model, 4 * d_model)`` (with bias).
        act: ``nn.GELU()``, the exact GELU ``x * Phi(x)`` (Phi: the standard
            normal's cumulative distribution), which is the default
            ``approximate='none'``; not the tanh approximation
            (``approximate='tanh'``), which differs by up to about 1e-3.
        down: ``nn.Linear(4 * d_model, d_model)`` (with bias).
    """

    def __init__(self, d_model: int) -> None:
        """Create ``up``, ``act`` and ``down``."""
        super().__init__()
        self.up = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``down(act(up(x)))``, applied to every position on its own.

        Args:
            x: (B, T, d_model).

        Returns:
            (B, T, d_model).
        """
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    """One transformer block with pre-LayerNorm and two residual connections.

    Attributes:
        ln1: ``nn.LayerNorm(d_model)``.
        attn: ``MultiHeadAttention(d_model, num_heads, context_length)`` from chapter 3.
        ln2: ``nn.LayerNorm(d_model)``.
        ffwd: ``FeedForward(d_model)``.
    """

    def __init__(self, d_model: int, num_heads: int, context_length: int) -> None:
        """Create ``ln1``, ``attn``, ``ln2`` and ``ffwd``."""
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, context_length)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffwd = FeedForward(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x = x + attn(ln1(x))``, then ``x = x + ffwd(ln2(x))``.

        Args:
            x: (B, T, d_model).

        Returns:
            (B, T, d_model).
        """
        x = x + self.attn(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class TinyGPT(nn.Module):
    """A small GPT: embeddings, a stack of blocks, a final LayerNorm, a linear head.

    Attributes:
        token_embedding: ``nn.Embedding(vocab_size, d_model)``.
        position_embedding: ``nn.Embedding(context_length, d_model)``.
        blocks: ``nn.Sequential`` of ``num_blocks`` ``Block(d_model, num_heads, context_length)``.
        ln_f: ``nn.LayerNorm(d_model)``.
        lm_head: ``nn.Linear(d_model, vocab_size)`` (with bias).

    Initialisation: every ``nn.Linear`` and ``nn.Embedding`` weight is drawn
    from a normal distribution with mean 0 and std 0.02, every ``nn.Linear``
    bias is set to zero (LayerNorms keep their defaults); ``self.apply(fn)``
    calls ``fn`` on every submodule, which is one way to reach them all. With
    small weights the first predictions are close to uniform, so the loss at
    initialisation is close to ln(vocab_size).
    """

    def __init__(self, vocab_size: int, context_length: int, d_model: int,
                 num_heads: int, num_blocks: int) -> None:
        """Create the layers listed above and initialise them."""
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context_length, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, num_heads, context_length) for _ in range(num_blocks)])
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits for every position, and the loss when targets are given.

        The input to the blocks is ``token_embedding(idx) + position_embedding(positions)``
        with positions 0..T-1, made on idx's device (``device=idx.device``) so
        that the model runs wherever it was moved. The loss is the mean cross-entropy of the logits
        against ``targets`` over all B*T positions (``F.cross_entropy`` on the
        logits reshaped to (B*T, vocab_size) and targets to (B*T,)).

        Args:
            idx: (B, T) long tensor of token ids, T <= context_length
                (a longer sequence raises ValueError).
            targets: optional (B, T) long tensor of the next ids.

        Returns:
            ``(logits, loss)``: logits (B, T, vocab_size); loss a scalar tensor, or None without targets.
        """
        B, T = idx.shape
        if T > self.context_length:
            raise ValueError(f"sequence length {T} is longer than context_length {self.context_length}")
        positions = torch.arange(T, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)  # (B, T, d_model)
        x = self.ln_f(self.blocks(x))
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss
