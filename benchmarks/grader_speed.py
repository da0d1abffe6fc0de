"""How long the exercise grader takes. Prints figures; asserts nothing.

    python benchmarks/grader_speed.py [--repeats 3]

Times, from the start of the command to its end (a fresh pytest process each
time, as a learner or CI runs it):

- ``pytest exercises/ --solutions``: every chapter (the target is under 60 s
  on 2 cores);
- ``pytest exercises/test_exNN_*.py --solutions`` for each chapter (the target
  is under 15 s each).

The medians of ``--repeats`` runs are printed, with the number of CPU cores
and OMP_NUM_THREADS, since the figures depend on both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbval", "--solutions"]


def seconds(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(PYTEST + args, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is printed (default 3)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"{os.cpu_count()} CPU cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"median of {args.repeats} runs")
    whole = statistics.median(seconds(["exercises/"]) for _ in range(args.repeats))
    print(f"{'pytest exercises/ --solutions':<58} {whole:6.1f} s  (target: under 60 s)")
    for test_file in sorted((ROOT / "exercises").glob("test_ex[0-9][0-9]_*.py")):
        name = f"exercises/{test_file.name}"
        one = statistics.median(seconds([name]) for _ in range(args.repeats))
        print(f"{'pytest ' + name + ' --solutions':<58} {one:6.1f} s  (target: under 15 s)")


if __name__ == "__main__":
    main()
