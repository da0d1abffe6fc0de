"""A class gradebook: grade every learner's folder and write one CSV row per learner.

    python exercises/_grader/gradebook.py SUBMISSIONS [--jobs N] [--seed N] [--out DIR] [--regrade [LEARNER ...]]

``SUBMISSIONS`` holds one folder per learner (its name is the learner's id), with the ``exNN_*.py``
files at its root or in an ``exercises/`` folder. Each is graded by the grader's own command
(``--strict --fresh-cases SEED``, one seed for the whole class), a few at a time, each under a
wall-clock watchdog: a learner whose code hangs or crashes costs only that learner's row.

Writes, in ``--out`` (default: ``SUBMISSIONS`` itself):

- ``gradebook.csv``: ``learner``, one column per chapter (``ex01`` ... points earned; a new
  ``exercises/test_exNN_*.py`` adds its column), ``total``, ``max``, ``integrity``, ``problems``,
  ``complete``;
- ``gradebook-reports/LEARNER.json``: the grader's report for that learner, and how the run went;
- ``gradebook-settings.json``: the seed, so a rerun grades the same cases.

A rerun grades only learners not graded yet, or whose files changed since; ``--regrade`` grades
everyone again (or the learners named after it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grade_folder import catalogue, chapters, grade, one_line, stage, stop_all, tidy  # noqa: E402

REPORTS = "gradebook-reports"
SETTINGS = "gradebook-settings.json"
DEFAULT_TIME_LIMIT = 600.0  # seconds per learner, the whole run
PROBLEM_OUTCOMES = ("timeout", "crashed")  # a learner's own exception is a wrong answer, not a problem


def learner_folders(submissions: Path, out: Path) -> list[Path]:
    """One folder per learner: every folder in ``submissions`` but hidden ones and the gradebook's own."""
    skip = {(out / REPORTS).resolve()}
    return sorted(p for p in submissions.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.resolve() not in skip)


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- one learner


def problems_of(entry: dict) -> list[str]:
    """What went wrong in a learner's run, beyond wrong answers: timeouts, crashes, missing files, a stop."""
    found = []
    run = entry["run"]
    if run["stopped_after"] is not None:
        found.append(f"stopped by the watchdog after {run['stopped_after']:g} s")
    report = entry["report"]
    if report is None:
        found.append(f"the grader wrote no report (exit status {run['returncode']}): {one_line(run['output_tail'], 200)}")
    elif not report.get("complete") and run["stopped_after"] is None:
        found.append(f"the grader stopped early (exit status {run['returncode']})")
    for chapter in entry["missing"]:
        found.append(f"{chapter[:4]} missing")
    counts: dict[tuple[str, str], int] = {}
    for test in (report or {}).get("tests", []):
        if test.get("outcome") in PROBLEM_OUTCOMES:
            key = (test["chapter"][:4], test["outcome"])
            counts[key] = counts.get(key, 0) + 1
    found += [f"{chapter} {outcome} x{n}" for (chapter, outcome), n in sorted(counts.items())]
    return found + entry["notes"]


def grade_learner(folder: Path, seed: int, time_limit: float, grade_timeout: float | None, env: dict) -> dict:
    """Stage, grade and describe one learner's folder (never raises for anything the learner did)."""
    with tempfile.TemporaryDirectory(prefix="minigpt-gradebook-") as tmp:
        Path(tmp).chmod(0o755)  # the grader's worker may run as an unprivileged user
        staged = stage(folder, Path(tmp) / "files")
        run = grade(staged.folder, seed, time_limit, grade_timeout, env)
        report = run.report
        for test in (report or {}).get("tests", []):
            test["message"] = tidy(test.get("message") or "", staged.folder)
    entry = {
        "learner": folder.name, "source": str(folder.resolve()), "seed": seed, "files_digest": staged.digest,
        "found_in": staged.found_in, "missing": staged.missing, "notes": staged.notes,
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": {"returncode": run.returncode, "seconds": round(run.seconds, 2), "stopped_after": run.stopped_after,
                "output_tail": run.output_tail[-4000:] if report is None or not report.get("complete") else ""},
        "report": report,
    }
    entry["problems"] = problems_of(entry)
    return entry


def grade_learner_safely(folder: Path, seed: int, time_limit: float, grade_timeout: float | None,
                         env: dict) -> dict:
    """``grade_learner``, and a row that says why when even that fails (an unreadable folder, a full disk)."""
    try:
        return grade_learner(folder, seed, time_limit, grade_timeout, env)
    except Exception as exc:  # one learner's folder must not stop the class
        return {"learner": folder.name, "source": str(folder), "seed": seed, "files_digest": "", "found_in": "",
                "missing": [], "notes": [], "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "run": {"returncode": None, "seconds": 0.0, "stopped_after": None, "output_tail": ""},
                "report": None, "problems": [one_line(f"could not be graded: {type(exc).__name__}: {exc}", 300)]}


def is_current(entry: dict | None, seed: int, digest: str) -> bool:
    """Whether a stored entry graded these very files with this seed (so a rerun can skip it)."""
    return bool(entry) and entry.get("seed") == seed and entry.get("files_digest") == digest


def files_digest(folder: Path) -> str:
    """The digest ``stage`` would compute for ``folder`` (staged into a throwaway folder); "" if it cannot."""
    try:
        with tempfile.TemporaryDirectory(prefix="minigpt-gradebook-") as tmp:
            return stage(folder, Path(tmp) / "files").digest
    except OSError:
        return ""


# --------------------------------------------------------------------------- the CSV


def _cell(value) -> str:
    """A CSV cell that a spreadsheet shows as text: one that starts like a formula gets a ' first."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _points(x: float) -> str:
    return f"{x:g}"


def row_of(entry: dict, columns: list[str], max_points: float) -> dict:
    """One learner's CSV row from their stored entry."""
    report = entry.get("report") or {}
    per_chapter = report.get("chapters", {})
    row = {"learner": _cell(entry["learner"])}
    total = 0.0
    for chapter in columns:
        points = float(per_chapter.get(chapter, {}).get("points", 0.0))
        row[chapter[:4]] = _points(points)
        total += points
    findings = list(dict.fromkeys(f"{f.get('file', '')}:{f.get('line', '?')} {f.get('construct', '')}"
                                  for _, info in sorted(per_chapter.items()) for f in info.get("integrity", [])))
    run = entry.get("run", {})
    complete = bool(report.get("complete")) and run.get("stopped_after") is None
    row.update(total=_points(total), max=_points(report.get("totals", {}).get("max_points", max_points)),
               integrity=_cell("; ".join(findings)), problems=_cell("; ".join(entry.get("problems", []))),
               complete="yes" if complete else "no")
    return row


def write_csv(path: Path, entries: list[dict], columns: list[str]) -> None:
    """gradebook.csv, one row per learner, written whole or not at all."""
    max_points = 0.0
    if any(e.get("report") is None for e in entries):  # the whole catalogue, as the grader counts it
        max_points = sum(float(t["points"]) for t in catalogue())
    fields = ["learner", *(c[:4] for c in columns), "total", "max", "integrity", "problems", "complete"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in sorted(entries, key=lambda e: e["learner"]):
        writer.writerow(row_of(entry, columns, max_points))
    _write_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------- the class


def class_seed(out: Path, asked: int | None) -> int:
    """The seed for the whole class: the one asked for, else the stored one, else a new one (stored)."""
    stored = (_load_json(out / SETTINGS) or {}).get("seed")
    seed = asked if asked is not None else stored if isinstance(stored, int) else random.SystemRandom().randrange(1, 10**9)
    if seed != stored:
        _write_atomic(out / SETTINGS, json.dumps({"seed": seed}, indent=2) + "\n")
    return seed


def _progress(total: int) -> tqdm:
    return tqdm(total=total, unit="learner", file=sys.stderr, dynamic_ncols=True)


def gradebook(submissions: Path, out: Path, jobs: int, seed: int | None, regrade: list[str] | None,
              time_limit: float, grade_timeout: float | None) -> tuple[Path, dict]:
    """Grade the class; returns the CSV's path and counts (graded, skipped, with problems)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORTS).mkdir(exist_ok=True)
    seed = class_seed(out, seed)
    folders = learner_folders(submissions, out)
    ours = {"gradebook.csv", SETTINGS, "gradebook.csv.tmp", SETTINGS + ".tmp"}
    strays = sorted(p.name for p in submissions.iterdir()
                    if not p.is_dir() and not p.name.startswith(".") and p.name not in ours)
    if strays:
        print(f"not a learner's folder, so not graded: {', '.join(strays[:10])}{' ...' if len(strays) > 10 else ''} "
              f"(one folder per learner; unpack archives first)", file=sys.stderr)
    if regrade:
        unknown = sorted(set(regrade) - {f.name for f in folders})
        if unknown:
            raise SystemExit(f"--regrade: no learner folder named {', '.join(unknown)} in {submissions}")
    entries, todo = {}, []
    for folder in folders:
        stored = _load_json(out / REPORTS / f"{folder.name}.json")
        wanted = regrade is not None and (not regrade or folder.name in regrade)
        digest = "" if wanted or not stored else files_digest(folder)
        if digest and is_current(stored, seed, digest):
            entries[folder.name] = stored
        else:
            todo.append(folder)
    env = dict(os.environ)
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # N runs at once share the cores instead of fighting for them
    print(f"{len(folders)} learners in {submissions}: {len(todo)} to grade, {len(folders) - len(todo)} already "
          f"graded; seed {seed}, {jobs} at a time, at most {time_limit:g} s each", file=sys.stderr)
    bar = _progress(len(todo))
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(grade_learner_safely, f, seed, time_limit, grade_timeout, env): f for f in todo}
        for future in as_completed(futures):
            entry = future.result()
            _write_atomic(out / REPORTS / f"{entry['learner']}.json", json.dumps(entry, indent=2) + "\n")
            entries[entry["learner"]] = entry
            bar.set_postfix_str(entry["learner"])
            bar.update(1)
    except KeyboardInterrupt:  # the grading runs are in sessions of their own: Ctrl-C does not reach them
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise SystemExit("stopped: the learners graded so far are kept; run the same command to go on")
    finally:
        pool.shutdown(wait=True)
        bar.close()
    csv_path = out / "gradebook.csv"
    write_csv(csv_path, list(entries.values()), chapters())
    counts = {"learners": len(folders), "graded": len(todo), "skipped": len(folders) - len(todo),
              "with_problems": sum(bool(e.get("problems")) for e in entries.values())}
    return csv_path, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="a folder holding one folder per learner")
    parser.add_argument("--out", type=Path, default=None, help="where to write the gradebook (default: SUBMISSIONS)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="learners graded at the same time (default: half the CPU cores)")
    parser.add_argument("--seed", type=int, default=None,
                        help="--fresh-cases seed for the whole class (default: the one stored by the last run, "
                             "or a new random one)")
    parser.add_argument("--regrade", nargs="*", metavar="LEARNER", default=None,
                        help="grade again learners already graded: all of them, or those named")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                        help=f"seconds one learner's grading may take in all (default {DEFAULT_TIME_LIMIT:g})")
    parser.add_argument("--grade-timeout", type=float, default=None,
                        help="seconds per grader test (default: the grader's own, 20; 0: none, the watchdog alone)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"SUBMISSIONS: {args.submissions} is not a folder")
    if not 1 <= args.jobs <= 64:
        parser.error(f"--jobs must be from 1 to 64, got {args.jobs}")
    if args.seed is not None and not 0 <= args.seed < 2**40:
        parser.error(f"--seed must be an integer from 0 to 2**40, got {args.seed}")
    if not 0 < args.time_limit < 10**6:
        parser.error(f"--time-limit must be a number of seconds above 0, got {args.time_limit:g}")
    if args.grade_timeout is not None and not 0 <= args.grade_timeout < 10**6:
        parser.error(f"--grade-timeout must be a number of seconds >= 0 (0: none), got {args.grade_timeout:g}")
    csv_path, counts = gradebook(args.submissions, args.out or args.submissions, args.jobs, args.seed,
                                 args.regrade, args.time_limit, args.grade_timeout)
    print(f"graded {counts['graded']} learners ({counts['skipped']} already graded, kept); "
          f"{counts['with_problems']} with problems (see the 'problems' column); wrote {csv_path}")


if __name__ == "__main__":
    main()
