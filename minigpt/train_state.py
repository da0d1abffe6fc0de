"""The trainer's state, and what a resume may change: one owner for both (`minigpt.trainer` uses it).

`TrainState` is everything a run needs to continue to the exact same numbers: the step, the
evaluations and every step's loss, the random-number states, the optimizer's state and the
settings it was trained with. A checkpoint stores it as plain data (`to_dict`); `from_checkpoint`
reads it back and checks each field, naming the one that is wrong.

`check_resume` holds the rules, in one place for `Trainer.resume` and `minigpt train --resume`:
the model and the optimizer (with its groups) stay the checkpoint's, and max_iters must lie beyond
the checkpoint's step. Each broken rule is a `ConfigError` naming the setting, so the command names
its option (`--max-iters`) where Python names the field (`max_iters`), in the same words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minigpt.checkpoint import Checkpoint, CheckpointError
from minigpt.config import ConfigError, GPTConfig, TrainConfig

_OWN_KEYS = ("step", "history", "train_losses", "scaler", "train_config")
_RETIRED_KEYS = ("batch_rng", "torch_rng", "cuda_rng")  # random states older files hold: no longer needed


@dataclass
class TrainState:
    """Where a run stands. `extra` is what a caller stores with its run (the command: the data
    source, val_fraction, the sample prompt); `optimizer` is kept beside the rest in a file."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # {'step', 'train', 'val', 'lr'}
    train_losses: list[float] = field(default_factory=list)        # one per optimizer step
    scaler: dict[str, Any] | None = None                            # float16's gradient scaler
    train_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None

    @property
    def best_val(self) -> float:
        """The lowest validation loss so far (infinity before the first evaluation)."""
        return min((entry["val"] for entry in self.history), default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        """The `train_state` of a checkpoint file (the optimizer's state is stored beside it)."""
        own = {key: getattr(self, key) for key in _OWN_KEYS}
        return {**self.extra, **own}

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> "TrainState":
        """The state a checkpoint holds, each field checked; CheckpointError names a bad one."""
        values = ckpt.train_state
        if ckpt.optimizer_state is None or not {"step", "history", "train_losses"} <= set(values):
            raise CheckpointError(f"resume: {str(ckpt.path)!r} has no optimizer or training state "
                                  f"(it was saved for sampling only)")
        for key, (allowed, ok) in _CHECKS.items():
            if key in values and not ok(values[key]):
                got = repr(values[key]) if not isinstance(values[key], torch.Tensor) else "a tensor"
                raise CheckpointError(f"checkpoint: {str(ckpt.path)!r} cannot be used: "
                                      f"train_state[{key!r}] must be {allowed}, got {got[:60]}")
        try:
            TrainConfig.from_dict(values.get("train_config") or {})
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"checkpoint: {str(ckpt.path)!r} holds a bad train_config: "
                                  f"{error}") from None
        own = {key: values[key] for key in _OWN_KEYS if key in values}
        own["history"], own["train_losses"] = list(own["history"]), list(own["train_losses"])
        extra = {key: value for key, value in values.items()
                 if key not in _OWN_KEYS + _RETIRED_KEYS}
        return cls(**own, extra=extra, optimizer=ckpt.optimizer_state)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_CHECKS = {
    "step": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "history": ("a list of evaluations, dicts of numbers with 'step' and 'val'",
                lambda v: isinstance(v, list) and all(
                    isinstance(e, dict) and {"step", "val"} <= set(e) and all(map(_is_number, e.values()))
                    for e in v)),
    "train_losses": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
    "scaler": ("a gradient scaler's state (a dict) or None", lambda v: v is None or isinstance(v, dict)),
    "train_config": ("a dict of TrainConfig fields", lambda v: isinstance(v, dict)),
}


def resumed_config(state: TrainState, given: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training settings with the ones `given` now on top (what the command does
    with the options typed beside --resume)."""
    return TrainConfig.from_dict({**state.train_config, **given})


def check_settings(config: TrainConfig, model_config: GPTConfig) -> None:
    """Refuse training settings that the model cannot use: head_lr for a tied output layer."""
    if config.head_lr is not None and model_config.tie_weights:
        raise ConfigError("head_lr", "not set for a tied output layer (it is the token embedding, "
                          "trained at learning_rate; untie it with tie_weights=False, "
                          "--no-tie-weights)", config.head_lr)


def check_resume(state: TrainState, config: TrainConfig, model_config: GPTConfig,
                 saved_model: GPTConfig) -> None:
    """Refuse a resume that would not continue the checkpoint's run, naming the setting.

    The model must be the checkpoint's, the optimizer too (its state is what continues), with an
    own group for an untied output layer exactly when the checkpoint had one (head_lr), and
    max_iters must lie beyond the checkpoint's step.
    """
    for name, value in model_config.to_dict().items():
        saved = getattr(saved_model, name)
        if value != saved:
            raise ConfigError(name, f"{saved!r}, the checkpoint's (a resume keeps the model it "
                              f"continues)", value)
    saved_train = state.train_config
    saved_optimizer = saved_train.get("optimizer", "adamw")
    if config.optimizer != saved_optimizer:
        raise ConfigError("optimizer", f"{saved_optimizer!r}, the checkpoint's (its state is what a "
                          f"resume continues; start a new run for another optimizer)",
                          config.optimizer)
    saved_head = saved_train.get("head_lr")
    if (saved_head is None) != (config.head_lr is None):
        allowed = ("not set: the checkpoint was trained without it, so its optimizer has no group "
                   "of its own for the output layer to continue (start a new run to use it)"
                   if saved_head is None else
                   f"set (the checkpoint's is {saved_head}): its optimizer has a group of its own "
                   f"for the output layer")
        raise ConfigError("head_lr", allowed, config.head_lr)
    if config.max_iters <= state.step:
        raise ConfigError("max_iters", f"above the checkpoint's step {state.step} (a resume "
                          f"trains further)", config.max_iters)


@dataclass
class TrainResult:
    """What a run leaves behind: its state (evaluations, every step's loss), where it stopped."""

    state: TrainState
    interrupted: bool = False
    stop_signal: int | None = None  # signal.SIGINT or SIGTERM when a signal stopped the run
    checkpoint: Path | None = None

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history

    @property
    def train_losses(self) -> list[float]:
        return self.state.train_losses
