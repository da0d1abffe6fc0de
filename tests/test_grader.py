"""Tests of the exercise grader itself (exercises/_grader/, the workers and the graders).

Proves that every grader test passes on solutions/, fails on the untouched
stubs with the one-line "not implemented yet" message, catches a catalogue of
typical wrong answers (tests/grader_mutants/catalogue.py), that the tricks and
faults of tests/grader_mutants/tricks.py cost only the points of what they
touch, that the JSON report always counts the whole catalogue, and that the
frozen snapshots are what the current solutions produce.

Grading runs are pytest sessions in subprocesses. Mutants that touch
different, independent chapters share one graded folder, and several
sessions share one interpreter (tests/grader_mutants/run_many.py): the
learner's code never runs in the grading process, so sessions cannot leak
into each other. Everything runs two at a time, and only the runs that the
selected tests read (each says which with ``@reads(...)``; a mutant reads its
batch's run), so ``-k ex03`` or ``-m start_method`` grades only what it needs.

Tests marked ``start_method`` read what depends on how workers start (fork on
Linux, spawn on macOS and Windows): the solutions and stubs graded, the
tricks, faults, hostile folders and import failures that play out inside a
worker, and the worker's memory limit. ``make test`` runs them again with
``MINIGPT_GRADER_START=spawn``. The rest check the grader's own logic in the
grading process (which mistakes its comparisons catch, the report, fresh
cases, static scans), the same whichever way workers start: with fork only.
"""

from __future__ import annotations

import ast
import json
import os
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
HERE = Path(__file__).parent / "grader_mutants"
MUTANTS = runpy.run_path(str(HERE / "catalogue.py"))["MUTANTS"]
TRICKS_MODULE = runpy.run_path(str(HERE / "tricks.py"))
EXERCISE_FILES = sorted(p.name for p in SOLUTIONS.glob("ex[0-9][0-9]_*.py"))
CHAPTERS = [name.removesuffix(".py") for name in EXERCISE_FILES]
PYTEST_FLAGS = ["-p", "no:cacheprovider", "-p", "no:nbval", "-q"]
PYTEST = [sys.executable, "-m", "pytest", *PYTEST_FLAGS]
DEPENDS = {("ex02_batching.py", "ex05_training.py"), ("ex03_attention.py", "ex04_model.py")}  # B imports A
FAILED = ("failed", "error", "timeout", "crashed")


@dataclass
class Run:
    returncode: int
    output: str
    report: dict | None


def _grade(args: list[str], report: Path, timeout: float = 1800) -> Run:  # a hang guard, not a speed test
    proc = subprocess.run(PYTEST + args + ["--grade-report", str(report)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else None
    return Run(proc.returncode, proc.stdout + proc.stderr, data)


def _patch(file: Path, replacements, append: str = "", what: str = "") -> None:
    text = file.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, f"{what}: {old!r} occurs {text.count(old)} times in {file.name}"
        text = text.replace(old, new)
    file.write_text(text + append)


def _fresh_stub(name: str) -> str:
    """make_stubs.py's stub of solutions/<name>: what exercises/<name> holds before a learner writes in it."""
    make_stub = runpy.run_path(str(EXERCISES / "_grader" / "make_stubs.py"))["make_stub"]
    return make_stub((SOLUTIONS / name).read_text(encoding="utf-8"))


def _skip_on_a_learners_work(*names: str) -> None:
    """Skip, saying why, when exercises/ holds a learner's code (outside CI): the test needs the untouched stubs."""
    if os.environ.get("CI"):
        return
    written = runpy.run_path(str(EXERCISES / "_grader" / "make_stubs.py"))["written_pieces"]
    work = {n: w for n in names if (w := written((EXERCISES / n).read_text(encoding="utf-8"), _fresh_stub(n)))}
    if work:
        told = "; ".join(f"{name}: {', '.join(pieces)}" for name, pieces in work.items())
        pytest.skip(f"exercises/ holds your own code ({told}): "
                    f"this test needs the untouched stubs and runs on the course's own copy (where CI is set); "
                    f"your files are left as they are")


def _make_target(folder: Path, mutants=(), tricks=()) -> Path:
    """A copy of solutions/ with some mutants and tricks applied (each to its own file)."""
    folder.mkdir(parents=True)
    for name in EXERCISE_FILES:
        shutil.copy(SOLUTIONS / name, folder / name)
    for mutant in mutants:
        _patch(folder / mutant.file, mutant.replacements, what=f"mutant {mutant.name}")
    for trick in tricks:
        if trick.base == "stub":
            (folder / trick.file).write_text(_fresh_stub(trick.file))
        _patch(folder / trick.file, trick.replacements, trick.append, what=f"trick {trick.name}")
    return folder


def _batches(mutants) -> list[list]:
    """Pack mutants into folders: one per file, never two in files where one imports the other."""
    batches: list[list] = []
    for mutant in mutants:
        for batch in batches:
            files = {m.file for m in batch}
            if mutant.file not in files and not any((f, mutant.file) in DEPENDS or (mutant.file, f) in DEPENDS
                                                    for f in files):
                batch.append(mutant)
                break
        else:
            batches.append([mutant])
    return batches


def _drive(name: str, jobs: list[dict], tmp: Path) -> dict[str, Run]:
    """Run several grading sessions in one interpreter (tests/grader_mutants/run_many.py)."""
    jobs_file = tmp / f"{name}.json"
    jobs_file.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(HERE / "run_many.py"), str(jobs_file)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)  # a loaded 2-core machine: a limit against a hang, not a speed test
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {}
    for result, job in zip(json.loads(proc.stdout.strip().splitlines()[-1]), jobs):
        report = Path(job["args"][-1])
        data = json.loads(report.read_text()) if report.exists() else None
        runs[result["name"]] = Run(result["returncode"], result["output"], data)
    return runs


def _job(name: str, args: list[str], tmp: Path) -> dict:
    return {"name": name, "args": PYTEST_FLAGS + args + ["--grade-report", str(tmp / f"{name}.json")]}


def reads(*names: str):
    """Mark a test with the grading runs it reads from ``runs``: only the runs some selected test reads are made."""
    return pytest.mark.reads(*names)


class Runs(dict):
    """The grading runs, by name; a run no selected test said it reads is a plain error naming the fix."""

    def __missing__(self, name: str):
        raise KeyError(f"the grading run {name!r} was not made: mark the test that reads it with @reads({name!r})")


def _batch_name(mutant) -> str:
    return f"batch{next(i for i, b in enumerate(_batches(MUTANTS)) if mutant in b)}"


def _runs_read(items) -> set[str]:
    """The runs the selected tests read: their ``reads`` marks, and each selected mutant's batch."""
    needed = set()
    for item in items:
        for mark in item.iter_markers("reads"):
            needed.update(mark.args)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "mutant" in callspec.params and "runs" in item.fixturenames:
            needed.add(_batch_name(callspec.params["mutant"]))
    return needed


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict[str, Run]:
    """The grading runs the selected tests read, two processes at a time."""
    needed = _runs_read(request.session.items)
    tmp = tmp_path_factory.mktemp("grader")
    jobs = []
    for i, batch in enumerate(_batches(MUTANTS)):
        target = _make_target(tmp / f"batch{i}", mutants=batch)
        files = sorted({f"exercises/test_{m.file}" for m in batch})
        jobs.append(_job(f"batch{i}", files + ["--target", str(target)], tmp))
    jobs.append(_job("tricks", ["exercises/", "--strict", "--target",
                                str(_make_target(tmp / "tricks", tricks=TRICKS_MODULE["TRICKS"]))], tmp))
    hostile = _make_target(tmp / "hostile", tricks=TRICKS_MODULE["HOSTILE"])
    for name, text in TRICKS_MODULE["LOOKALIKES"].items():
        (hostile / name).parent.mkdir(exist_ok=True)
        (hostile / name).write_text(text)
    jobs.append(_job("hostile", ["exercises/", "--strict", "--target", str(hostile)], tmp))
    jobs.append(_job("replay", ["exercises/", "--target",
                                str(_make_target(tmp / "replay", tricks=[TRICKS_MODULE["REPLAY_TRICK"]]))], tmp))
    # 5 s: short enough for the two endless loops, long enough for every honest test on a busy machine.
    jobs.append(_job("faults", ["exercises/", "--grade-timeout", "5", "--target",
                                str(_make_target(tmp / "faults", tricks=TRICKS_MODULE["FAULTS"]))], tmp))
    memorised = str(_make_target(tmp / "memorised", tricks=[TRICKS_MODULE["MEMORISED_TRICK"]]))
    jobs.append(_job("memorised", ["exercises/test_ex07_sampling.py", "--target", memorised], tmp))
    jobs.append(_job("memorised_fresh", ["exercises/test_ex07_sampling.py", "--fresh-cases", "7", "--target",
                                         memorised], tmp))
    jobs.append(_job("solutions_fresh", ["exercises/", "--solutions", "--strict", "--fresh-cases", "7"], tmp))
    jobs.append(_job("stubs", ["exercises/"], tmp))
    partial = _make_target(tmp / "partial")
    (partial / "ex03_attention.py").unlink()
    jobs.append(_job("missing_ch3", ["exercises/test_ex04_model.py", "--target", str(partial)], tmp))
    stale = tmp / "first_failure.json"
    stale.write_text(json.dumps({"stale": True, "totals": {"points": 99}}))
    jobs.append(_job("first_failure", ["exercises/", "-x"], tmp))
    jobs.append(_job("keyword", ["exercises/", "--solutions", "-k", "perplexity or causal_mask"], tmp))
    broken = _make_target(tmp / "broken_ch3")
    (broken / "ex03_attention.py").write_text("def causal_mask(T):\n    return (\n")
    jobs.append(_job("broken_ch3", ["exercises/test_ex03_attention.py", "exercises/test_ex04_model.py",
                                    "--target", str(broken)], tmp))

    def snapshots():
        proc = subprocess.run([sys.executable, "exercises/_grader/make_snapshots.py", "--check"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        return {"snapshots": Run(proc.returncode, proc.stdout + proc.stderr, None)}

    jobs = [job for job in jobs if job["name"] in needed]
    tasks = [
        (lambda: {"solutions": _grade(["exercises/", "--solutions"], tmp / "solutions.json")}, "solutions" in needed),
        (lambda: _drive("jobs_a", jobs[0::2], tmp), bool(jobs[0::2])),
        (lambda: _drive("jobs_b", jobs[1::2], tmp), bool(jobs[1::2])),
        (snapshots, "snapshots" in needed),
    ]
    tasks = [task for task, wanted in tasks if wanted]
    results = Runs()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for part in pool.map(lambda task: task(), tasks):
            results.update(part)
    return results


def _outcomes(run: Run, chapter: str | None = None) -> dict[str, str]:
    assert run.report is not None, f"no grade report was written:\n{run.output[-3000:]}"
    return {t["test"]: t["outcome"] for t in run.report["tests"] if chapter is None or t["chapter"] == chapter}


def _messages(run: Run, chapter: str) -> dict[str, str]:
    return {t["test"]: t["message"] for t in run.report["tests"] if t["chapter"] == chapter}


def _catalogue() -> dict[str, float]:
    """Test name -> points, read from the grader files."""
    tests = {}
    for file in EXERCISES.glob("test_ex*.py"):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [d for d in node.decorator_list if "points" in ast.unparse(d)]
                tests[node.name] = float(marks[0].args[0].value) if marks else 1.0
    return tests


def _full(run: Run, chapter: str) -> bool:
    c = run.report["chapters"][chapter]
    return c["points"] == c["max_points"] and c["passed"] == c["tests"]


@pytest.mark.start_method
@reads("solutions")
def test_every_grader_test_passes_on_the_solutions(runs):
    run = runs["solutions"]
    failing = {name: outcome for name, outcome in _outcomes(run).items() if outcome != "passed"}
    assert run.returncode == 0 and not failing, f"{failing}\n{run.output[-4000:]}"
    assert run.report["totals"]["tests"] == len(_catalogue())
    assert run.report["totals"]["max_points"] == sum(_catalogue().values())


@pytest.mark.start_method
@reads("stubs")
def test_every_grader_test_fails_on_the_stubs_with_not_implemented(runs):
    _skip_on_a_learners_work(*EXERCISE_FILES)
    run = runs["stubs"]
    assert run.returncode == 1
    assert run.report["totals"]["tests"] == len(_catalogue())
    bad = [t["nodeid"] for t in run.report["tests"]
           if t["outcome"] != "todo" or not t["message"].startswith("not implemented yet: write `")]
    assert not bad, f"these tests do not fail with 'not implemented yet' on the stubs: {bad}"
    assert "not implemented yet: write `get_batch` in exercises/ex02_batching.py" in run.output
    assert "Traceback" not in run.output and "raise NotImplementedError" not in run.output


@pytest.mark.start_method
@reads("solutions", "stubs")
def test_the_report_is_well_formed(runs):
    report = runs["solutions"].report
    assert report["mode"] == "solutions" and Path(report["target"]) == SOLUTIONS
    assert report["complete"] is True and report["strict"] is False and report["fresh_cases_seed"] is None
    chapters = report["chapters"]
    assert list(chapters) == CHAPTERS
    for key in ("points", "max_points", "tests", "passed", "failed", "todo", "not_run"):
        assert report["totals"][key] == sum(c[key] for c in chapters.values())
    assert report["totals"]["points"] == report["totals"]["max_points"] > 0
    for t in report["tests"]:
        assert set(t) >= {"nodeid", "chapter", "test", "points", "outcome", "message", "earned"}
        assert t["chapter"] in chapters and t["points"] > 0
    for chapter in chapters.values():
        assert 3 <= chapter["tests"], "every chapter has at least three graded tests"
        assert chapter["integrity"] == []
    _skip_on_a_learners_work(*EXERCISE_FILES)  # the rest reads the run of the stubs in exercises/
    stubs = runs["stubs"].report
    assert stubs["totals"]["points"] == 0 and stubs["totals"]["todo"] == stubs["totals"]["tests"]
    assert all(c["integrity"] == [] for c in stubs["chapters"].values()), "the stubs must not trip an integrity check"
    assert "write get_batch" in runs["stubs"].output.replace("`", "")  # the score table's "still to do"


@reads("snapshots")
def test_snapshots_match_the_current_solutions(runs):
    run = runs["snapshots"]
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_a_typical_wrong_answer_is_caught(runs, mutant):
    run = runs[_batch_name(mutant)]
    chapter = mutant.file.removesuffix(".py")
    outcomes = _outcomes(run, chapter)
    caught = [name for name, outcome in outcomes.items() if outcome in FAILED]
    assert caught, f"no grader test caught the mistake: {mutant.mistake}\n{run.output[-3000:]}"
    assert "todo" not in outcomes.values()
    broken = [m for m in _messages(run, chapter).values() if m.startswith("could not import")]
    assert not broken, f"the mutant does not even import: {broken[0]}"


def test_catalogue_is_large_enough_and_covers_every_chapter():
    assert len(MUTANTS) >= 40
    assert {m.file for m in MUTANTS} == set(EXERCISE_FILES)
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)


@pytest.mark.start_method
@reads("tricks")
def test_the_tricks_earn_nothing_and_leave_the_other_chapters_intact(runs):
    run = runs["tricks"]
    tricked = {t.file.removesuffix(".py") for t in TRICKS_MODULE["TRICKS"]}
    assert run.report["strict"] is True
    for chapter in CHAPTERS:
        c = run.report["chapters"][chapter]
        if chapter in tricked:
            assert c["points"] == 0, f"{chapter} earned {c['points']} with a trick\n{run.output[-3000:]}"
            assert c["integrity"], f"{chapter}: the trick was not reported"
        else:
            assert _full(run, chapter), f"{chapter} lost points to another chapter's trick\n{run.output[-3000:]}"
    # Even without --strict the wrong answers behind the tricks fail their tests.
    assert _outcomes(run, "ex01_tokenization")["test_merge_replaces_every_occurrence_left_to_right"] in FAILED
    ex04 = _outcomes(run, "ex04_model")
    assert ex04["test_feed_forward"] in FAILED and ex04["test_block_is_pre_layernorm_with_residuals"] in FAILED
    assert set(_outcomes(run, "ex05_training").values()) == {"todo"}  # rewritten tests change nothing here
    assert "may not import minigpt" in " ".join(_messages(run, "ex06_evaluation").values())
    assert "may not import minigpt" in " ".join(_messages(run, "ex07_sampling").values())
    findings = " ".join(f["construct"] for c in run.report["chapters"].values() for f in c["integrity"])
    for construct in (".__code__", "import _grading", "assignment to torch.isclose", "exec", "import minigpt",
                      "from minigpt.sampling import ..."):
        assert construct in findings, f"{construct} not reported: {findings}"
    assert "integrity (chapter earns 0): ex05_training.py, line" in run.output


@pytest.mark.start_method
@reads("hostile")
def test_a_hostile_learner_folder_costs_that_learner_alone(runs):
    """Issue 15: signals, stops and limits aimed at the grading processes are refused by the worker's
    walls (seccomp on Linux); look-alike files never run; a grader module and the package's source are
    out of reach at run time; the run ends with a complete report and the other chapters intact."""
    run = runs["hostile"]
    assert run.report is not None and run.report["complete"] is True, run.output[-3000:]
    assert run.returncode == 1 and run.report["strict"] is True
    hit = {t.file.removesuffix(".py") for t in TRICKS_MODULE["HOSTILE"]} | {"ex04_model"}  # 4 imports 3
    for chapter in set(CHAPTERS) - hit:
        assert _full(run, chapter), f"{chapter} lost points to a hostile folder\n{run.output[-3000:]}"
    message = _messages(run, "ex01_tokenization")["test_tokens_per_char"]
    assert "your code printed" in message and "refused pidfd SIGSTOP" in message, message
    assert "DONE" not in run.output, run.output[-3000:]
    ex03 = _outcomes(run, "ex03_attention")
    assert ex03["test_attention_matches_pytorch_without_mask"] in FAILED
    assert run.report["chapters"]["ex03_attention"]["points"] == 0
    assert "may not read" in _messages(run, "ex06_evaluation")["test_perplexity"]
    assert "ex99_extra" not in run.output
    ex05 = _messages(run, "ex05_training")
    assert "called special_log_softmax (seen at run time)" in ex05["test_cross_entropy_matches_pytorch"], ex05
    assert _outcomes(run, "ex05_training")["test_train_step_makes_the_loss_fall"] == "passed"


@pytest.mark.start_method
@reads("replay")
def test_replaying_the_snapshots_fails_and_costs_only_that_test(runs):
    run = runs["replay"]
    outcomes = _outcomes(run, "ex07_sampling")
    assert outcomes.pop("test_generate_matches_reference_samples") in FAILED
    assert set(outcomes.values()) == {"passed"}
    assert "may not read" in _messages(run, "ex07_sampling")["test_generate_matches_reference_samples"]
    assert all(_full(run, chapter) for chapter in CHAPTERS if chapter != "ex07_sampling")
    assert any("snapshots" in f["why"] for f in run.report["chapters"]["ex07_sampling"]["integrity"])


@reads("solutions_fresh", "memorised", "memorised_fresh")
def test_fresh_cases_catch_memorised_outputs_and_the_solutions_still_pass(runs):
    fresh = runs["solutions_fresh"]
    assert fresh.returncode == 0 and fresh.report["fresh_cases_seed"] == 7, fresh.output[-3000:]
    assert fresh.report["strict"] is True and fresh.report["totals"]["points"] == sum(_catalogue().values())
    assert set(_outcomes(runs["memorised"]).values()) <= {"passed", "not run"}  # the snapshots alone are fooled
    outcomes = _outcomes(runs["memorised_fresh"], "ex07_sampling")
    assert outcomes.pop("test_generate_matches_reference_samples") == "failed"
    assert set(outcomes.values()) == {"passed"}


@pytest.mark.start_method
@reads("faults")
def test_faults_cost_only_what_they_touch(runs):
    run = runs["faults"]
    assert run.returncode == 1 and run.report["complete"] is True, run.output[-3000:]
    assert run.report["totals"]["max_points"] == sum(_catalogue().values())
    for chapter in ("ex02_batching", "ex03_attention", "ex04_model"):
        assert _full(run, chapter), f"{chapter} lost points to another chapter's fault\n{run.output[-3000:]}"
    ex01 = _outcomes(run, "ex01_tokenization")
    assert ex01.pop("test_tokens_per_char") == "crashed" and set(ex01.values()) == {"passed"}
    assert "stopped the process running your code" in _messages(run, "ex01_tokenization")[
        "test_tokens_per_char"]
    assert set(_outcomes(run, "ex05_training").values()) == {"timeout"}
    assert all(m.startswith("importing ex05_training.py ran past 5 s: is there code at the bottom of the file")
               for m in _messages(run, "ex05_training").values())
    ex06 = _outcomes(run, "ex06_evaluation")
    assert ex06.pop("test_best_step") == "timeout" and set(ex06.values()) == {"passed"}
    assert _messages(run, "ex06_evaluation")["test_best_step"].startswith("best_step([")
    ex07 = _outcomes(run, "ex07_sampling")
    generate_tests = {name for name in ex07 if "generate" in name}
    assert {ex07[name] for name in generate_tests} == {"error"}
    assert {ex07[name] for name in set(ex07) - generate_tests} == {"passed"}
    assert "Traceback" not in run.output


@reads("first_failure", "keyword")
def test_the_report_never_shrinks_and_lists_what_did_not_run(runs):
    catalogue = _catalogue()
    for name in ("first_failure", "keyword"):
        report = runs[name].report
        assert report is not None and "stale" not in report, runs[name].output[-2000:]
        assert report["totals"]["max_points"] == sum(catalogue.values())
        assert report["totals"]["tests"] == len(catalogue)
        not_run = [t["nodeid"] for t in report["tests"] if t["outcome"] == "not run"]
        assert sorted(not_run) == sorted(report["not_run"]) and report["totals"]["not_run"] == len(not_run)
    first = runs["first_failure"].report
    assert first["selection"]["maxfail"] == 1 and first["totals"]["todo"] == 1
    assert len(first["not_run"]) == len(catalogue) - 1
    keyword = runs["keyword"].report
    assert keyword["selection"]["keyword"] == "perplexity or causal_mask"
    passed = {t["test"] for t in keyword["tests"] if t["outcome"] == "passed"}
    assert {"test_perplexity", "test_causal_mask"} <= passed and len(passed) < 5
    assert keyword["totals"]["points"] == sum(catalogue[name] for name in passed)
    assert "not run in this session" in runs["keyword"].output


@pytest.mark.start_method
@reads("broken_ch3")
def test_a_broken_earlier_chapter_says_finish_it_first(runs):
    run = runs["broken_ch3"]
    assert set(_outcomes(run, "ex03_attention").values()) == {"error"}
    assert all(m.startswith("could not import ex03_attention.py") and "SyntaxError" in m
               for m in _messages(run, "ex03_attention").values())
    assert all("finish chapter 3 first" in m for m in _messages(run, "ex04_model").values()), \
        _messages(run, "ex04_model")


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


def unfinished_body_problems(source: str) -> list[str]:
    """Each function of a stub whose body is more than its docstring and ``raise NotImplementedError``.

    A def or class marked ``# given`` (make_stubs.py keeps it verbatim) is skipped, with what it holds.
    """
    is_given = runpy.run_path(str(EXERCISES / "_grader" / "make_stubs.py"))["is_given"]
    lines, problems = source.splitlines(), []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and is_given(child, lines):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                last = child.body[-1]
                if not (isinstance(last, ast.Raise) and last.exc is not None
                        and ast.unparse(last.exc) == "NotImplementedError"):
                    problems.append(f"{child.name} should end with `raise NotImplementedError`")
                elif len(child.body) != 2:
                    problems.append(f"{child.name} should hold only its docstring and the raise")
            visit(child)

    visit(ast.parse(source))
    return problems


@pytest.mark.parametrize("name", EXERCISE_FILES)
def test_every_stub_body_is_not_implemented(name):
    _skip_on_a_learners_work(name)
    assert unfinished_body_problems((EXERCISES / name).read_text()) == [], name


def test_a_given_helper_keeps_its_body_and_an_unfinished_one_is_reported():
    source = ('def helper(x):  # given\n    """Doc."""\n    return x + 1\n\n\n'
              'class Model:  # given: the learner calls it\n    def forward(self):\n        return 1\n\n\n'
              'def todo(x):\n    """Doc."""\n    raise NotImplementedError\n\n\n'
              'def leaked(x):\n    """Doc."""\n    y = x * 2\n    raise NotImplementedError\n\n\n'
              'def answered(x):\n    """Doc."""\n    return x\n')
    assert unfinished_body_problems(source) == ["leaked should hold only its docstring and the raise",
                                                "answered should end with `raise NotImplementedError`"]


def test_every_chapter_has_a_grader_and_three_to_five_exercises():
    for name in EXERCISE_FILES:
        assert (EXERCISES / f"test_{name}").is_file()
        api = _api(SOLUTIONS / name)
        exercises = [k for k in api if k != "<module>" and "." not in k]
        assert 3 <= len(exercises) <= 7, f"{name}: {exercises}"


@pytest.mark.start_method
@reads("missing_ch3")
def test_a_target_missing_an_earlier_chapter_never_borrows_the_stubs(runs):
    """ex04 imports ex03: from the graded folder only, never from exercises/ behind it."""
    run = runs["missing_ch3"]
    assert run.returncode != 0
    assert "ex03_attention.py is not in the folder being graded" in run.output
    assert "finish chapter 3 first" in run.output
    assert run.report["totals"]["passed"] == 0


def test_snapshot_comparison_tolerates_float32_noise_but_not_real_differences():
    """Another machine's float32 results differ in the last bits: within rtol 1e-4/atol 1e-5 they agree."""
    first_difference = runpy.run_path(str(EXERCISES / "_grader" / "make_snapshots.py"))["first_difference"]
    assert first_difference(0.020968351513147354, 0.020968232303857803) is None  # seen on two machines
    assert first_difference([1.0, {"a": 2.0}], [1.00001, {"a": 2.00001}]) is None
    assert first_difference(0.0209, 0.0219) is not None
    assert first_difference(3, 4) is not None and first_difference("ab", "ac") is not None
    assert first_difference(True, 1.0) is not None
    assert first_difference([1.0], [1.0, 2.0]) is not None


def test_integrity_scan_names_file_line_and_construct(tmp_path):
    """Every construct of the issue is reported at its line; ordinary course code is not."""
    integrity = runpy.run_path(str(EXERCISES / "_grader" / "integrity.py"))
    flagged = {
        "import minigpt": "import minigpt",
        "from solutions import ex01_tokenization": "from solutions import ...",
        "text = open('../solutions/ex01.py').read()": "'../solutions/ex01.py'",
        "data = open('exercises/snapshots/ex07_sampling.json')": "'exercises/snapshots/ex07_sampling.json'",
        "exec('x = 1')": "exec",
        "eval('1')": "eval",
        "compile('1', 'f', 'eval')": "compile",
        "m = __import__('os')": "__import__",
        "import importlib": "import importlib",
        "f.__code__ = g.__code__": ".__code__",
        "import sys\nsys.modules['torch'] = None": ".modules",
        "import torch\ntorch.isclose = None": "assignment to torch.isclose",
        "import builtins": "import builtins",
        "import _grading": "import _grading",
        "setattr(torch, 'allclose', None)": "setattr(torch, ...)",
        "run = getattr(print.__self__, 'ex' + 'ec')": "getattr(..., 'ex' + 'ec')",
        "b = print.__self__": ".__self__",
        "import sys\nm = getattr(sys, 'modules')": "getattr(..., 'modules')",
        "import torch\nlibc = torch.ctypes.CDLL(None)": ".ctypes",
        "data = __loader__.get_data('x')": "__loader__",
        "import _posixsubprocess": "import _posixsubprocess",
        "import operator, sys\nm = operator.attrgetter('mod' + 'ules')(sys)": "attrgetter(..., 'mod' + 'ules')",
        "from operator import attrgetter\nm = attrgetter('modules')": "attrgetter(..., 'modules')",
        "import sys\nm = object.__getattribute__(sys, 'x')": ".__getattribute__",
        "import sys\nm = sys.__dict__": ".__dict__",
        "import functools, torch\nf = functools.reduce(getattr, 'nn.functional'.split('.'), torch)": "getattr",
        "import operator\nlook = operator.attrgetter": "operator.attrgetter",
    }
    for code, construct in flagged.items():
        file = tmp_path / "ex09_probe.py"
        file.write_text('"""Docstrings may mention solutions/ and snapshots/."""\n' + code + "\n")
        findings = integrity["scan"](file)
        assert any(f.construct == construct and f.kind == "integrity" for f in findings), (code, findings)
        assert all(f.file == "ex09_probe.py" and f.line >= 2 for f in findings), findings
    fine = tmp_path / "ex09_fine.py"
    fine.write_text('"""Mentions solutions/ in a docstring."""\nimport math\nimport torch\nimport torch.nn as nn\n\n\n'
                    'class M(nn.Module):\n    """x"""\n\n    def __init__(self):\n        super().__init__()\n'
                    '        setattr(self, "w", nn.Linear(2, 2))\n        for m in self.modules():\n'
                    '            pass\n        self.mask = torch.ones(2)\n')
    assert integrity["scan"](fine) == []
    by_hand = tmp_path / "ex05_training.py"
    by_hand.write_text("import torch\n\n\ndef cross_entropy(logits, targets):\n"
                       "    return (torch.logsumexp(logits, -1) - logits[0]).mean()\n")
    (finding,) = integrity["scan"](by_hand)
    assert finding.kind == "by hand" and finding.line == 5 and "torch.logsumexp" in finding.construct
    assert "do not call F.cross_entropy, F.log_softmax or torch.logsumexp" in finding.why
    by_name = tmp_path / "ex06_evaluation.py"
    by_name.write_text("import operator\nimport torch.nn.functional as F\n\n\ndef dropout(x, p, training=True):\n"
                       "    return getattr(F, 'dropout')(x, p, training) + operator.attrgetter('functional.dropout')\n"
                       "\n\ndef loss_by_position(model):\n    raise ValueError('dropout must be off: call model.eval()')\n")
    findings = integrity["scan"](by_name)
    assert [(f.kind, f.line, f.construct) for f in findings] == [("by hand", 6, "'dropout'"),
                                                                 ("by hand", 6, "'functional.dropout'")], findings


def run_probe(script: str, *args, timeout: float = 120) -> str:
    """Run a probe script in a fresh interpreter (argv: the grader's folder, then `args`); its stdout."""
    proc = subprocess.run([sys.executable, "-c", script, str(EXERCISES), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


GUARD_PROBE = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from _grader import worker as _worker
root = os.path.dirname(sys.argv[1])
guard = _worker._guard_against((os.path.join(root, "solutions"), os.path.join(root, "exercises", "_grader", "snapshots")),
                               root, allow_minigpt=False)
attempts = {
    "double slash read": ("open", ("/" + os.path.join(root, "exercises", "_grader", "snapshots", "ex07_sampling.json"), "r", 0)),
    "/proc/self/root read": ("open", ("/proc/self/root" + os.path.join(root, "solutions", "ex01_tokenization.py"),
                                      "r", 0)),
    "double slash write": ("open", ("/" + os.path.join(root, "exercises", "conftest.py"), "w", 0)),
    "folder for dir_fd": ("open", (root, None, os.O_RDONLY)),
    "ctypes call": ("ctypes.call_function", (0, ())),
    "write outside the course": ("open", ("/tmp/minigpt-grader-probe.pth", "w", 0)),
    "remove outside the course": ("os.remove", ("/tmp/minigpt-grader-probe.pth", -1)),
    "ctypes dlopen": ("ctypes.dlopen", ("libc.so.6",)),
}
for name, (event, args) in attempts.items():
    try:
        guard(event, args)
        print("ALLOWED", name)
    except (PermissionError, ImportError):
        pass
guard("open", (os.path.join(root, "exercises", "ex01_tokenization.py"), "r", 0))  # reading a course file is fine
guard("open", (os.devnull, "w", 0))
'''


def test_the_worker_guard_sees_through_paths_folders_and_ctypes():
    """'//x', /proc/self/root/x and a folder's fd (for dir_fd) reach the same files; ctypes reaches libc."""
    stdout = run_probe(GUARD_PROBE)
    assert "ALLOWED" not in stdout, stdout


SPAWN_PROBE = r'''
import gc, importlib.util, os, sys
sys.path.insert(0, sys.argv[1])
from _grader import worker as _worker
_worker._disarm_fork_exec()
sys.addaudithook(_worker._guard_against((), "/nonexistent-project", allow_minigpt=False))
import _posixsubprocess, subprocess


def from_gc():
    for o in gc.get_objects():
        if type(o).__name__ == "builtin_function_or_method" and o.__name__ == "fork_exec":
            return o
    raise StopIteration


args = ([b"/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), False, True, -1,
        None, None, None, -1, None, False)
ways = {
    "module": lambda: _posixsubprocess.fork_exec,
    "subprocess alias": lambda: subprocess._fork_exec,
    "fresh module": lambda: importlib.util.module_from_spec(importlib.util.find_spec("_posixsubprocess")).fork_exec,
    "gc": from_gc,
}
for name, way in ways.items():
    try:
        pid = way()(*args)
        print("SPAWNED", name, pid)
    except (PermissionError, StopIteration):
        pass
'''


def test_a_worker_cannot_start_a_process_that_outlives_it():
    """_posixsubprocess.fork_exec raises no audit event: a process it starts with setsid escapes every kill."""
    stdout = run_probe(SPAWN_PROBE)
    assert "SPAWNED" not in stdout, stdout


PYC_PROBE = r'''
import importlib.util, py_compile, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from _grader import target as _target
folder = Path(sys.argv[2])
(folder / "ex09_probe.py").write_text("WHAT = 'the source the integrity checks read'\n")
(folder / "other.py").write_text("WHAT = 'smuggled bytecode'\n")
py_compile.compile(str(folder / "other.py"), cfile=importlib.util.cache_from_source(str(folder / "ex09_probe.py")),
                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
_target.use_target(folder)
print(_target.load("ex09_probe").WHAT)
'''


def test_a_learner_file_runs_from_its_source_never_from_a_pyc_beside_it(tmp_path):
    """An unchecked-hash .pyc in __pycache__ would run code the integrity checks never read."""
    stdout = run_probe(PYC_PROBE, tmp_path)
    assert stdout.strip() == "the source the integrity checks read"


ZYGOTE_PROBE = r'''
import os, signal, sys
from pathlib import Path
exercises = Path(sys.argv[1])
sys.path.insert(0, str(exercises))
from _grader.client import Worker, Zygote
zygote = Zygote()
zygote.spawn()
zygote._wait_ready()
os.kill(zygote.proc.pid, signal.SIGKILL)  # as a learner's code can (signal.pidfd_send_signal raises no audit event)
zygote.proc.wait()
zygote.proc.poll = lambda: None  # the grader has not noticed yet
worker = Worker(zygote, exercises.parent / "solutions", "ex06_evaluation", exercises / "test_ex06_evaluation.py")
worker.begin_test(120)
print(worker.run("call", "perplexity", [0.0], {}, "perplexity(0.0)"))
'''


def test_a_killed_zygote_costs_no_test_of_another_chapter():
    stdout = run_probe(ZYGOTE_PROBE, timeout=300)
    assert "'ok': True" in stdout and "1.0" in stdout, stdout


def test_integrity_scan_reads_a_file_as_python_decodes_it(tmp_path):
    """A coding cookie (utf-7 here) must not hide code in what a UTF-8 reader takes for a comment."""
    integrity = runpy.run_path(str(EXERCISES / "_grader" / "integrity.py"))
    file = tmp_path / "ex09_probe.py"
    file.write_bytes(b'# -*- coding: utf-7 -*-\n"""doc"""\n# nothing to see +AAo-exec("X = 1")\n')
    assert any(f.construct == "exec" for f in integrity["scan"](file))


MEMORY_PROBE = r'''
import sys
from pathlib import Path
exercises, folder = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(exercises))
from _grader.client import Worker, shared_zygote
(folder / "ex06_evaluation.py").write_text("import torch\n\n\ndef perplexity(loss):\n"
                                           "    return float(torch.empty(3 * 2**30).numel())  # 12 GiB, never touched\n")
worker = Worker(shared_zygote(), folder, "ex06_evaluation", exercises / "test_ex06_evaluation.py")
worker.begin_test(120)
print(worker.run("call", "perplexity", [0.0], {}, "perplexity(0.0)"))
'''


@pytest.mark.start_method
def test_a_worker_cannot_take_all_the_memory(tmp_path):
    """A runaway allocation in the learner's code is a MemoryError in that call, not a machine out of memory."""
    stdout = run_probe(MEMORY_PROBE, tmp_path, timeout=300)
    assert "'ok': False" in stdout and "can't allocate memory" in stdout, stdout[-2000:]


REACH_PROBE = r'''
import json, sys
from pathlib import Path
exercises, folder = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(exercises))
from _grader.client import Worker, shared_zygote, start_method
(folder / "ex06_evaluation.py").write_text(
    "import sys\n\n\ndef perplexity(loss):\n"
    "    try:\n        import _grader.oracles\n        grader = 'imported'\n"
    "    except ImportError as exc:\n        grader = type(exc).__name__\n"
    "    return repr((sys.path, sorted(n for n in sys.modules if 'grader' in n or n.startswith('test_')), grader))\n")
worker = Worker(shared_zygote(), folder, "ex06_evaluation", exercises / "test_ex06_evaluation.py")
worker.begin_test(120)
answer = worker.run("call", "perplexity", [0.0], {}, "perplexity(0.0)")
print(json.dumps({"start": start_method(), "walls": worker.walls, "value": answer["value"]}))
worker.kill()
'''


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_no_grader_module_is_reachable_from_learner_code(tmp_path, monkeypatch, start):
    """The worker's sys.path holds neither exercises/ nor the graded folder, no _grader module is loaded
    where learner code can take it, and importing one is refused; on Linux the seccomp filter holds."""
    monkeypatch.setenv("MINIGPT_GRADER_START", start)
    result = json.loads(run_probe(REACH_PROBE, tmp_path, timeout=300).strip().splitlines()[-1])
    path, modules, grader = eval(result["value"])  # a repr of plain lists and strings, made by the probe
    assert result["start"] == start
    assert str(EXERCISES) not in path and str(tmp_path) not in path, path
    assert modules == [] and grader == "ImportError", (modules, grader)
    if sys.platform.startswith("linux"):
        assert "seccomp" in result["walls"] and "RLIMIT_AS" in result["walls"], result["walls"]


def test_the_start_method_is_checked(monkeypatch):
    sys.path.insert(0, str(EXERCISES))
    from _grader.client import start_method
    monkeypatch.setenv("MINIGPT_GRADER_START", "forkserver")
    with pytest.raises(ValueError, match="MINIGPT_GRADER_START must be one of fork, spawn, got 'forkserver'"):
        start_method()
    monkeypatch.setenv("MINIGPT_GRADER_START", "Spawn")
    assert start_method() == "spawn"
    monkeypatch.delenv("MINIGPT_GRADER_START")
    assert start_method() == ("fork" if sys.platform.startswith("linux") else "spawn")


def test_unwritten_functions_lists_every_stub_and_a_later_definition_wins(tmp_path):
    sys.path.insert(0, str(EXERCISES))
    from _grader.plugin import unwritten_functions
    (tmp_path / "ex03_attention.py").write_text(_fresh_stub("ex03_attention.py"))
    assert unwritten_functions(tmp_path / "ex03_attention.py")[-4:] == [
        "Head.__init__", "Head.forward", "MultiHeadAttention.__init__", "MultiHeadAttention.forward"]
    file = tmp_path / "ex09_x.py"
    file.write_text("def a():\n    raise NotImplementedError\n\n\ndef b(x):\n    if x:\n"
                    "        raise NotImplementedError('odd x')\n    return 1\n\n\ndef a():\n    return 2\n")
    assert unwritten_functions(file) == []
