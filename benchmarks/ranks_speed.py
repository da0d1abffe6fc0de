"""Training tokens per second of `minigpt train` on 1 rank and on 2 ranks (DDP, gloo), cores split fairly.

    python benchmarks/ranks_speed.py                 # 100 steps per run, each configuration twice
    python benchmarks/ranks_speed.py --steps 40 --repeats 1   # a busy machine: shorter

On the CPU (this machine has 2 cores) three configurations train the same model on the same data,
with the same global batch (batch_size x grad_accum_steps sequences per optimizer step,
grad_accum_steps 2):

- 1 rank, 2 threads (OMP_NUM_THREADS=2): all the cores to one process;
- 2 ranks, 1 thread each (`minigpt train --nproc 2`, torchrun, gloo): the same cores, shared out;
- 1 rank, 1 thread: what one core does alone (the per-core reference).

Each run is a fresh `minigpt train` process. The time is that of the training loop alone: the
seconds between the step-0 evaluation line and the last evaluation line, stamped as each line
arrives (so it holds the steps and the last evaluation, of --eval-iters 1 batch per split, and not
the start-up, the tokenizer, the first evaluation or the saves); minigpt's own "done at step N in
X s" figure, which holds both evaluations and the saves, is printed beside it. Configurations run
interleaved, round after round, so that a noisy machine hurts each alike; every run is printed,
with the load average: on a machine busier than its cores (load above 2 here), one process with 2
OpenMP threads can run many times slower than with 1, its threads waiting for each other whenever
one of them is descheduled, and the comparison then says more about the load than about the ranks.

A 2-rank run takes the same micro-batches as a 1-rank run (they are keyed by step and index, not
by rank), so its checkpoint must hold the same weights up to float rounding: the largest absolute
difference between each two configurations' weights is printed, a free correctness check.

With CUDA (with --gpu, or whenever torch sees a GPU) the same is run on 1 GPU and on all of them,
DDP over nccl. That path has not been run on the 2-core CPU machine this was written on.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# d_model 128, 4 blocks, 4 heads (the baby preset's), a longer context and a bigger batch, so that
# the matrix products, which ranks share, dominate a step rather than Python and communication
CONTEXT = 128
MODEL = ["--d-model", "128", "--num-blocks", "4", "--num-heads", "4", "--context-length", str(CONTEXT)]
EVAL_LINE = re.compile(r"^step\s+(\d+): train loss ([\d.]+), val loss ([\d.]+)")
DONE_LINE = re.compile(r"^(?:done|interrupted) at step (\d+) in ([\d.]+) s")


@dataclass
class Timed:
    """One finished `minigpt train`: loop seconds (first to last evaluation line), minigpt's own."""

    loop_s: float
    reported_s: float
    val_loss: float
    output: str


def timed_train(argv: list[str], env: dict[str, str], timeout_s: float) -> Timed:
    """Run `python -m minigpt train <argv>`, stamping its evaluation lines as they arrive."""
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}  # lines reach us when printed
    command = [sys.executable, "-m", "minigpt", "train", *argv]
    stamps, lines, reported = [], [], None
    deadline = time.monotonic() + timeout_s
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as child:
        for line in child.stdout:
            now = time.perf_counter()
            lines.append(line)
            if (match := EVAL_LINE.match(line.strip())) is not None:
                stamps.append((now, float(match.group(3))))
            elif (match := DONE_LINE.match(line.strip())) is not None:
                reported = float(match.group(2))
            if time.monotonic() > deadline:
                child.kill()
                raise RuntimeError(f"{' '.join(command)} took over {timeout_s} s")
    output = "".join(lines)
    if child.returncode != 0 or len(stamps) < 2 or reported is None:
        raise RuntimeError(f"{' '.join(command)} failed (exit {child.returncode}):\n{output[-3000:]}")
    return Timed(stamps[-1][0] - stamps[0][0], reported, stamps[-1][1], output)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def configurations(gpu: bool) -> list[tuple[str, int, int, str]]:
    """(label, ranks, threads per rank, device): the runs to compare; the first is the reference."""
    if gpu:
        count = torch.cuda.device_count()
        runs = [("1 GPU", 1, 1, "cuda")]
        return runs + ([(f"{count} GPUs (nccl)", count, 1, "cuda")] if count > 1 else [])
    return [("1 rank x 2 threads", 1, 2, "cpu"),
            ("2 ranks x 1 thread (gloo)", 2, 1, "cpu"),
            ("1 rank x 1 thread", 1, 1, "cpu")]


def max_weight_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two checkpoints' weights."""
    wa = torch.load(a, map_location="cpu", weights_only=True)["model"]
    wb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    return max((wa[name].float() - wb[name].float()).abs().max().item() for name in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all configurations")
    parser.add_argument("--gpu", action="store_true", help="GPUs (nccl) instead of the CPU")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per run")
    args = parser.parse_args()
    gpu = args.gpu or torch.cuda.is_available()
    accum = 2
    runs = configurations(gpu)
    tokens_per_step = args.batch_size * accum * CONTEXT
    print(f"torch {torch.__version__}; {load_average()} at the start")
    print(f"model: d_model 128, 4 blocks, 4 heads, context {CONTEXT}; batch {args.batch_size} "
          f"x grad_accum_steps {accum} = {tokens_per_step:,} tokens per step; {args.steps} steps per "
          f"run; time: first to last evaluation line (steps + last evaluation of 1 batch per split)")
    results: dict[str, list[Timed]] = {label: [] for label, *_ in runs}
    with tempfile.TemporaryDirectory(prefix="ranks_speed_") as tmp:
        for round_ in range(args.repeats):
            for label, ranks, threads, device in runs:
                argv = [*MODEL, "--batch-size", str(args.batch_size), "--grad-accum-steps",
                        str(accum), "--max-iters", str(args.steps), "--eval-interval", str(args.steps),
                        "--eval-iters", "1", "--sample-tokens", "0", "--no-progress", "--device",
                        device, "--out", str(Path(tmp) / f"{ranks}x{threads}"), "--overwrite"]
                argv += ["--nproc", str(ranks)] if ranks > 1 else []
                timed = timed_train(argv, {"OMP_NUM_THREADS": str(threads)}, args.timeout)
                results[label].append(timed)
                print(f"  round {round_ + 1}, {label:>26}: {tokens_per_step * args.steps / timed.loop_s:8,.0f} "
                      f"tokens/s (loop {timed.loop_s:6.1f} s; minigpt's 'done in' {timed.reported_s:6.1f} s); "
                      f"{load_average()}", flush=True)
        print(f"\nmedian over {args.repeats} round(s); {load_average()} at the end")

        def speed(label: str) -> float:
            return statistics.median(tokens_per_step * args.steps / t.loop_s for t in results[label])

        reference = runs[0][0]
        for label, *_ in runs:
            print(f"{label:>28}: {speed(label):8,.0f} tokens/s, {speed(label) / speed(reference):4.2f}x "
                  f"of {reference}; final val loss {results[label][-1].val_loss:.4f}")
        if not gpu:  # two ranks on two cores against twice what one core does alone
            print(f"2 ranks against 2 x one core alone: "
                  f"{speed(runs[1][0]) / (2 * speed(runs[2][0])):.0%} scaling efficiency")
        folder = {label: Path(tmp) / f"{ranks}x{threads}" for label, ranks, threads, _ in runs}
        for i, (a, *_) in enumerate(runs):
            for b, *_ in runs[i + 1:]:
                diff = max_weight_difference(folder[a] / "ckpt.pt", folder[b] / "ckpt.pt")
                print(f"weights after {args.steps} steps, {b} vs {a}: max abs difference {diff:.2e}")


if __name__ == "__main__":
    main()
