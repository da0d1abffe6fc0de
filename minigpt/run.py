"""One `minigpt train` run, from the command's settings to a trained checkpoint.

`plan_run` checks what can be checked before any work: the settings, the files, the run folder,
and reads the checkpoint to resume (once). `execute` then holds the run folder, tokenizes, builds
the model, hands the checkpoint to the `Trainer` (what a resume may change is decided in one
place, `minigpt.train_state.check_resume`, asked by the plan and by `Trainer.resume`), and only then replaces an earlier run (--overwrite), trains,
saves, plots and samples. Nothing on disk is lost on the way.

Under torchrun (or `--nproc`), every rank plans the same run and joins the process group
(`minigpt.distributed`); rank 0 alone holds the run folder, prints, plots and samples, and its
tokenizer is the one every rank uses.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minigpt.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from minigpt.config import DataConfig, GPTConfig, TrainConfig
from minigpt.data import check_length, data_source, encode_corpus, load_text, train_val_split
from minigpt.distributed import (SaidByRankZero, check_world_size, is_distributed, is_main_process,
                                 join_from_env, launch, launched_world_size, leave, share,
                                 started_by_torchrun, world_size)
from minigpt.errors import MinigptError
from minigpt.model import GPT
from minigpt.runfolder import (CHECKPOINT_NAMES, RunLock, check_not_in_use, check_run_folder,
                               remove_stale_temp_files)
from minigpt.sampling import default_prompt, sample_text
from minigpt.shards import TokenShards
from minigpt.tokenizers import tokenizer_from_dict, train_tokenizer
from minigpt.train_state import TrainState, check_resume, check_settings, resumed_config
from minigpt.trainer import Trainer, resolve_device


@dataclass
class RunPlan:
    """A checked `minigpt train` run: nothing in it can fail for a reason known before the work."""

    data: str                                  # 'shakespeare' or an absolute path (a file, or token shards)
    text: str | None = field(repr=False)       # the corpus, read and checked; None for token shards
    data_config: DataConfig
    train_config: TrainConfig
    model_options: dict[str, Any]              # the GPTConfig fields given
    out: Path
    replace: list[str]                         # the earlier run's checkpoints --overwrite removes
    progress: bool
    resume: Checkpoint | None = field(default=None, repr=False)  # read once, here
    overwrite: bool = False                    # --overwrite: an earlier run in `out` may be replaced


def plan_run(data_options: dict[str, Any], model_options: dict[str, Any],
             train_options: dict[str, Any], resume: str | None = None, overwrite: bool = False,
             progress: bool = False) -> RunPlan:
    """Check the settings (the options given, preset applied), files and folder of a run."""
    data_config = DataConfig(**data_options)
    if "vocab_size" in data_options and data_config.tokenizer != "bpe":
        source = "the text" if data_config.tokenizer == "char" else "tiktoken"
        raise MinigptError(f"--vocab-size applies only to --tokenizer bpe; the "
                           f"{data_config.tokenizer} tokenizer's vocabulary comes from {source}")
    if not data_config.out:
        raise MinigptError("--out is empty; give a folder for the checkpoints")
    out, ckpt = Path(data_config.out), None
    if resume is None:
        train_config = TrainConfig(**train_options)
        check_settings(train_config, GPTConfig(vocab_size=1, **model_options))  # vocab: later
        data = _data_source(data_config.data, "--data")
    else:
        ckpt, train_config, data_config = _plan_resume(resume, data_options, model_options,
                                                       train_options)
        data = data_config.data
        out = out if "out" in data_options else ckpt.path.parent
    resolve_device(train_config.device)  # 'cuda' on a machine without CUDA fails here, not later
    if started_by_torchrun():  # every rank finds this, before any of them waits for another
        check_world_size(train_config.grad_accum_steps, launched_world_size())
    replace = check_run_folder(out, ckpt.path if ckpt else None, overwrite)
    name = "--data" if "data" in data_options or ckpt is None else "the checkpoint's data"
    text = None if is_shards(data) else load_text(data, name)  # shards stay on disk
    return RunPlan(data, text, data_config, train_config, model_options, out,
                   replace, progress, ckpt, overwrite)


def is_shards(source: str) -> bool:
    """Whether `source` is a folder of token shards (written by `minigpt prepare`)."""
    return Path(source).is_dir() and (Path(source) / "meta.json").is_file()


def _data_source(source: str, name: str) -> str:
    """A folder of token shards (its absolute path), else what `data_source` accepts."""
    return str(Path(source).resolve()) if source and is_shards(source) else data_source(source, name)


def _plan_resume(resume: str, data_options: dict[str, Any], model_options: dict[str, Any],
                 train_options: dict[str, Any]) -> tuple[Checkpoint, TrainConfig, DataConfig]:
    """The checkpoint, its training settings with the options on top, and the data settings
    (the checkpoint's data and val_fraction unless given). The trainer's own resume rules are
    asked here too, so that a refusal comes before any work (`Trainer.resume` asks them again)."""
    fixed = [name for name in ("tokenizer", "vocab_size") if name in data_options]
    if fixed:
        raise MinigptError(f"--resume keeps the checkpoint's tokenizer; drop "
                           f"{', '.join('--' + n.replace('_', '-') for n in fixed)}")
    if not resume:
        raise MinigptError("--resume is empty; give the path of a file")
    if Path(resume).is_dir():
        raise MinigptError(f"--resume {resume!r} is a folder, not a file; give the path of a file")
    if not Path(resume).exists():
        raise MinigptError(f"--resume: no such file {resume!r} (give a checkpoint, e.g. "
                           f"out/ckpt.pt)")
    try:  # the message names the option typed, as --checkpoint's do
        ckpt = load_checkpoint(resume)
    except CheckpointError as error:
        raise CheckpointError(f"--resume: {str(error).removeprefix('checkpoint: ')}") from None
    state = TrainState.from_checkpoint(ckpt)  # its refusals read as Trainer.resume's (one rule, one message)
    train_config = resumed_config(state, train_options)
    model_config = GPTConfig.from_dict({**ckpt.config.to_dict(), **model_options})
    check_settings(train_config, model_config)
    check_resume(state, train_config, model_config, ckpt.config)
    saved = {key: state.extra[key] for key in ("data", "val_fraction") if key in state.extra}
    data_config = DataConfig(**{**saved, **data_options})
    data_config.data = _data_source(data_config.data, "--data" if "data" in data_options else
                                   "the checkpoint's data (give --data to use another file)")
    return ckpt, train_config, data_config


def say(*args: Any) -> None:
    """print, on rank 0 only (alone: always)."""
    if is_main_process():
        print(*args, flush=True)


def execute(plan: RunPlan) -> int:
    """Hold the run folder, read and tokenize the data, train, save, plot, sample.

    Under torchrun this process is one rank: it joins the others first, and leaves at the end.
    """
    if not started_by_torchrun():
        with _run_folder(plan):
            return _train(plan)
    config = plan.train_config
    join_from_env(resolve_device(config.device), config.dist_timeout)
    try:
        with _run_folder(plan):
            return _train(plan)
    finally:
        leave()


def launch_ranks(config: TrainConfig, out: Path, nproc: int, argv: list[str]) -> int:
    """`minigpt train --nproc N`: a checked plan's command again, on N ranks under torchrun."""
    check_world_size(config.grad_accum_steps, nproc)
    check_not_in_use(out)  # said here once, not by every rank after torchrun has started them
    device = resolve_device(config.device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise MinigptError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s); "
                           f"run at most that many ranks, or --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise MinigptError(f"--nproc {nproc} needs --device cpu or cuda (torch.distributed has no "
                           f"backend for {device.type})")
    return launch(nproc, argv, stop_within_s=config.dist_timeout)


@contextlib.contextmanager
def _run_folder(plan: RunPlan):
    """Rank 0 holds the run folder's lock for the whole run; the other ranks wait for its word."""
    with contextlib.ExitStack() as stack:
        problem = None
        if is_main_process():
            try:
                _take_run_folder(plan, stack)
            except MinigptError as error:
                problem = error
        if share(problem is not None):  # rank 0's word (alone: this process's own)
            raise problem if problem is not None else SaidByRankZero("rank 0 could not take the run folder")
        yield


def _take_run_folder(plan: RunPlan, stack: contextlib.ExitStack) -> None:
    lock = stack.enter_context(RunLock(plan.out))
    if lock.taken_over is not None:
        print(f"took over the lock of {str(plan.out)!r}, {lock.taken_over}")
    resume_path = plan.resume.path if plan.resume else None
    check_run_folder(plan.out, resume_path, plan.overwrite)  # a run may have finished there since
    for path in remove_stale_temp_files(plan.out, CHECKPOINT_NAMES):
        print(f"removed {path}, left by an interrupted save")


def _train(plan: RunPlan) -> int:
    text, ckpt = plan.text, plan.resume
    shards = TokenShards.open(plan.data) if text is None else None
    if ckpt is not None:
        tokenizer = ckpt.tokenizer
        model_config = GPTConfig.from_dict({**ckpt.config.to_dict(), **plan.model_options})
    elif shards is not None:
        tokenizer = shards.tokenizer  # the one the shards were made with
        model_config = GPTConfig(vocab_size=tokenizer.vocab_size, **plan.model_options)
    else:
        tokenizer = _shared_tokenizer(plan, text)
        model_config = GPTConfig(vocab_size=tokenizer.vocab_size, **plan.model_options)
    if shards is not None:
        train_data, val_data = _shard_splits(plan, shards, tokenizer)
        text = tokenizer.decode(np.asarray(train_data[:1000]).tolist())  # for the default prompt
    else:
        train_data, val_data = _encoded_splits(plan, text, tokenizer)
    prompt = default_prompt(tokenizer, text)
    for name, split in (("the training split", train_data), ("the validation split", val_data)):
        check_length(split, model_config.context_length, name, "--context-length")
    say(f"data: {plan.data} -> {len(train_data) + len(val_data):,} tokens ({len(train_data):,} train, "
        f"{len(val_data):,} val), vocabulary of {tokenizer.vocab_size:,}")
    config = plan.train_config
    torch.manual_seed(config.seed)  # the model's initial weights
    model = ckpt.model if ckpt is not None and model_config == ckpt.config else GPT(model_config)
    say(f"model: {model.num_parameters():,} parameters; {model_config}")
    trainer = Trainer(model, tokenizer, train_data, val_data, config, out_dir=plan.out,
                      progress=plan.progress,
                      extra_state={"data": plan.data, "val_fraction": plan.data_config.val_fraction,
                                   "sample_prompt": prompt})
    ranks = f"; {world_size()} ranks ({torch.distributed.get_backend()})" if is_distributed() else ""
    say(f"device: {trainer.device}{ranks}")
    if ckpt is not None:
        trainer.resume(ckpt)
        say(f"resumed from {ckpt.path} at step {trainer.state.step}")
    for name in plan.replace if is_main_process() else ():  # only now: every check has passed
        (plan.out / name).unlink(missing_ok=True)
        say(f"--overwrite: removed the earlier run's {plan.out / name}")
    start = time.perf_counter()
    result = trainer.run()
    if not is_main_process():  # rank 0 evaluated, saved, and reports
        return 128 + result.stop_signal if result.stop_signal is not None else 0
    last = result.history[-1]
    say(f"{'interrupted' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.1f} s; last evaluation (step {last['step']}): train loss "
        f"{last['train']:.4f}, val loss {last['val']:.4f}")
    say(f"checkpoint: {result.checkpoint or 'none (no step was finished)'}")
    # imported only now: matplotlib adds about 30 MB, which would otherwise sit through training
    from minigpt.plotting import plot_loss_curves, save_figure

    curve = save_figure(plot_loss_curves(result.history, result.train_losses), plan.out / "loss.png")
    say(f"loss curve: {curve}")
    if result.stop_signal is not None:
        return 128 + result.stop_signal
    if plan.data_config.sample_tokens > 0:
        sample = sample_text(model, tokenizer, prompt, plan.data_config.sample_tokens,
                             seed=config.seed, temperature=0.8, device=trainer.device)
        say("sample:\n" + sample)
    return 0


def _shared_tokenizer(plan: RunPlan, text: str):
    """A tokenizer trained on the text, the same on every rank: each rank trains one (so none
    waits for rank 0 alone, bounded by dist_timeout), then all take rank 0's."""
    kind = plan.data_config.tokenizer
    say(f"training a {kind} tokenizer on {len(text):,} characters ...")
    tokenizer = train_tokenizer(kind, text, plan.data_config.vocab_size)
    if not is_distributed():
        return tokenizer
    return tokenizer_from_dict(share(tokenizer.to_dict()))


def _encoded_splits(plan: RunPlan, text: str, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The text's ids, in memory, cut into train and val."""
    try:
        data = encode_corpus(text, tokenizer)
    except ValueError as error:  # a resume on another text, with characters the checkpoint never saw
        raise MinigptError(f"--data {plan.data!r} does not fit the checkpoint's tokenizer: "
                           f"{error}") from None
    return train_val_split(data, plan.data_config.val_fraction)


def _shard_splits(plan: RunPlan, shards: TokenShards, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The shards' train and val ids, mapped from disk (their own split; --val-fraction is prepare's)."""
    if tokenizer.to_dict() != shards.tokenizer.to_dict():
        raise MinigptError(f"--data {plan.data!r}: its shards were made with another tokenizer than "
                           f"the checkpoint's; prepare them with the checkpoint's tokenizer")
    return shards.splits["train"], shards.splits["val"]
