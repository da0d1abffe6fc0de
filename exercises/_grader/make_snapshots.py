"""Freeze the reference outputs the graders compare against.

Runs every case of ``_cases.SNAPSHOT_CASES`` on ``solutions/`` and writes
``snapshots/exNN_<topic>.json``. Instructors run it after changing a
solution or a case:

    python exercises/_grader/make_snapshots.py          # rewrite the snapshots
    python exercises/_grader/make_snapshots.py --check  # exit 1 if they are out of date

The learner's grader never imports ``solutions/``: it only reads these files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # exercises/
sys.path.insert(0, str(HERE))

from _grader.cases import CASE_SEEDS, SNAPSHOT_CASES  # noqa: E402
from _grader.grading import SNAPSHOT_ATOL, SNAPSHOT_RTOL, SNAPSHOTS, to_jsonable  # noqa: E402
from _grader.target import load, use_target  # noqa: E402


def compute(solutions: Path) -> dict[str, dict]:
    use_target(solutions)
    return {exercise: {case: to_jsonable(fn(load(exercise), CASE_SEEDS[case])) for case, fn in cases.items()}
            for exercise, cases in SNAPSHOT_CASES.items()}


def first_difference(a, b, where: str = "") -> str | None:
    """Where two JSON values differ, or None.

    Floats count as equal within ``SNAPSHOT_RTOL``/``SNAPSHOT_ATOL`` (the
    snapshots hold float32 results, whose last bits differ between machines
    and thread counts); ints, strings and booleans must be equal.
    """
    if isinstance(a, float) or isinstance(b, float):
        ok = (isinstance(a, (int, float)) and isinstance(b, (int, float))
              and not isinstance(a, bool) and not isinstance(b, bool)
              and math.isclose(a, b, rel_tol=SNAPSHOT_RTOL, abs_tol=SNAPSHOT_ATOL))
        return None if ok else f"{where}: {a!r} != {b!r} (tolerance rtol={SNAPSHOT_RTOL}, atol={SNAPSHOT_ATOL})"
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            diff = first_difference(a[key], b[key], f"{where}.{key}")
            if diff:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--solutions", type=Path, default=HERE.parent / "solutions")
    args = parser.parse_args(argv)
    results = compute(args.solutions)
    status = 0
    for exercise, data in results.items():
        file = SNAPSHOTS / f"{exercise}.json"
        if args.check:
            stored = json.loads(file.read_text(encoding="utf-8")) if file.exists() else None
            diff = "file missing" if stored is None else first_difference(data, stored, exercise)
            if diff:
                print(f"snapshot out of date: {file.name}: {diff}")
                status = 1
        else:
            SNAPSHOTS.mkdir(exist_ok=True)
            file.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
            print(f"wrote {file.relative_to(HERE.parent)} ({file.stat().st_size} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
