"""nanoGPT's baby GPT against `minigpt train --preset speedrun`, one after the other. Prints figures.

    python benchmarks/speedrun.py                 # the target: ../shared/data/tinyshakespeare.txt
    python benchmarks/speedrun.py --quick         # a smoke check (few steps; figures mean nothing)

1. The reference: a plain re-implementation of nanoGPT's model.py and train.py at the README's CPU
   settings (char-level, 4 blocks, 4 heads, d_model 128, context 64, batch 12, dropout 0, AdamW
   betas (0.9, 0.99) with weight decay 0.1 on every matrix, lr 1e-3 with 100 warm-up steps and a
   cosine to 1e-4, grad clip 1.0, iterations 0..2000 as nanoGPT counts them, an estimate on 20
   batches every 250 iterations, the loss read every step as log_interval=1 does). It is
   `speedrun_lab.py`'s, run in this process. Its time is its loop, estimates included (nanoGPT's
   time includes them too); nanoGPT's checkpoint writes are not done (they would add to it).
2. The preset: the real `minigpt train --preset speedrun` in a subprocess, then `minigpt evaluate`
   on its best checkpoint. Its loop time is the one the command prints, which includes its two
   estimates (steps 0 and 450) and its checkpoint writes; the whole command (Python start, torch
   import, tokenizing, plotting) is printed too.

Both val losses are over the whole held-out 10% of the text (non-overlapping windows of 64, the
last shorter window included: `minigpt evaluate`, and the same walk in the lab's
`full_val_loss`), never a sample of batches; both on minigpt's split of the text. Both
runs use the same number of threads (--threads, default: torch's). The machine's load changes
wall times: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speedrun_lab as lab  # noqa: E402  (the plain nanoGPT loop)

from minigpt import CharTokenizer, encode_corpus, load_text, train_val_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.886  # nanoGPT's val loss at these settings, from its README command (issue 10)


def reference(val_ids: torch.Tensor, train_ids: torch.Tensor, vocab_size: int, quick: bool) -> dict:
    """Train nanoGPT's baby GPT with the plain loop; its time and its whole-split val loss."""
    config = dict(lab.BABY)
    if quick:
        config.update(steps=60, eval_every=20, eval_iters=2)
    result = lab.train(config, train_ids, val_ids, vocab_size, verbose=False)
    return {"wall": result["wall"], "steps": result["steps"], "val": result["val"]}


def speedrun(data: Path, threads: int, quick: bool) -> dict:
    """`minigpt train --preset speedrun`, then `minigpt evaluate` on its best checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    extra = ["--max-iters", "45", "--eval-interval", "45", "--warmup-iters", "5"] if quick else []
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train = _run(["train", "--data", str(data), "--preset", "speedrun", "--out", out,
                      "--sample-tokens", "0", "--no-progress", "--device", "cpu", *extra], env)
        command = time.perf_counter() - start
        loop = float(re.search(r"done at step \d+ in ([\d.]+) s", train).group(1))
        evaluated = _run(["evaluate", "--checkpoint", str(Path(out) / "best.pt"),
                          "--device", "cpu"], env)
    val = float(re.search(r"^loss: ([\d.]+)$", evaluated, re.M).group(1))
    return {"wall": loop, "command": command, "val": val}


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "minigpt", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"minigpt {args[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="char-rnn's tiny Shakespeare")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="few steps: checks that it runs")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"--data: no such file {str(args.data)!r} (tiny Shakespeare: "
                 f"https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)")
    torch.set_num_threads(args.threads)
    text = load_text(args.data)
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = train_val_split(encode_corpus(text, tokenizer))
    print(f"data: {args.data} ({len(text):,} characters, val split {len(val_ids):,} tokens); "
          f"{args.threads} thread(s); torch {torch.__version__}"
          + ("; QUICK: few steps, the figures say nothing about the target" if args.quick else ""),
          flush=True)

    ref = reference(val_ids, train_ids, tokenizer.vocab_size, args.quick)
    print(f"nanoGPT baby (plain loop, {ref['steps']} steps, estimates included): "
          f"{ref['wall']:.1f} s, val {ref['val']:.4f}", flush=True)
    fast = speedrun(args.data, args.threads, args.quick)
    print(f"minigpt --preset speedrun: loop {fast['wall']:.1f} s (whole train command "
          f"{fast['command']:.1f} s), val {fast['val']:.4f} (minigpt evaluate, best.pt)")
    ratio, whole = fast["wall"] / ref["wall"], fast["command"] / ref["wall"]
    met = fast["val"] <= TARGET and ratio <= 0.5
    print(f"time ratio speedrun / nanoGPT: {ratio:.3f} (whole command: {whole:.3f}); "
          f"target: val <= {TARGET} and ratio <= 0.5: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
