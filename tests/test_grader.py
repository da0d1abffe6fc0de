"""Tests of the exercise grader itself (exercises/conftest.py and the graders).

Proves that every grader test passes on solutions/, fails on the untouched
stubs with the one-line "not implemented yet" message, catches a catalogue of
typical wrong answers (tests/grader_mutants/catalogue.py), writes a
well-formed JSON report, cuts off an infinite loop, and that the frozen
snapshots are what the current solutions produce.

Each grading run is a pytest subprocess (a fresh interpreter, so modules from
different targets can never mix); they all start at once on a small pool.
"""

from __future__ import annotations

import ast
import json
import runpy
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES, SOLUTIONS = ROOT / "exercises", ROOT / "solutions"
MUTANTS = runpy.run_path(str(Path(__file__).parent / "grader_mutants" / "catalogue.py"))["MUTANTS"]
EXERCISE_FILES = sorted(p.name for p in SOLUTIONS.glob("ex[0-9][0-9]_*.py"))
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:nbval", "-q"]


@dataclass
class Run:
    returncode: int
    output: str
    report: dict | None


def _grade(args: list[str], report: Path, timeout: float = 240) -> Run:
    proc = subprocess.run(PYTEST + args + ["--grade-report", str(report)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else None
    return Run(proc.returncode, proc.stdout + proc.stderr, data)


def _make_target(folder: Path, mutant=None) -> Path:
    folder.mkdir(parents=True)
    for name in EXERCISE_FILES:
        shutil.copy(SOLUTIONS / name, folder / name)
    for old, new in (mutant.replacements if mutant else ()):
        file = folder / mutant.file
        text = file.read_text()
        assert text.count(old) == 1, f"mutant {mutant.name}: {old!r} occurs {text.count(old)} times in {mutant.file}"
        file.write_text(text.replace(old, new))
    return folder


# An endless loop that even swallows ordinary exceptions: the time limit must still stop it.
INFINITE_LOOP = ('    best = min(history, key=lambda record: record["val"])',
                 "    while True:\n        try:\n            pass\n        except Exception:\n            pass\n    best = None")


def _drive(name: str, jobs: list[dict], tmp: Path) -> dict[str, Run]:
    """Run several grading sessions in one interpreter (tests/grader_mutants/run_many.py)."""
    jobs_file = tmp / f"{name}.json"
    jobs_file.write_text(json.dumps(jobs))
    driver = Path(__file__).parent / "grader_mutants" / "run_many.py"
    proc = subprocess.run([sys.executable, str(driver), str(jobs_file)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {}
    for result, job in zip(json.loads(proc.stdout.strip().splitlines()[-1]), jobs):
        report = Path(job["args"][-1])
        data = json.loads(report.read_text()) if report.exists() else None
        runs[result["name"]] = Run(result["returncode"], result["output"], data)
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every grading run this module needs, two processes at a time."""
    tmp = tmp_path_factory.mktemp("grader")
    loop_target = _make_target(tmp / "loop")
    text = (loop_target / "ex06_evaluation.py").read_text()
    (loop_target / "ex06_evaluation.py").write_text(text.replace(*INFINITE_LOOP))
    mutant_jobs = [
        {"name": f"mutant:{m.name}",
         "args": ["-p", "no:cacheprovider", "-p", "no:nbval", "-q", "-x", f"exercises/test_{m.file}",
                  "--target", str(_make_target(tmp / m.name, m)), "--grade-report", str(tmp / f"{m.name}.json")]}
        for m in MUTANTS
    ]

    def snapshots():
        proc = subprocess.run([sys.executable, "exercises/make_snapshots.py", "--check"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        return {"snapshots": Run(proc.returncode, proc.stdout + proc.stderr, None)}

    tasks = [
        lambda: _drive("mutants_a", mutant_jobs[0::2], tmp),
        lambda: _drive("mutants_b", mutant_jobs[1::2], tmp),
        lambda: {"solutions": _grade(["exercises/", "--solutions"], tmp / "solutions.json")},
        lambda: {"stubs": _grade(["exercises/"], tmp / "stubs.json")},
        lambda: {"timeout": _grade(["exercises/test_ex06_evaluation.py", "--target", str(loop_target),
                                    "--grade-timeout", "2"], tmp / "timeout.json")},
        snapshots,
    ]
    results: dict[str, Run] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for part in pool.map(lambda task: task(), tasks):
            results.update(part)
    return results


def _outcomes(run: Run) -> dict[str, str]:
    assert run.report is not None, f"no grade report was written:\n{run.output[-3000:]}"
    return {t["test"]: t["outcome"] for t in run.report["tests"]}


def _grader_test_count() -> int:
    count = 0
    for file in EXERCISES.glob("test_ex*.py"):
        tree = ast.parse(file.read_text())
        count += sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in tree.body)
    return count


def test_every_grader_test_passes_on_the_solutions(runs):
    run = runs["solutions"]
    failing = {name: outcome for name, outcome in _outcomes(run).items() if outcome != "passed"}
    assert run.returncode == 0 and not failing, f"{failing}\n{run.output[-4000:]}"
    assert run.report["totals"]["tests"] == _grader_test_count()


def test_every_grader_test_fails_on_the_stubs_with_not_implemented(runs):
    run = runs["stubs"]
    assert run.returncode == 1
    assert run.report["totals"]["tests"] == _grader_test_count()
    bad = [t["nodeid"] for t in run.report["tests"]
           if t["outcome"] != "todo" or not t["message"].startswith("not implemented yet: write `")]
    assert not bad, f"these tests do not fail with 'not implemented yet' on the stubs: {bad}"
    assert "not implemented yet: write `get_batch` in exercises/ex02_batching.py" in run.output
    assert "Traceback" not in run.output and "raise NotImplementedError" not in run.output


def test_the_report_is_well_formed(runs):
    report = runs["solutions"].report
    assert report["mode"] == "solutions" and Path(report["target"]) == SOLUTIONS
    chapters = report["chapters"]
    assert list(chapters) == [name.removesuffix(".py") for name in EXERCISE_FILES]
    for key in ("points", "max_points", "tests", "passed", "failed", "todo"):
        assert report["totals"][key] == sum(c[key] for c in chapters.values())
    assert report["totals"]["points"] == report["totals"]["max_points"] > 0
    for t in report["tests"]:
        assert set(t) >= {"nodeid", "chapter", "test", "points", "outcome", "message", "earned"}
        assert t["chapter"] in chapters and t["points"] > 0
    for chapter in chapters.values():
        assert 3 <= chapter["tests"], "every chapter has at least three graded tests"
    stubs = runs["stubs"].report
    assert stubs["totals"]["points"] == 0 and stubs["totals"]["todo"] == stubs["totals"]["tests"]
    assert "write get_batch" in runs["stubs"].output.replace("`", "")  # the score table's "still to do"


def test_an_infinite_loop_is_cut_off_and_the_rest_still_runs(runs):
    run = runs["timeout"]
    outcomes = _outcomes(run)
    assert outcomes.pop("test_best_step") == "timeout", run.output[-3000:]
    assert set(outcomes.values()) == {"passed"}
    assert "stopped after 2 s while running `best_step`" in run.output
    assert "Traceback" not in run.output


def test_snapshots_match_the_current_solutions(runs):
    run = runs["snapshots"]
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_a_typical_wrong_answer_is_caught(runs, mutant):
    run = runs[f"mutant:{mutant.name}"]
    outcomes = _outcomes(run)
    caught = [name for name, outcome in outcomes.items() if outcome in ("failed", "error", "timeout")]
    assert caught, f"no grader test caught the mistake: {mutant.mistake}\n{run.output[-3000:]}"
    assert "todo" not in outcomes.values()
    broken = [t["message"] for t in run.report["tests"] if t["message"].startswith("could not import")]
    assert not broken, f"the mutant does not even import: {broken[0]}"


def test_catalogue_is_large_enough_and_covers_every_chapter():
    assert len(MUTANTS) >= 15
    assert {m.file for m in MUTANTS} == set(EXERCISE_FILES)


def _api(file: Path) -> dict[str, str]:
    """Public functions, classes and methods: their signatures and docstrings."""
    tree = ast.parse(file.read_text())
    api = {"<module>": ast.get_docstring(tree) or ""}

    def describe(node):
        decorators = [ast.unparse(d) for d in node.decorator_list]
        returns = ast.unparse(node.returns) if node.returns else ""
        assert ast.get_docstring(node), f"{file.name}: {node.name} has no docstring"
        return f"{decorators} ({ast.unparse(node.args)}) -> {returns}\n{ast.get_docstring(node)}"

    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            api[node.name] = describe(node)
        elif isinstance(node, ast.ClassDef):
            assert ast.get_docstring(node), f"{file.name}: class {node.name} has no docstring"
            api[node.name] = f"bases {[ast.unparse(b) for b in node.bases]}\n{ast.get_docstring(node)}"
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (item.name.startswith("__") or not item.name.startswith("_")):
                    api[f"{node.name}.{item.name}"] = describe(item)
    return api


@pytest.mark.parametrize("name", EXERCISE_FILES)
def test_stub_and_solution_have_the_same_signatures_and_docstrings(name):
    stub, solution = _api(EXERCISES / name), _api(SOLUTIONS / name)
    assert stub.keys() == solution.keys()
    for key in solution:
        assert stub[key] == solution[key], f"{name}: {key} differs between exercises/ and solutions/"


@pytest.mark.parametrize("name", EXERCISE_FILES)
def test_every_stub_body_is_not_implemented(name):
    tree = ast.parse((EXERCISES / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            last = node.body[-1]
            assert isinstance(last, ast.Raise) and ast.unparse(last.exc) == "NotImplementedError", \
                f"{name}: {node.name} should end with `raise NotImplementedError`"
            assert len(node.body) == 2, f"{name}: {node.name} should hold only its docstring and the raise"


def test_every_chapter_has_a_grader_and_three_to_five_exercises():
    for name in EXERCISE_FILES:
        assert (EXERCISES / f"test_{name}").is_file()
        api = _api(SOLUTIONS / name)
        exercises = [k for k in api if k != "<module>" and "." not in k]
        assert 3 <= len(exercises) <= 7, f"{name}: {exercises}"


def test_a_target_missing_an_earlier_chapter_never_borrows_the_stubs(tmp_path):
    """ex04 imports ex03: from the graded folder only, never from exercises/ behind it."""
    target = _make_target(tmp_path / "partial")
    (target / "ex03_attention.py").unlink()
    run = _grade(["exercises/test_ex04_model.py", "--target", str(target)], tmp_path / "report.json")
    assert run.returncode != 0
    assert "ex03_attention.py is not in the folder being graded" in run.output
    assert run.report["totals"]["passed"] == 0


def test_snapshot_comparison_tolerates_float32_noise_but_not_real_differences():
    """Another machine's float32 results differ in the last bits: within rtol 1e-4/atol 1e-5 they agree."""
    first_difference = runpy.run_path(str(EXERCISES / "make_snapshots.py"))["first_difference"]
    assert first_difference(0.020968351513147354, 0.020968232303857803) is None  # seen on two machines
    assert first_difference([1.0, {"a": 2.0}], [1.00001, {"a": 2.00001}]) is None
    assert first_difference(0.0209, 0.0219) is not None
    assert first_difference(3, 4) is not None and first_difference("ab", "ac") is not None
    assert first_difference(True, 1.0) is not None
    assert first_difference([1.0], [1.0, 2.0]) is not None
