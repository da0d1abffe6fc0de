"""The two sets of knobs of the course: the model's shape and the training run's settings.

Both are plain dataclasses that check themselves when built, so a bad value fails at once with a
message naming the parameter, instead of deep inside torch later on. They turn into plain dicts and
back, which is how a checkpoint stores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


def _require(condition: bool, name: str, allowed: str, value: Any) -> None:
    """Raise a ValueError naming `name`, what is allowed and what was given, unless `condition`."""
    if not condition:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _from_dict(cls, values: dict[str, Any]):
    """Build a config from a dict, refusing keys the config does not know."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**values)


@dataclass
class GPTConfig:
    """The shape of a GPT: how many tokens it knows, how far back it looks, how wide and deep it is."""

    vocab_size: int
    context_length: int = 64
    d_model: int = 128
    num_heads: int = 4
    num_blocks: int = 4
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_heads", "num_blocks"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                     name, "a whole number >= 1", value)
        _require(self.d_model % self.num_heads == 0, "d_model",
                 f"divisible by num_heads={self.num_heads} (each head gets d_model // num_heads "
                 "dimensions)", self.d_model)
        _require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GPTConfig":
        return _from_dict(cls, values)


@dataclass
class TrainConfig:
    """How to train: batch shape, schedule, optimiser, evaluation and checkpoint cadence."""

    batch_size: int = 12
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    checkpoint_interval: int = 0  # 0: only at evaluations and at the end
    seed: int = 1337
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, "a whole number >= 1", value)
        for name in ("warmup_iters", "checkpoint_interval"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0, name, "a whole number >= 0", value)
        _require(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        _require(0 <= self.min_lr <= self.learning_rate, "min_lr",
                 f"in [0, learning_rate={self.learning_rate}]", self.min_lr)
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _require(0 <= self.beta1 < 1, "beta1", "in [0, 1)", self.beta1)
        _require(0 <= self.beta2 < 1, "beta2", "in [0, 1)", self.beta2)
        _require(self.grad_clip >= 0, "grad_clip", ">= 0 (0 turns clipping off)", self.grad_clip)
        _require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                 "device", "one of auto, cpu, cuda, cuda:N, mps", self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, values)
