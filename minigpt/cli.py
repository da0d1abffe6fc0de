"""The `minigpt` command: `minigpt train` on a text file, `minigpt sample` from a checkpoint.

Options carry the same names as the configs (`--context-length` is GPTConfig.context_length,
`--batch-size` is TrainConfig.batch_size, ...). Bad input ends with one line, 'minigpt: error: ...',
naming the option and what it allows, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from minigpt.config import GPTConfig, TrainConfig

# Defaults of `minigpt train`: the "baby GPT" that trains on a laptop CPU in a couple of minutes.
# Defaults of the data options; None on the command line means "not given", so --resume can tell.
DATA_DEFAULTS = {"tokenizer": "char", "vocab_size": 512, "val_fraction": 0.1, "out": "out"}
MODEL_DEFAULTS = {"context_length": 64, "d_model": 128, "num_heads": 4, "num_blocks": 4, "dropout": 0.0}
TRAIN_HELP = {
    "batch_size": "sequences per step", "max_iters": "optimizer steps in all",
    "learning_rate": "peak learning rate, reached after warm-up",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "steps of linear warm-up", "weight_decay": "AdamW weight decay (matrices only)",
    "beta1": "AdamW beta1", "beta2": "AdamW beta2", "grad_clip": "clip the gradient norm (0: off)",
    "eval_interval": "steps between loss estimates and checkpoints",
    "eval_iters": "batches per loss estimate",
    "checkpoint_interval": "also save every N steps (0: only at evaluations)",
    "seed": "random seed (same seed, same numbers on CPU)",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
}
MODEL_HELP = {
    "context_length": "tokens the model sees at once", "d_model": "width of the residual stream",
    "num_heads": "attention heads per block (must divide d_model)",
    "num_blocks": "transformer blocks", "dropout": "dropout probability in [0, 1)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigpt", description="Train a small GPT on text, and "
                                     "sample from it.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands.add_parser("train", help="train a model on a text corpus",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    _add_sample(commands.add_parser("sample", help="generate text from a checkpoint",
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="'shakespeare' (built in) or the path of a UTF-8 "
                   "text file [default: shakespeare, or the checkpoint's with --resume]")
    p.add_argument("--tokenizer", choices=["char", "bpe", "cl100k"], default=None,
                   help="characters, SentencePiece BPE trained on the corpus, or tiktoken "
                   f"cl100k_base [default: {DATA_DEFAULTS['tokenizer']}]")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size of --tokenizer bpe "
                   f"[default: {DATA_DEFAULTS['vocab_size']}]")
    p.add_argument("--val-fraction", type=float, default=None, help="share of the corpus held out "
                   f"[default: {DATA_DEFAULTS['val_fraction']}]")
    model = p.add_argument_group("model (GPTConfig)")
    for name, default in MODEL_DEFAULTS.items():
        kind = float if name == "dropout" else int
        model.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                           help=f"{MODEL_HELP[name]} [default: {default}]")
    train = p.add_argument_group("training (TrainConfig)")
    for f in fields(TrainConfig):
        train.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                           help=f"{TRAIN_HELP[f.name]} [default: {f.default}]")
    p.add_argument("--out", default=None, help="folder for checkpoints (ckpt.pt, best.pt) and "
                   f"loss.png [default: {DATA_DEFAULTS['out']}, or the checkpoint's folder with "
                   "--resume]")
    p.add_argument("--resume", default=None, help="checkpoint to continue from; its model and "
                   "tokenizer are kept, options given here override its training settings")
    p.add_argument("--sample-tokens", type=int, default=300, help="tokens to sample at the end "
                   "(0: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="out/ckpt.pt", help="checkpoint written by minigpt train")
    p.add_argument("--prompt", default="\n", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate per sample")
    p.add_argument("--num-samples", type=int, default=1, help="how many samples")
    p.add_argument("--temperature", type=float, default=0.8, help=">= 0; 0 is greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (>= 1)")
    p.add_argument("--top-p", type=float, default=None, help="keep the most likely tokens whose "
                   "probabilities add up to p, in (0, 1]")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help=">= 0, per repetition")
    p.add_argument("--presence-penalty", type=float, default=0.0, help=">= 0, once a token appeared")
    p.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each step "
                   "(the plain loop, slower)")


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The options among `names` that the user actually gave."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def run_train(args: argparse.Namespace) -> int:
    import torch

    from minigpt.checkpoint import read_checkpoint
    from minigpt.data import encode_corpus, load_text, train_val_split
    from minigpt.model import GPT
    from minigpt.plotting import plot_loss_curves, save_figure
    from minigpt.sampling import sample_text
    from minigpt.tokenizers import tokenizer_from_dict, train_tokenizer
    from minigpt.train import Trainer

    train_options = _given(args, [f.name for f in fields(TrainConfig)])
    model_options = _given(args, list(MODEL_DEFAULTS))
    data_options = {**DATA_DEFAULTS, **_given(args, list(DATA_DEFAULTS))}
    if args.resume is not None:
        saved = read_checkpoint(args.resume)
        state = saved.get("train_state") or {}
        fixed = [*model_options, *_given(args, ["tokenizer", "vocab_size"])]
        if fixed:
            raise ValueError(f"--resume keeps the checkpoint's model and tokenizer; drop "
                             f"{', '.join('--' + n.replace('_', '-') for n in fixed)}")
        data_source = args.data or state.get("data", "shakespeare")
        val_fraction = args.val_fraction if args.val_fraction is not None else state.get(
            "val_fraction", DATA_DEFAULTS["val_fraction"])
        out_dir = args.out or str(Path(args.resume).parent)
        tokenizer = tokenizer_from_dict(saved["tokenizer"])
        model_config = GPTConfig.from_dict(saved["config"])
        train_config = TrainConfig.from_dict({**state.get("train_config", {}), **train_options})
    else:
        data_source = args.data or "shakespeare"
        val_fraction, out_dir = data_options["val_fraction"], data_options["out"]
        train_config = TrainConfig(**train_options)
        tokenizer = None
    text = load_text(data_source)
    if tokenizer is None:
        kind = data_options["tokenizer"]
        print(f"training a {kind} tokenizer on {len(text):,} characters ...")
        tokenizer = train_tokenizer(kind, text, data_options["vocab_size"])
        model_config = GPTConfig(vocab_size=tokenizer.vocab_size, **{**MODEL_DEFAULTS, **model_options})
    data = encode_corpus(text, tokenizer)
    train_data, val_data = train_val_split(data, val_fraction)
    print(f"data: {data_source} -> {len(data):,} tokens ({len(train_data):,} train, "
          f"{len(val_data):,} val), vocabulary of {tokenizer.vocab_size:,}")

    torch.manual_seed(train_config.seed)
    model = GPT(model_config)
    print(f"model: {model.num_parameters():,} parameters; {model_config}")
    trainer = Trainer(model, tokenizer, train_data, val_data, train_config, out_dir=out_dir,
                      progress=not args.no_progress,
                      extra_state={"data": str(data_source), "val_fraction": val_fraction})
    print(f"device: {trainer.device}")
    if args.resume is not None:
        trainer.resume(args.resume)
        print(f"resumed from {args.resume} at step {trainer.result.step}")
    start = time.perf_counter()
    result = trainer.run()
    elapsed = time.perf_counter() - start
    last = result.history[-1]
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step} in "
          f"{elapsed:.1f} s; last evaluation (step {last['step']}): train loss "
          f"{last['train']:.4f}, val loss {last['val']:.4f}")
    print(f"checkpoint: {result.checkpoint or 'none (no step was finished)'}")
    curve = save_figure(plot_loss_curves(result.history, result.train_losses), Path(out_dir) / "loss.png")
    print(f"loss curve: {curve}")
    if result.interrupted:
        return 130
    if args.sample_tokens > 0:
        sample = sample_text(model, tokenizer, "\n", args.sample_tokens, seed=train_config.seed,
                             temperature=0.8)
        print("sample:\n" + sample)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from minigpt.checkpoint import load_checkpoint
    from minigpt.sampling import check_sampling_options, sample_text
    from minigpt.train import resolve_device

    check_sampling_options(args.temperature, args.top_k, args.top_p, args.frequency_penalty,
                           args.presence_penalty)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
                   use_cache=not args.no_cache)
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        if seed is None:
            torch.seed()
        text = sample_text(ckpt.model, ckpt.tokenizer, args.prompt, args.max_new_tokens,
                           stop=args.stop, seed=seed, device=device, **options)
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_train(args) if args.command == "train" else run_sample(args)
    except (ValueError, OSError, RuntimeError) as error:  # OSError: missing file, no permission, ...
        print(f"minigpt: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
