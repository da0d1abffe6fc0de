"""What bfloat16 and float16 autocast cost on our model on this CPU: loss, and tokens per second.

    python benchmarks/precision_cost.py                   # 300 steps, 1 thread, each dtype twice
    python benchmarks/precision_cost.py --save            # also write benchmarks/results/precision_cost.json
    python benchmarks/precision_cost.py --steps 100 --repeats 1   # a busy machine: float16 is slow

The same run three times, `--dtype float32`, `bfloat16`, `float16`: `minigpt train --preset baby`
on the built-in Shakespeare, --max-iters steps (the cosine schedule decays over them, after a
warm-up of a tenth of them), seed 1337, each a fresh process on --threads threads. A run's loss is
the same every time on the CPU, so a second round only measures the speed again (each run's
one-batch val estimate is printed: the rounds agree).

Loss: each run's final checkpoint (weights in float32 whatever the dtype) is evaluated by
`minigpt evaluate` on the whole validation split, in float32: what training in low precision cost
the weights, in nats per character against the float32 run. (The runs evaluate only one batch per
split themselves, --eval-iters 1, so that evaluation does not weigh in their time.)
Speed: training tokens per second between the step-0 and the last evaluation line (as
ranks_speed.py measures it: the steps and the last one-batch evaluation, not the start-up).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from ranks_speed import load_average, timed_train

DTYPES = ("float32", "bfloat16", "float16")
TOKENS_PER_STEP = 12 * 64  # the baby preset: batch 12, context 64
EVAL_LOSS = re.compile(r"^loss: ([\d.]+)", re.MULTILINE)
RESULTS = Path(__file__).parent / "results" / "precision_cost.json"


def full_val_loss(checkpoint: Path, threads: int) -> float:
    """`minigpt evaluate` on the whole val split of the checkpoint's data (float32 forward)."""
    done = subprocess.run([sys.executable, "-m", "minigpt", "evaluate", "--checkpoint", str(checkpoint),
                           "--device", "cpu"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    match = EVAL_LOSS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"minigpt evaluate failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three dtypes")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/precision_cost.json")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"{args.threads} thread(s) per run; {load_average()} at the start")
    print(f"minigpt train --preset baby --max-iters {args.steps} (seed 1337, built-in Shakespeare), "
          f"{TOKENS_PER_STEP} tokens per step")
    speeds = {dtype: [] for dtype in DTYPES}
    full = {}
    with tempfile.TemporaryDirectory(prefix="precision_cost_") as tmp:
        for round_ in range(args.repeats):
            for dtype in DTYPES:
                out = Path(tmp) / dtype
                timed = timed_train(["--preset", "baby", "--max-iters", str(args.steps), "--eval-interval",
                                     str(args.steps), "--eval-iters", "1", "--warmup-iters",
                                     str(args.steps // 10), "--dtype", dtype, "--device", "cpu", "--sample-tokens",
                                     "0", "--no-progress", "--out", str(out), "--overwrite"],
                                    {"OMP_NUM_THREADS": str(args.threads)}, timeout_s=900)
                speeds[dtype].append(TOKENS_PER_STEP * args.steps / timed.loop_s)
                if round_ == 0:
                    full[dtype] = full_val_loss(out / "ckpt.pt", args.threads)
                print(f"  round {round_ + 1}, {dtype:>8}: {speeds[dtype][-1]:7,.0f} tokens/s "
                      f"(loop {timed.loop_s:5.1f} s), one-batch val estimate {timed.val_loss:.4f}; "
                      f"{load_average()}", flush=True)
    print(f"\n{load_average()} at the end")
    print(f"{'dtype':>8}  {'val loss (whole split)':>22}  {'vs float32':>10}  "
          f"{'tokens/s, each round':>22}  vs float32")
    for dtype in DTYPES:
        ratio = sum(speeds[dtype]) / sum(speeds["float32"])
        print(f"{dtype:>8}  {full[dtype]:22.4f}  {full[dtype] - full['float32']:+10.4f}  "
              f"{' / '.join(f'{v:,.0f}' for v in speeds[dtype]):>22}  {ratio:.2f}x")
    if args.save:
        save(args, full, speeds)


def save(args, full: dict, speeds: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    rows = {dtype: {"val_loss": full[dtype], "vs_float32_nats": round(full[dtype] - full["float32"], 4),
                    "tokens_per_s": [round(v) for v in speeds[dtype]]} for dtype in DTYPES}
    record = {"what": "chapter 9: --preset baby trained with each --dtype; val loss (nats per character) "
                      "of the final checkpoint over the whole held-out split, float32 forward; "
                      "training tokens/s on this CPU, one figure per round",
              "made_by": "benchmarks/precision_cost.py",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "data": "minigpt.shakespeare() (built in)", "max_iters": args.steps,
              "warmup_iters": args.steps // 10, "base": "baby",
              "torch": torch.__version__, "python": platform.python_version(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
              "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
