"""Grading machinery for ``pytest exercises/``.

Options (see ``pytest exercises/ --help``, section "minigpt grading"):

- no option: grade the learner's files in ``exercises/``;
- ``--solutions``: grade the reference answers in ``solutions/``;
- ``--target DIR``: grade the ``exNN_*.py`` files in another folder;
- ``--grade-report FILE``: also write the results as JSON;
- ``--grade-timeout SECONDS``: time limit per test (default 20).

Each grader test carries points (``@pytest.mark.points(n)``, default 1). At
the end a table shows, per chapter, the points earned, the tests passed and
what is still to do. Failures are rewritten into one line when we know what
they mean: a stub not written yet, a wrong answer caught by a check in
``_grading.py``, a test stopped by the time limit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _grading import GradeFailure  # noqa: E402
from _target import load, use_target  # noqa: E402

DEFAULT_TIMEOUT = 20.0


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minigpt grading")
    group.addoption("--solutions", action="store_true", default=False,
                    help="grade the reference answers in solutions/ instead of exercises/")
    group.addoption("--target", metavar="DIR", default=None,
                    help="grade the exNN_*.py files in DIR (e.g. a learner's copy of exercises/)")
    group.addoption("--grade-report", metavar="FILE", default=None,
                    help="write the grading results as JSON to FILE")
    group.addoption("--grade-timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                    help=f"time limit per grader test in seconds (default {DEFAULT_TIMEOUT:g}; 0 = none)")


@dataclass
class Record:
    """What the grader remembers about one test."""

    nodeid: str
    chapter: str
    test: str
    points: float
    outcome: str = "not run"  # passed | failed | todo | timeout | error
    message: str = ""
    earned: float = 0.0


@dataclass
class GradingState:
    target: Path
    mode: str
    timeout: float
    report_file: str | None
    records: dict[str, Record] = field(default_factory=dict)


STATE = pytest.StashKey[GradingState]()


def _option(config: pytest.Config, name: str, default=None):
    try:
        return config.getoption(name)
    except ValueError:  # this conftest was found late and its options were never registered
        return default


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
    folder = use_target(folder)
    config.stash[STATE] = GradingState(
        target=folder, mode=mode,
        timeout=_option(config, "--grade-timeout", DEFAULT_TIMEOUT) or 0.0,
        report_file=_option(config, "--grade-report"),
    )
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


# --------------------------------------------------------------------------- the `ex` fixture


def exercise_name(test_file: str | Path) -> str:
    """``test_ex02_batching.py`` -> ``ex02_batching``."""
    return Path(test_file).stem.removeprefix("test_")


@pytest.fixture
def ex(request: pytest.FixtureRequest):
    """The module under test, imported from the target folder."""
    state = _state(request.config)
    name = exercise_name(request.module.__file__)
    file = state.target / f"{name}.py"
    if not file.is_file():
        pytest.fail(f"{display_path(file)} is missing: copy it from exercises/ and write the functions", pytrace=False)
    try:
        return load(name)
    except (NotImplementedError, GradeTimeout):
        raise
    except Exception as exc:  # a syntax error, a bad import, ...
        where = _last_target_frame(exc.__traceback__, state.target)
        line = f", line {where.tb_lineno}" if where else ""
        pytest.fail(f"could not import {display_path(file)}{line}: {type(exc).__name__}: {exc}", pytrace=False)


# --------------------------------------------------------------------------- time limit


class GradeTimeout(BaseException):
    """Raised inside a test that ran past the time limit.

    A BaseException, so that a learner's ``except Exception:`` inside the
    endless loop cannot swallow it.
    """


@contextmanager
def _time_limit(seconds: float):
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise GradeTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Without SIGALRM (Windows) fall back on pytest-timeout's thread method when it is installed.
    state = _state(config)
    if state and state.timeout > 0 and not hasattr(signal, "setitimer") and config.pluginmanager.hasplugin("timeout"):
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(state.timeout))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    state = _state(item.config)
    with _time_limit(state.timeout if state else 0):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    state = _state(item.config)
    with _time_limit(state.timeout if state else 0):
        return (yield)


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


def _last_target_frame(tb, target: Path):
    """The innermost traceback entry that lies in a file of the target folder."""
    found = None
    while tb is not None:
        file = Path(tb.tb_frame.f_code.co_filename)
        if file.parent == target:
            found = tb
        tb = tb.tb_next
    return found


def _innermost(tb):
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _function_name(frame) -> str:
    code = frame.f_code
    qualname = getattr(code, "co_qualname", None)  # Python 3.11+
    if qualname:
        return qualname.replace(".<locals>", "")
    owner = frame.f_locals.get("self")
    return f"{type(owner).__name__}.{code.co_name}" if owner is not None else code.co_name


def explain(excinfo: pytest.ExceptionInfo, state: GradingState) -> tuple[str, str]:
    """Classify a failure: (outcome, one-line message)."""
    exc, tb = excinfo.value, excinfo.tb
    if isinstance(exc, NotImplementedError):
        raised_at = _innermost(tb)
        file = Path(raised_at.tb_frame.f_code.co_filename)
        if file.parent == state.target and file.name.startswith("ex"):
            name = _function_name(raised_at.tb_frame)
            return "todo", f"not implemented yet: write `{name}` in {display_path(file)}"
    if isinstance(exc, GradeTimeout) or (isinstance(exc, pytest.fail.Exception) and str(exc).startswith("Timeout")):
        where = _last_target_frame(tb, state.target)
        inside = ""
        if where is not None:
            inside = (f" while running `{_function_name(where.tb_frame)}` "
                      f"({display_path(where.tb_frame.f_code.co_filename)}, line {where.tb_lineno})")
        return "timeout", (f"stopped after {state.timeout:g} s{inside}: is there a loop that never ends, "
                           f"e.g. a while loop whose condition never changes?")
    if isinstance(exc, GradeFailure):
        return "failed", str(exc)
    if isinstance(exc, pytest.fail.Exception):
        return "failed", str(exc)
    where = _last_target_frame(tb, state.target)
    if where is not None:
        return "error", (f"your code raised {type(exc).__name__} in `{_function_name(where.tb_frame)}` "
                         f"({display_path(where.tb_frame.f_code.co_filename)}, line {where.tb_lineno}): {exc}")
    return "error", f"{type(exc).__name__}: {exc}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    state = _state(item.config)
    if state is None or not item.nodeid.split("::")[0].endswith(".py"):
        return report
    record = state.records.get(item.nodeid)
    if record is None:
        marker = item.get_closest_marker("points")
        points = float(marker.args[0]) if marker else 1.0
        record = Record(nodeid=item.nodeid, chapter=exercise_name(item.path), test=item.name, points=points)
        state.records[item.nodeid] = record
    if report.passed and call.when == "call":
        record.outcome, record.earned, record.message = "passed", record.points, ""
    elif report.failed and record.outcome in ("not run", "passed"):
        outcome, message = "failed", ""
        if call.excinfo is not None:
            outcome, message = explain(call.excinfo, state)
            if outcome != "error":
                report.longrepr = FriendlyRepr(message, str(item.path), 0)
        record.outcome, record.message, record.earned = outcome, message, 0.0
    elif report.skipped and record.outcome == "not run":
        record.outcome = "skipped"
    return report


# --------------------------------------------------------------------------- score table and report


def _chapter_label(chapter: str) -> str:
    number, _, topic = chapter.removeprefix("ex").partition("_")
    return f"{number} {topic}"


def _todo_names(records: list[Record]) -> list[str]:
    """The functions still to write, naming the file when it belongs to another chapter."""
    names = []
    for r in records:
        if r.outcome == "todo":
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
        chapters[chapter] = {
            "points": sum(r.earned for r in recs),
            "max_points": sum(r.points for r in recs),
            "tests": len(recs),
            "passed": sum(r.outcome == "passed" for r in recs),
            "failed": sum(r.outcome in ("failed", "error", "timeout") for r in recs),
            "todo": sum(r.outcome == "todo" for r in recs),
            "still_to_write": _todo_names(recs),
        }
    totals = {key: sum(c[key] for c in chapters.values())
              for key in ("points", "max_points", "tests", "passed", "failed", "todo")}
    return {
        "target": str(state.target),
        "mode": state.mode,
        "timeout_s": state.timeout,
        "totals": totals,
        "chapters": chapters,
        "tests": [asdict(r) for r in state.records.values()],
    }


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
    for chapter, c in summary["chapters"].items():
        todo = []
        if c["still_to_write"]:
            todo.append("write " + ", ".join(c["still_to_write"]))
        if c["failed"]:
            todo.append(f"fix {c['failed']} failing test{'s' if c['failed'] > 1 else ''}")
        line = (f"{_chapter_label(chapter):<16} {_fmt_points(c['points']) + '/' + _fmt_points(c['max_points']):>9} "
                f"{str(c['passed']) + '/' + str(c['tests']):>8}  {'; '.join(todo) or 'done'}")
        tr.write_line(line, green=not todo, red=bool(todo) and c["passed"] == 0, yellow=bool(todo) and c["passed"] > 0)
    t = summary["totals"]
    tr.write_line(f"{'total':<16} {_fmt_points(t['points']) + '/' + _fmt_points(t['max_points']):>9} "
                  f"{str(t['passed']) + '/' + str(t['tests']):>8}", bold=True)
    if state.report_file:
        tr.write_line(f"grade report written to {state.report_file}")


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    state = _state(session.config)
    if state is None or not state.report_file:
        return
    summary = summarise(state)
    summary["exit_status"] = int(exitstatus)
    path = Path(state.report_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
