"""Gradescope for the course: build ``dist/autograder.zip``, and grade one submission inside it.

    python exercises/_grader/gradescope.py build [--out dist/autograder.zip] [--seed N|random] ...
    python exercises/_grader/gradescope.py run      # what the zip's run_autograder calls

``build`` writes the zip Gradescope asks for: ``setup.sh`` and ``run_autograder`` at its root, the
graders (``exercises/``), ``solutions/`` (``--fresh-cases`` computes the expected values with them),
``pyproject.toml`` and ``requirements.txt`` (the course's dependencies without torch, which
``setup.sh`` installs from PyTorch's CPU-only index, and pytest).

``run`` grades ``$MINIGPT_AUTOGRADER_ROOT/submission`` (default ``/autograder``) with ``--strict
--fresh-cases SEED`` through the grader's own command, and writes ``results/results.json`` as
Gradescope specifies it: ``score``, ``execution_time``, ``output`` and one ``tests[]`` entry per
grader test. Whatever goes wrong, a ``results.json`` is written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
import tomllib
import traceback
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grade_folder import ROOT, Staged, catalogue, chapters, grade, one_line, stage, tidy  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "autograder"
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")  # Gradescope's four
DEFAULT_TIME_LIMIT = 900.0  # seconds for a whole grading run (Gradescope's own timeout must be longer)
DEFAULT_GRADE_TIMEOUT = 60.0  # seconds per test: Gradescope's CPUs are slower than a learner's laptop
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
MEASURED_PEAK_MIB = 640  # benchmarks/gradebook_speed.py --memory: a strict, fresh-cases run of solutions/ (PSS)


# --------------------------------------------------------------------------- build


def _requirements(pyproject: dict) -> tuple[str, list[str]]:
    """(torch's requirement, every other requirement the autograder installs) from pyproject.toml."""
    deps = pyproject["project"]["dependencies"]
    torch = [d for d in deps if d.replace(" ", "").startswith(("torch>", "torch<", "torch=", "torch~", "torch!"))
             or d.strip() == "torch"]
    if len(torch) != 1:
        raise SystemExit(f"pyproject.toml: expected one torch requirement in [project] dependencies, found {torch}")
    pytest = [d for d in pyproject["project"]["optional-dependencies"]["dev"] if d.startswith("pytest")]
    return torch[0], [d for d in deps if d not in torch] + pytest


def _course_files() -> list[Path]:
    """The files the autograder needs from the project: the graders, the solutions, pyproject.toml."""
    files = [ROOT / "pyproject.toml"]
    for folder in ("exercises", "solutions"):
        for path in sorted((ROOT / folder).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if path.is_file() and not parts & SKIP_PARTS and path.suffix != ".pyc" and not path.name.startswith("."):
                files.append(path)
    return files


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", template)
    if left:
        raise SystemExit(f"autograder template: no value for {', '.join(sorted(set(left)))}")
    return template


def build(out: Path, seed: str, time_limit: float, grade_timeout: float, visibility: str) -> Path:
    """Write the Gradescope zip to ``out`` (atomically) and return its path."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch, others = _requirements(pyproject)
    floor = pyproject["project"]["requires-python"].removeprefix(">=")
    values = {"SEED": seed, "TIME_LIMIT": f"{time_limit:g}", "GRADE_TIMEOUT": f"{grade_timeout:g}",
              "VISIBILITY": visibility, "TORCH": torch, "PYTHON_FLOOR": f"Python {floor}",
              "MEMORY": str(MEASURED_PEAK_MIB)}
    scripts = {name: _fill((TEMPLATES / name).read_text(encoding="utf-8"), values)
               for name in ("setup.sh", "run_autograder")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same files, same zip
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        for name, text in scripts.items():
            add(name, text.encode("utf-8"), 0o755)
        add("requirements.txt", ("\n".join(others) + "\n").encode("utf-8"))
        for path in _course_files():
            add(path.relative_to(ROOT).as_posix(), path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------- run: results.json


def _chapter_label(chapter: str) -> str:
    return chapter.replace("_", " ", 1)


def _test_output(test: dict, info: dict, staged: Staged, stopped: bool) -> str:
    """The one line a learner reads under a test."""
    chapter = test["chapter"]
    if chapter in staged.missing:
        return staged.describe(chapter)
    if info.get("zeroed_by_integrity"):
        finding = info["integrity"][0] if info.get("integrity") else {}
        where = f"{finding.get('file', chapter + '.py')}, line {finding.get('line', '?')}: {finding.get('construct', '')}"
        return one_line(f"0 points: the integrity check (--strict) flagged {where}: {finding.get('why', '')}")
    outcome = test.get("outcome", "not run")
    if outcome == "passed":
        return "passed"
    if outcome in ("not run", "skipped"):
        return "not run: the grading run was stopped before this test" if stopped else "not run"
    prefix = "" if outcome in ("failed", "todo") else f"{outcome}: "  # a failure's message says it all
    return one_line(prefix + (tidy(test.get("message") or "", staged.folder) or "no message"))


def results_json(tests: list[dict], chapters_info: dict, staged: Staged, visibility: str) -> list[dict]:
    """One Gradescope test entry per grader test, numbered chapter.test (``3.4``)."""
    entries, counters = [], {}
    stopped = not chapters_info  # no chapter summary: the grader never wrote its report
    for test in tests:
        chapter, info = test["chapter"], chapters_info.get(test["chapter"], {})
        counters[chapter] = counters.get(chapter, 0) + 1
        zeroed = info.get("zeroed_by_integrity", False) or chapter in staged.missing
        score = 0.0 if zeroed else float(test.get("earned", 0.0))
        entries.append({
            "name": f"{chapter}: {test['test']}",
            "number": f"{int(chapter[2:4])}.{counters[chapter]}",
            "score": score,
            "max_score": float(test["points"]),
            "status": "passed" if test.get("outcome") == "passed" and not zeroed else "failed",
            "output": _test_output(test, info, staged, stopped or test.get("outcome") == "not run"),
            "tags": [chapter],
            "visibility": visibility,
        })
    return entries


def _summary(entries: list[dict], staged: Staged, seed: int, notes: list[str]) -> str:
    """The text above the tests: one line per chapter, then what the learner should know."""
    score, top = sum(e["score"] for e in entries), sum(e["max_score"] for e in entries)
    lines = [f"minigpt graders: {score:g}/{top:g} points (--strict, inputs drawn fresh from seed {seed})",
             f"files read from: {staged.found_in or 'nowhere (no exNN_*.py at the root or in exercises/)'}", ""]
    for chapter in chapters():
        mine = [e for e in entries if e["tags"] == [chapter]]
        got, out_of = sum(e["score"] for e in mine), sum(e["max_score"] for e in mine)
        if chapter in staged.missing:
            remark = "missing: 0 points"
        elif any("integrity check" in e["output"] for e in mine):
            remark = "integrity check: 0 points"
        else:
            remark = "done" if got == out_of else f"{sum(e['status'] == 'passed' for e in mine)}/{len(mine)} tests passed"
        lines.append(f"{_chapter_label(chapter):<18} {got:>5g}/{out_of:<4g} {remark}")
    return "\n".join(lines + ([""] + notes if notes else []) + [""] + staged.notes)


def grade_submission(submission: Path, seed: int, time_limit: float, grade_timeout: float,
                     visibility: str) -> dict:
    """The results.json for one submission folder."""
    with tempfile.TemporaryDirectory(prefix="minigpt-gradescope-") as tmp:
        Path(tmp).chmod(0o755)  # the grader's worker may run as an unprivileged user
        staged = stage(submission, Path(tmp) / "submission")
        run = grade(staged.folder, seed, time_limit, grade_timeout)
        print(run.output_tail[-4000:])  # Gradescope keeps stdout for the instructor (hidden from learners by default)
        notes = []
        if run.stopped_after is not None:
            notes.append(f"The grading run was stopped after {run.stopped_after:g} s; tests it had not reached "
                         f"earn 0.")
        report = run.report
        if report is None:
            notes.append(f"The grader stopped before writing its report (exit status {run.returncode}); "
                         "please tell the course staff.")
        elif not report.get("complete"):
            notes.append("The grader stopped before the end; tests it had not reached earn 0.")
        tests = report["tests"] if report else catalogue()
        entries = results_json(tests, report["chapters"] if report else {}, staged, visibility)
    return {
        "score": float(sum(e["score"] for e in entries)),
        "output": _summary(entries, staged, seed, notes),
        "output_format": "text",
        "test_output_format": "text",
        "visibility": visibility,
        "extra_data": {"fresh_cases_seed": seed, "files_digest": staged.digest, "found_in": staged.found_in,
                       "grader_exit_status": run.returncode, "grading_seconds": round(run.seconds, 1)},
        "tests": entries,
    }


def autograder_root() -> Path:
    """Gradescope's root, or the stand-in named by ``MINIGPT_AUTOGRADER_ROOT``."""
    return Path(os.environ.get("MINIGPT_AUTOGRADER_ROOT") or "/autograder")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(seed_text: str, time_limit: float, grade_timeout: float, visibility: str) -> dict:
    """Grade the submission under the root and write results/results.json; never raises."""
    start = time.monotonic()
    root = autograder_root()
    try:
        seed = random.SystemRandom().randrange(1, 10**9) if seed_text == "random" else int(seed_text)
        results = grade_submission(root / "submission", seed, time_limit, grade_timeout, visibility)
    except Exception as exc:  # a fault of ours or of the image: the learner still gets an answer
        traceback.print_exc()
        results = {"score": 0.0, "tests": [],
                   "output": f"The autograder failed ({one_line(f'{type(exc).__name__}: {exc}', 300)}), so this "
                             "submission was not graded. Please tell the course staff."}
    results["execution_time"] = int(round(time.monotonic() - start))
    write_json(root / "results" / "results.json", results)
    print(results["output"])
    return results


# --------------------------------------------------------------------------- command line


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 10**6:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def _seed(text: str) -> str:
    if text != "random" and not (text.isdigit() and int(text) < 2**40):
        raise argparse.ArgumentTypeError(f"must be 'random' or an integer from 0 to 2**40, got {text!r}")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("build", "write the Gradescope zip"), ("run", "grade the submission (run_autograder)")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--seed", type=_seed, default="random",
                         help="--fresh-cases seed: 'random' (a new one for every submission, the default: outputs "
                              "seen in one submission's feedback cannot be replayed in the next) or an integer")
        sub.add_argument("--time-limit", type=_seconds, default=DEFAULT_TIME_LIMIT,
                         help=f"seconds for the whole grading run (default {DEFAULT_TIME_LIMIT:g})")
        sub.add_argument("--grade-timeout", type=_seconds, default=DEFAULT_GRADE_TIMEOUT,
                         help=f"seconds per grader test (default {DEFAULT_GRADE_TIMEOUT:g})")
        sub.add_argument("--visibility", choices=VISIBILITIES, default="visible",
                         help="when learners see each test's result (default visible)")
    commands.choices["build"].add_argument("--out", type=Path, default=ROOT / "dist" / "autograder.zip",
                                           help="where to write the zip (default dist/autograder.zip)")
    args = parser.parse_args(argv)
    if args.command == "build":
        out = build(args.out, args.seed, args.time_limit, args.grade_timeout, args.visibility)
        print(f"wrote {out} ({out.stat().st_size // 1024} kB): upload it on Gradescope's 'Configure Autograder' "
              f"page; setup.sh says which settings to raise (memory, CPU, timeout)")
    else:
        run(args.seed, args.time_limit, args.grade_timeout, args.visibility)


if __name__ == "__main__":
    main()
