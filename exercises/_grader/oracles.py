"""Reference computations, run in the grader's process from weights the grader chose.

A probe reports the names and shapes of a learner's parameters and the
outputs of the learner's module after its parameters were set from a seed
(``_grading.fill_parameters``). The grader recomputes those same weights
(``_grading.seeded_weights``) and the expected outputs with these functions,
built on PyTorch's own operations, so nothing the learner's process says
can change the expected values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Weights = dict[str, torch.Tensor]


def head(w: Weights, prefix: str, x: torch.Tensor) -> torch.Tensor:
    q, k, v = (x @ w[f"{prefix}{name}.weight"].T for name in ("query", "key", "value"))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def multi_head(w: Weights, prefix: str, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    out = torch.cat([head(w, f"{prefix}heads.{h}.", x) for h in range(num_heads)], dim=-1)
    return F.linear(out, w[f"{prefix}proj.weight"], w[f"{prefix}proj.bias"])


def feed_forward(w: Weights, prefix: str, x: torch.Tensor) -> torch.Tensor:
    hidden = F.gelu(F.linear(x, w[f"{prefix}up.weight"], w[f"{prefix}up.bias"]))
    return F.linear(hidden, w[f"{prefix}down.weight"], w[f"{prefix}down.bias"])


def layer_norm(w: Weights, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{prefix}weight"], w[f"{prefix}bias"])


def block(w: Weights, prefix: str, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    x = x + multi_head(w, f"{prefix}attn.", layer_norm(w, f"{prefix}ln1.", x), num_heads)
    return x + feed_forward(w, f"{prefix}ffwd.", layer_norm(w, f"{prefix}ln2.", x))


def tiny_gpt(w: Weights, idx: torch.Tensor, num_heads: int, num_blocks: int) -> torch.Tensor:
    T = idx.shape[1]
    x = F.embedding(idx, w["token_embedding.weight"]) + w["position_embedding.weight"][:T]
    for b in range(num_blocks):
        x = block(w, f"blocks.{b}.", x, num_heads)
    return F.linear(layer_norm(w, "ln_f.", x), w["lm_head.weight"], w["lm_head.bias"])
