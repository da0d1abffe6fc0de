"""The `minigpt` command: `minigpt train`, `minigpt sample`, `minigpt evaluate`, `minigpt prepare`.

Each option is made from a config field (`--batch-size` is TrainConfig.batch_size), so its type,
range, default and help are written once; then one call per command. The project's own refusals
(`MinigptError`) end with one line, 'minigpt: error: ...', naming the option, and exit status 2;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

import torch

from minigpt.checkpoint import CheckpointError, load_checkpoint
from minigpt.config import (DEVICES, ConfigError, DataConfig, GPTConfig, SampleConfig, TrainConfig,
                            is_device_name)
from minigpt.errors import MinigptError
from minigpt.evaluate import evaluate_data
from minigpt.options import Parser, add_config_options, given, option_name, option_names, parser_for
from minigpt.presets import PRESETS, describe_presets, with_preset
from minigpt.distributed import SaidByRankZero, launched_world_size, started_by_torchrun
from minigpt.run import RunPlan, execute, launch_ranks, plan_run
from minigpt.sampling import default_prompt, sample_text
from minigpt.trainer import Interrupted, resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="minigpt", description="Train a small GPT on text, and sample from it.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train a model on a text corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's lines
        epilog="presets (--preset NAME sets these; options given on the command line win):\n"
               + describe_presets())
    train.add_argument("--preset", default=None, choices=list(PRESETS), help="start from a named "
                       "set of settings (listed at the end); options given here override it "
                       "[default: none: the defaults below, which are the baby preset's]")
    add_config_options(train.add_argument_group("data and output (DataConfig)"), DataConfig)
    add_config_options(train.add_argument_group("model (GPTConfig)"), GPTConfig)
    add_config_options(train.add_argument_group("training (TrainConfig)"), TrainConfig)
    train.add_argument("--resume", default=None, help="checkpoint to continue from; its model and "
                       "tokenizer are kept, options given here override its training settings")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out "
                       "(without it, a folder holding ckpt.pt or best.pt is refused)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (there is none "
                       "when the output is not a terminal: one line per evaluation instead)")
    train.add_argument("--nproc", type=parser_for(int), default=None, help="train on this many "
                       "processes (ranks) with DistributedDataParallel, started with torchrun: "
                       "gloo on the CPU, nccl on GPUs; --grad-accum-steps must be a multiple of it "
                       "[default: one process]")
    parser.train_command = train  # its option names spell out what each rank runs (_rank_argv)
    sample = commands.add_parser("sample", help="generate text from a checkpoint")
    _add_checkpoint_and_device(sample, "out/ckpt.pt")
    sample.add_argument("--prompt", default=None, help="text to continue [default: a new line, or "
                        "the first character of the training text when the vocabulary has none]")
    add_config_options(sample.add_argument_group("sampling (SampleConfig)"), SampleConfig)
    sample.add_argument("--stop", action="append", default=None, help="stop at this string "
                        "(repeatable)")
    sample.add_argument("--no-cache", action="store_true", help="recompute the whole context each "
                        "step (the plain loop, slower)")
    evaluate = commands.add_parser("evaluate", help="loss, perplexity and bits per character of a "
                                   "checkpoint over a whole split of a text (or of token shards)")
    _add_checkpoint_and_device(evaluate, "out/best.pt")
    evaluate.add_argument("--data", default=None, help="'shakespeare', a UTF-8 text file, or a folder "
                          "of token shards (minigpt prepare) [default: what the checkpoint was "
                          "trained on]")
    evaluate.add_argument("--split", default="val", choices=("val", "train", "all"), help="which "
                          "part: the held-out end (the checkpoint's val_fraction; for token shards "
                          "their own val.bin), the rest, or all of it [default: %(default)s]")
    prepare = commands.add_parser("prepare", help="tokenize a text file or a folder of them into token "
                                  "shards (train.bin, val.bin, meta.json) for very large corpora")
    prepare.add_argument("source", help="a UTF-8 text file, or a folder: every file under it, in path order")
    prepare.add_argument("--out", required=True, help="folder to write the shards into (must not hold "
                         "shards already)")
    prepare.add_argument("--tokenizer", default="char", choices=("char", "bpe", "cl100k"),
                         help="characters, SentencePiece BPE trained on the first 10 M characters, or "
                              "tiktoken's cl100k_base [default: %(default)s]")
    prepare.add_argument("--vocab-size", type=parser_for(int), default=512,
                         help="vocabulary size of --tokenizer bpe [default: %(default)s]")
    prepare.add_argument("--val-fraction", type=parser_for(float), default=0.1,
                         help="share of the bytes, at the end, held out for validation [default: %(default)s]")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    """Tokenize `source` into shards and print what was written."""
    from minigpt.shards import prepare, tokenizer_for  # numpy and the writer: only for this command
    tokenizer = tokenizer_for(args.source, args.tokenizer, args.vocab_size)
    meta = prepare(args.source, args.out, tokenizer, val_fraction=args.val_fraction,
                   progress=False if args.no_progress else None)
    print(f"{args.out}: {meta['tokens']['train']:,} train and {meta['tokens']['val']:,} val tokens "
          f"({meta['dtype']}, {args.tokenizer} tokenizer of {meta['vocab_size']:,} ids) from "
          f"{meta['files']} file(s), {meta['bytes']:,} bytes")
    return 0


def _add_checkpoint_and_device(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--checkpoint", default=default, help="checkpoint written by minigpt train "
                   "[default: %(default)s]")
    p.add_argument("--device", default="auto", help=f"{DEVICES} [default: %(default)s]")


def train_plan(args: argparse.Namespace) -> RunPlan:
    """The options of `minigpt train`, preset applied, checked into a plan (`minigpt.run`)."""
    if args.preset is not None and args.resume is not None:
        raise MinigptError("--preset starts a new run; --resume continues the checkpoint's own "
                           "settings: drop --preset")
    classes = (DataConfig, GPTConfig, TrainConfig)
    values = with_preset(args.preset, {k: v for cls in classes for k, v in given(args, cls).items()})
    data, model, train = ({k: v for k, v in values.items() if k in option_names(cls)} for cls in classes)
    progress = not args.no_progress and sys.stderr.isatty()
    return plan_run(data, model, train, args.resume, args.overwrite, progress)


def train(args: argparse.Namespace, argv: list[str]) -> int:
    """`minigpt train`: here, or on --nproc ranks (torchrun runs this same command on each)."""
    nproc = args.nproc
    if nproc is not None and nproc < 1:
        raise MinigptError(f"--nproc must be a whole number >= 1, got {nproc}")
    if started_by_torchrun() and nproc is not None and nproc != launched_world_size():
        raise MinigptError(f"--nproc {nproc}, but torchrun started {launched_world_size()} ranks: "
                           f"drop --nproc under torchrun")
    plan = train_plan(args)
    if nproc is not None and nproc > 1 and not started_by_torchrun():
        config, out = plan.train_config, plan.out
        del plan  # its corpus and checkpoint: the ranks read their own while this one waits
        return launch_ranks(config, out, nproc, _rank_argv(argv, build_parser().train_command))
    return execute(plan)


def _rank_argv(argv: list[str], train_parser: argparse.ArgumentParser) -> list[str]:
    """What each rank runs: `argv` with every option spelled out and --nproc left out.

    argparse took `--max` for `--max-iters`; torchrun's own parser reads the words after `-m
    minigpt` too, and would call `--max` ambiguous (its --max-restarts, --master-port, ...) or take
    --nproc for its --nproc-per-node.
    """
    names = [name for action in train_parser._actions for name in action.option_strings]
    kept, skip = [], False
    for word in argv:
        name, equals, value = word.partition("=")
        if name.startswith("--") and name not in names:
            matches = [full for full in names if full.startswith(name)]
            name = matches[0] if len(matches) == 1 else name  # argparse found it unique
        if skip:
            skip = False
        elif name == "--nproc":
            skip = not equals
        else:
            kept.append(name + equals + value)
    return kept


def _load(args: argparse.Namespace):
    """The checkpoint --checkpoint names, on the --device asked for (both checked first)."""
    if not is_device_name(args.device):
        raise ConfigError("device", DEVICES, args.device)
    device = resolve_device(args.device)
    if not args.checkpoint:  # `--checkpoint "$CKPT"` with CKPT unset
        raise MinigptError("--checkpoint is empty; give the path of a file")
    try:
        return load_checkpoint(args.checkpoint, device=device), device
    except CheckpointError as error:
        raise CheckpointError(f"--checkpoint: {str(error).removeprefix('checkpoint: ')}") from None


PICKING = ("temperature", "top_k", "top_p", "frequency_penalty", "presence_penalty")


def run_sample(args: argparse.Namespace) -> int:
    options = SampleConfig(**given(args, SampleConfig))
    ckpt, device = _load(args)
    prompt = args.prompt
    if prompt is None:
        saved = ckpt.train_state.get("sample_prompt")  # written by minigpt train
        prompt = saved if isinstance(saved, str) and saved else default_prompt(ckpt.tokenizer)
    try:
        ckpt.tokenizer.encode(prompt)
    except ValueError as error:
        raise MinigptError(f"--prompt {prompt!r} cannot be encoded by this checkpoint's "
                           f"tokenizer: {error}") from None
    for i in range(options.num_samples):
        seed = None if options.seed is None else options.seed + i
        if seed is None:
            torch.seed()
        text = sample_text(ckpt.model, ckpt.tokenizer, prompt, options.max_new_tokens,
                           stop=args.stop, seed=seed, device=device, use_cache=not args.no_cache,
                           **{k: getattr(options, k) for k in PICKING})
        if options.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(prompt + text)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the loss, perplexity and bits per character (or per token, for token shards) of a
    checkpoint on a whole split."""
    ckpt, device = _load(args)
    if args.data is None and not isinstance(ckpt.train_state.get("data"), str):
        raise MinigptError(f"--checkpoint {args.checkpoint!r} does not say which text it was "
                           f"trained on; give --data")
    for line in evaluate_data(ckpt.model, ckpt.tokenizer, ckpt.train_state, args.data, args.split,
                              device):
        print(line)
    return 0


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


def _rank_label() -> str | None:
    """This process's RANK under a launcher of several ranks, as the environment spells it; None
    alone (read without checking: it labels messages, some of them about a garbled RANK)."""
    several = os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")
    return os.environ.get("RANK") if several else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2: bad input, 130: Ctrl-C, 143: SIGTERM)."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)  # quiet, like Ctrl-C
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    args = None
    try:
        args = build_parser().parse_args(argv)
        run_train = lambda args: train(args, list(sys.argv[1:] if argv is None else argv))  # noqa: E731
        status = {"train": run_train, "sample": run_sample, "evaluate": run_evaluate,
                  "prepare": run_prepare}[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return status
    except SaidByRankZero:
        return 2
    except MinigptError as error:
        message = str(error)
        if isinstance(error, ConfigError):  # name the option; one left out is None: say whose value
            error = error.naming(lambda name: getattr(args, name, None) is not None)
            option, not_given = option_name(error.name), getattr(args, error.name, 0) is None
            origin = "the preset's or the default" if getattr(args, "preset", None) else "the default or the checkpoint's"
            hint = f" (not given here: {origin} value; give {option} too)" if not_given else ""
            message = f"{option} must be {error.allowed.removesuffix(' (or None)')}, got {error.value!r}{hint}"
        who = f" (rank {_rank_label()})" if _rank_label() is not None else ""
        print(f"minigpt: error{who}: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `minigpt sample | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 128 + 13  # as if killed by SIGPIPE, the shell's convention
    except KeyboardInterrupt as stop:  # Ctrl-C at start-up, or a second one while saving
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        if _rank_label() in (None, "0"):  # every rank got the signal: one line says so
            print(f"minigpt: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
