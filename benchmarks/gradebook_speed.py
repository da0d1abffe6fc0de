"""How long the class gradebook takes, per learner, and how much memory one grading run holds.
Prints figures; asserts nothing about time.

    python benchmarks/gradebook_speed.py [--learners 30] [--jobs N] [--seed 1] [--memory]

Makes ``--learners`` folders in a temporary folder: a third hold the solutions, a third the stubs,
a third a mix (each chapter's file from the solutions or the stub, drawn with ``--seed``). Then
runs ``exercises/_grader/gradebook.py`` on them, in a fresh process as an instructor does
(``--strict --fresh-cases``), and prints the wall-clock seconds, seconds per learner, the number
of CPU cores, the load average before and after (the figures depend on both) and the mean
total of each kind of learner. A run in which a learner's row is not complete is reported as
such: its figure would not mean what it says.

``--memory`` (Linux) also grades solutions/ once, the way run_autograder does, and prints the peak
of the memory its processes hold together (the sum of their proportional set sizes, PSS, which
counts a page shared by forked workers once: what a container's memory limit counts), for
Gradescope's memory setting.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "exercises" / "_grader"))
from grade_folder import chapters, descendants, grader_command  # noqa: E402


def make_class(folder: Path, learners: int, seed: int) -> dict[str, str]:
    """``learners`` folders: solutions, stubs and mixes in turn. Returns learner -> kind."""
    rng = random.Random(seed)
    kinds = {}
    for i in range(learners):
        kind = ("solutions", "stubs", "mix")[i % 3]
        learner = folder / f"learner{i:02d}"
        learner.mkdir(parents=True)
        for chapter in chapters():
            source = {"solutions": "solutions", "stubs": "exercises"}.get(kind) or rng.choice(["solutions", "exercises"])
            shutil.copy(ROOT / source / f"{chapter}.py", learner / f"{chapter}.py")
        kinds[learner.name] = kind
    return kinds


def _tree_memory(pid: int) -> tuple[int, int]:
    """(sum of PSS, sum of RSS) in kB of ``pid`` and every process below it."""
    pss = rss = 0
    for current in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return pss, rss


def peak_memory(tmp: Path) -> tuple[float, float, float]:
    """Grade solutions/ once (strict, fresh cases); (peak PSS MiB, peak RSS MiB, seconds)."""
    target = tmp / "solutions"
    shutil.copytree(ROOT / "solutions", target)
    start = time.monotonic()
    proc = subprocess.Popen(grader_command(target, 1, tmp / "report.json"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak = [0, 0]
    while proc.poll() is None:
        pss, rss = _tree_memory(proc.pid)
        peak = [max(peak[0], pss), max(peak[1], rss)]
        time.sleep(0.1)
    return peak[0] / 1024, peak[1] / 1024, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=30, help="how many learner folders (default 30)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="learners graded at the same time (default: the gradebook's own, half the cores)")
    parser.add_argument("--seed", type=int, default=1, help="draws the mixes and the fresh cases (default 1)")
    parser.add_argument("--memory", action="store_true", help="also print one grading run's peak memory (Linux)")
    args = parser.parse_args()
    if args.learners < 1 or args.jobs < 1:
        parser.error("--learners and --jobs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="gradebook-speed-") as tmp:
        tmp = Path(tmp)
        if args.memory:
            pss, rss, seconds = peak_memory(tmp)
            print(f"one strict, fresh-cases grading run of solutions/: peak {pss:.0f} MiB PSS "
                  f"({rss:.0f} MiB RSS summed over its processes), {seconds:.1f} s")
        kinds = make_class(tmp / "class", args.learners, args.seed)
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "exercises/_grader/gradebook.py", str(tmp / "class"), "--jobs",
                               str(args.jobs), "--seed", str(args.seed)], cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        if proc.returncode != 0:
            raise SystemExit(f"gradebook.py failed:\n{proc.stderr[-3000:]}")
        with open(tmp / "class" / "gradebook.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        incomplete = [r["learner"] for r in rows if r["complete"] != "yes" or r["problems"]]
        print(f"{os.cpu_count()} CPU cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"--jobs {args.jobs}, load average {load_before:.1f} before, {load_after:.1f} after")
        print(f"{len(rows)} learners graded in {elapsed:.0f} s: {elapsed / len(rows):.1f} s per learner")
        for kind in ("solutions", "stubs", "mix"):
            totals = [float(r["total"]) for r in rows if kinds[r["learner"]] == kind]
            if totals:
                print(f"  {kind:<10} {len(totals):>3} learners, mean total {statistics.mean(totals):g}/{rows[0]['max']}")
        if incomplete:
            print(f"not a clean figure: {len(incomplete)} learners had problems or an incomplete run: "
                  f"{', '.join(incomplete)}")


if __name__ == "__main__":
    main()
