"""The GPT: embeddings, a stack of transformer blocks, and a linear layer back to the vocabulary.

    ids (B, T) -> token + position embeddings (B, T, d_model)
               -> num_blocks x [x + attention(LayerNorm(x)); x + feed_forward(LayerNorm(x))]
               -> LayerNorm -> logits (B, T, vocab_size)

LayerNorm comes before each sub-layer ("pre-norm"), so the residual stream x is a clean sum that
gradients flow straight through; that is what lets deep stacks train without warm-up tricks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.attention import KVCache, MultiHeadAttention
from minigpt.config import GPTConfig


class FeedForward(nn.Module):
    """Per position, widen to 4 * d_model, apply GELU, narrow back: where each token 'thinks'."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.down = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))  # (B, T, d_model)


class Block(nn.Module):
    """Communication (attention across positions) then computation (feed-forward per position)."""

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = MultiHeadAttention(config, fused=fused)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.ffwd = FeedForward(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv_cache)
        x = x + self.ffwd(self.ln2(x))
        return x


class GPT(nn.Module):
    """A decoder-only transformer language model: `forward(idx, targets=None) -> (logits, loss)`."""

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, fused=fused) for _ in range(config.num_blocks))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # The output layer reuses the token embedding ("weight tying"): a token that is embedded
        # near a hidden state is also the one predicted from it, and it saves vocab_size * d_model
        # parameters.
        self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # Each block adds two residual updates; shrink their projections so the residual stream's
        # variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "ffwd.down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.num_blocks))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Small random weights (std 0.02) so the first logits are near zero: loss ~ ln(vocab_size)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_caches: list[KVCache] | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab_size) for ids (B, T); the mean cross-entropy loss too if targets are given.

        With `kv_caches` (one per block, from `new_kv_caches`), idx holds only the tokens not yet
        seen, and earlier tokens' keys and values come from the caches. `last_only` gives the
        logits of the last position only, (B, 1, vocab_size): all that sampling needs, and much
        cheaper with a large vocabulary.
        """
        past = len(kv_caches[0]) if kv_caches else 0
        self._check_input(idx, past)
        T = idx.size(1)
        positions = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_caches[i] if kv_caches else None)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, d_model)
        logits = self.lm_head(self.ln_f(x))  # (B, T or 1, vocab_size)
        if targets is None:
            return logits, None
        if last_only or not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
            raise ValueError(f"targets must be a tensor of the shape of idx {tuple(idx.shape)} "
                             f"(and last_only=False), got {_shape_of(targets)}")
        check_token_ids(targets, self.config.vocab_size, "targets")
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1).long())
        return logits, loss

    def _check_input(self, idx: torch.Tensor, past: int) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            raise ValueError(f"idx must be a (batch, time) tensor of integer token ids, got "
                             f"{_shape_of(idx)}")
        check_token_ids(idx, self.config.vocab_size, "idx")
        T = idx.size(1)
        if T == 0:
            raise ValueError("idx must hold at least one token per row, got 0")
        if past + T > self.config.context_length:
            raise ValueError(f"sequence length {past + T} is longer than context_length="
                             f"{self.config.context_length}; crop idx to its last "
                             f"{self.config.context_length} tokens")

    def new_kv_caches(self) -> list[KVCache]:
        """Empty caches, one per block, for `forward(..., kv_caches=...)`."""
        return [KVCache() for _ in self.blocks]

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """How many numbers the model learns (the tied output layer counted once).

        Without embeddings (position and token table) is the figure usually quoted, since the
        embeddings are look-ups rather than compute.
        """
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.token_embedding.weight.numel() + self.position_embedding.weight.numel()
        return n


def check_token_ids(ids: torch.Tensor, vocab_size: int, name: str = "idx") -> None:
    """Refuse a tensor that is not integer token ids in [0, vocab_size), naming it.

    Without this, an id out of range fails inside the embedding as "index out of range in self"
    on the CPU, and as a device-side assert that kills the process on a GPU.
    """
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    outside = (ids < 0) | (ids >= vocab_size)
    if ids.numel() and bool(outside.any()):
        position = tuple(int(i) for i in outside.nonzero()[0])
        raise ValueError(f"{name}{list(position)} = {int(ids[position])} is not a token id: "
                         f"{name} must be in [0, vocab_size={vocab_size})")


def _shape_of(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def parameter_table(model: GPT) -> list[tuple[str, int]]:
    """(part, parameter count) rows: embeddings, each kind of sub-layer summed over blocks, total."""
    groups: dict[str, int] = {}
    for name, param in model.named_parameters():  # tied weights are listed once
        part = name.split(".")[0]
        if part == "blocks":
            part = "blocks." + name.split(".")[2]  # ln1, attn, ln2, ffwd
        groups[part] = groups.get(part, 0) + param.numel()
    return list(groups.items()) + [("total", model.num_parameters())]
