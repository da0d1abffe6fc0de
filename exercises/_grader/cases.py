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

from _grader.grading import fill_parameters

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
        self.calls.append({"idx": idx.clone(), "training": self.training, "modes": modes(self),
                           "grad_enabled": torch.is_grad_enabled()})
        return self.inner(idx, targets)


def modes(model: nn.Module) -> dict[str, bool]:
    """The train/eval mode of the model and of every submodule, by name."""
    return {name or "(the model)": module.training for name, module in model.named_modules()}


class DropoutBigram(TrainableBigram):
    """A trainable bigram with a dropout layer inside, so that its mode matters."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__(vocab_size, seed)
        self.drop = nn.Dropout(0.5)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.drop(self.logits_table(idx))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


# --------------------------------------------------------------------------- probes shared by graders
#
# A probe runs in the worker, next to the learner's code, and returns plain
# data only: the grader computes the expected values in its own process.


def describe_module(module: nn.Module, attributes: tuple[str, ...] = ()) -> dict:
    """Parameter names and shapes, buffers, and the class names (with bases) of some attributes."""
    def kinds(value) -> list[str]:
        return [c.__name__ for c in type(value).__mro__]
    plain_tensors = [n for n, v in vars(module).items() if isinstance(v, torch.Tensor)]
    for name, sub in module.named_modules():
        plain_tensors += [f"{name}.{n}" for n, v in vars(sub).items() if isinstance(v, torch.Tensor) and name]
    return {"params": {n: list(p.shape) for n, p in module.named_parameters()},
            "types": {a: kinds(getattr(module, a, None)) for a in attributes},
            "plain_tensors": sorted(set(plain_tensors)),
            "is_module": isinstance(module, nn.Module)}


def probe_module(m: ModuleType, cls: str, kwargs: dict, seed: int | None, inputs: list, attributes: tuple = (),
                 scale: float = 0.3) -> dict:
    """Build ``m.<cls>(**kwargs)``, set its parameters from ``seed`` (by name), run it on each input in eval mode."""
    torch.manual_seed(0)
    module = getattr(m, cls)(**kwargs)
    info = describe_module(module, tuple(attributes))
    if seed is not None:
        fill_parameters(module, seed, scale=scale)
    module.eval()
    outputs = []
    with torch.no_grad():
        for args in inputs:
            outputs.append(module(*args))
    info["outputs"] = outputs
    return info


def probe_on_another_device(m: ModuleType, cls: str, kwargs: dict, args: list) -> dict:
    """Move the module to the "meta" device and run it there: every tensor it uses must follow.

    A mask kept as a plain attribute, or positions made with ``torch.arange(T)``
    without ``device=``, stay on the CPU; on a GPU that is an error, and here
    an operation mixing the two devices is spotted and named.
    """
    from torch.utils._pytree import tree_leaves
    from torch.utils._python_dispatch import TorchDispatchMode

    class MixedDevices(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim()}
            if len(devices) > 1:
                self.found.append(str(func.overloadpacket.__name__))
            return func(*args, **kwargs)

    torch.manual_seed(0)
    module = getattr(m, cls)(**kwargs).to("meta")
    moved = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    mode = MixedDevices()
    try:
        with mode, torch.no_grad():
            module(*moved)
    except RuntimeError as exc:
        return {"mixed": mode.found, "error": str(exc)[:300]}
    return {"mixed": mode.found, "error": None}


def windows(data: torch.Tensor, starts: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) rows for the given start offsets, built without the learner's code."""
    x = torch.stack([data[s : s + T] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + T + 1] for s in starts.tolist()])
    return x, y


# --------------------------------------------------------------------------- snapshot cases
#
# Every case takes the module and a seed. The committed snapshots were made
# with the seeds in CASE_SEEDS; ``--fresh-cases`` passes other seeds and
# computes the expected values with solutions/ in a worker of their own.


def sample_text(seed: int) -> str:
    """The sample text, or (for a fresh seed) its words in a seeded order, some capitalised."""
    if seed == CASE_SEEDS["bpe_rounds"]:
        return SAMPLE_TEXT
    rng = random.Random(seed)
    words = SAMPLE_TEXT.split()
    rng.shuffle(words)
    return " ".join(w.capitalize() if rng.random() < 0.2 else w for w in words)


def bpe_rounds(m: ModuleType, seed: int) -> dict:
    """Six rounds of BPE on the sample text, with the learner's own pieces."""
    text = sample_text(seed)
    stoi, _ = m.build_vocab(text)
    ids = m.encode(text, stoi)
    pairs = []
    for i in range(6):
        pair = m.most_frequent_pair(ids)
        ids = m.merge(ids, pair, len(stoi) + i)
        pairs.append(list(pair))
    return {"pairs": pairs, "ids": list(ids)}


ID_POOL = (1, 2, 3, 5, 11, 12, 21, 22, 121)  # ids that share digits: "1 2" is inside "11 2", "21" ends "121"


def random_id_lists(seed: int, count: int = 6) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.choice(ID_POOL) for _ in range(rng.randrange(8, 40))] for _ in range(count)]


def pairs_of_random_lists(m: ModuleType, seed: int) -> list:
    return [list(m.most_frequent_pair(ids)) for ids in random_id_lists(seed)]


def merges_of_random_lists(m: ModuleType, seed: int) -> list:
    return [m.merge(ids, (ids[1], ids[2]), 99) for ids in random_id_lists(seed)]


TINY_GPT = dict(vocab_size=11, context_length=6, d_model=8, num_heads=2, num_blocks=2)


def tinygpt_output(m: ModuleType, seed: int) -> dict:
    """A tiny model with seeded parameters (set by name) on a seeded batch."""
    model = m.TinyGPT(**TINY_GPT)
    fill_parameters(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randint(TINY_GPT["vocab_size"], (2, 5), generator=g)
    targets = torch.randint(TINY_GPT["vocab_size"], (2, 5), generator=g)
    model.eval()
    with torch.no_grad():
        logits, loss = model(idx, targets)
    return {"logits": logits, "loss": loss.item()}


LR_SETTINGS = dict(max_lr=6e-4, min_lr=6e-5, warmup_iters=10, max_iters=50)


def lr_settings(seed: int) -> dict:
    if seed == CASE_SEEDS["lr_curve"]:
        return dict(LR_SETTINGS)
    rng = random.Random(seed)
    warmup = rng.randrange(1, 20)
    return dict(max_lr=rng.uniform(1e-4, 1e-2), min_lr=rng.uniform(1e-6, 5e-5), warmup_iters=warmup,
                max_iters=warmup + rng.randrange(10, 60))


def lr_curve(m: ModuleType, seed: int) -> list[float]:
    settings = lr_settings(seed)
    return [m.learning_rate(step, **settings) for step in range(settings["max_iters"] + 10)]


GENERATE_SETTINGS = {
    "temperature_1": dict(temperature=1.0, top_k=None),
    "temperature_0.5": dict(temperature=0.5, top_k=None),
    "temperature_2_top_k_3": dict(temperature=2.0, top_k=3),
}


def generated_samples(m: ModuleType, seed: int) -> dict:
    model = BigramTable(vocab_size=9, seed=seed - 4, scale=1.0)
    prompt = torch.tensor([[1, 2, 3], [4, 4, 4]])
    out = {}
    for name, settings in GENERATE_SETTINGS.items():
        g = torch.Generator().manual_seed(seed)
        out[name] = m.generate(model, prompt, 16, context_length=4, generator=g, **settings)
    return out


def _randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def rotary_outputs(m: ModuleType, seed: int) -> dict:
    """Chapter 8's rotary embeddings on seeded queries, from position 0 and from an offset."""
    x = _randn(seed, 2, 3, 5, 8)  # (B, heads, T, head_size)
    return {"angles": m.rotary_angles(8, torch.arange(5), 10000.0),
            "from_zero": m.apply_rotary(x, torch.arange(5)),
            "offset": m.apply_rotary(x, torch.arange(7, 12)),
            "base_100": m.apply_rotary(x[0, 0], torch.tensor([0, 3, 1, 9, 2]), 100.0)}


def rms_norm_outputs(m: ModuleType, seed: int) -> dict:
    x = _randn(seed, 2, 4, 6)
    weight = _randn(seed + 1, 6)
    return {"plain": m.rms_norm(x), "weight": m.rms_norm(x, weight),
            "small_eps_01": m.rms_norm(x * 0.1, weight, 0.1)}


def swiglu_outputs(m: ModuleType, seed: int) -> dict:
    x = _randn(seed, 2, 5, 8)
    w_gate, w_up = _randn(seed + 1, 12, 8, scale=0.5), _randn(seed + 2, 12, 8, scale=0.5)
    w_down = _randn(seed + 3, 8, 12, scale=0.5)
    return {"out": m.swiglu(x, w_gate, w_up, w_down)}


def newton_schulz_outputs(m: ModuleType, seed: int) -> dict:
    return {"wide": m.newton_schulz(_randn(seed, 6, 10)), "tall": m.newton_schulz(_randn(seed + 1, 12, 4, scale=3.0)),
            "three_steps": m.newton_schulz(_randn(seed + 2, 5, 5), 3)}


def shard_batch_outputs(m: ModuleType, seed: int) -> dict:
    """Chapter 9: a batch from a uint16 array of seeded ids above 32767."""
    import numpy as np

    ids = torch.randint(40000, 65000, (50,), generator=torch.Generator().manual_seed(seed)).numpy()
    x, y = m.shard_batch(ids.astype(np.uint16), 3, 4, torch.Generator().manual_seed(seed + 1))
    return {"x": x, "y": y}


def accumulation_outputs(m: ModuleType, seed: int) -> dict:
    """Chapter 9: one accumulated SGD step of a seeded bigram on two micro-batches."""
    g = torch.Generator().manual_seed(seed)
    model = TrainableBigram(8, seed=seed)
    micro = [(torch.randint(8, (2, 5), generator=g), torch.randint(8, (2, 5), generator=g)) for _ in range(2)]
    loss = m.accumulation_step(model, torch.optim.SGD(model.parameters(), lr=0.5), micro)
    return {"loss": loss, "weight": model.logits_table.weight.detach()}


def rank_slice_outputs(m: ModuleType, seed: int) -> list:
    """Chapter 9: a seeded (6, 2) batch split between 3 ranks."""
    rows = torch.randint(100, (6, 2), generator=torch.Generator().manual_seed(seed))
    return [m.rank_slice(rows, r, 3).tolist() for r in range(3)]


SNAPSHOT_CASES: dict[str, dict[str, Callable[[ModuleType, int], Any]]] = {
    "ex01_tokenization": {
        "bpe_rounds": bpe_rounds,
        "pairs_of_random_lists": pairs_of_random_lists,
        "merges_of_random_lists": merges_of_random_lists,
    },
    "ex04_model": {"tinygpt_output": tinygpt_output},
    "ex05_training": {"lr_curve": lr_curve},
    "ex07_sampling": {"generated_samples": generated_samples},
    "ex08_modern": {"rotary_outputs": rotary_outputs, "rms_norm_outputs": rms_norm_outputs,
                    "swiglu_outputs": swiglu_outputs, "newton_schulz_outputs": newton_schulz_outputs},
    "ex09_scale": {"shard_batch_outputs": shard_batch_outputs, "accumulation_outputs": accumulation_outputs,
                   "rank_slice_outputs": rank_slice_outputs},
}

# The seed of each case in the committed snapshots.
CASE_SEEDS = {"bpe_rounds": 0, "pairs_of_random_lists": 1, "merges_of_random_lists": 2, "tinygpt_output": 4,
              "lr_curve": 0, "generated_samples": 11,
              "rotary_outputs": 80, "rms_norm_outputs": 81, "swiglu_outputs": 82, "newton_schulz_outputs": 83,
              "shard_batch_outputs": 90, "accumulation_outputs": 91,
              "rank_slice_outputs": 92}
