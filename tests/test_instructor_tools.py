"""Tests of the instructors' tools: the CI workflow, the Gradescope autograder and the class gradebook.

- The workflow (.github/workflows/) validates against GitHub's workflow schema (check-jsonschema's
  vendored copy, offline), and the commands of its Linux jobs are run here as written (see
  ``test_the_linux_jobs_commands_run`` for which run in full and which are collected).
- ``make gradescope`` builds dist/autograder.zip; its ``run_autograder`` runs against a stand-in for
  /autograder (MINIGPT_AUTOGRADER_ROOT) on solutions/, the stubs and a hostile submission, and
  ``results.json`` is checked field by field against Gradescope's specification.
- ``make gradebook`` grades a class of learners (right totals, a crash, an endless loop and a hang
  each costing only their learner), and a rerun grades only what changed.

Grading runs are real pytest sessions in subprocesses, as an instructor runs them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES, SOLUTIONS = ROOT / "exercises", ROOT / "solutions"
TOOLS = EXERCISES / "_grader"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHAPTERS = sorted(p.stem.removeprefix("test_") for p in EXERCISES.glob("test_ex[0-9][0-9]_*.py"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VENV_BIN = Path(sys.executable).parent
posix_only = pytest.mark.skipif(os.name == "nt", reason="run_autograder is a bash script for Gradescope's Linux")

# Gradescope's results.json fields (https://gradescope-autograders.readthedocs.io/en/latest/specs/).
TOP_FIELDS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
              "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_FIELDS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
               "tags", "visibility", "extra_data"}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
OUTPUT_LIMIT = 500  # characters of one test's output (gradescope.py's one_line)


def _run(command: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True, timeout=timeout,
                          **kwargs)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict[str, float]:
    """Every grader test and its points, as the grader itself lists them (``--collect-only``)."""
    report = tmp_path_factory.mktemp("catalogue") / "report.json"
    proc = _run([sys.executable, "-m", "pytest", "exercises/", "--collect-only", "-q", "-p", "no:cacheprovider",
                 "--grade-report", str(report)])
    assert report.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return {f"{t['chapter']}: {t['test']}": float(t["points"]) for t in json.loads(report.read_text())["tests"]}


def _chapter_max(catalogue: dict[str, float], chapter: str) -> float:
    return sum(p for name, p in catalogue.items() if name.startswith(chapter + ":"))


# --------------------------------------------------------------------------- submissions


def _copy_chapters(source: Path, into: Path, skip=()) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for chapter in CHAPTERS:
        if chapter not in skip:
            shutil.copy(source / f"{chapter}.py", into / f"{chapter}.py")
    return into


def _append(file: Path, code: str) -> None:
    file.write_text(file.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


EXEC_TRICK = 'exec("_unused = 1")  # harmless at run time, but --strict forbids exec'
ISCLOSE_TRICK = "torch.isclose = lambda *args, **kwargs: torch.ones(1, dtype=torch.bool)"
HUGE_ERROR = 'def build_vocab(text):\n    raise ValueError("A" * 100_000 + "\\n" * 10 + "B" * 100)'


def _hostile(folder: Path) -> Path:
    """Solutions, tricked and broken: exec in ex06, a patched torch.isclose in ex07, ex05 a link to
    solutions/, ex08 under a near-miss name, a huge error in ex01, and a conftest.py and torch.py
    beside them that would break the grading run if they were ever imported."""
    _copy_chapters(SOLUTIONS, folder, skip=("ex05_training", "ex08_modern"))
    _append(folder / "ex06_evaluation.py", EXEC_TRICK)
    _append(folder / "ex07_sampling.py", ISCLOSE_TRICK)
    _append(folder / "ex01_tokenization.py", HUGE_ERROR)
    (folder / "ex05_training.py").symlink_to(SOLUTIONS / "ex05_training.py")
    shutil.copy(SOLUTIONS / "ex08_modern.py", folder / "ex08_modrn.py")
    (folder / "conftest.py").write_text('raise SystemExit("a learner conftest.py was imported")\n')
    (folder / "torch.py").write_text('raise SystemExit("a learner torch.py was imported")\n')
    return folder


# --------------------------------------------------------------------------- the workflow


def _load_yaml(path: Path) -> dict:
    from ruamel.yaml import YAML  # check-jsonschema's own YAML reader (YAML 1.2: `on` stays a string)
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def _jobs() -> dict[str, dict]:
    jobs = {}
    for path in WORKFLOWS:
        workflow = _load_yaml(path)
        for name, job in workflow["jobs"].items():
            job = dict(job, env={**workflow.get("env", {}), **job.get("env", {})})
            jobs[f"{path.name}:{name}"] = job
    return jobs


def _runs_on(job: dict) -> list[str]:
    runs_on = job["runs-on"]
    if isinstance(runs_on, str) and runs_on.startswith("${{ matrix."):
        return list(job["strategy"]["matrix"][runs_on.removeprefix("${{ matrix.").removesuffix(" }}").strip()])
    return [runs_on] if isinstance(runs_on, str) else list(runs_on)


INSTALLS = ("pip install", "-m venv")  # what a job runs to set itself up (needs the network)


def _checks(job: dict) -> list[str]:
    """The commands of a job's steps that check something: every line of a step that installs nothing."""
    return [line.strip() for step in job["steps"] if "run" in step and not any(i in step["run"] for i in INSTALLS)
            for line in step["run"].splitlines() if line.strip()]


def test_the_workflow_validates_against_githubs_schema(tmp_path):
    assert WORKFLOWS, "no workflow in .github/workflows/"
    check = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    proc = _run(check + [str(p) for p in WORKFLOWS], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The validator can fail: the same file with a job that says where to run by a wrong key.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOWS[0].read_text(encoding="utf-8").replace("runs-on:", "run-on:", 1))
    proc = _run(check + [str(broken)], timeout=120)
    assert proc.returncode != 0 and "runs-on" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_workflow_covers_linux_macos_and_windows():
    jobs = _jobs()
    linux = {name: job for name, job in jobs.items() if all(os_.startswith("ubuntu") for os_ in _runs_on(job))}
    # Linux: the README's test command (what .ci/run runs too).
    readme, ci = (ROOT / "README.md").read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "\nmake test\n" in ci
    assert any(c.split()[:2] == ["make", "test"] for job in linux.values() for c in _checks(job))
    # Linux with spawned workers: the grader's self-tests and the graders on solutions/.
    spawn = [job for job in linux.values() if job["env"].get("MINIGPT_GRADER_START") == "spawn"]
    assert spawn and {"python -m pytest tests/test_grader.py", "python -m pytest exercises/ --solutions"} <= set(
        _checks(spawn[0]))
    # macOS and Windows: the same two commands, the grader choosing how to start its workers.
    others = {os_: job for job in jobs.values() for os_ in _runs_on(job) if not os_.startswith("ubuntu")}
    assert {o.split("-")[0] for o in others} == {"macos", "windows"}
    for os_, job in others.items():
        assert {"python -m pytest tests/test_grader.py", "python -m pytest exercises/ --solutions"} <= set(_checks(job))
        assert "MINIGPT_GRADER_START" not in job["env"] and all(
            "MINIGPT_GRADER_START" not in step.get("env", {}) for step in job["steps"]), os_
    # Every job sets up the oldest Python the project supports; CPU torch as pyproject.toml requires it.
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    torch = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    for name, job in jobs.items():
        versions = [s["with"]["python-version"] for s in job["steps"] if "setup-python" in s.get("uses", "")]
        assert versions == [floor], name
        if "TORCH_FROM_PYPROJECT" in job["env"]:
            proc = _run([sys.executable, "-c", job["env"]["TORCH_FROM_PYPROJECT"]], timeout=60)
            assert proc.stdout.strip() == torch, (name, proc.stdout, proc.stderr)


def _expand_make(command: str, env: dict) -> list[str]:
    """The commands ``make`` runs for ``command`` (``make -n``), the venv's set-up stamps taken as made."""
    args = command.split()
    assert args[0] == "make"
    env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under CI's make
    proc = _run(["make", "-n", "--no-print-directory", "-o", ".venv/bin/python", "-o", ".venv/.base",
                 "-o", ".venv/.dev", *args[1:]], env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_the_linux_jobs_commands_run():
    """Each check command of the Linux jobs, as written, with the job's environment, collected.

    ``make ...`` is expanded with ``make -n`` into the commands make runs. Each of those, and each
    command written in the jobs, then runs here with ``--collect-only`` appended: what is proved is
    that the command, its paths, its options and its environment work and find tests. The tests
    themselves run in full elsewhere in ``make test``: ``tests/`` is this suite, ``chapters/`` the
    notebooks, and ``pytest exercises/ --solutions`` (fork, and spawn in the spawn job) is the
    ``solutions`` run of tests/test_grader.py, where every grader test must pass, run with both start
    methods (``-m start_method``). Running the graders here too only repeated those runs.
    """
    jobs = {n: j for n, j in _jobs().items() if all(o.startswith("ubuntu") for o in _runs_on(j))}
    env_base = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")  # `python` is the venv's
    collected, done = [], set()
    for name, job in jobs.items():
        env = {k: v for k, v in env_base.items() if k != "MINIGPT_GRADER_START"}
        env.update({k: str(v) for k, v in job["env"].items()})
        for command in _checks(job):
            expanded = _expand_make(command, env) if command.startswith("make ") else [command]
            if command.startswith("make test"):  # the README's test command: pytest runs, the graders among them
                assert all(" -m pytest " in c for c in expanded) and any(
                    c.endswith("-m pytest exercises/ --solutions") for c in expanded), expanded
            for line in expanded:
                args = line.split()
                start = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-")).get(
                    "MINIGPT_GRADER_START", env.get("MINIGPT_GRADER_START", ""))
                same = (tuple(a for a in args[args.index("pytest") + 1:] if a != "-q"), start)
                if same in done:  # the same pytest run (e.g. the spawn job's and make test's): once is enough
                    continue
                done.add(same)
                proc = subprocess.run(line + " --collect-only -q", shell=True, cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=300)
                assert proc.returncode == 0, f"{name}: {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
                found = re.search(r"(?m)^[1-9]\d*(/\d+)? tests? collected", proc.stdout)  # "9/30": 9 selected
                assert found, f"{name}: {line}\n{proc.stdout[-2000:]}"
                collected.append((same[0], start))
    graders = {start for args, start in collected if args[:2] == ("exercises/", "--solutions")}
    assert graders == {"", "spawn"}, collected  # the graders on solutions/, as Linux starts workers and with spawn


# --------------------------------------------------------------------------- Gradescope


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    """dist/autograder.zip as ``make gradescope`` builds it (into a temporary folder)."""
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    proc = _run(["make", "gradescope", f"PYTHON={sys.executable}", f"GRADESCOPE_ZIP={out}"], timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stdout + proc.stderr
    return out


def _stand_in(root: Path, zip_path: Path, submission: Path | None) -> Path:
    """A stand-in for Gradescope's /autograder: source/ (the zip), run_autograder, venv, submission/."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")  # as Gradescope does
    (root / "run_autograder").chmod(0o755)
    (root / "venv").symlink_to(Path(sys.prefix), target_is_directory=True)  # what setup.sh would build
    if submission is not None:
        shutil.copytree(submission, root / "submission", symlinks=True)
    return root


def _run_autograder(root: Path) -> tuple[dict, str]:
    proc = _run(["bash", str(root / "run_autograder")], cwd=root, timeout=1200,
                env=dict(os.environ, MINIGPT_AUTOGRADER_ROOT=str(root)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = root / "results" / "results.json"
    assert results.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(results.read_text()), proc.stdout + proc.stderr


def check_gradescope_fields(results: dict, catalogue: dict[str, float]) -> dict[str, dict]:
    """results.json as Gradescope specifies it; returns the tests by name."""
    assert set(results) <= TOP_FIELDS, set(results) - TOP_FIELDS
    assert isinstance(results["score"], float) and isinstance(results["execution_time"], int)
    assert results["execution_time"] >= 0 and isinstance(results["output"], str) and results["output"]
    tests = results["tests"]
    for test in tests:
        assert set(test) <= TEST_FIELDS, set(test) - TEST_FIELDS
        assert {"name", "number", "score", "max_score", "status", "output", "tags", "visibility"} <= set(test)
        assert test["status"] in ("passed", "failed") and test["visibility"] in VISIBILITIES
        assert isinstance(test["score"], float) and 0.0 <= test["score"] <= test["max_score"]
        chapter = test["name"].split(":")[0]
        assert test["tags"] == [chapter] and re.fullmatch(rf"{int(chapter[2:4])}\.\d+", test["number"]), test
        assert isinstance(test["output"], str) and "\n" not in test["output"] and len(test["output"]) <= OUTPUT_LIMIT
        assert (test["status"] == "passed") == (test["score"] == test["max_score"]), test
    by_name = {t["name"]: t for t in tests}
    assert len(by_name) == len(tests) and len({t["number"] for t in tests}) == len(tests)
    assert {name: t["max_score"] for name, t in by_name.items()} == catalogue  # one entry per grader test
    assert results["score"] == pytest.approx(sum(t["score"] for t in tests), abs=1e-9)
    return by_name


def test_make_gradescope_builds_the_zip_gradescope_asks_for(autograder_zip, tmp_path):
    with zipfile.ZipFile(autograder_zip) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        requirements = zf.read("requirements.txt").decode().split()
    assert {"setup.sh", "run_autograder", "requirements.txt", "pyproject.toml", "exercises/conftest.py"} <= names
    assert {f"solutions/{c}.py" for c in CHAPTERS} | {f"exercises/test_{c}.py" for c in CHAPTERS} <= names
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert _run(["bash", "-n", "-c", setup]).returncode == 0
    torch = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert f'--index-url https://download.pytorch.org/whl/cpu "{torch}"' in setup
    assert "python3.12" in setup and "Memory" in setup and "CPU" in setup and "@" not in re.sub(r"\$@", "", setup)
    assert set(requirements) == set(PYPROJECT["project"]["dependencies"]) - {torch} | {
        d for d in PYPROJECT["project"]["optional-dependencies"]["dev"] if d.startswith("pytest")}
    # The plain command (no make) writes the same zip, byte for byte.
    again = tmp_path / "again.zip"
    proc = _run([sys.executable, "exercises/_grader/gradescope.py", "build", "--out", str(again)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == autograder_zip.read_bytes()


@posix_only
def test_run_autograder_gives_solutions_full_points(autograder_zip, catalogue, tmp_path):
    root = _stand_in(tmp_path / "autograder", autograder_zip, None)
    _copy_chapters(SOLUTIONS, root / "submission")  # the files at the submission's root
    results, _ = _run_autograder(root)
    tests = check_gradescope_fields(results, catalogue)
    assert results["score"] == sum(catalogue.values())
    assert all(t["status"] == "passed" and t["output"] == "passed" for t in tests.values())
    assert results["extra_data"]["found_in"] == "the root" and "seed" in results["output"]


@posix_only
def test_run_autograder_gives_the_stubs_nothing(autograder_zip, catalogue, tmp_path):
    root = _stand_in(tmp_path / "autograder", autograder_zip, None)
    _copy_chapters(EXERCISES, root / "submission" / "exercises")  # the files in an exercises/ folder
    results, _ = _run_autograder(root)
    tests = check_gradescope_fields(results, catalogue)
    assert results["score"] == 0.0 and results["extra_data"]["found_in"] == "exercises/"
    assert all(t["status"] == "failed" and "not implemented yet" in t["output"] for t in tests.values())


@posix_only
def test_run_autograder_on_a_hostile_submission(autograder_zip, catalogue, tmp_path):
    root = _stand_in(tmp_path / "autograder", autograder_zip, None)
    _hostile(root / "submission")
    results, _ = _run_autograder(root)
    tests = check_gradescope_fields(results, catalogue)
    by_chapter = {c: [t for t in tests.values() if t["tags"] == [c]] for c in CHAPTERS}
    touched = {"ex01_tokenization", "ex05_training", "ex06_evaluation", "ex07_sampling", "ex08_modern"}
    untouched = [c for c in CHAPTERS if c not in touched]
    for chapter in untouched:  # full points
        assert all(t["status"] == "passed" for t in by_chapter[chapter]), chapter
    for chapter, construct in (("ex06_evaluation", "exec"), ("ex07_sampling", "isclose")):  # tricked: 0 (--strict)
        assert all(t["score"] == 0 and "integrity check" in t["output"] and construct in t["output"]
                   for t in by_chapter[chapter]), by_chapter[chapter][0]
    assert all(t["score"] == 0 and "link" in t["output"] for t in by_chapter["ex05_training"])
    assert all(t["score"] == 0 and "not in the submission" in t["output"] and "ex08_modrn.py" in t["output"]
               for t in by_chapter["ex08_modern"])
    failing = [t for t in by_chapter["ex01_tokenization"] if t["status"] == "failed"]
    assert failing and all("AAAA" in t["output"] for t in failing)  # bounded: one line, OUTPUT_LIMIT at most
    expected = sum(_chapter_max(catalogue, c) for c in untouched)
    assert expected <= results["score"] < expected + _chapter_max(catalogue, "ex01_tokenization")
    assert "missing: 0 points" in results["output"] and "integrity check: 0 points" in results["output"]


@posix_only
def test_run_autograder_writes_results_even_when_python_cannot_start(autograder_zip, tmp_path):
    root = _stand_in(tmp_path / "autograder", autograder_zip, SOLUTIONS)
    (root / "venv").unlink()  # a broken image: no interpreter where setup.sh puts it
    results, _ = _run_autograder(root)
    assert results["score"] == 0.0 and results["tests"] == [] and "could not run" in results["output"]
    assert set(results) <= TOP_FIELDS


def _gradescope_module():
    spec = importlib.util.spec_from_file_location("gradescope_under_test", TOOLS / "gradescope.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_crash_of_the_autograder_itself_still_writes_results(tmp_path, monkeypatch):
    gradescope = _gradescope_module()
    monkeypatch.setenv("MINIGPT_AUTOGRADER_ROOT", str(tmp_path))

    def crash(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(gradescope, "grade_submission", crash)
    gradescope.run("7", 60, 20, "visible")
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0.0 and results["tests"] == [] and "disk on fire" in results["output"]
    assert isinstance(results["execution_time"], int) and set(results) <= TOP_FIELDS


def test_a_grader_that_wrote_no_report_scores_every_test_zero(tmp_path, monkeypatch, catalogue):
    gradescope = _gradescope_module()
    monkeypatch.setenv("MINIGPT_AUTOGRADER_ROOT", str(tmp_path))
    _copy_chapters(SOLUTIONS, tmp_path / "submission")
    grade_run = sys.modules["grade_folder"].GradeRun  # the helper module gradescope.py imported
    monkeypatch.setattr(gradescope, "grade", lambda *a, **k: grade_run(report=None, returncode=3, seconds=1.0,
                                                                      output_tail="Traceback: boom"))
    results = gradescope.run("7", 60, 20, "after_due_date")
    tests = check_gradescope_fields(results, catalogue)
    assert results["score"] == 0.0 and "exit status 3" in results["output"]
    assert all(t["visibility"] == "after_due_date" and t["status"] == "failed" for t in tests.values())


# --------------------------------------------------------------------------- the gradebook


ENDLESS_TOP_K = "def top_k_filter(logits, k):\n    while True:\n        pass"
CRASH_AT_IMPORT = "import os\nos._exit(3)"
HANG_AT_IMPORT = "while True:\n    pass"


def _class(folder: Path) -> Path:
    """Five learners: finished, stubs only, tricked and incomplete, crashing, looping."""
    _copy_chapters(SOLUTIONS, folder / "alice")
    _copy_chapters(EXERCISES, folder / "bob" / "exercises")
    carol = _copy_chapters(SOLUTIONS, folder / "carol" / "exercises", skip=("ex08_modern",))
    _append(carol / "ex06_evaluation.py", EXEC_TRICK)
    dave = _copy_chapters(SOLUTIONS, folder / "dave")
    _append(dave / "ex07_sampling.py", CRASH_AT_IMPORT)
    erin = _copy_chapters(SOLUTIONS, folder / "erin")
    _append(erin / "ex07_sampling.py", ENDLESS_TOP_K)
    return folder


def _gradebook(args: list[str], timeout: float = 1500) -> subprocess.CompletedProcess:
    proc = _run([sys.executable, "exercises/_grader/gradebook.py", *args], timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(csv_path: Path) -> tuple[list[str], dict[str, dict]]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, {row["learner"]: row for row in reader}


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory) -> Path:
    """The class graded once by ``make gradebook``, two learners at a time. 30 s per test: an honest
    test can take 10 s and more on a loaded 2-core machine; erin's endless loop costs 30 s a test."""
    folder = _class(tmp_path_factory.mktemp("gradebook") / "class")
    proc = _run(["make", "-o", ".venv/.dev", "gradebook", f"SUBMISSIONS={folder}", "JOBS=2",
                 "GRADEBOOK_OPTIONS=--seed 11 --grade-timeout 30"], timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder


def test_the_gradebook_has_one_row_per_learner_with_the_right_totals(graded_class, catalogue):
    fields, rows = _rows(graded_class / "gradebook.csv")
    assert fields == ["learner", *(c[:4] for c in CHAPTERS), "total", "max", "integrity", "problems", "complete"]
    assert sorted(rows) == ["alice", "bob", "carol", "dave", "erin"]
    full = {c[:4]: _chapter_max(catalogue, c) for c in CHAPTERS}
    top = sum(full.values())
    for row in rows.values():
        assert float(row["total"]) == sum(float(row[c]) for c in full) and float(row["max"]) == top, row
        assert row["complete"] == "yes", row
    assert {c: float(rows["alice"][c]) for c in full} == full and rows["alice"]["problems"] == ""
    assert float(rows["bob"]["total"]) == 0 and rows["bob"]["problems"] == ""
    carol = rows["carol"]
    assert float(carol["ex06"]) == 0 and float(carol["ex08"]) == 0 and "exec" in carol["integrity"]
    assert float(carol["total"]) == top - full["ex06"] - full["ex08"] and "ex08 missing" in carol["problems"]
    # A crash and an endless loop cost their learner chapter 7's points (some or all), nothing else.
    for name, outcome in (("dave", "crashed"), ("erin", "timeout")):
        assert f"ex07 {outcome}" in rows[name]["problems"], rows[name]
        assert float(rows[name]["ex07"]) < full["ex07"]
        assert all(float(rows[name][c]) == full[c] for c in full if c != "ex07"), rows[name]
    assert float(rows["dave"]["ex07"]) == 0


def test_each_learner_has_a_json_report(graded_class):
    for learner in ("alice", "bob", "carol", "dave", "erin"):
        entry = json.loads((graded_class / "gradebook-reports" / f"{learner}.json").read_text())
        assert entry["learner"] == learner and entry["seed"] == 11 and entry["report"]["complete"] is True
        assert entry["report"]["strict"] is True and entry["report"]["fresh_cases_seed"] == 11
        assert not any("minigpt-gradebook-" in t["message"] for t in entry["report"]["tests"])  # paths tidied
    assert json.loads((graded_class / "gradebook-settings.json").read_text()) == {"seed": 11}


def test_a_rerun_grades_only_new_or_changed_learners(graded_class):
    before = (graded_class / "gradebook.csv").read_text()
    proc = _gradebook([str(graded_class), "--grade-timeout", "30"])
    assert "0 to grade, 5 already graded" in proc.stderr and "seed 11" in proc.stderr
    assert (graded_class / "gradebook.csv").read_text() == before
    _append(graded_class / "bob" / "exercises" / "ex01_tokenization.py", "# edited after the first grading")
    proc = _gradebook([str(graded_class), "--grade-timeout", "30"])
    assert "1 to grade, 4 already graded" in proc.stderr
    proc = _gradebook([str(graded_class), "--grade-timeout", "30", "--regrade", "bob"])
    assert "1 to grade, 4 already graded" in proc.stderr
    assert _rows(graded_class / "gradebook.csv")[1]["bob"]["complete"] == "yes"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find leftover processes (Linux)")
def test_a_hanging_learner_is_stopped_by_the_watchdog_and_costs_only_that_learner(tmp_path):
    folder = tmp_path / "class"
    frank = _copy_chapters(SOLUTIONS, folder / "frank")
    _append(frank / "ex01_tokenization.py", HANG_AT_IMPORT)
    (folder / "gina").mkdir()
    shutil.copy(EXERCISES / "ex01_tokenization.py", folder / "gina")  # one stub: a short run
    start = time.monotonic()
    # No time limit per test (0): only the watchdog can stop frank's endless import. 120 s leaves
    # gina's short run time to finish on a busy machine.
    proc = _gradebook([str(folder), "--jobs", "2", "--grade-timeout", "0", "--time-limit", "120", "--out",
                       str(tmp_path / "out")], timeout=900)
    assert time.monotonic() - start < 600, proc.stderr
    rows = _rows(tmp_path / "out" / "gradebook.csv")[1]
    assert rows["frank"]["complete"] == "no" and "stopped by the watchdog after 120 s" in rows["frank"]["problems"]
    assert rows["gina"]["complete"] == "yes" and "watchdog" not in rows["gina"]["problems"], rows["gina"]
    assert not (folder / "gradebook.csv").exists()  # --out was honoured
    time.sleep(1)
    assert _processes_mentioning(str(folder / "frank")) == [] and _processes_mentioning("minigpt-gradebook-") == []


def test_the_gradebook_refuses_bad_options(tmp_path):
    for args, word in (([str(tmp_path / "nowhere")], "SUBMISSIONS"), ([str(tmp_path), "--jobs", "0"], "--jobs"),
                       ([str(tmp_path), "--time-limit", "-1"], "--time-limit"),
                       ([str(tmp_path), "--regrade", "nobody"], "--regrade")):
        proc = _run([sys.executable, "exercises/_grader/gradebook.py", *args], timeout=120)
        assert proc.returncode != 0 and word in proc.stderr, (args, proc.stderr)
