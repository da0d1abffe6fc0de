"""Chapter 8's ablation table: the baby GPT with one modern change at a time; writes results/modern_ablation.json.

Each row is `--preset baby` (minigpt's defaults) trained for MAX_ITERS steps on the built-in
Shakespeare (the text every clone holds, `minigpt.shakespeare()`), with exactly one setting changed.
At the end the model is measured on the *whole* held-out split (`evaluate_split`, as `minigpt
evaluate` does). Same seed for every row, so the only difference is the change. Nine runs take
ten minutes or more on a CPU, too long for a notebook, so chapter 8 reads the committed JSON.

    .venv/bin/python benchmarks/modern_ablation.py            # from the repository root
    .venv/bin/python benchmarks/modern_ablation.py --quick    # 20 steps, nothing written: a smoke check
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
import json
import platform
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from minigpt import GPT, CharTokenizer, GPTConfig, TrainConfig, Trainer, encode_corpus, shakespeare, train_val_split
from minigpt.evaluate import evaluate_split
from minigpt.presets import PRESETS

OUT = Path(__file__).resolve().parent / "results" / "modern_ablation.json"
MAX_ITERS = 600
# One row per change: a label and the settings it changes on top of the baby preset.
CHANGES: dict[str, dict] = {
    "none (the baby GPT)": {},
    "Muon for the blocks' matrices": {"optimizer": "muon"},
    "rotary positions": {"position": "rotary"},
    "warm-up/stable/decay schedule, learning rate 2e-3": {"schedule": "wsd", "learning_rate": 2e-3},
    "ReLU² feed-forward": {"mlp": "relu2"},
    "SwiGLU feed-forward": {"mlp": "swiglu"},
    "QK-norm": {"qk_norm": True},
    "untied output layer": {"tie_weights": False},
    "RMSNorm": {"norm": "rms"},
}


def corpus() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """The built-in Shakespeare, character tokens, split 90/10 as `minigpt train` splits it."""
    text = shakespeare()
    tokenizer = CharTokenizer.train(text)
    train, val = train_val_split(encode_corpus(text, tokenizer))
    return tokenizer, train, val


def configs(change: dict, vocab_size: int, max_iters: int) -> tuple[GPTConfig, TrainConfig]:
    """The baby preset with `change` applied, split into the model's and the trainer's settings."""
    settings = {**PRESETS["baby"], **change, "max_iters": max_iters, "eval_interval": max_iters,
                "eval_iters": 1, "device": "cpu"}
    model_names = {f.name for f in fields(GPTConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    model = GPTConfig(vocab_size=vocab_size, **{k: v for k, v in settings.items() if k in model_names})
    return model, TrainConfig(**{k: v for k, v in settings.items() if k in train_names})


def one_run(change: dict, max_iters: int, threads: int) -> dict:
    """Train one row's model and measure it on the whole validation split (a process of its own)."""
    torch.set_num_threads(threads)
    tokenizer, train, val = corpus()
    model_config, train_config = configs(change, tokenizer.vocab_size, max_iters)
    torch.manual_seed(train_config.seed)  # as `minigpt train` does before building the model
    model = GPT(model_config)
    start = time.perf_counter()
    Trainer(model, tokenizer, train, val, train_config, progress=False).run()
    seconds = time.perf_counter() - start
    val_loss = evaluate_split(model, val, model_config.context_length)
    return {"change": change, "val_loss": round(val_loss, 4), "train_seconds": round(seconds, 1),
            "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps, written nowhere: a smoke check")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once, each in its own process")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadiest on a shared machine; 2 on a quiet one)")
    args = parser.parse_args()
    max_iters = 20 if args.quick else MAX_ITERS
    tokenizer, train, val = corpus()
    with ProcessPoolExecutor(args.jobs) as pool:  # rows are independent: same seed, own process each
        runs = {label: pool.submit(one_run, change, max_iters, args.threads) for label, change in CHANGES.items()}
        rows = {label: run.result() for label, run in runs.items()}
    for label, row in rows.items():
        print(f"{label:<52} val {row['val_loss']:.4f}  ({row['train_seconds']:.0f} s)")
    if args.quick:
        return
    record = {"what": "chapter 8: --preset baby with one change per row, val loss (nats per character) "
                      "over the whole held-out split after max_iters steps",
              "made_by": "benchmarks/modern_ablation.py",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "data": "minigpt.shakespeare() (built in)", "characters": len(shakespeare()),
              "val_tokens": len(val), "max_iters": max_iters, "base": "baby",
              "torch": torch.__version__, "python": platform.python_version(),
              "threads_per_row": args.threads, "rows": rows}
    OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
