"""Grading machinery for ``pytest exercises/``.

Options (see ``pytest exercises/ --help``, section "minigpt grading"):

- no option: grade the learner's files in ``exercises/``;
- ``--solutions``: grade the reference answers in ``solutions/``;
- ``--target DIR``: grade the ``exNN_*.py`` files in another folder;
- ``--grade-report FILE``: also write the results as JSON;
- ``--grade-timeout SECONDS``: time limit per test (default 20);
- ``--strict``: an integrity finding costs the chapter its points (instructors);
- ``--fresh-cases [SEED]``: draw the seeded inputs anew and compute their
  expected values with ``solutions/`` (instructors).

The learner's code never runs in this process. Each chapter's file is
imported by a worker process (``client.py``, ``worker.py``) that the tests
drive through the ``ex`` fixture; only plain data comes back, and the worker
is killed at the time limit. This process holds the assertions, the points,
the score table and the report.

Each grader test carries points (``@pytest.mark.points(n)``, default 1). The
catalogue of tests (and so ``max_points``) is read from the grader files, so
a run of some tests (``-k``, ``-x``, one file) still counts the others, as
"not run".
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parents[1]  # exercises/: the learner's files and the graders
ROOT = HERE.parent

from _grader.cases import CASE_SEEDS  # noqa: E402
from _grader.client import BOOT, Outcome, Worker, Zygote, shared_zygote, start_method  # noqa: E402
from _grader.sandbox import protect_grading_process  # noqa: E402
from _grader.watchdog import Watchdog  # noqa: E402
from _grader.grading import GradeFailure, SNAPSHOTS  # noqa: E402
from _grader.integrity import RULES, Finding, broken_rules, scan_target  # noqa: E402
from _grader.learner import Learner  # noqa: E402

DEFAULT_TIMEOUT = 20.0
DEFAULT_BUDGET = 900.0  # seconds for one learner's whole run: a class of 200 costs at most 50 hours, not 93
FAILED = ("failed", "error", "timeout", "crashed")


# --------------------------------------------------------------------------- options


IGNORED_FILES: list[str] = []  # conftest.py files of a learner's folder that pytest wanted to load here


def only_the_graders_conftest(pluginmanager: pytest.PytestPluginManager) -> None:
    """Keep a learner folder's ``conftest.py`` out of the grading process.

    pytest loads a ``conftest.py`` from every folder named on its command line, and ``--target DIR``
    names one: the learner's ``conftest.py`` would run here (and put DIR first on ``sys.path``, so its
    ``json.py`` or ``torch.py`` would shadow the real ones). This conftest is loaded first (``exercises/``
    comes before the options), and from then on a ``conftest.py`` beside exercise files, or outside
    the project, is recorded in ``IGNORED_FILES`` and replaced by an empty module.
    """
    original = pluginmanager._importconftest
    if getattr(original, "minigpt_guard", False):
        return

    def guarded(conftestpath, *args, **kwargs):
        path = Path(conftestpath).resolve()
        outside = not path.is_relative_to(ROOT)
        beside_exercises = path.parent != HERE and any(path.parent.glob("ex[0-9][0-9]_*.py"))
        if path != HERE / "conftest.py" and (outside or beside_exercises):
            IGNORED_FILES.append(str(path))
            module = ModuleType(f"ignored_conftest_{len(IGNORED_FILES)}")
            module.__file__ = str(path)
            return module
        return original(conftestpath, *args, **kwargs)

    guarded.minigpt_guard = True
    pluginmanager._importconftest = guarded


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    only_the_graders_conftest(pluginmanager)
    group = parser.getgroup("minigpt grading")
    group.addoption("--solutions", action="store_true", default=False,
                    help="grade the reference answers in solutions/ instead of exercises/")
    group.addoption("--target", metavar="DIR", default=None,
                    help="grade the exNN_*.py files in DIR (e.g. a learner's copy of exercises/)")
    group.addoption("--grade-report", metavar="FILE", default=None,
                    help="write the grading results as JSON to FILE (an old FILE is removed first)")
    group.addoption("--grade-timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                    help=f"time limit per grader test in seconds (default {DEFAULT_TIMEOUT:g}; 0 = none)")
    group.addoption("--grade-budget", metavar="SECONDS", type=float, default=DEFAULT_BUDGET,
                    help=f"time budget of the whole run (the learner's code, all chapters; default "
                         f"{DEFAULT_BUDGET:g}; 0 = none): once spent, the tests left fail as 'timeout'")
    # --strict is pytest's own flag (strict markers, config, ...); the grader reads it too: with it,
    # a chapter whose file fails an integrity check earns 0 (without it, the learner sees a warning).
    group.addoption("--fresh-cases", metavar="SEED", nargs="?", type=int, const=-1, default=None,
                    help="draw the seeded inputs anew (from SEED, or a random one) and compute their expected "
                         "values with solutions/ instead of the committed snapshots")


@dataclass
class Record:
    """What the grader remembers about one test of the catalogue."""

    nodeid: str
    chapter: str
    test: str
    points: float
    outcome: str = "not run"  # passed | failed | todo | timeout | crashed | error | not run
    message: str = ""
    earned: float = 0.0


@dataclass
class GradingState:
    target: Path
    mode: str
    timeout: float
    report_file: str | None
    strict: bool
    fresh_seed: int | None
    selection: dict
    records: dict[str, Record] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    reference_workers: dict[str, Worker] = field(default_factory=dict)
    zygote: Zygote = field(default_factory=shared_zygote)
    start: str = "fork"  # how workers start: fork (from the zygote) or spawn (a fresh interpreter each)
    chapters_to_run: list[str] = field(default_factory=list)  # the chapters of the selected tests
    budget: float = DEFAULT_BUDGET  # seconds for the whole run (0: none)
    run_ends: float = float("inf")  # time.monotonic() when the budget is spent (its clock starts at the first test)
    watchdog: Watchdog = field(default_factory=Watchdog)
    snapshots: dict[str, dict] = field(default_factory=dict)


STATE = pytest.StashKey[GradingState]()


def _option(config: pytest.Config, name: str, default=None):
    try:
        return config.getoption(name)
    except ValueError:  # this conftest was found late and its options were never registered
        return default


def exercise_name(test_file: str | Path) -> str:
    """``test_ex02_batching.py`` -> ``ex02_batching``."""
    return Path(test_file).stem.removeprefix("test_")


def catalogue() -> list[tuple[str, str, float]]:
    """Every grader test, read from the grader files: (chapter, test, points)."""
    tests = []
    for file in sorted(HERE.glob("test_ex[0-9][0-9]_*.py")):
        for node in ast.parse(file.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                points = 1.0
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("mark.points") and dec.args
                            and isinstance(dec.args[0], ast.Constant)):
                        points = float(dec.args[0].value)
                tests.append((exercise_name(file), node.name, points))
    return tests


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): how many points a grader test is worth (default 1)")
    solutions, target = _option(config, "--solutions", False), _option(config, "--target")
    if solutions and target:
        raise pytest.UsageError("use either --solutions or --target DIR, not both")
    if solutions:
        folder, mode = ROOT / "solutions", "solutions"
    elif target:
        folder, mode = Path(target), "target"
    else:
        folder, mode = HERE, "exercises"
    if not folder.is_dir():
        raise pytest.UsageError(f"--target: {folder} is not a folder")
    timeout = _option(config, "--grade-timeout", DEFAULT_TIMEOUT) or 0.0
    if not math.isfinite(timeout) or timeout < 0:
        raise pytest.UsageError(f"--grade-timeout must be a number of seconds >= 0 (0: no limit), got {timeout:g}")
    budget = _option(config, "--grade-budget", DEFAULT_BUDGET) or 0.0
    if not math.isfinite(budget) or budget < 0:
        raise pytest.UsageError(f"--grade-budget must be a number of seconds >= 0 (0: no budget), got {budget:g}")
    fresh = _option(config, "--fresh-cases")
    if fresh == -1:
        fresh = random.SystemRandom().randrange(1, 10**6)
    if fresh is not None and not 0 <= fresh < 2**40:
        raise pytest.UsageError(f"--fresh-cases SEED must be an integer from 0 to 2**40, got {fresh}")
    if fresh is not None and not (ROOT / "solutions").is_dir():
        raise pytest.UsageError("--fresh-cases needs the solutions/ folder (it computes the expected values)")
    try:
        start = start_method()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    report_file = _option(config, "--grade-report")
    if report_file:
        Path(report_file).unlink(missing_ok=True)  # a stale report must never pass for this run's
    state = GradingState(
        target=folder.resolve(), mode=mode, timeout=timeout, report_file=report_file,
        strict=bool(_option(config, "--strict", False)), fresh_seed=fresh,
        selection={"args": [str(a) for a in config.args], "keyword": config.option.keyword or "",
                   "markexpr": config.option.markexpr or "", "maxfail": int(getattr(config.option, "maxfail", 0) or 0)},
        findings=scan_target(folder.resolve()), start=start, budget=budget,
    )
    for chapter, test, points in catalogue():
        key = f"exercises/test_{chapter}.py::{test}"
        state.records[key] = Record(nodeid=key, chapter=chapter, test=test, points=points)
    config.stash[STATE] = state
    if not (config.option.help or config.option.collectonly):
        protect_grading_process()
        state.watchdog.start(budget, BOOT, str(HERE))
        if start == "fork":
            state.zygote.spawn()  # torch loads in the zygote while pytest collects the graders
    if getattr(config.option, "tbstyle", "auto") == "auto":
        config.option.tbstyle = "short"


def _state(config: pytest.Config) -> GradingState | None:
    return config.stash.get(STATE, None)


def display_path(path: str | Path) -> str:
    """``exercises/ex02_batching.py`` when under the current folder, else the full path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _record_for(state: GradingState, item: pytest.Item) -> Record | None:
    return state.records.get(f"exercises/test_{exercise_name(item.path)}.py::{item.name}")


# --------------------------------------------------------------------------- workers and the `ex` fixture


def _worker(state: GradingState, chapter: str) -> Worker:
    worker = state.workers.get(chapter)
    if worker is None:
        worker = state.workers[chapter] = Worker(state.zygote, state.target, chapter, HERE / f"test_{chapter}.py",
                                                 start=state.start, watchdog=state.watchdog)
        worker.start()
        later = [c for c in state.chapters_to_run if c > chapter and c not in state.workers]
        if state.start == "spawn" and later and (state.target / f"{later[0]}.py").is_file():
            # a fresh interpreter takes seconds to import torch: the next chapter's starts while this one runs
            state.workers[later[0]] = Worker(state.zygote, state.target, later[0], HERE / f"test_{later[0]}.py",
                                             start=state.start, watchdog=state.watchdog)
            state.workers[later[0]].start()
    return worker


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    state = _state(config)
    if state is not None:
        state.chapters_to_run = sorted({exercise_name(item.path) for item in items})


def _seed_of(state: GradingState, case: str) -> int:
    default = CASE_SEEDS[case]
    return default if state.fresh_seed is None else state.fresh_seed * 1000 + default


def _expected_cases(state: GradingState, chapter: str):
    def expected(case: str, seed: int):
        if state.fresh_seed is None:
            if chapter not in state.snapshots:
                state.snapshots[chapter] = json.loads((SNAPSHOTS / f"{chapter}.json").read_text(encoding="utf-8"))
            return state.snapshots[chapter][case]
        worker = state.reference_workers.get(chapter)
        if worker is None:
            worker = state.reference_workers[chapter] = Worker(state.zygote, ROOT / "solutions", chapter,
                                                               HERE / f"test_{chapter}.py", start=state.start,
                                                               watchdog=state.watchdog)
        worker.begin_test(max(state.timeout, 120.0))
        answer = worker.run("case", case, [seed], {}, f"computing the reference for {case!r} with solutions/")
        if not answer["ok"]:
            raise RuntimeError(f"solutions/{chapter}.py failed on the fresh case {case!r}: {answer['error']}")
        return answer["value"]
    return expected


@pytest.fixture
def ex(request: pytest.FixtureRequest) -> Learner:
    """The learner's module for this test's chapter, run in the chapter's worker process."""
    state = _state(request.config)
    chapter = exercise_name(request.module.__file__)
    file = state.target / f"{chapter}.py"
    if not file.is_file():
        pytest.fail(f"{display_path(file)} is missing: copy it from exercises/ and write the functions", pytrace=False)
    broken = broken_rules(state.findings.get(chapter, []), request.node.name)
    if broken:
        raise GradeFailure(f"rule broken: {broken[0].why}; found {broken[0].construct} "
                           f"({broken[0].file}, line {broken[0].line})")
    worker = _worker(state, chapter)
    if state.budget > 0 and state.run_ends == float("inf"):
        state.run_ends = time.monotonic() + state.budget
    worker.begin_test(state.timeout, state.run_ends)
    rule = next((r for r in RULES if r.file == f"{chapter}.py" and request.node.name in r.tests), None)
    return Learner(worker, display_path, _expected_cases(state, chapter), lambda case: _seed_of(state, case), rule)


# --------------------------------------------------------------------------- friendly failures


class FriendlyRepr:
    """A failure shown as one plain line instead of a traceback."""

    def __init__(self, message: str, path: str = "", lineno: int = 0) -> None:
        self.message = message
        self.reprcrash = SimpleNamespace(message=message, path=path, lineno=lineno)

    def toterminal(self, tw) -> None:
        for line in self.message.splitlines():
            tw.line(line, red=True, bold=True)

    def __str__(self) -> str:
        return self.message


def explain(excinfo: pytest.ExceptionInfo) -> tuple[str, str, bool]:
    """Classify a failure: (outcome, one-line message, whether the message replaces the traceback)."""
    exc = excinfo.value
    if isinstance(exc, Outcome):
        return exc.outcome, exc.message, True
    if isinstance(exc, (GradeFailure, pytest.fail.Exception)):
        return "failed", str(exc), True
    # An error in the grader's own code (or in what it made of an odd answer): keep the traceback.
    return "error", f"{type(exc).__name__}: {exc}", False


def _printed(state: GradingState, chapter: str) -> str:
    """What the learner's code printed during the current test (bounded), from the chapter's worker."""
    worker = state.workers.get(chapter)
    return worker.printed() if worker is not None else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    state = _state(item.config)
    record = _record_for(state, item) if state else None
    if record is None:
        return report
    if report.passed and call.when == "call":
        record.outcome, record.earned, record.message = "passed", record.points, ""
    elif report.failed and record.outcome in ("not run", "passed"):
        outcome, message = "failed", ""
        if call.excinfo is not None:
            outcome, message, friendly = explain(call.excinfo)
            printed = _printed(state, record.chapter)
            if printed:
                message += "\nyour code printed (last lines):\n" + "\n".join("  | " + ln for ln in printed.splitlines())
            if friendly:
                report.longrepr = FriendlyRepr(message, str(item.path), 0)
            elif printed:
                report.sections.append(("your code printed", printed))
        record.outcome, record.message, record.earned = outcome, message, 0.0
    elif report.skipped and record.outcome == "not run":
        record.outcome = "skipped"
    if call.when == "teardown":
        _write_report(state, exitstatus=None)  # a report exists whatever happens next
    return report


# --------------------------------------------------------------------------- score table and report


def _chapter_label(chapter: str) -> str:
    number, _, topic = chapter.removeprefix("ex").partition("_")
    return f"{number} {topic}"


def _raises_not_implemented(statement: ast.stmt) -> bool:
    exc = statement.exc if isinstance(statement, ast.Raise) else None
    exc = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def unwritten_functions(file: Path) -> list[str]:
    """Every function and method of a learner's file whose body still raises NotImplementedError (in the
    body itself, not under an ``if``), in file order: ``Head.__init__``, ``Head.forward``, ..."""
    try:
        tree = ast.parse(file.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    unwritten: dict[str, bool] = {}  # name -> still a stub; a later def of the same name replaces the earlier

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                unwritten[prefix + node.name] = any(_raises_not_implemented(s) for s in node.body)
    visit(tree.body, "")
    return [name for name, stub in unwritten.items() if stub]


def _todo_names(records: list[Record], target: Path | None = None) -> list[str]:
    """The functions still to write: every unwritten one of the chapter's file, then those of other
    chapters' files its tests ran into (naming the file)."""
    names = unwritten_functions(target / f"{records[0].chapter}.py") if target is not None and records else []
    for r in records:
        if r.outcome == "todo" and "`" in r.message:
            name = r.message.split("`")[1]
            file = Path(r.message.rsplit(" in ", 1)[-1])
            if file.stem != r.chapter:
                name = f"{name} (in {file.name})"
            if name not in names:
                names.append(name)
    return names


def summarise(state: GradingState) -> dict:
    chapters: dict[str, dict] = {}
    by_chapter: dict[str, list[Record]] = {}
    for record in state.records.values():
        by_chapter.setdefault(record.chapter, []).append(record)
    for chapter in sorted(by_chapter):
        recs = by_chapter[chapter]
        findings = [f for f in state.findings.get(chapter, []) if f.kind == "integrity"]
        zeroed = state.strict and bool(findings)
        chapters[chapter] = {
            "points": 0.0 if zeroed else sum(r.earned for r in recs),
            "max_points": sum(r.points for r in recs),
            "tests": len(recs),
            "passed": sum(r.outcome == "passed" for r in recs),
            "failed": sum(r.outcome in FAILED for r in recs),
            "todo": sum(r.outcome == "todo" for r in recs),
            "not_run": sum(r.outcome in ("not run", "skipped") for r in recs),
            "still_to_write": _todo_names(recs, state.target),
            "integrity": [f.as_dict() for f in findings],
            "zeroed_by_integrity": zeroed,
        }
    totals = {key: sum(c[key] for c in chapters.values())
              for key in ("points", "max_points", "tests", "passed", "failed", "todo", "not_run")}
    return {
        "target": str(state.target),
        "mode": state.mode,
        "strict": state.strict,
        "fresh_cases_seed": state.fresh_seed,
        "timeout_s": state.timeout,
        "budget_s": state.budget,
        "worker_start": state.start,
        "platform": sys.platform,
        "selection": state.selection,
        "totals": totals,
        "chapters": chapters,
        "not_run": [r.nodeid for r in state.records.values() if r.outcome in ("not run", "skipped")],
        "ignored_files": list(IGNORED_FILES),
        "tests": [asdict(r) for r in state.records.values()],
    }


def _write_report(state: GradingState, exitstatus) -> None:
    if not state.report_file:
        return
    summary = summarise(state)
    summary["exit_status"] = None if exitstatus is None else int(exitstatus)
    summary["complete"] = exitstatus is not None
    path = Path(state.report_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _fmt_points(x: float) -> str:
    return f"{x:g}"


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    state = _state(config)
    if state is None or not state.records:
        return
    summary = summarise(state)
    tr = terminalreporter
    tr.write_sep("=", f"minigpt exercises: score for {display_path(state.target)}/")
    tr.write_line(f"{'chapter':<16} {'points':>9} {'passed':>8}  still to do")
    skipped_chapters = []
    for chapter, c in summary["chapters"].items():
        if c["not_run"] == c["tests"]:
            skipped_chapters.append(chapter[2:4])
            continue
        todo = []
        if c["zeroed_by_integrity"]:
            todo.append("0 points: integrity check (--strict)")
        if c["still_to_write"]:
            todo.append("write " + ", ".join(c["still_to_write"]))
        if c["failed"]:
            todo.append(f"fix {c['failed']} failing test{'s' if c['failed'] > 1 else ''}")
        if c["not_run"]:
            todo.append(f"{c['not_run']} not run")
        line = (f"{_chapter_label(chapter):<16} {_fmt_points(c['points']) + '/' + _fmt_points(c['max_points']):>9} "
                f"{str(c['passed']) + '/' + str(c['tests']):>8}  {'; '.join(todo) or 'done'}")
        tr.write_line(line, green=not todo, red=bool(todo) and c["passed"] == 0, yellow=bool(todo) and c["passed"] > 0)
    t = summary["totals"]
    tr.write_line(f"{'total':<16} {_fmt_points(t['points']) + '/' + _fmt_points(t['max_points']):>9} "
                  f"{str(t['passed']) + '/' + str(t['tests']):>8}", bold=True)
    if skipped_chapters:
        tr.write_line(f"not run in this session: chapter{'s' if len(skipped_chapters) > 1 else ''} "
                      f"{', '.join(skipped_chapters)} (they count in the total as not earned)")
    for ignored in IGNORED_FILES:
        tr.write_line(f"ignored (never run): {ignored}: only the exNN_*.py files of a graded folder count")
    warned = {f.text() for c in state.findings.values() for f in c if f.kind == "integrity"}
    for text in sorted(warned):
        tr.write_line(f"integrity {'(chapter earns 0)' if state.strict else 'warning'}: {text}", red=True)
    if state.fresh_seed is not None:
        tr.write_line(f"fresh cases drawn with --fresh-cases {state.fresh_seed}")
    if state.report_file:
        tr.write_line(f"grade report written to {state.report_file}")


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    state = _state(session.config)
    if state is None:
        return
    for worker in list(state.workers.values()) + list(state.reference_workers.values()):
        worker.kill()
    state.watchdog.stop()
    _write_report(state, exitstatus)
