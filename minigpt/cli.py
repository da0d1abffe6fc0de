"""The `minigpt` command: `minigpt train` on a text file, `minigpt sample` and `minigpt evaluate`
from a checkpoint.

Every option is made from a config field (`--context-length` is GPTConfig.context_length,
`--batch-size` is TrainConfig.batch_size, `--tokenizer` is DataConfig.tokenizer, `--top-p` is
SampleConfig.top_p, ...): its type, allowed values, default and help are written once, in the
config. `minigpt train` runs in two parts: `plan_run` checks everything that can be checked before
any work (options, files, the run folder, the checkpoint to resume), then `execute` does the work.
Bad input ends with one line, 'minigpt: error: ...', naming the option and what it allows, and exit
status 2; nothing on disk is lost.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from minigpt.checkpoint import (Checkpoint, CheckpointError, load_checkpoint, read_checkpoint,
                                remove_stale_temp_files)
from minigpt.config import (DEVICES, ConfigError, GPTConfig, SampleConfig, TrainConfig,
                            check_fields, describe, field_default, field_kind, is_device_name,
                            knob)
from minigpt.data import encode_corpus, load_text, train_val_split
from minigpt.evaluate import bits_per_char, evaluate_split, perplexity
from minigpt.model import GPT
from minigpt.presets import PRESETS, describe_presets
from minigpt.runfolder import CHECKPOINT_NAMES, RunLock, check_out_folder, existing_run
from minigpt.sampling import sample_text
from minigpt.tokenizers import TOKENIZER_KINDS, Tokenizer, tokenizer_from_dict, train_tokenizer
from minigpt.train import Interrupted, Trainer, resolve_device, resumable_state


@dataclass
class DataConfig:
    """What `minigpt train` reads and where it writes: the options beyond the model and training."""

    data: str = knob("shakespeare", "'shakespeare' (built in) or the path of a UTF-8 text file; "
                     "with --resume, the checkpoint's")
    tokenizer: str = knob("char", "characters, SentencePiece BPE trained on the corpus, or "
                          "tiktoken's cl100k_base", choices=TOKENIZER_KINDS)
    vocab_size: int = knob(512, "vocabulary size of --tokenizer bpe", low=1)
    val_fraction: float = knob(0.1, "share of the corpus held out for validation; with --resume, "
                               "the checkpoint's", low=0.0, high=1.0, low_open=True, high_open=True)
    out: str = knob("out", "folder for checkpoints (ckpt.pt, best.pt) and loss.png; with "
                    "--resume, the checkpoint's folder")
    sample_tokens: int = knob(300, "tokens to sample at the end (0: none)", low=0)

    def __post_init__(self) -> None:
        check_fields(self)


# -- options made from the configs ----------------------------------------------------------------

def option_name(name: str) -> str:
    """The command-line spelling of a config field: learning_rate -> --learning-rate."""
    return "--" + name.replace("_", "-")


def _parser_for(kind: str):
    """Turn the option's text into a value of the field's type, or say what was expected."""
    def parse(text: str):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            noun = "a whole number" if kind == "int" else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    return parse


def add_config_options(group, config_class) -> None:
    """One option per field of `config_class`; default None means "not given" (see `_given`)."""
    for f in fields(config_class):
        if not f.metadata.get("option", True):
            continue
        kind, _ = field_kind(f)
        # argparse lists the choices itself; an option left out is None ("not set")
        says_allowed = kind in ("int", "float") or f.metadata.get("allowed")
        allowed = f"; {describe(f).removesuffix(' (or None)')}" if says_allowed else ""
        default = "not set" if field_default(f) is None else field_default(f)
        help_text = f"{f.metadata['help']}{allowed} [default: {default}]"
        if kind == "bool":
            group.add_argument(option_name(f.name), action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(option_name(f.name), default=None, help=help_text,
                               type=str if kind == "str" else _parser_for(kind),
                               choices=f.metadata.get("choices"))


def option_names(config_class) -> list[str]:
    return [f.name for f in fields(config_class) if f.metadata.get("option", True)]


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among `names` that the user actually gave."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _only(values: dict[str, Any], config_class) -> dict[str, Any]:
    """The entries of `values` that are options of `config_class` (a preset spans three)."""
    return {name: value for name, value in values.items() if name in option_names(config_class)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        """One line, like every other error of the command (argparse would print the usage too)."""
        self.exit(2, f"minigpt: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minigpt", description="Train a small GPT on text, and sample from it.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands.add_parser(
        "train", help="train a model on a text corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's lines
        epilog="presets (--preset NAME sets these; options given on the command line win):\n"
               + describe_presets()))
    _add_sample(commands.add_parser("sample", help="generate text from a checkpoint"))
    _add_evaluate(commands.add_parser("evaluate", help="loss, perplexity and bits per character "
                                      "of a checkpoint over a whole split of a text"))
    return parser


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="start from a named "
                   "set of settings (listed at the end); options given here override it "
                   "[default: none: the defaults below, which are the baby preset's]")
    add_config_options(p.add_argument_group("data and output (DataConfig)"), DataConfig)
    add_config_options(p.add_argument_group("model (GPTConfig)"), GPTConfig)
    add_config_options(p.add_argument_group("training (TrainConfig)"), TrainConfig)
    p.add_argument("--resume", default=None, help="checkpoint to continue from; its model and "
                   "tokenizer are kept, options given here override its training settings")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out "
                   "(without it, a folder holding ckpt.pt or best.pt is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none "
                   "when the output is not a terminal: one line per evaluation instead)")


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="out/ckpt.pt", help="checkpoint written by minigpt "
                   "train [default: %(default)s]")
    p.add_argument("--prompt", default=None, help="text to continue [default: a new line, or the "
                   "first character of the training text when the vocabulary has no new line]")
    add_config_options(p.add_argument_group("sampling (SampleConfig)"), SampleConfig)
    p.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    p.add_argument("--device", default="auto", help=f"{DEVICES} [default: %(default)s]")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each step "
                   "(the plain loop, slower)")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="out/best.pt", help="checkpoint written by minigpt "
                   "train [default: %(default)s]")
    p.add_argument("--data", default=None, help="'shakespeare' or a UTF-8 text file [default: "
                   "the text the checkpoint was trained on]")
    p.add_argument("--split", default="val", choices=("val", "train", "all"), help="which part "
                   "of the text: the held-out end (the checkpoint's val_fraction), the rest, or "
                   "all of it [default: %(default)s]")
    p.add_argument("--device", default="auto", help=f"{DEVICES} [default: %(default)s]")


# -- minigpt train: every check first ------------------------------------------------------------

@dataclass
class RunPlan:
    """A checked `minigpt train` run: nothing in it can fail for a reason known before the work."""

    data: str                                  # 'shakespeare' or an absolute path
    text: str = field(repr=False)              # the corpus, read and checked (UTF-8, not empty)
    data_config: DataConfig
    train_config: TrainConfig
    model_options: dict[str, Any]              # the GPTConfig fields given (a new run)
    out: Path
    replace: list[str]                         # the earlier run's checkpoints --overwrite removes
    progress: bool
    resume: Path | None = None
    saved: dict[str, Any] | None = field(default=None, repr=False)  # the checkpoint to resume
    overwrite: bool = False                    # --overwrite: an earlier run in `out` may be replaced


def _option_path(text: str, option: str, what: str = "the path of a file") -> Path:
    """The path an option names; an empty one (`--out "$OUT"` with OUT unset) is refused, not
    taken as the current folder."""
    if not text:
        raise ValueError(f"{option} is empty; give {what}")
    return Path(text)


def _check_is_file(path: str | Path, option: str) -> None:
    if _option_path(str(path), option).is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder, not a file; give the path of a file")


def _checked_data(source: str, option: str) -> str:
    """'shakespeare', or the absolute path of an existing file (so a resume finds it from anywhere)."""
    if source == "shakespeare":
        return source
    _check_is_file(source, option)
    if not Path(source).is_file():
        raise ValueError(f"{option}: no such file {source!r} (give a UTF-8 text file or "
                         f"'shakespeare')")
    return str(Path(source).resolve())


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Check every option, file and folder of a `minigpt train` run, before any work is done."""
    given_data = _given(args, option_names(DataConfig))
    given_model = _given(args, option_names(GPTConfig))
    given_train = _given(args, option_names(TrainConfig))
    if args.preset is not None:
        if args.resume is not None:
            raise ValueError("--preset starts a new run; --resume continues the checkpoint's own "
                             "settings: drop --preset")
        preset = PRESETS[args.preset]
        given_data = {**_only(preset, DataConfig), **given_data}
        given_model = {**_only(preset, GPTConfig), **given_model}
        given_train = {**_only(preset, TrainConfig), **given_train}
    data_config = DataConfig(**given_data)
    if "vocab_size" in given_data and data_config.tokenizer != "bpe":
        raise ValueError(f"--vocab-size applies only to --tokenizer bpe; the {data_config.tokenizer} "
                         f"tokenizer's vocabulary comes from "
                         f"{'the text' if data_config.tokenizer == 'char' else 'tiktoken'}")
    given_out = _option_path(data_config.out, "--out", "a folder for the checkpoints")
    resume = saved = None
    if args.resume is None:
        model_config = GPTConfig(vocab_size=1, **given_model)  # the tokenizer sets vocab_size later
        train_config = TrainConfig(**given_train)
        if args.head_lr is not None:  # a preset's head_lr is just unused by a tied layer
            _check_head_lr(model_config.tie_weights)
        data = _checked_data(data_config.data, "--data")
        out = given_out
    else:
        fixed = [*given_model, *(n for n in ("tokenizer", "vocab_size") if n in given_data)]
        if fixed:
            raise ValueError(f"--resume keeps the checkpoint's model and tokenizer; drop "
                             f"{', '.join(option_name(n) for n in fixed)}")
        resume = _option_path(args.resume, "--resume")
        saved, train_config, data = _plan_resume(resume, given_data, given_train, data_config)
        out = given_out if "out" in given_data else resume.parent
    resolve_device(train_config.device)  # 'cuda' on a machine without CUDA fails here, not later
    replace = _check_out(out, resume, args.overwrite)
    return RunPlan(data, load_text(data), data_config, train_config, given_model, out, replace,
                   progress=not args.no_progress and sys.stderr.isatty(), resume=resume, saved=saved,
                   overwrite=args.overwrite)


def _plan_resume(resume: Path, given_data: dict[str, Any], given_train: dict[str, Any],
                 data_config: DataConfig) -> tuple[dict[str, Any], TrainConfig, str]:
    """Check the checkpoint to resume: (its contents, the training settings, the data to read).

    The data and val_fraction are the checkpoint's unless given; `data_config` is updated.
    """
    _check_is_file(resume, "--resume")
    if not resume.exists():
        raise ValueError(f"--resume: no such file {str(resume)!r} (give a checkpoint, e.g. "
                         f"out/ckpt.pt)")
    saved = read_checkpoint(resume)
    state = resumable_state(saved, resume)
    try:
        GPTConfig.from_dict(saved["config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint: {str(resume)!r} has an invalid config: {error}") \
            from None
    train_config = _resumed_train_config(state, given_train, resume)
    if "head_lr" in given_train:
        _check_head_lr(saved["config"]["tie_weights"],
                       (state.get("train_config") or {}).get("head_lr") is None)
    saved_optimizer = (state.get("train_config") or {}).get("optimizer", "adamw")
    if train_config.optimizer != saved_optimizer:
        raise ValueError(f"--optimizer {train_config.optimizer}: the checkpoint holds the state of "
                         f"{saved_optimizer}, which a resume continues; drop --optimizer (or "
                         f"start a new run)")
    if train_config.max_iters <= state["step"]:
        raise ValueError(f"--max-iters {train_config.max_iters} is not beyond the checkpoint's "
                         f"step {state['step']}: give --max-iters above {state['step']} to "
                         f"train further")
    data = _checked_data(given_data.get("data", state.get("data", "shakespeare")),
                         "--data" if "data" in given_data else
                         "the checkpoint's data (give --data to use another file)")
    if "val_fraction" not in given_data and "val_fraction" in state:
        data_config.val_fraction = state["val_fraction"]
        try:
            check_fields(data_config)
        except ConfigError as error:
            raise CheckpointError(f"checkpoint: {str(resume)!r} holds a bad {error}") from None
    return saved, train_config, data


def _check_head_lr(tie_weights: bool, resumes_a_run_without_it: bool = False) -> None:
    """--head-lr needs an untied output layer and, in a resume, the group of its own that a run
    given a head_lr saved (the optimizer state keeps its groups)."""
    if tie_weights:
        raise ValueError("--head-lr applies to an untied output layer; add --no-tie-weights or "
                         "drop --head-lr (a tied output layer is the token embedding, trained at "
                         "--learning-rate)")
    if resumes_a_run_without_it:
        raise ValueError("--head-lr: the checkpoint was trained without it, so its optimizer "
                         "has no group of its own for the output layer to continue; drop "
                         "--head-lr (or start a new run)")


def _check_out(out: Path, resume: Path | None, overwrite: bool) -> list[str]:
    """Refuse an --out we cannot write, or one holding another run; returns what --overwrite
    replaces (never the checkpoint resumed from)."""
    check_out_folder(out)
    found = [name for name in existing_run(out)
             if resume is None or (out / name).resolve() != resume.resolve()]
    continues = _continues_its_own_run(out, resume, found)
    if found and not overwrite and not continues:
        raise ValueError(f"--out {str(out)!r} already holds a run ({', '.join(found)}); continue "
                         f"it with --resume {str(out / found[0])!r}, replace it with --overwrite, "
                         f"or choose another --out")
    return found if overwrite and not continues else []


def _continues_its_own_run(out: Path, resume: Path | None, found: list[str]) -> bool:
    """A resume from the folder's own latest checkpoint writes over it: that is what it is for.

    Resuming from best.pt beside a later ckpt.pt is not: it would replace the later work.
    """
    return (resume is not None and out.resolve() == resume.parent.resolve()
            and "ckpt.pt" not in found)


def _resumed_train_config(state: dict[str, Any], given: dict[str, Any], path: Path) -> TrainConfig:
    """The checkpoint's training settings with the options given here on top.

    Settings that are fine alone but clash with a given option (a --learning-rate below the
    stored min_lr) are the options' error, not the checkpoint's.
    """
    stored = state.get("train_config") or {}
    try:
        TrainConfig.from_dict(stored)
    except ConfigError as error:
        raise CheckpointError(f"checkpoint: {str(path)!r} holds a bad train_config: {error}") \
            from None
    return TrainConfig.from_dict({**stored, **given})


def default_prompt(tokenizer: Tokenizer, text: str | None = None) -> str:
    """A new line (the start of a paragraph), or, when the vocabulary has none, the text's first
    character (or the vocabulary's first token)."""
    try:
        if tokenizer.encode("\n"):
            return "\n"
    except ValueError:
        pass
    return text[0] if text else tokenizer.decode([0])


# -- minigpt train: the work ----------------------------------------------------------------------

def execute(plan: RunPlan) -> int:
    """Hold the run folder, read and tokenize the data, train, save, plot, sample."""
    with RunLock(plan.out) as lock:
        if lock.taken_over is not None:
            print(f"took over the lock of {str(plan.out)!r}, {lock.taken_over}")
        _check_out(plan.out, plan.resume, plan.overwrite)  # a run may have finished there since
        for path in remove_stale_temp_files(plan.out, CHECKPOINT_NAMES):
            print(f"removed {path}, left by an interrupted save")
        return _train(plan)


def _train(plan: RunPlan) -> int:
    text = plan.text
    if plan.saved is not None:
        tokenizer = tokenizer_from_dict(plan.saved["tokenizer"])
        model_config = GPTConfig.from_dict(plan.saved["config"])
    else:
        kind = plan.data_config.tokenizer
        print(f"training a {kind} tokenizer on {len(text):,} characters ...")
        tokenizer = train_tokenizer(kind, text, plan.data_config.vocab_size)
        model_config = GPTConfig(vocab_size=tokenizer.vocab_size, **plan.model_options)
    prompt = default_prompt(tokenizer, text)
    try:
        data = encode_corpus(text, tokenizer)
    except ValueError as error:  # a resume on another text, with characters the checkpoint never saw
        raise ValueError(f"--data {plan.data!r} does not fit the checkpoint's tokenizer: {error}") \
            from None
    train_data, val_data = train_val_split(data, plan.data_config.val_fraction)
    print(f"data: {plan.data} -> {len(data):,} tokens ({len(train_data):,} train, "
          f"{len(val_data):,} val), vocabulary of {tokenizer.vocab_size:,}")

    config = plan.train_config
    torch.manual_seed(config.seed)
    model = GPT(model_config)
    print(f"model: {model.num_parameters():,} parameters; {model_config}")
    trainer = Trainer(model, tokenizer, train_data, val_data, config, out_dir=plan.out,
                      progress=plan.progress,
                      extra_state={"data": plan.data, "val_fraction": plan.data_config.val_fraction,
                                   "sample_prompt": prompt})
    print(f"device: {trainer.device}")
    if plan.resume is not None:
        trainer.resume(plan.resume)
        print(f"resumed from {plan.resume} at step {trainer.result.step}")
    for name in plan.replace:  # only now: every check has passed, training starts next
        (plan.out / name).unlink(missing_ok=True)
        print(f"--overwrite: removed the earlier run's {plan.out / name}")
    start = time.perf_counter()
    result = trainer.run()
    elapsed = time.perf_counter() - start
    last = result.history[-1]
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step} in "
          f"{elapsed:.1f} s; last evaluation (step {last['step']}): train loss "
          f"{last['train']:.4f}, val loss {last['val']:.4f}")
    print(f"checkpoint: {result.checkpoint or 'none (no step was finished)'}")
    # imported only now: matplotlib adds about 30 MB, which would otherwise sit through training
    from minigpt.plotting import plot_loss_curves, save_figure

    curve = save_figure(plot_loss_curves(result.history, result.train_losses), plan.out / "loss.png")
    print(f"loss curve: {curve}")
    if result.stop_signal is not None:
        return 128 + result.stop_signal
    if plan.data_config.sample_tokens > 0:
        sample = sample_text(model, tokenizer, prompt, plan.data_config.sample_tokens,
                             seed=config.seed, temperature=0.8)
        print("sample:\n" + sample)
    return 0


def run_train(args: argparse.Namespace) -> int:
    return execute(plan_run(args))


# -- minigpt sample -------------------------------------------------------------------------------

def _load_checkpoint_option(args: argparse.Namespace) -> tuple[Checkpoint, torch.device]:
    """The checkpoint --checkpoint names, loaded onto the --device asked for (both checked first)."""
    _check_is_file(args.checkpoint, "--checkpoint")
    if not is_device_name(args.device):
        raise ValueError(f"--device must be {DEVICES}, got {args.device!r}")
    device = resolve_device(args.device)
    return load_checkpoint(args.checkpoint, device=device), device


def run_sample(args: argparse.Namespace) -> int:
    options = SampleConfig(**_given(args, option_names(SampleConfig)))
    ckpt, device = _load_checkpoint_option(args)
    prompt = args.prompt
    if prompt is None:
        saved_prompt = ckpt.train_state.get("sample_prompt")  # written by minigpt train
        ok = isinstance(saved_prompt, str) and saved_prompt
        prompt = saved_prompt if ok else default_prompt(ckpt.tokenizer)
    else:
        _check_prompt(prompt, ckpt.tokenizer)
    for i in range(options.num_samples):
        seed = None if options.seed is None else options.seed + i
        if seed is None:
            torch.seed()
        text = sample_text(ckpt.model, ckpt.tokenizer, prompt, options.max_new_tokens,
                           stop=args.stop, seed=seed, device=device,
                           temperature=options.temperature, top_k=options.top_k,
                           top_p=options.top_p, frequency_penalty=options.frequency_penalty,
                           presence_penalty=options.presence_penalty, use_cache=not args.no_cache)
        if options.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(prompt + text)
    return 0


# -- minigpt evaluate ------------------------------------------------------------------------------

EVAL_LOGITS = 2**22  # logits per forward pass: 64 windows of 64 characters; fewer for big vocabularies


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the loss, perplexity and bits per character of a checkpoint on a whole split."""
    try:
        ckpt, device = _load_checkpoint_option(args)
    except CheckpointError as error:
        raise ValueError(f"--checkpoint: {str(error).removeprefix('checkpoint: ')}") from None
    source, ids = _evaluation_ids(args, ckpt.train_state, ckpt.tokenizer)
    context_length = ckpt.config.context_length
    if len(ids) < 2:
        raise ValueError(f"--split {args.split} of {source!r} holds {len(ids)} token(s); it needs "
                         f"at least 2 (an input and its target)")
    batch_size = max(1, EVAL_LOGITS // (context_length * ckpt.config.vocab_size))
    loss = evaluate_split(ckpt.model, ids, context_length, batch_size, device)
    num_chars = len(ckpt.tokenizer.decode(ids[1:].tolist()))  # the characters predicted
    print(f"{args.split} split of {source}: {len(ids) - 1:,} tokens predicted, windows of "
          f"{context_length}")
    print(f"loss: {loss:.4f}")
    print(f"perplexity: {perplexity(loss):.3f}")
    print(f"bits per character: {bits_per_char(loss, len(ids) - 1, max(1, num_chars)):.4f}")
    return 0


def _evaluation_ids(args: argparse.Namespace, state: dict[str, Any],
                    tokenizer: Tokenizer) -> tuple[str, torch.Tensor]:
    """(the text's name, the ids of the chosen split), checked against the checkpoint's tokenizer."""
    if args.data is not None:
        option, source = "--data", _checked_data(args.data, "--data")
    elif isinstance(state.get("data"), str):
        option = "the checkpoint's data (give --data to use another text)"
        source = _checked_data(state["data"], option)
    else:
        raise ValueError(f"--checkpoint {args.checkpoint!r} does not say which text it was "
                         f"trained on; give --data")
    text = load_text(source)
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as error:
        raise ValueError(f"{option} {source!r} cannot be encoded by the checkpoint's tokenizer: "
                         f"{error}") from None
    if args.split == "all":
        return source, ids
    val_fraction = state.get("val_fraction", 0.1)
    train_ids, val_ids = train_val_split(ids, val_fraction)
    return source, val_ids if args.split == "val" else train_ids


def _check_prompt(prompt: str, tokenizer: Tokenizer) -> None:
    """Name --prompt when the checkpoint's vocabulary cannot encode it (e.g. an unseen character)."""
    try:
        tokenizer.encode(prompt)
    except ValueError as error:
        raise ValueError(f"--prompt {prompt!r} cannot be encoded by this checkpoint's tokenizer: "
                         f"{error}") from None


# -- the command ----------------------------------------------------------------------------------

def _exit_on_signal(signum, frame) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2: bad input, 130: Ctrl-C, 143: SIGTERM)."""
    try:
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)  # quiet, like Ctrl-C
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    args = None
    try:
        args = build_parser().parse_args(argv)
        commands = {"train": run_train, "sample": run_sample, "evaluate": run_evaluate}
        status = commands[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return status
    except ConfigError as error:  # name the option; an option left out is None, so say nothing of it
        allowed = error.allowed.removesuffix(" (or None)")
        option = option_name(error.name)
        not_given = args is not None and getattr(args, error.name, "given") is None
        origin = ("the preset's or the default" if getattr(args, "preset", None) else
                  "the default or the checkpoint's")
        hint = f" (not given here: {origin} value; give {option} too)" if not_given else ""
        print(f"minigpt: error: {option} must be {allowed}, got {error.value!r}{hint}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # `minigpt sample | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 128 + 13  # as if killed by SIGPIPE, the shell's convention
    except (ValueError, OSError, RuntimeError) as error:  # OSError: no permission, disk full, ...
        print(f"minigpt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C at start-up, or a second one while saving
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        print(f"minigpt: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
