"""The GPT: embeddings, a stack of transformer blocks, and a linear layer back to the vocabulary.

    ids (B, T) -> token + position embeddings (B, T, d_model)
               -> num_blocks x [x + attention(LayerNorm(x)); x + feed_forward(LayerNorm(x))]
               -> LayerNorm -> logits (B, T, vocab_size)

LayerNorm comes before each sub-layer ("pre-norm"), so the residual stream x is a clean sum that
gradients flow straight through; that is what lets deep stacks train without warm-up tricks.

The modern options of `GPTConfig` (chapter 8) swap single pieces and keep this shape: rotary
positions replace the position table (`position="rotary"`, applied inside attention), RMSNorm
replaces LayerNorm (`norm="rms"`), ReLU squared or SwiGLU replace GELU (`mlp`), the output layer
gets its own weights (`tie_weights=False`), and `bias=False` drops every bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.attention import MultiHeadAttention
from minigpt.config import GPTConfig
from minigpt.errors import MinigptError
from minigpt.kvcache import KVCache


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x ** 2) + eps) over the last dimension, times `weight` (d,) if given.

    What nn.RMSNorm computes (chapter 8); without a weight, attention's QK-norm.
    """
    return F.rms_norm(x, (x.size(-1),), weight, eps)


def make_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm (centre, rescale, gain and bias) or RMSNorm (rescale by the root mean square, gain)."""
    if config.norm == "rms":
        return nn.RMSNorm(config.d_model, eps=config.eps("rms"))
    return nn.LayerNorm(config.d_model, eps=config.eps("layer"), bias=config.bias)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) ** 2: as cheap as ReLU, smooth at 0, and it trains faster than GELU in small GPTs."""
    return F.relu(x).square()


class FeedForward(nn.Module):
    """Per position, widen to 4 * d_model, apply GELU (or ReLU squared), narrow back: where each token 'thinks'.

    The hidden width is `config.hidden_width`: 4 * d_model unless `ffn_width` says otherwise.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.hidden_width, bias=config.bias)
        self.down = nn.Linear(config.hidden_width, config.d_model, bias=config.bias)
        self.activation = relu_squared if config.mlp == "relu2" else F.gelu
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.activation(self.up(x))))  # (B, T, d_model)


class SwiGLU(nn.Module):
    """A gated feed-forward: down(silu(gate(x)) * up(x)); the gate decides, per unit, how much passes.

    Three matrices instead of two, so the hidden width is 2/3 of 4 * d_model (8 * d_model // 3,
    unless `ffn_width` says otherwise): about as many weights as the GELU feed-forward.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.hidden_width
        self.gate = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.up = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.down = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.gate(x)) * self.up(x)  # (B, T, hidden)
        return self.dropout(self.down(hidden))  # (B, T, d_model)


class Block(nn.Module):
    """Communication (attention across positions) then computation (feed-forward per position)."""

    def __init__(self, config: GPTConfig, fused: bool = True):
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = MultiHeadAttention(config, fused=fused)
        self.ln2 = make_norm(config)
        self.ffwd = SwiGLU(config) if config.mlp == "swiglu" else FeedForward(config)

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
        # With rotary positions there is no table: attention turns q and k by their positions.
        self.position_embedding = (nn.Embedding(config.context_length, config.d_model)
                                   if config.position == "learned" else None)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, fused=fused) for _ in range(config.num_blocks))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            # The output layer reuses the token embedding ("weight tying"): a token that is
            # embedded near a hidden state is also the one predicted from it, and it saves
            # vocab_size * d_model parameters.
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
        seen, and earlier tokens' keys and values come from the caches; the new tokens' positions
        start at the number of tokens the caches have seen. `last_only` gives the logits of the
        last position only, (B, 1, vocab_size): all that sampling needs, and much cheaper with a
        large vocabulary.
        """
        self._check_input(idx, kv_caches)
        x = self.token_embedding(idx)  # (B, T, d_model)
        if self.position_embedding is not None:
            past = kv_caches[0].seen if kv_caches else 0
            positions = torch.arange(past, past + idx.size(1), device=idx.device)  # (T,)
            x = x + self.position_embedding(positions)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_caches[i] if kv_caches else None)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, d_model)
        logits = self.lm_head(self.ln_f(x))  # (B, T or 1, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1).long())
        return logits, loss

    def _check_input(self, idx: torch.Tensor, kv_caches: list[KVCache] | None) -> None:
        """Shapes only, which cost no device sync; the ids' values are checked where they enter
        (`generate`, the trainer's data, the command)."""
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.is_floating_point():
            raise MinigptError(f"idx must be a (batch, time) tensor of integer token ids, got "
                               f"{_shape_of(idx)}")
        window = kv_caches[0].window if kv_caches else self.config.context_length
        if kv_caches and (len(kv_caches) != len(self.blocks) or any(
                cache.window > self.config.context_length for cache in kv_caches)):
            raise MinigptError(f"kv_caches must hold one cache per block ({len(self.blocks)}), "
                               f"each with a window of at most context_length="
                               f"{self.config.context_length} (model.new_kv_caches() makes them)")
        T, past = idx.size(1), len(kv_caches[0]) if kv_caches else 0
        if T == 0:
            raise MinigptError("idx must hold at least one token per row, got 0")
        if T > window or (kv_caches and not kv_caches[0].room_for(T)):
            raise MinigptError(f"sequence length {past + T} is longer than context_length={window}; "
                               f"crop idx to its last {window} tokens")

    def new_kv_caches(self, window: int | None = None) -> list[KVCache]:
        """Empty caches, one per block, for `forward(..., kv_caches=...)`.

        Queries look at the last `window` tokens (default: context_length). With rotary positions
        the caches slide (the oldest token drops out as a new one arrives, see `KVCache`); with a
        learned position table they refuse tokens past the window.
        """
        window = self.config.context_length if window is None else window
        if not 1 <= window <= self.config.context_length:
            raise MinigptError(f"window must be in [1, context_length={self.config.context_length}], "
                             f"got {window}")
        slide = self.config.position == "rotary"
        return [KVCache(window, slide=slide) for _ in self.blocks]

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """How many numbers the model learns (a tied output layer counted once).

        Without embeddings (position and token table) is the figure usually quoted, since the
        embeddings are look-ups rather than compute; an untied output layer is compute, and stays.
        """
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.token_embedding.weight.numel()
            if self.position_embedding is not None:
                n -= self.position_embedding.weight.numel()
        return n


def check_token_ids(ids: torch.Tensor, vocab_size: int, name: str = "idx") -> None:
    """Refuse a tensor that is not integer token ids in [0, vocab_size), naming it.

    Without this, an id out of range fails inside the embedding as "index out of range in self"
    on the CPU, and as a device-side assert that kills the process on a GPU.
    """
    if ids.dtype not in (torch.int64, torch.int32):
        raise MinigptError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    outside = (ids < 0) | (ids >= vocab_size)
    if ids.numel() and bool(outside.any()):  # the one device sync, when ids live on a GPU
        position = tuple(int(i) for i in outside.nonzero()[0])
        raise MinigptError(f"{name}{list(position)} = {int(ids[position])} is not a token id: "
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
