"""The training loop: forward, loss, backward, update, over and over, with the usual care around it.

Around the four steps (`Trainer.train_step`) sit the pieces every real run needs: AdamW with
weight decay only on the matrices (or Muon for the blocks' matrices, see `minigpt.optim`), a
learning rate that warms up linearly then decays (along a cosine, or flat then straight down),
gradient clipping, periodic `estimate_loss` on train and val, a progress bar, a history of losses,
checkpoints (latest and best), resume to the exact same numbers, and Ctrl-C (or SIGTERM) that
saves before stopping. A loss that turns NaN or infinite stops the run with `NonFiniteError`, and
no checkpoint with NaN or infinite numbers is ever written.

What a run needs to continue is a `TrainState`; what a resume may change (the training settings
but not the model, the optimizer or its groups, and only towards more steps) is decided here once,
in `check_resume`, for `Trainer.resume` and the `minigpt train --resume` command alike.
`resolve_device` decides the device for the whole run.

The same loop trains on one process or on several ranks under torchrun (`minigpt.distributed`):
the model is then wrapped in DistributedDataParallel, each rank runs its share of a step's
micro-batches, every rank runs the same evaluations, and only rank 0 logs and saves. Micro-batch i of step s draws its rows
and its dropout from a seed made of (seed, s, i), so the numbers do not depend on how many ranks
share the step, nor on a resume. `dtype` bfloat16 or float16 runs the forward pass under autocast
(`minigpt.precision`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm  # the plain text bar: works in a terminal and a notebook alike

from minigpt.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from minigpt.checkpoint import NonFiniteError as _NonFiniteSave
from minigpt.config import ConfigError, TrainConfig
from minigpt.data import check_length, get_batch
from minigpt.distributed import (RankLost, is_distributed, is_main_process, max_over_ranks,
                                 micro_steps_of_rank, rank, sum_over_ranks, world_size)
from minigpt.errors import MinigptError
from minigpt.evaluate import estimate_loss
from minigpt.model import GPT, check_token_ids
from minigpt.optim import configure_optimizer  # noqa: F401 (chapter 5 imports it from here)
from minigpt.precision import autocast, check_dtype, gradient_scaler
from minigpt.tokenizers import Tokenizer
from minigpt.train_state import (TrainResult, TrainState, check_resume, check_settings,
                                 resumed_config)

__all__ = ["Trainer", "TrainResult", "TrainState", "NonFiniteError", "Interrupted", "check_resume",
           "check_settings", "resumed_config", "learning_rate", "resolve_device", "is_main_process", "train",
           "configure_optimizer", "RankLost"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA if present, then Apple's MPS, then the CPU; other names are taken as given."""
    if name != "auto":
        device = torch.device(name)
        for kind, present in (("cuda", torch.cuda.is_available), ("mps", torch.backends.mps.is_available)):
            if device.type == kind and not present():
                raise ConfigError("device", f"one present here ({kind.upper()} is not available "
                                  f"here; use 'auto' or 'cpu')", name)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


class Interrupted(KeyboardInterrupt):
    """A second Ctrl-C (or SIGTERM) while the first one was still being handled: stop at once.

    `signum` is the signal that stopped the run, so a command can exit with 128 + signum.
    """

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteError(MinigptError, RuntimeError):
    """The loss or the weights became NaN or infinite: training diverged, nothing more is saved."""


@dataclass
class _StopFlag:
    signum: int | None = None  # the signal that asked this process to stop, if any
    agreed: int | None = None  # the signal all ranks stop for, decided together after a step


@contextlib.contextmanager
def _stop_on_signals(abort_on_second: bool = True) -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C or SIGTERM into a request to stop after the current step.

    A second one aborts at once (`Interrupted`); an atomic save it cuts short leaves the previous
    checkpoint as it was. On several ranks a second signal is ignored: torchrun forwards the
    signal it got, and it kills a rank that has not stopped after 30 seconds itself.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None:
            if abort_on_second:
                raise Interrupted(signum)
            return
        flag.signum = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _seed_of(*key: object) -> int:
    """A 63-bit seed made from `key` (e.g. the run's seed, a step, a micro-batch, a use): different
    keys give unrelated seeds, on every machine (a hash of the key's text, not Python's hash())."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Trainer:
    """One training run of `model` on token ids; `run()` trains to `config.max_iters`.

    `progress`: a progress bar (None: when stderr is a terminal; a log file gets one line per
    evaluation instead). `extra_state` is stored with every checkpoint (the command keeps the data
    source there).
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, train_data: torch.Tensor,
                 val_data: torch.Tensor, config: TrainConfig, out_dir: str | Path | None = None,
                 progress: bool | None = None, extra_state: dict[str, Any] | None = None):
        context_length, vocab_size = model.config.context_length, model.config.vocab_size
        for name, data in (("the training split", train_data), ("the validation split", val_data)):
            check_length(data, context_length, name)
            if isinstance(data, torch.Tensor):  # token shards' ids were made by their own tokenizer
                check_token_ids(data, vocab_size, name)  # once here, not in every forward pass
        check_settings(config, model.config)
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.splits = {"train": train_data, "val": val_data}
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = self._rank_device(resolve_device(config.device))
        self.my_micro_steps = micro_steps_of_rank(config.grad_accum_steps, rank(), world_size())
        self.dtype = check_dtype(config.dtype, self.device)
        self.scaler = gradient_scaler(self.device, self.dtype)
        self.model.to(self.device).train()
        # on several ranks, DDP averages the gradients inside backward(); alone, the model itself
        # (broadcast_buffers off: the buffers are constants, and the forward pass then waits for
        # no other rank, so only backward and the step's collectives can be another rank's fault)
        self.step_model = (DistributedDataParallel(model, device_ids=[self.device] if self.device.type
                           == "cuda" else None, broadcast_buffers=False) if is_distributed() else model)
        self.optimizer = configure_optimizer(model, config, self.device)
        # each group's peak rate and settings, from the config (a resume keeps them: see `resume`)
        self.group_settings = [{key: value for key, value in group.items() if key != "params"}
                               for group in self.optimizer.param_groups]
        self.state = TrainState(train_config=config.to_dict(), extra=dict(extra_state or {}))
        self.result = TrainResult(self.state)
        self._stop = _StopFlag()

    @staticmethod
    def _rank_device(device: torch.device) -> torch.device:
        """On several CUDA ranks, each uses its own GPU (torchrun's LOCAL_RANK)."""
        if is_distributed() and device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return device

    # -- resume ---------------------------------------------------------------------------------

    def resume(self, checkpoint: str | Path | Checkpoint) -> None:
        """Continue from a checkpoint (a path, or one `load_checkpoint` read): weights, optimizer,
        step, random-number state, history. What a resume may change is `check_resume`'s rule."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        state = TrainState.from_checkpoint(ckpt)
        check_resume(state, self.config, self.model.config, ckpt.config)
        if ckpt.model is not self.model:
            self.model.load_state_dict(ckpt.model.state_dict())
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, IndexError) as error:  # a hand-made file: say what
            raise CheckpointError(f"resume: the optimizer state in {str(ckpt.path)!r} does not fit "
                                  f"this model's optimizer ({error})") from None
        for group, settings in zip(self.optimizer.param_groups, self.group_settings):
            group.update(settings)  # the saved groups hold the old run's weight decay, betas, ...
        if state.scaler and self.scaler.is_enabled():  # float16 then and now: its scale goes on
            self.scaler.load_state_dict(state.scaler)
        state.train_config, state.extra = self.config.to_dict(), {**state.extra, **self.state.extra}
        self.state = self.result.state = state

    # -- the loop -------------------------------------------------------------------------------

    def run(self, until: int | None = None) -> TrainResult:
        """Train from the current step to `until` (default: config.max_iters), then save.

        Stopping early with `until` leaves the schedule as it is, so a later `run()` (or a resume
        from the saved checkpoint) continues exactly where this one stopped. A Ctrl-C or SIGTERM
        stops the run after the current step (on every rank) and saves.
        """
        cfg, state = self.config, self.state
        until = cfg.max_iters if until is None else min(until, cfg.max_iters)
        bar = tqdm(total=cfg.max_iters, initial=state.step, disable=not (self.progress and
                   is_main_process()), desc="training", unit="step", dynamic_ncols=True,
                   mininterval=0.5)
        with _stop_on_signals(abort_on_second=not is_distributed()) as stop, bar:
            self._stop = stop  # train_step tells the other ranks about it
            while state.step < until and stop.agreed is None:
                if state.step % cfg.eval_interval == 0:
                    self._evaluate_and_save(bar)
                loss = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr(state.step - 1):.2e}")
                if self._checkpoint_due() and not self._evaluation_due():
                    self._save("ckpt.pt")  # (an evaluation step saves after its evaluation)
            self.result.interrupted, self.result.stop_signal = stop.agreed is not None, stop.agreed
            if self._evaluation_due():
                self._evaluate_and_save(bar)
            elif state.step > 0 and not self._checkpoint_due():  # else: saved in the loop
                # Off the evaluation schedule: save without evaluating, so that a resumed run's
                # history is the same as an uninterrupted run's.
                self._save("ckpt.pt")
        return self.result

    def _evaluation_due(self) -> bool:
        """Whether the current step is evaluated (and, after step 0, saved): every eval_interval,
        and the last."""
        return self.state.step % self.config.eval_interval == 0 or self.state.step == self.config.max_iters

    def _checkpoint_due(self) -> bool:
        """Whether --checkpoint-interval asks for a save at the current step."""
        interval = self.config.checkpoint_interval
        return bool(interval) and self.state.step % interval == 0

    def micro_batch(self, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `index` of optimizer step `step`: (x, y), both (batch_size, context_length).

        Its rows come from a generator seeded by (seed, step, index), and torch's own generator
        (dropout) is seeded next to it, so the micro-batch is the same whichever rank runs it and
        after a resume.
        """
        cfg = self.config
        torch.manual_seed(_seed_of(cfg.seed, step, index, "dropout"))
        rows = torch.Generator().manual_seed(_seed_of(cfg.seed, step, index, "rows"))
        return get_batch(self.splits["train"], cfg.batch_size, self.model.config.context_length,
                         generator=rows, device=self.device)

    def train_step(self) -> float:
        """One optimizer step: forward, loss, backward (on fresh gradients), update.

        With grad_accum_steps = N, the step is made of N micro-batches (`micro_batch`); each one's
        loss is divided by N before backward, so `.grad` holds the gradient of the mean over the
        N * batch_size sequences, that of one batch N times larger. On W ranks each runs N / W of
        them, dividing by N / W, and DDP averages the W gradients: the same mean. Returns the mean
        loss; the step counter and the loss history move on by one.
        """
        cfg, state = self.config, self.state
        for group, settings in zip(self.optimizer.param_groups, self.group_settings):
            group["lr"] = self._lr(state.step, settings["lr"])  # settings["lr"]: the group's peak
        self.optimizer.zero_grad(set_to_none=True)  # gradients add up unless cleared
        mine, loss_sum = self.my_micro_steps, torch.zeros((), device=self.device)
        for n, index in enumerate(mine):
            x, y = self.micro_batch(state.step, index)
            last = n == len(mine) - 1  # DDP's all_reduce runs in the last backward() only
            with self._micro_step_context(last):
                with autocast(self.device, self.dtype):
                    _, loss = self.step_model(x, y)
                with self._among_ranks() if last else contextlib.nullcontext():
                    self.scaler.scale(loss / len(mine)).backward()  # .grad: the mean's gradient
            loss_sum += loss.detach().float()
        with self._among_ranks():
            value = sum_over_ranks([loss_sum], self.device)[0] / cfg.grad_accum_steps
            # any rank asked to stop: all stop after this step (a rank leaving alone would leave
            # the others waiting in the next step's all_reduce)
            self._stop.agreed = int(max_over_ranks([self._stop.signum or 0], self.device)[0]) or None
        if not math.isfinite(value):  # checked before the update, so the weights stay as they were
            self._diverged(f"the training loss is {value}")
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)  # float16: skipped if a gradient overflowed
        self.scaler.update()
        state.train_losses.append(value)
        state.step += 1
        return value

    def _micro_step_context(self, last: bool) -> contextlib.AbstractContextManager:
        """Alone: nothing. On several ranks, DDP averages the gradients in the last micro-step's
        backward (which waits for the other ranks); the others keep theirs local (no_sync)."""
        if not is_distributed() or last:
            return contextlib.nullcontext()
        return self.step_model.no_sync()

    @contextlib.contextmanager
    def _among_ranks(self) -> Iterator[None]:
        """Around what waits for the other ranks (DDP's backward, the step's collectives): an error
        there, on several ranks, means another rank is gone; say so, and what was kept."""
        try:
            yield
        except (torch.distributed.DistError, RuntimeError) as error:
            if not is_distributed() or isinstance(error, (MinigptError, torch.OutOfMemoryError)):
                raise
            last = self.result.checkpoint
            kept = f"the last checkpoint ({last}) is kept" if last else "nothing was saved"
            raise RankLost(f"rank {rank()} of {world_size()}: another rank died or stopped "
                           f"answering during step {self.state.step} "
                           f"({str(error).splitlines()[0][:200]}); {kept}; resume with --resume on "
                           f"any number of ranks") from None

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

    def _diverged(self, what: str) -> None:
        last = self.result.checkpoint
        kept = (f"the last checkpoint ({last}) is kept" if last else
                "this run saved nothing (a checkpoint it resumed from is kept as it was)")
        cfg = self.config
        muon = f", muon_lr (now {cfg.muon_lr})" if cfg.optimizer == "muon" else ""
        raise NonFiniteError(f"training diverged at step {self.state.step}: {what}; {kept}. "
                             f"Try a lower learning_rate (now {cfg.learning_rate}){muon} or "
                             f"grad_clip (now {cfg.grad_clip})")

    def _evaluate_and_save(self, bar: tqdm) -> None:
        """Estimate the losses, and save (rank 0). Every rank evaluates the same batches, so that
        none waits for rank 0 to do it alone (bounded by dist_timeout) and all stop together on a
        NaN; rank 0 alone prints and writes."""
        state = self.state
        if state.history and state.history[-1]["step"] == state.step:
            return  # already evaluated here (a resumed run starts where the last one saved)
        eval_generator = torch.Generator().manual_seed(self.config.seed + 1)  # same batches each time
        with autocast(self.device, self.dtype):
            losses = estimate_loss(self.model, self.splits, self.config.eval_iters,
                                   self.config.batch_size, self.model.config.context_length,
                                   generator=eval_generator, device=self.device)
        for split, value in losses.items():
            if not math.isfinite(value):
                self._diverged(f"the estimated {split} loss is {value}")
        is_best = losses["val"] < state.best_val
        state.history.append({"step": state.step, "train": losses["train"], "val": losses["val"],
                              "lr": self._lr(state.step)})
        if is_main_process():
            bar.write(f"step {state.step:>6}: train loss {losses['train']:.4f}, "
                      f"val loss {losses['val']:.4f}")
        if state.step > 0:
            # best.pt first: were the ckpt.pt save cut short, a resume starts before this step
            # and evaluates it again, so no best checkpoint is ever skipped.
            if is_best:
                self._save("best.pt")
            self._save("ckpt.pt")

    def _save(self, name: str) -> Path | None:
        if self.out_dir is None:
            return None
        if not is_main_process():  # rank 0 writes; the others know where, for their messages
            if name == "ckpt.pt":
                self.result.checkpoint = self.out_dir / name
            return None
        state = self.state
        state.scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        try:
            path = save_checkpoint(self.out_dir / name, self.model, self.tokenizer, self.optimizer,
                                   state.to_dict())
        except _NonFiniteSave as error:
            self._diverged(f"the {error.kind} hold NaN or infinite values ({error.tensor})")
        if name == "ckpt.pt":
            self.result.checkpoint = path
        return path


def train(model: GPT, tokenizer: Tokenizer, train_data: torch.Tensor, val_data: torch.Tensor,
          config: TrainConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
          progress: bool | None = None) -> TrainResult:
    """Train `model` on the ids in `train_data`, checking `val_data`; see `Trainer` for the details."""
    trainer = Trainer(model, tokenizer, train_data, val_data, config, out_dir, progress)
    if resume is not None:
        trainer.resume(resume)
    return trainer.run()
