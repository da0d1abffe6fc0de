"""Seeded inputs shared by the graders and by ``make_snapshots.py``.

A "snapshot case" is a function that takes an exercise module (the learner's
or the solution's), runs it on fixed inputs and returns plain data.
``make_snapshots.py`` runs every case on ``solutions/`` and freezes the
results in ``snapshots/exNN_<topic>.json``; a grader runs the same case on
the learner's module and compares. Small helper models used by several
graders live here too.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from _grading import fill_parameters

SAMPLE_TEXT = (
    "the cat sat on the mat. the dog sat on the log. "
    "then the cat and the dog sat together on the mat by the log."
)


# --------------------------------------------------------------------------- small models


class BigramTable(nn.Module):
    """A fixed next-token table: the logits at a position depend on its token only."""

    def __init__(self, vocab_size: int, seed: int, scale: float = 2.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab_size, vocab_size, generator=g) * scale)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.table[idx]  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class TrainableBigram(nn.Module):
    """The smallest trainable language model: one embedding row of logits per token."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.logits_table = nn.Embedding(vocab_size, vocab_size)
        fill_parameters(self, seed, scale=0.5)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.logits_table(idx)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class Recorder(nn.Module):
    """Wraps a model and records every call: the input and the mode it ran in."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self.calls.append({"idx": idx.clone(), "training": self.training,
                           "grad_enabled": torch.is_grad_enabled()})
        return self.inner(idx, targets)


def windows(data: torch.Tensor, starts: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) rows for the given start offsets, built without the learner's code."""
    x = torch.stack([data[s : s + T] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + T + 1] for s in starts.tolist()])
    return x, y


# --------------------------------------------------------------------------- snapshot cases


def bpe_rounds(m: ModuleType) -> dict:
    """Six rounds of BPE on the sample text, with the learner's own pieces."""
    stoi, _ = m.build_vocab(SAMPLE_TEXT)
    ids = m.encode(SAMPLE_TEXT, stoi)
    pairs = []
    for i in range(6):
        pair = m.most_frequent_pair(ids)
        ids = m.merge(ids, pair, len(stoi) + i)
        pairs.append(list(pair))
    return {"pairs": pairs, "ids": list(ids)}


def random_id_lists(seed: int, count: int = 6) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6) for _ in range(rng.randrange(8, 40))] for _ in range(count)]


def pairs_of_random_lists(m: ModuleType) -> list:
    return [list(m.most_frequent_pair(ids)) for ids in random_id_lists(1)]


def merges_of_random_lists(m: ModuleType) -> list:
    return [m.merge(ids, (ids[1], ids[2]), 99) for ids in random_id_lists(2)]


TINY_GPT = dict(vocab_size=11, context_length=6, d_model=8, num_heads=2, num_blocks=2)


def tinygpt_output(m: ModuleType) -> dict:
    """A tiny model with seeded parameters (set by name) on a seeded batch."""
    model = m.TinyGPT(**TINY_GPT)
    fill_parameters(model, seed=4)
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(TINY_GPT["vocab_size"], (2, 5), generator=g)
    targets = torch.randint(TINY_GPT["vocab_size"], (2, 5), generator=g)
    with torch.no_grad():
        logits, loss = model(idx, targets)
    return {"logits": logits, "loss": loss.item()}


LR_SETTINGS = dict(max_lr=6e-4, min_lr=6e-5, warmup_iters=10, max_iters=50)


def lr_curve(m: ModuleType) -> list[float]:
    return [m.learning_rate(step, **LR_SETTINGS) for step in range(60)]


GENERATE_SETTINGS = {
    "temperature_1": dict(temperature=1.0, top_k=None),
    "temperature_0.5": dict(temperature=0.5, top_k=None),
    "temperature_2_top_k_3": dict(temperature=2.0, top_k=3),
}


def generated_samples(m: ModuleType) -> dict:
    model = BigramTable(vocab_size=9, seed=7, scale=1.0)
    prompt = torch.tensor([[1, 2, 3], [4, 4, 4]])
    out = {}
    for name, settings in GENERATE_SETTINGS.items():
        g = torch.Generator().manual_seed(11)
        out[name] = m.generate(model, prompt, 16, context_length=4, generator=g, **settings)
    return out


SNAPSHOT_CASES: dict[str, dict[str, Callable[[ModuleType], Any]]] = {
    "ex01_tokenization": {
        "bpe_rounds": bpe_rounds,
        "pairs_of_random_lists": pairs_of_random_lists,
        "merges_of_random_lists": merges_of_random_lists,
    },
    "ex04_model": {"tinygpt_output": tinygpt_output},
    "ex05_training": {"lr_curve": lr_curve},
    "ex07_sampling": {"generated_samples": generated_samples},
}
