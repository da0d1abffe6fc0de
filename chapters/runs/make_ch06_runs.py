"""Train chapter 6's overfitting model with dropout; write the curves to ch06_dropout.json.

Chapter 6 overfits a baby GPT on purpose (5,000 characters of Shakespeare, about 800,000
parameters) and then asks what dropout changes. A 500-step run takes one to several minutes on two
busy CPU cores, too long for a notebook that nbval runs, so this script makes them once and the notebook
loads the committed JSON. The settings are the notebook's own (section 2), only `dropout` differs.

    .venv/bin/python chapters/runs/make_ch06_runs.py        # from the repository root
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from minigpt import (GPT, CharTokenizer, GPTConfig, TrainConfig, Trainer, encode_corpus, shakespeare,
                     train_val_split)

OUT = Path(__file__).resolve().parent / "ch06_dropout.json"
DROPOUTS = (0.2,)  # the run without dropout is the notebook's own (section 2)
MODEL = dict(context_length=64, d_model=128, num_heads=4, num_blocks=4)
TRAIN = dict(batch_size=12, max_iters=500, learning_rate=3e-3, min_lr=3e-4, warmup_iters=20,
             eval_interval=25, eval_iters=10, seed=1337, device="cpu")


def one_run(dropout: float, tokenizer: CharTokenizer, train: torch.Tensor, val: torch.Tensor) -> dict:
    """The history and per-step losses of one run; the same seeds as the notebook's run."""
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, dropout=dropout, **MODEL))
    result = Trainer(model, tokenizer, train, val, TrainConfig(**TRAIN), progress=False).run()
    return {"history": result.history, "train_losses": result.train_losses}


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    small_text = shakespeare()[:5000]
    tokenizer = CharTokenizer.train(small_text)
    train, val = train_val_split(encode_corpus(small_text, tokenizer))
    runs = {}
    for dropout in DROPOUTS:
        start = time.perf_counter()
        runs[str(dropout)] = one_run(dropout, tokenizer, train, val)
        print(f"dropout {dropout}: {time.perf_counter() - start:.0f} s")
    record = {"what": "chapter 6: the overfitting model of section 2 trained with several dropout rates",
              "made_by": "chapters/runs/make_ch06_runs.py", "text_chars": len(small_text),
              "model": MODEL, "train": TRAIN, "torch": torch.__version__, "runs": runs}
    OUT.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
