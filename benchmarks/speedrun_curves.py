"""Validation loss against training time for `--preset baby` and `--preset speedrun`. Writes JSON.

    python benchmarks/speedrun_curves.py               # ../shared/data/tinyshakespeare.txt
    python benchmarks/speedrun_curves.py --quick       # a smoke check (few steps; figures mean nothing)

Both presets are trained through minigpt's own `Trainer`, in this process, one after the other,
on the same split of the same text (char tokenizer, context 64). Every `--baby-every` (100) or
`--speedrun-every` (50) steps the run pauses and the model's loss is measured on a fixed subset of
the validation split: its first `--eval-windows` (256) non-overlapping windows of 64 characters,
the same windows for both runs (`minigpt.evaluate.evaluate_split`). The clock stops during those
measurements, so each point is (training seconds so far, val loss). The trainer's own estimates
are reduced to one batch at the start and the end (eval_interval = max_iters, eval_iters = 1), so
they cost next to nothing and change no training step. At the end each model is also measured on
the whole validation split, as `minigpt evaluate` does.

Chapter 8 plots `benchmarks/results/speedrun_curves.json`; it never needs the text itself. Wall
times depend on the machine and its load (recorded in the file): compare the two curves of one
run, not figures from different runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from minigpt import CharTokenizer, GPT, GPTConfig, TrainConfig, encode_corpus, load_text, train_val_split
from minigpt.evaluate import evaluate_split
from minigpt.presets import PRESETS
from minigpt.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
OUT = ROOT / "benchmarks" / "results" / "speedrun_curves.json"


def preset_configs(name: str, vocab_size: int, quick: bool) -> tuple[GPTConfig, TrainConfig]:
    """The preset's model and training settings, with the trainer's own estimates made nearly free."""
    preset = PRESETS[name]
    model_fields = {f.name for f in fields(GPTConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    model = GPTConfig(vocab_size=vocab_size, **{k: v for k, v in preset.items() if k in model_fields})
    train = {k: v for k, v in preset.items() if k in train_fields}
    if quick:
        train.update(max_iters=20, warmup_iters=2)
    train.update(eval_interval=train["max_iters"], eval_iters=1, device="cpu")
    return model, TrainConfig(**train)


def curve(name: str, every: int, tokenizer: CharTokenizer, train_ids: torch.Tensor, val_ids: torch.Tensor,
          eval_ids: torch.Tensor, quick: bool) -> dict:
    """Train preset `name`, pausing every `every` steps to measure the val loss on `eval_ids`."""
    model_config, train_config = preset_configs(name, tokenizer.vocab_size, quick)
    torch.manual_seed(train_config.seed)  # as `minigpt train` does before building the model
    model = GPT(model_config)
    trainer = Trainer(model, tokenizer, train_ids, val_ids, train_config, out_dir=None, progress=False)
    context = model_config.context_length
    trainer.run(until=0)  # the trainer's step-0 estimate, outside the clock
    points = [{"step": 0, "seconds": 0.0, "val": evaluate_split(model, eval_ids, context)}]
    seconds = 0.0
    while trainer.result.step < train_config.max_iters:
        start = time.perf_counter()
        trainer.run(until=trainer.result.step + every)
        seconds += time.perf_counter() - start
        points.append({"step": trainer.result.step, "seconds": round(seconds, 3),
                       "val": round(evaluate_split(model, eval_ids, context), 5)})
        print(f"{name:>8} step {points[-1]['step']:>5}: {seconds:7.1f} s, val (subset) {points[-1]['val']:.4f}",
              flush=True)
    full = evaluate_split(model, val_ids, context)
    print(f"{name:>8} done: {seconds:.1f} s of training, val (whole split) {full:.4f}", flush=True)
    points[0]["val"] = round(points[0]["val"], 5)
    return {"preset": name, "every": every, "max_iters": train_config.max_iters,
            "parameters": model.num_parameters(), "train_seconds": round(seconds, 3),
            "val_full_split": round(full, 5), "points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="char-rnn's tiny Shakespeare")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the JSON (default {OUT})")
    parser.add_argument("--baby-every", type=int, default=100, help="steps between measurements, baby")
    parser.add_argument("--speedrun-every", type=int, default=50, help="steps between measurements, speedrun")
    parser.add_argument("--eval-windows", type=int, default=256,
                        help="validation windows of 64 characters measured at each point")
    parser.add_argument("--quick", action="store_true", help="20 steps each: checks that it runs")
    args = parser.parse_args(argv)
    for option in ("baby_every", "speedrun_every", "eval_windows"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.out.is_dir():
        parser.error(f"--out: {str(args.out)!r} is a folder; give the path of the JSON file to write")
    if not args.data.is_file():
        parser.error(f"--data: no such file {str(args.data)!r} (tiny Shakespeare: "
                     f"https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)")
    text = load_text(args.data)
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = train_val_split(encode_corpus(text, tokenizer))
    context = PRESETS["baby"]["context_length"]
    eval_ids = val_ids[: args.eval_windows * context + 1]
    load_before = os.getloadavg()
    print(f"data: {args.data} ({len(text):,} characters; val {len(val_ids):,} tokens, measured on the first "
          f"{len(eval_ids) - 1:,}); {torch.get_num_threads()} thread(s); load average {load_before[0]:.2f}",
          flush=True)
    runs = [curve("baby", args.baby_every, tokenizer, train_ids, val_ids, eval_ids, args.quick),
            curve("speedrun", args.speedrun_every, tokenizer, train_ids, val_ids, eval_ids, args.quick)]
    result = {
        "what": "val loss (nats per character) on a fixed subset of the validation split against training "
                "seconds (measurements excluded), minigpt's Trainer, presets baby and speedrun, one after the other",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "data": args.data.name, "characters": len(text), "val_tokens": len(val_ids),
        "eval_tokens": len(eval_ids) - 1, "quick": args.quick,
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "runs": {run["preset"]: run for run in runs},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    temporary.replace(args.out)  # a run cut short leaves the previous file as it was
    baby, fast = result["runs"]["baby"], result["runs"]["speedrun"]
    print(f"wrote {args.out}: baby {baby['train_seconds']:.1f} s -> {baby['val_full_split']:.4f}, speedrun "
          f"{fast['train_seconds']:.1f} s -> {fast['val_full_split']:.4f} (whole val split)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
