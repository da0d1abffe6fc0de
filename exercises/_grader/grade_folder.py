"""Grade one learner's folder of ``exNN_*.py`` files in a pytest subprocess (Gradescope, the gradebook).

The instructors' tools never import the grader or the learner's code. They copy the learner's
chapter files into a clean folder, run the command a person would run::

    python -m pytest exercises/ --target DIR --strict --fresh-cases SEED --grade-report FILE

and read the JSON report it writes. So they work whatever the grader's insides look like, and a
learner's code touches only its own run. A wall-clock watchdog stops a run that goes on too long
(with the processes it started); the report, rewritten after every test, still says what was
earned before that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

EXERCISES = Path(__file__).resolve().parents[1]
ROOT = EXERCISES.parent
MAX_FILE_BYTES = 1_000_000  # a chapter's file is a few kB; a bigger one is refused, not graded
OUTPUT_TAIL = 64 * 1024  # characters of pytest's output kept in memory (a learner may print a lot)
EXERCISE_FILE = re.compile(r"ex(\d\d)_\w+\.py")


def chapters() -> list[str]:
    """The chapters the grader has files for, from ``exercises/test_exNN_<topic>.py``: ``ex01_tokenization``, ..."""
    return sorted(p.stem.removeprefix("test_") for p in EXERCISES.glob("test_ex[0-9][0-9]_*.py"))


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line, at most ``limit`` characters (learner output can be anything)."""
    flat = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 15] + " ... (cut here)"


# --------------------------------------------------------------------------- the learner's files


@dataclass
class Staged:
    """A clean copy of a submission's chapter files, what was found and what was not."""

    folder: Path
    found_in: str  # "the root", "exercises/", or "" when no exNN_*.py was found
    missing: list[str] = field(default_factory=list)  # chapters without a usable file
    reasons: dict[str, str] = field(default_factory=dict)  # chapter -> why its file was refused, or a near name
    digest: str = ""  # sha256 of the staged files' names and bytes: what was graded

    @property
    def notes(self) -> list[str]:
        """One line per chapter with something to say: ``ex05: ex05_training.py is a link ...``."""
        return [f"{chapter[:4]}: {why}" for chapter, why in sorted(self.reasons.items())]

    def describe(self, chapter: str) -> str:
        """Why ``chapter`` scores 0 when its file is missing or refused."""
        where = f"looked in {self.found_in}" if self.found_in else "looked at its root and in exercises/"
        why = self.reasons.get(chapter, "")
        if why and not why.startswith("found "):
            return f"{why}: 0 points"
        return f"{chapter}.py is not in the submission ({where}): 0 points" + (f"; {why}" if why else "")


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _candidates(submission: Path) -> list[tuple[str, Path]]:
    """The root and its exercises/; and, when the root holds one folder only (an uploaded zip of a
    folder, e.g. ``minigpt-main/``), that folder and its exercises/ too."""
    places = [("the root", submission), ("exercises/", submission / "exercises")]
    if submission.is_dir():
        inside = [p for p in submission.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(inside) == 1 and inside[0].is_dir():
            places += [(f"{inside[0].name}/", inside[0]), (f"{inside[0].name}/exercises/", inside[0] / "exercises")]
    # The root is the instructor's (or Gradescope's) to give; a link inside it is the learner's.
    return [(name, p) for name, p in places if p.is_dir() and (p == submission or not p.is_symlink())]


def exercise_folder(submission: Path) -> tuple[str, Path | None]:
    """Where a submission keeps its ``exNN_*.py`` files: its root or ``exercises/`` (the one with more)."""
    best: tuple[int, str, Path | None] = (0, "", None)
    for name, place in _candidates(submission):
        count = sum(1 for p in place.iterdir() if EXERCISE_FILE.fullmatch(p.name))
        if count > best[0]:
            best = (count, name, place)
    return best[1], best[2]


def stage(submission: Path, into: Path) -> Staged:
    """Copy each chapter's file of ``submission`` into the new folder ``into`` (nothing else).

    Only the grader's own file names are copied, so a ``conftest.py``, a ``torch.py`` or any other
    file beside them is never seen. A link is refused (it could point at ``solutions/``), and so is
    a file over ``MAX_FILE_BYTES``. The copies are world-readable: the grader's worker may run as
    an unprivileged user.
    """
    into.mkdir(parents=True)
    into.chmod(0o755)
    found_in, place = exercise_folder(submission)
    staged = Staged(folder=into, found_in=found_in)
    digest = hashlib.sha256()
    present = {p.name: p for p in place.iterdir()} if place else {}
    for chapter in chapters():
        name = f"{chapter}.py"
        source = present.get(name)
        if source is None:
            near = sorted(n for n in present if n.startswith(chapter[:5]) and EXERCISE_FILE.fullmatch(n))
            if near:
                shown = ", ".join(near[:3]) + (f" and {len(near) - 3} more" if len(near) > 3 else "")
                staged.reasons[chapter] = f"found {shown}; the grader reads {name}"
            staged.missing.append(chapter)
            continue
        if not _plain_file(source):
            staged.reasons[chapter] = f"{name} is a link or not a regular file, so it is not graded"
            staged.missing.append(chapter)
            continue
        if source.stat().st_size > MAX_FILE_BYTES:
            staged.reasons[chapter] = f"{name} is over {MAX_FILE_BYTES // 1000} kB, so it is not graded"
            staged.missing.append(chapter)
            continue
        try:
            data = source.read_bytes()
        except OSError as exc:
            staged.reasons[chapter] = f"{name} could not be read ({exc.strerror or exc}), so it is not graded"
            staged.missing.append(chapter)
            continue
        (into / name).write_bytes(data)
        (into / name).chmod(0o644)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    staged.digest = digest.hexdigest()
    return staged


# --------------------------------------------------------------------------- one grading run


@dataclass
class GradeRun:
    """What one grading subprocess left: its report (None if it wrote none) and how it ended."""

    report: dict | None
    returncode: int | None  # None: stopped by the watchdog
    seconds: float
    output_tail: str
    stopped_after: float | None = None  # the watchdog's limit, when it stopped the run


def grader_command(target: Path, seed: int, report: Path, grade_timeout: float | None = None) -> list[str]:
    """The command that grades ``target``: the same one a person types, with the instructors' flags."""
    command = [sys.executable, "-m", "pytest", "exercises/", "--target", str(target), "--strict",
               "--fresh-cases", str(seed), "--grade-report", str(report), "-p", "no:cacheprovider", "-q"]
    if grade_timeout is not None:
        command += ["--grade-timeout", f"{grade_timeout:g}"]
    return command


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux: read from /proc; elsewhere none are found)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and everything it started, whatever they are doing."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
    else:
        below = descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session=True)
        except OSError:
            pass
        for pid in below:  # workers the grader put in process groups of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    proc.kill()


def _keep_tail(stream, tail: list[str]) -> None:
    kept = ""
    for chunk in iter(lambda: stream.read(4096), ""):
        kept = (kept + chunk)[-OUTPUT_TAIL:]
    tail.append(kept)


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def stop_all() -> None:
    """Stop every grading run still going (Ctrl-C in the gradebook: they are in sessions of their own)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        kill_tree(proc)


def run_grader(command: list[str], time_limit: float, env: dict | None = None) -> tuple[int | None, str, float]:
    """Run ``command`` in the project root; stop it (and its processes) after ``time_limit`` seconds.

    Returns (exit status or None when the watchdog stopped it, the last lines it printed, seconds).
    """
    start = time.monotonic()
    flags = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", **flags)
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    tail: list[str] = []
    reader = threading.Thread(target=_keep_tail, args=(proc.stdout, tail), daemon=True)
    reader.start()
    try:
        returncode: int | None = proc.wait(timeout=time_limit)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        proc.wait()
        returncode = None
    reader.join(timeout=10)
    with _RUNNING_LOCK:
        _RUNNING.discard(proc)
    return returncode, "".join(tail), time.monotonic() - start


def read_report(path: Path) -> dict | None:
    """The grader's JSON report, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("tests"), list) else None


def grade(target: Path, seed: int, time_limit: float, grade_timeout: float | None = None,
          env: dict | None = None) -> GradeRun:
    """Grade the folder ``target`` (strict, fresh cases from ``seed``), stopped after ``time_limit`` s."""
    with tempfile.TemporaryDirectory(prefix="minigpt-grade-") as tmp:
        report_file = Path(tmp) / "report.json"
        returncode, output, seconds = run_grader(grader_command(target, seed, report_file, grade_timeout),
                                                 time_limit, env)
        report = read_report(report_file)
    return GradeRun(report=report, returncode=returncode, seconds=seconds, output_tail=output,
                    stopped_after=time_limit if returncode is None else None)


_CATALOGUE: list[dict] = []
_CATALOGUE_LOCK = threading.Lock()


def catalogue(time_limit: float = 300) -> list[dict]:
    """Every grader test (chapter, test, points), as the grader lists it: ``--collect-only`` writes
    a report in which every test is "not run". Asked only when a run left no report to read it from."""
    with _CATALOGUE_LOCK:
        if not _CATALOGUE:
            with tempfile.TemporaryDirectory(prefix="minigpt-catalogue-") as tmp:
                report_file = Path(tmp) / "report.json"
                run_grader([sys.executable, "-m", "pytest", "exercises/", "--collect-only", "-q",
                            "-p", "no:cacheprovider", "--grade-report", str(report_file)], time_limit)
                report = read_report(report_file)
            _CATALOGUE.extend(report["tests"] if report else [])
        return [dict(t) for t in _CATALOGUE]


def tidy(message: str, staged: Path) -> str:
    """A grader message with the staging folder's path taken out (``/tmp/x/ex02_batching.py`` -> ``ex02_batching.py``)."""
    for form in {str(staged) + os.sep, str(staged.resolve()) + os.sep, str(staged) + "/"}:
        message = message.replace(form, "")
    return message

