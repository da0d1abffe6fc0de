"""minigpt: the small GPT that the course builds, piece by piece, in the order the chapters teach.

    config -> tokenizers -> data (get_batch) -> rotary -> kvcache -> attention -> model (GPT)
         -> evaluate -> checkpoint -> optim -> train_state -> trainer (Trainer, train)
         -> sampling (generate) -> presets, plotting, runfolder, options, cli

`from minigpt import GPT` works as usual, but each name is imported from its module on first use
(PEP 562), so `import minigpt` alone is instant and the `minigpt` command can answer Ctrl-C
quietly while torch is still loading.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Each public name and the module that defines it.
_HOME = {
    "attention": ["MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"],
    "checkpoint": ["CheckpointError", "load_checkpoint", "save_checkpoint"],
    "config": ["DataConfig", "GPTConfig", "SampleConfig", "TrainConfig"],
    "errors": ["MinigptError"],
    "data": ["encode_corpus", "get_batch", "load_text", "shakespeare", "train_val_split"],
    "evaluate": ["bits_per_byte", "bits_per_char", "estimate_loss", "perplexity"],
    "kvcache": ["KVCache"],
    "model": ["GPT", "Block", "FeedForward"],
    "sampling": ["generate", "sample_text"],
    "tokenizers": ["BPETokenizer", "CharTokenizer", "TiktokenTokenizer", "load_tokenizer",
                   "train_tokenizer"],
    "trainer": ["TrainState", "Trainer", "learning_rate", "resolve_device", "train"],
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
_SUBMODULES = set(_HOME) | {"cli", "optim", "options", "plotting", "presets", "rotary",
                             "runfolder", "train_state"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule) the first time it is asked for."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"minigpt.{_MODULE_OF[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"minigpt.{name}")
    else:
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
