"""Named sets of settings for `minigpt train --preset NAME`: plain data, config field -> value.

- baby: nanoGPT's "baby GPT" on a CPU (4 blocks of 4 heads, d_model 128, context 64, batch 12,
  2000 steps of AdamW at 1e-3 with a cosine down to 1e-4). These are minigpt's defaults.
- speedrun: the same size and context with what the speedruns (modded-nanogpt, nanochat) changed
  since GPT-2: rotary positions, RMSNorm, QK-norm, ReLU^2, an untied output layer, no biases, Muon
  for the blocks' matrices, a warm-up/stable/decay schedule, and 450 steps instead of 2000. It
  evaluates only at the start and the end (eval_interval = max_iters): estimates in the middle
  cost time and change nothing.

Both name the same fields, so one preset undoes the other; options given on the command line
override the preset's values.
"""

from __future__ import annotations

import textwrap
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "baby": {
        "tokenizer": "char",  # data (DataConfig)
        # model (GPTConfig)
        "context_length": 64, "d_model": 128, "num_heads": 4, "num_blocks": 4, "dropout": 0.0,
        "position": "learned", "norm": "layer", "qk_norm": False, "mlp": "gelu",
        "tie_weights": True, "bias": True,
        # training (TrainConfig)
        "batch_size": 12, "max_iters": 2000, "optimizer": "adamw", "learning_rate": 1e-3,
        "muon_lr": 0.02, "head_lr": None, "schedule": "cosine", "decay_fraction": 0.5,
        "min_lr": 1e-4, "warmup_iters": 100, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99,
        "grad_clip": 1.0, "eval_interval": 250, "eval_iters": 20,
    },
    "speedrun": {
        "tokenizer": "char",
        "context_length": 64, "d_model": 128, "num_heads": 4, "num_blocks": 4, "dropout": 0.0,
        "position": "rotary", "norm": "rms", "qk_norm": True, "mlp": "relu2",
        "tie_weights": False, "bias": False,
        "batch_size": 12, "max_iters": 450, "optimizer": "muon", "learning_rate": 0.01,
        "muon_lr": 0.02, "head_lr": 0.004, "schedule": "wsd", "decay_fraction": 0.5,
        "min_lr": 0.0, "warmup_iters": 50, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95,
        "grad_clip": 1.0, "eval_interval": 450, "eval_iters": 20,
    },
}


def describe_presets() -> str:
    """One line per preset with what it sets, for `minigpt train --help`."""
    lines = []
    for name, values in PRESETS.items():
        settings = ", ".join(f"{key}={value}" for key, value in values.items())
        lines.append(textwrap.fill(settings, width=78, initial_indent=f"  {name}: ",
                                   subsequent_indent="    "))
    return "\n".join(lines)


def with_preset(name: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with the options `given` on top. A preset's head_lr is dropped when the
    output layer ends up tied (it has no rate of its own then), so `--tie-weights` still works."""
    if name is None:
        return dict(given)
    values = {**PRESETS[name], **given}
    if values.get("tie_weights", True) and "head_lr" not in given:
        values["head_lr"] = None
    return values
