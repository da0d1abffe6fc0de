"""The training loop: forward, loss, backward, update, over and over, with the usual care around it.

Around the four steps sit the pieces every real run needs: AdamW with weight decay only on the
matrices (or Muon for the blocks' matrices, see `minigpt.optim`), a learning rate that warms up
linearly then decays (along a cosine, or flat then straight down), gradient clipping,
periodic `estimate_loss` on train and val, a progress bar, a history of losses, checkpoints (latest
and best), resume from a checkpoint to the exact same numbers, and Ctrl-C (or SIGTERM) that saves
before stopping. A loss that turns NaN or infinite stops the run with `NonFiniteError`, and no
checkpoint with NaN or infinite numbers is ever written.

Two places decide things for the whole run, so that a multi-process version can change them alone:
`resolve_device` picks the device, and `is_main_process` says who writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm import tqdm  # the plain text bar: works in a terminal and a notebook alike

from minigpt.checkpoint import (CheckpointError, load_model_state, non_finite_tensors, read_checkpoint,
                                save_checkpoint)
from minigpt.config import TrainConfig
from minigpt.data import check_length, get_batch
from minigpt.evaluate import estimate_loss
from minigpt.model import GPT
from minigpt.optim import configure_optimizer  # noqa: F401 (chapter 5 imports it from here)
from minigpt.tokenizers import Tokenizer


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA if present, then Apple's MPS, then the CPU; other names are taken as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} was asked for but CUDA is not available here; "
                             f"use 'auto' or 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={name!r} was asked for but MPS is not available here; "
                             f"use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_main_process() -> bool:
    """True in a single-process run; with torch.distributed, only rank 0 writes files and logs."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def learning_rate(step: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int,
                  schedule: str = "cosine", decay_fraction: float = 0.5) -> float:
    """Linear warm-up to max_lr over warmup_iters steps, then down to min_lr at max_iters.

    Warm-up: step s < warmup_iters gets max_lr * (s + 1) / warmup_iters, so step 0 already moves.
    "cosine" then follows half a cosine from max_lr to min_lr. "wsd" (warm-up, stable, decay) holds
    max_lr, then falls along a straight line to min_lr over the last `decay_fraction` of the
    steps: the long flat part explores, the short decay settles. Past max_iters: min_lr.
    """
    if step < warmup_iters:
        return max_lr * (step + 1) / warmup_iters
    if step >= max_iters:
        return min_lr
    if schedule == "wsd":
        decay_start = max(warmup_iters, max_iters * (1.0 - decay_fraction))
        if step < decay_start:
            return max_lr
        progress = (step - decay_start) / max(1.0, max_iters - decay_start)  # 0 -> 1
        return max_lr + progress * (min_lr - max_lr)
    progress = (step - warmup_iters) / max(1, max_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@dataclass
class TrainResult:
    """What a run leaves behind: the evaluations, the loss of every step, where it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)  # {'step', 'train', 'val', 'lr'}
    train_losses: list[float] = field(default_factory=list)        # one per optimizer step
    step: int = 0
    interrupted: bool = False
    stop_signal: int | None = None  # signal.SIGINT or SIGTERM when a signal stopped the run
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None


class Interrupted(KeyboardInterrupt):
    """A second Ctrl-C (or SIGTERM) while the first one was still being handled: stop at once.

    `signum` is the signal that stopped the run, so a command can exit with 128 + signum.
    """

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteError(RuntimeError):
    """The loss or the weights became NaN or infinite: training diverged, nothing more is saved."""


class _StopFlag:
    signum: int | None = None  # the signal that asked to stop, if any

    @property
    def requested(self) -> bool:
        return self.signum is not None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C or SIGTERM into a request to stop after the current step.

    A second one aborts at once (`Interrupted`); an atomic save it cuts short leaves the previous
    checkpoint as it was.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise Interrupted(signum)
        flag.signum = signum

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def resumable_state(payload: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint read by `read_checkpoint`, if it holds enough to resume."""
    state = payload.get("train_state") or {}
    needed = {"step", "history", "train_losses", "batch_rng", "torch_rng"}
    if payload.get("optimizer") is None or not isinstance(state, dict) or not needed <= set(state):
        raise CheckpointError(f"resume: {str(path)!r} has no optimizer or training state "
                              f"(it was saved for sampling only)")
    return state


class Trainer:
    """One training run of `model` on token ids; `run()` trains to `config.max_iters`."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, train_data: torch.Tensor,
                 val_data: torch.Tensor, config: TrainConfig, out_dir: str | Path | None = None,
                 progress: bool = True, extra_state: dict[str, Any] | None = None):
        context_length = model.config.context_length
        check_length(train_data, context_length, "the training split")
        check_length(val_data, context_length, "the validation split")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.splits = {"train": train_data, "val": val_data}
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.extra_state = extra_state or {}  # stored with checkpoints (e.g. the data source)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)  # dropout's random numbers
        self.model.to(self.device).train()
        self.optimizer = configure_optimizer(model, config, self.device)
        # each group's peak rate and settings, from the config (a resume keeps them: see `resume`)
        self.group_settings = [{key: value for key, value in group.items() if key != "params"}
                               for group in self.optimizer.param_groups]
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.result = TrainResult()

    # -- resume ---------------------------------------------------------------------------------

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizer, step, random-number state, history."""
        payload = read_checkpoint(path)
        if payload["config"] != self.model.config.to_dict():
            raise CheckpointError(f"resume: {str(path)!r} was trained with {payload['config']}, "
                                  f"which differs from this model's {self.model.config.to_dict()}")
        state = resumable_state(payload, path)
        load_model_state(self.model, payload["model"], source=str(path))
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, IndexError) as error:
            saved = payload["train_state"].get("train_config") or {}
            raise CheckpointError(f"resume: the optimizer state in {str(path)!r} (optimizer="
                                  f"{saved.get('optimizer', 'adamw')}, head_lr="
                                  f"{saved.get('head_lr')}) does not fit optimizer="
                                  f"{self.config.optimizer}, head_lr={self.config.head_lr} "
                                  f"here ({error})") from None
        for group, settings in zip(self.optimizer.param_groups, self.group_settings):
            group.update(settings)  # the saved groups hold the old run's weight decay, betas, ...
        self.batch_generator.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.result.step = state["step"]
        self.result.history = list(state["history"])
        self.result.train_losses = list(state["train_losses"])

    # -- the loop -------------------------------------------------------------------------------

    def run(self, until: int | None = None) -> TrainResult:
        """Train from the current step to `until` (default: config.max_iters), then save.

        Stopping early with `until` leaves the schedule as it is, so a later `run()` (or a resume
        from the saved checkpoint) continues exactly where this one stopped.
        """
        cfg, result = self.config, self.result
        until = cfg.max_iters if until is None else min(until, cfg.max_iters)
        bar = tqdm(total=cfg.max_iters, initial=result.step, disable=not (self.progress and
                   is_main_process()), desc="training", unit="step", dynamic_ncols=True,
                   mininterval=0.5)
        with _stop_on_signals() as stop, bar:
            while result.step < until and not stop.requested:
                if result.step % cfg.eval_interval == 0:
                    self._evaluate_and_save(bar)
                self._train_step()
                result.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{result.train_losses[-1]:.4f}",
                                lr=f"{self._lr(result.step - 1):.2e}")
                if cfg.checkpoint_interval and result.step % cfg.checkpoint_interval == 0:
                    self._save("ckpt.pt")
            result.interrupted, result.stop_signal = stop.requested, stop.signum
            if result.step % cfg.eval_interval == 0 or result.step == cfg.max_iters:
                self._evaluate_and_save(bar)
            elif result.step > 0:
                # Off the evaluation schedule: save without evaluating, so that a resumed run's
                # history is the same as an uninterrupted run's.
                self._save("ckpt.pt")
        return result

    def _lr(self, step: int, peak: float | None = None) -> float:
        """The rate at `step` of a group whose peak is `peak` (default: learning_rate).

        Every group follows the same schedule; its min_lr is scaled in proportion to its peak.
        """
        cfg = self.config
        if peak is None or peak == cfg.learning_rate:
            peak, floor = cfg.learning_rate, cfg.min_lr
        else:
            floor = cfg.min_lr * peak / cfg.learning_rate
        return learning_rate(step, peak, floor, cfg.warmup_iters, cfg.max_iters, cfg.schedule,
                             cfg.decay_fraction)

    def _train_step(self) -> None:
        """The four steps: forward, loss, backward (on fresh gradients), update."""
        cfg = self.config
        for group, settings in zip(self.optimizer.param_groups, self.group_settings):
            group["lr"] = self._lr(self.result.step, settings["lr"])  # settings["lr"]: the group's peak
        x, y = get_batch(self.splits["train"], cfg.batch_size, self.model.config.context_length,
                         generator=self.batch_generator, device=self.device)
        _, loss = self.model(x, y)
        value = loss.item()
        if not math.isfinite(value):  # checked before the update, so the weights stay as they were
            self._diverged(f"the training loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)  # gradients add up unless cleared
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.result.train_losses.append(value)

    def _diverged(self, what: str) -> None:
        last = self.result.checkpoint
        kept = (f"the last checkpoint ({last}) is kept" if last else
                "this run saved nothing (a checkpoint it resumed from is kept as it was)")
        cfg = self.config
        muon = f", muon_lr (now {cfg.muon_lr})" if cfg.optimizer == "muon" else ""
        raise NonFiniteError(f"training diverged at step {self.result.step}: {what}; {kept}. "
                             f"Try a lower learning_rate (now {cfg.learning_rate}){muon} or "
                             f"grad_clip (now {cfg.grad_clip})")

    def _check_finite(self) -> None:
        """Refuse to save NaN or infinite weights or optimizer moments (they would poison a resume)."""
        for kind, name in non_finite_tensors(self.model, self.optimizer):
            self._diverged(f"the {kind} hold NaN or infinite values ({name})")

    def _evaluate_and_save(self, bar: tqdm) -> None:
        result = self.result
        if result.history and result.history[-1]["step"] == result.step:
            return  # already evaluated here (a resumed run starts where the last one saved)
        eval_generator = torch.Generator().manual_seed(self.config.seed + 1)  # same batches each time
        losses = estimate_loss(self.model, self.splits, self.config.eval_iters,
                               self.config.batch_size, self.model.config.context_length,
                               generator=eval_generator, device=self.device)
        for split, value in losses.items():
            if not math.isfinite(value):
                self._diverged(f"the estimated {split} loss is {value}")
        entry = {"step": result.step, "train": losses["train"], "val": losses["val"],
                 "lr": self._lr(result.step)}
        is_best = all(entry["val"] < h["val"] for h in result.history)
        result.history.append(entry)
        if is_main_process():
            bar.write(f"step {result.step:>6}: train loss {entry['train']:.4f}, "
                      f"val loss {entry['val']:.4f}")
        if result.step > 0:
            # best.pt first: were the ckpt.pt save cut short, a resume starts before this step
            # and evaluates it again, so no best checkpoint is ever skipped.
            if is_best:
                result.best_checkpoint = self._save("best.pt")
            self._save("ckpt.pt")

    def _save(self, name: str) -> Path | None:
        if self.out_dir is None or not is_main_process():
            return None
        self._check_finite()
        state = {
            "step": self.result.step,
            "history": self.result.history,
            "train_losses": self.result.train_losses,
            "batch_rng": self.batch_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "train_config": self.config.to_dict(),
            **self.extra_state,
        }
        path = save_checkpoint(self.out_dir / name, self.model, self.tokenizer, self.optimizer, state)
        if name == "ckpt.pt":
            self.result.checkpoint = path
        return path


def train(model: GPT, tokenizer: Tokenizer, train_data: torch.Tensor, val_data: torch.Tensor,
          config: TrainConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
          progress: bool = True) -> TrainResult:
    """Train `model` on the ids in `train_data`, checking `val_data`; see `Trainer` for the details."""
    trainer = Trainer(model, tokenizer, train_data, val_data, config, out_dir, progress)
    if resume is not None:
        trainer.resume(resume)
    return trainer.run()
