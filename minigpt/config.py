"""The settings of the course: the model's shape, the training run, the data, the sampling options.

Each is a plain dataclass that checks itself when built, so a bad value fails at once with a
message naming the parameter, instead of deep inside torch later on. Every field is a `setting`:
its default, what it means and which values it allows, next to its type. The checks, the `minigpt`
command's options and their help text are all made from that one description, so a default or a
range is written once. A config turns into a plain dict and back (`to_dict`, `from_dict`), which
is how a checkpoint stores it.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable, Sequence

from minigpt.errors import MinigptError


@dataclass(frozen=True)
class Range:
    """Allowed numbers: `low` and `high` are bounds (None: none), included unless `*_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ""


def _number(value: float | None) -> str:
    """1e-3 as '0.001', 2**63 - 1 in full: a bound as a reader would type it."""
    return str(value) if isinstance(value, int) or value is None else f"{value:g}"


class ConfigError(MinigptError):
    """A setting that is not allowed; `name` is the field, so the CLI can name its option.

    A rule between two fields (num_heads divides d_model) gives the other side as `other`, (name,
    allowed, value), so the command can blame the one that was typed.
    """

    def __init__(self, name: str, allowed: str, value: Any, other: tuple[str, str, Any] | None = None):
        self.name, self.allowed, self.value, self.other = name, allowed, value, other
        super().__init__(f"{name} must be {allowed}, got {value!r}")

    def naming(self, given: Callable[[str], bool]) -> "ConfigError":
        """The same refusal, said of the other field when only that one was `given`."""
        if self.other is not None and not given(self.name) and given(self.other[0]):
            return ConfigError(*self.other)
        return self


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, choices: Sequence[str] | None = None,
            allowed: str | None = None, option: bool = True) -> Any:
    """A config field with its meaning and allowed values; `option=False` keeps it off the CLI.

    `allowed` words the allowed values where a range or choices cannot (the check is then the
    config's own, in its `check`).
    """
    metadata = {"help": help, "range": Range(low, high, low_open, high_open),
                "choices": tuple(choices) if choices is not None else None, "allowed": allowed,
                "option": option}
    return field(default=default, metadata=metadata)


@lru_cache(maxsize=None)
def _types_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, f: Field) -> tuple[type, bool]:
    """The base type of a field of `cls` (int, float, str or bool) and whether None is allowed."""
    hint = _types_of(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return next(a for a in args if a is not type(None)), type(None) in args
    return hint, False


def describe(cls: type, f: Field) -> str:
    """What a field allows, in words: 'a whole number >= 1', 'a finite number in (0, 1]', ..."""
    kind, optional = field_type(cls, f)
    if f.metadata.get("allowed"):
        allowed = f.metadata["allowed"]
    elif f.metadata.get("choices"):
        allowed = "one of " + ", ".join(f.metadata["choices"])
    else:
        noun = {int: "a whole number", float: "a finite number", str: "a string",
                bool: "True or False"}[kind]
        limits = f.metadata.get("range", Range())
        allowed = f"{noun} {limits}" if kind in (int, float) and str(limits) else noun
    return allowed + (" (or None)" if optional else "")


def check_value(cls: type, f: Field, value: Any) -> None:
    """Raise ConfigError unless `value` has the field's type and lies in its range or choices.

    Booleans are not numbers here (True is not a batch size), and a number must be finite.
    """
    kind, optional = field_type(cls, f)
    if value is None and optional:
        return
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str) and value in (f.metadata.get("choices") or (value,))
    else:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = (is_number and (kind is float or isinstance(value, int)) and math.isfinite(value)
              and value in f.metadata.get("range", Range()))
    if not ok:
        raise ConfigError(f.name, describe(cls, f), value)


def field_default(f: Field) -> Any:
    return None if f.default is MISSING else f.default


def _require(condition: bool, name: str, allowed: str, value: Any) -> None:
    """Raise a ConfigError naming `name`, what is allowed and what was given, unless `condition`."""
    if not condition:
        raise ConfigError(name, allowed, value)


class Settings:
    """What every config shares: each field checked when built, plain dicts out and back in."""

    def __post_init__(self) -> None:
        for f in fields(self):
            check_value(type(self), f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules between fields (a config's own); each field alone is checked already."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build a config from a dict, refusing keys the config does not know."""
        if not isinstance(values, dict):
            raise MinigptError(f"a {cls.__name__} needs a dict of its fields, got "
                               f"{type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MinigptError(f"unknown {cls.__name__} field(s) {unknown}; known fields: "
                               f"{sorted(known)}")
        return cls(**values)


@dataclass
class GPTConfig(Settings):
    """The shape of a GPT: how many tokens it knows, how far back it looks, how wide and deep it is."""

    vocab_size: int = setting(MISSING, "tokens the model knows (set by the tokenizer)", low=1,
                              option=False)
    context_length: int = setting(64, "tokens the model sees at once", low=1)
    d_model: int = setting(128, "width of the residual stream", low=1)
    num_heads: int = setting(4, "attention heads per block (must divide d_model)", low=1)
    num_blocks: int = setting(4, "transformer blocks", low=1)
    dropout: float = setting(0.0, "dropout probability", low=0.0, high=1.0, high_open=True)
    bias: bool = setting(True, "biases in the linear layers and layer norms")
    # The modern pieces of chapter 8; each default keeps the GPT-2 style model of chapters 4-7.
    position: str = setting("learned", "position information: a learned table added to the token "
                            "embeddings, or rotary (q and k turned by an angle that grows with "
                            "the position)", choices=("learned", "rotary"))
    norm: str = setting("layer", "normalisation before each sub-layer: LayerNorm, or RMSNorm "
                        "(rescale only, no centring)", choices=("layer", "rms"))
    qk_norm: bool = setting(False, "RMS-normalise each head's queries and keys before the scores")
    mlp: str = setting("gelu", "feed-forward activation: GELU, ReLU squared, or SwiGLU (gated)",
                       choices=("gelu", "relu2", "swiglu"))
    tie_weights: bool = setting(True, "output layer shares the token embedding's weights")
    # Sizes other models choose differently; not set, each keeps the course's model.
    ffn_width: int | None = setting(None, "hidden width of the feed-forward (not set: 4 * d_model, "
                                    "or 8 * d_model // 3 for swiglu)", low=1)
    norm_eps: float | None = setting(None, "epsilon of every norm (not set: 1e-5 for LayerNorm, "
                                     "1e-6 for RMSNorm and QK-norm)", low=0.0, low_open=True,
                                     high=1.0)
    rotary_base: float = setting(10_000.0, "base of the rotary angles (pair i turns by "
                                 "base^(-2i / head_size) per position)", low=1.0, low_open=True)

    def check(self) -> None:
        if self.d_model % self.num_heads:  # each head gets d_model // num_heads dimensions
            raise ConfigError("d_model", f"divisible by num_heads={self.num_heads} (each head gets "
                              f"d_model // num_heads dimensions)", self.d_model,
                              ("num_heads", f"a divisor of d_model={self.d_model} (each head gets "
                               f"d_model // num_heads dimensions)", self.num_heads))
        _require(self.position != "rotary" or self.head_size % 2 == 0, "position",
                 f"'learned' when head_size = d_model // num_heads = {self.head_size} is odd "
                 "(rotary turns pairs of dimensions: choose d_model and num_heads with an even "
                 "head_size)", self.position)

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads

    @property
    def hidden_width(self) -> int:
        """The feed-forward's hidden width: ffn_width, or what the course's model uses."""
        if self.ffn_width is not None:
            return self.ffn_width
        return max(1, 8 * self.d_model // 3) if self.mlp == "swiglu" else 4 * self.d_model

    def eps(self, kind: str) -> float:
        """The epsilon of a norm of `kind` ('layer' or 'rms'): norm_eps, or torch's usual one."""
        if self.norm_eps is not None:
            return self.norm_eps
        return 1e-5 if kind == "layer" else 1e-6


DEVICES = "one of auto, cpu, cuda, cuda:N, mps"
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
DTYPES = ("float32", "bfloat16", "float16")
TOKENIZER_KINDS = ("char", "bpe", "cl100k")
SEED_RANGE = dict(low=0, high=2**32 - 1)


def is_device_name(name: str) -> bool:
    """Whether `name` is one of DEVICES (whether that device is present is `resolve_device`'s job)."""
    return name in ("auto", "cpu", "cuda", "mps") or (name.startswith("cuda:") and name[5:].isdigit())


@dataclass
class TrainConfig(Settings):
    """How to train: batch shape, schedule, optimiser, evaluation and checkpoint cadence.

    The learning rate is capped at 1: AdamW moves each weight by about the learning rate per step,
    so above 1 every step is larger than the weights themselves (useful rates are near 1e-3). The
    weight decay is capped at 1 so that learning_rate * weight_decay <= 1: the decay shrinks a
    weight, it never flips its sign.
    """

    batch_size: int = setting(12, "sequences per micro-batch (a step takes grad_accum_steps of them)",
                              low=1)
    grad_accum_steps: int = setting(1, "micro-batches per optimizer step: the gradient of a batch "
                                    "grad_accum_steps times larger, in the memory of one", low=1)
    max_iters: int = setting(2000, "optimizer steps in all", low=1)
    optimizer: str = setting("adamw", "adamw for every weight, or muon for the blocks' weight "
                             "matrices with AdamW for the rest", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "peak learning rate of AdamW, reached after warm-up",
                                   low=0.0, low_open=True, high=1.0)
    muon_lr: float = setting(0.02, "peak learning rate of Muon (--optimizer muon)", low=0.0,
                             low_open=True, high=1.0)
    head_lr: float | None = setting(None, "peak AdamW learning rate of an untied output layer "
                                    "(not set: learning_rate; needs --no-tie-weights)",
                                    low=0.0, low_open=True, high=1.0)
    schedule: str = setting("cosine", "cosine: warm-up, then a cosine down to min_lr; wsd: "
                            "warm-up, constant, then a straight line down to min_lr over the last "
                            "decay_fraction of the steps", choices=SCHEDULES)
    decay_fraction: float = setting(0.5, "share of the steps spent decaying (--schedule wsd)",
                                    low=0.0, high=1.0)
    min_lr: float = setting(1e-4, "learning rate at the end of the decay (<= learning_rate; the "
                            "other peaks decay in proportion)", low=0.0, high=1.0)
    warmup_iters: int = setting(100, "steps of linear warm-up", low=0)
    weight_decay: float = setting(0.1, "weight decay of the matrices (AdamW and Muon)", low=0.0,
                                  high=1.0)
    beta1: float = setting(0.9, "AdamW beta1", low=0.0, high=1.0, high_open=True)
    beta2: float = setting(0.99, "AdamW beta2", low=0.0, high=1.0, high_open=True)
    grad_clip: float = setting(1.0, "clip the gradient norm (0: off)", low=0.0)
    eval_interval: int = setting(250, "steps between loss estimates and checkpoints", low=1)
    eval_iters: int = setting(20, "batches per loss estimate", low=1)
    checkpoint_interval: int = setting(0, "also save every N steps (0: only at evaluations)",
                                       low=0)
    seed: int = setting(1337, "random seed (same seed, same numbers on CPU)", **SEED_RANGE)
    device: str = setting("auto", "where to train; auto picks CUDA, then MPS, then the CPU",
                          allowed=DEVICES)
    dtype: str = setting("float32", "precision of the forward pass and of the evaluations: "
                         "float32, or bfloat16 / float16 under autocast (weights, optimizer and "
                         "checkpoints stay float32; float16 with a gradient scaler; on a CPU "
                         "float16 is several times slower)", choices=DTYPES)
    dist_timeout: float = setting(300.0, "seconds a rank waits for the others (torchrun, --nproc) "
                                  "before the run stops with an error (at most a week)",
                                  low=1.0, high=7 * 24 * 3600.0)  # timedelta and gloo take no more

    def check(self) -> None:
        _require(self.min_lr <= self.learning_rate, "min_lr",
                 f"in [0, learning_rate={self.learning_rate}]", self.min_lr)
        _require(is_device_name(self.device), "device", DEVICES, self.device)


@dataclass
class DataConfig(Settings):
    """What `minigpt train` reads and where it writes: the options beyond the model and training."""

    data: str = setting("shakespeare", "'shakespeare' (built in), the path of a UTF-8 text "
                        "file, or a folder of token shards (minigpt prepare); with --resume, the "
                        "checkpoint's")
    tokenizer: str = setting("char", "characters, SentencePiece BPE trained on the corpus, or "
                             "tiktoken's cl100k_base", choices=TOKENIZER_KINDS)
    vocab_size: int = setting(512, "vocabulary size of --tokenizer bpe", low=1)
    val_fraction: float = setting(0.1, "share of the corpus held out for validation; with "
                                  "--resume, the checkpoint's", low=0.0, high=1.0, low_open=True,
                                  high_open=True)
    out: str = setting("out", "folder for checkpoints (ckpt.pt, best.pt) and loss.png; with "
                       "--resume, the checkpoint's folder")
    sample_tokens: int = setting(300, "tokens to sample at the end (0: none)", low=0)


@dataclass
class SampleConfig(Settings):
    """How to sample: how much text, and how to pick each next token.

    Penalties and temperature are capped at 100: logits are rarely larger than a few tens, so 100
    already forbids every repeat (or flattens every choice); larger values only risk overflow.
    """

    max_new_tokens: int = setting(500, "tokens to generate per sample", low=0)
    num_samples: int = setting(1, "how many samples", low=1)
    temperature: float = setting(0.8, "0 is greedy; below 1 sharpens, above 1 flattens", low=0.0,
                                 high=100.0)
    top_k: int | None = setting(None, "keep the k most likely tokens", low=1)
    top_p: float | None = setting(None, "keep the most likely tokens whose probabilities add up "
                                  "to p", low=0.0, low_open=True, high=1.0)
    frequency_penalty: float = setting(0.0, "lower a token's logit by this much per repetition",
                                       low=0.0, high=100.0)
    presence_penalty: float = setting(0.0, "lower a token's logit by this much once it appeared",
                                      low=0.0, high=100.0)
    seed: int | None = setting(None, "random seed for reproducible samples", **SEED_RANGE)

    def check(self) -> None:
        # A tiny temperature divides the logits into infinities; 0.01 is already as good as greedy.
        _require(self.temperature == 0 or self.temperature >= 0.01, "temperature",
                 "0 (greedy) or in [0.01, 100]", self.temperature)
