"""The pytest side of a worker: start it, send it requests, kill it at the time limit.

One :class:`Worker` per chapter runs that chapter's learner file in its own
Python process (``worker.py``). A request waits at most until the current
test's deadline; past it the worker and everything it started are killed
with SIGKILL, the test is recorded as ``timeout``, and the next test gets a
fresh worker. A worker that dies (``os._exit``, ``sys.exit`` at import, a
crash) costs only the test that was running. If importing the learner's file
fails, times out or crashes, the chapter remembers why and its other tests
say so at once instead of waiting again.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _grader.protocol import HEADER, MAX_FRAME, ProtocolError, loads, write_frame
from _grader.watchdog import Watchdog, kill_tree

HERE = Path(__file__).resolve().parents[1]  # exercises/: where the package _grader is imported from
# A worker's interpreter starts with -I (no PYTHONPATH, no user site, no script folder on sys.path), so it is
# told where the package lives; it imports _grader.worker and runs main with the rest of the arguments.
BOOT = ("import sys, importlib; sys.path.insert(0, sys.argv[1]); "
        "importlib.import_module('_grader.' + sys.argv[2]).main(sys.argv[3:])")
START_LIMIT = 120.0  # seconds for a fresh worker to import torch and the grader (not the learner's time)
START_METHODS = ("fork", "spawn")


def start_method() -> str:
    """How workers start: ``fork`` from a zygote (Linux) or ``spawn``, a fresh interpreter per chapter
    (macOS, Windows). ``MINIGPT_GRADER_START=spawn`` forces the second on Linux (the tests do)."""
    chosen = os.environ.get("MINIGPT_GRADER_START", "").strip().lower()
    if chosen and chosen not in START_METHODS:
        raise ValueError(f"MINIGPT_GRADER_START must be one of {', '.join(START_METHODS)}, got {chosen!r}")
    if chosen == "fork" and not sys.platform.startswith("linux"):
        raise ValueError(f"MINIGPT_GRADER_START=fork works on Linux only (this is {sys.platform}): use spawn")
    return chosen or ("fork" if sys.platform.startswith("linux") else "spawn")


def worker_env() -> dict[str, str]:
    """The environment of a worker: the grader's own, without pytest's and Python's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}


class Outcome(Exception):
    """A test result decided by what the worker did; ``outcome`` names it for the report."""

    outcome = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotImplementedYet(Outcome):
    outcome = "todo"


class LearnerRaised(Outcome):
    """The learner's code raised an exception; ``info`` describes it (type, mro, message, where)."""

    outcome = "error"

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


class WorkerTimeout(Outcome):
    outcome = "timeout"


class WorkerCrashed(Outcome):
    outcome = "crashed"


class Zygote:
    """The process that forks workers: torch and the grader's helpers imported once per session."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.log = None
        self.ready = False

    def spawn(self) -> None:
        """Start the zygote (it imports torch meanwhile); ``fork`` waits until it is ready."""
        if self.proc is not None and self.proc.poll() is None:
            return
        ours, theirs = socket.socketpair()
        self.log = tempfile.TemporaryFile()
        env = worker_env()
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", BOOT, str(HERE), "worker", "zygote", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=env, cwd=str(HERE))
        theirs.close()
        self.control = ours
        self.control.settimeout(START_LIMIT)
        self.ready = False

    def _wait_ready(self) -> None:
        if not self.ready:
            if self._line() != {"ready": True}:
                self.stop()
                raise WorkerCrashed(f"the grader's worker process did not start: {self._log_tail()}")
            self.ready = True

    def _line(self) -> dict:
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.control.recv(4096)
            if not chunk:
                return {}
            data += chunk
        return json.loads(data)

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-500:]

    def fork(self, target: Path, test_file: Path, fds: tuple[int, int, int]) -> int:
        """A new worker for one chapter of ``target``, talking over ``fds`` (its input, output and log).

        A zygote that died meanwhile (another chapter's code may have killed it) is started again once,
        so that chapter's fault costs no test of this one.
        """
        request = json.dumps({"target": str(target), "test_file": str(test_file)}).encode()
        for attempt in (1, 2):
            self.spawn()
            self._wait_ready()
            try:
                socket.send_fds(self.control, [request], list(fds))
                answer = self._line()
            except OSError:
                answer = {}
            if "pid" in answer:
                return int(answer["pid"])
            tail = self._log_tail()
            self.stop()
        raise WorkerCrashed(f"the grader's worker process stopped: {tail}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.control.close()
            self.proc = None


_ZYGOTE: Zygote | None = None


def shared_zygote() -> Zygote:
    """The zygote of this process: it knows no target, so every grading session in a process can share it.

    It stops when this process ends (it reads end-of-file on its control socket).
    """
    global _ZYGOTE
    if _ZYGOTE is None:
        _ZYGOTE = Zygote()
    return _ZYGOTE


def _pump(fd: int, chunks: queue.Queue) -> None:
    """Spawn start: move what the worker writes into ``chunks`` (b'' at its end)."""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except OSError:
            chunk = b""
        chunks.put(chunk)
        if not chunk:
            return


class Worker:
    """One chapter's learner file, in its own process (forked by the zygote, or a fresh interpreter)."""

    def __init__(self, zygote: Zygote | None, target: Path, module: str, test_file: Path,
                 start: str | None = None, watchdog: Watchdog | None = None) -> None:
        self.zygote, self.target, self.module, self.test_file = zygote, target, module, test_file
        self.watchdog = watchdog
        self.start_method = start or start_method()
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None  # spawn start: the worker's own interpreter
        self._chunks: queue.Queue | None = None  # spawn start: what a reader thread got from the worker
        self._pending = b""
        self.walls: list[str] = []  # what the worker's sandbox holds (sandbox.confine)
        self.log_mark = 0  # where the current test's output starts in the log
        self.log = None
        self.imported = False
        self.import_failure: Outcome | None = None  # remembered: the chapter's other tests fail at once
        self.deadline = float("inf")
        self.limit = 0.0
        self.run_ends = float("inf")
        self._ready = False

    # ------------------------------------------------------------------ process

    def start(self) -> None:
        if self.pid is not None:
            return
        if self.start_method == "spawn":
            self._spawn()
            return
        to_child, self._send = os.pipe()
        self._recv, from_child = os.pipe()
        self.log = tempfile.TemporaryFile()
        self.log_mark = 0
        try:
            self.pid = self.zygote.fork(self.target, self.test_file, (to_child, from_child, self.log.fileno()))
        finally:
            os.close(to_child)
            os.close(from_child)
        self._ready = False
        if self.watchdog is not None:
            self.watchdog.watch(self.pid)

    def _spawn(self) -> None:
        """A fresh interpreter for this chapter: its own process group (POSIX) or process group (Windows)."""
        self.log = tempfile.TemporaryFile()
        self.log_mark = 0
        options = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", BOOT, str(HERE), "worker", "serve",
                                      str(self.target), str(self.test_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=worker_env(), cwd=str(HERE), bufsize=0, **options)
        self.pid, self._send, self._recv = self.proc.pid, self.proc.stdin.fileno(), self.proc.stdout.fileno()
        if sys.platform == "win32":
            import msvcrt
            for fd in (self._send, self._recv):
                msvcrt.setmode(fd, os.O_BINARY)
        self._chunks, self._pending = queue.Queue(), b""
        threading.Thread(target=_pump, args=(self._recv, self._chunks), daemon=True).start()
        self._ready = False
        if self.watchdog is not None:
            self.watchdog.watch(self.pid)

    def _wait_ready(self) -> None:
        if self._ready:
            return
        answer = self._read(time.monotonic() + START_LIMIT, "starting the grader's worker")
        if not (isinstance(answer, dict) and answer.get("ready")):
            self.kill()
            raise WorkerCrashed(f"the grader's worker for {self.module} did not start: {self._log_tail()}")
        self.walls = list(answer.get("walls", []))
        self._ready = True

    def kill(self) -> None:
        """Kill the worker and everything it started (its process group; on Windows, its process tree)."""
        if self.pid is None:
            return
        kill_tree(self.pid)
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self.proc = None
        else:
            for fd in (self._send, self._recv):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pid, self.imported, self._ready = None, False, False

    def printed(self, lines: int = 12, width: int = 2000) -> str:
        """The last ``lines`` lines the learner's code printed during the current test (at most ``width``
        characters), or ''."""
        if self.log is None:
            return ""
        try:
            self.log.seek(self.log_mark)
            text = self.log.read(4 * 1024 * 1024).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        joined = "\n".join(kept)
        return joined if len(joined) <= width else "..." + joined[-width:]

    def _log_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        lines = [ln for ln in self.log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "(nothing printed)"

    # ------------------------------------------------------------------ frames

    def _read_exactly(self, size: int, deadline: float, doing: str) -> bytes:
        if self._chunks is not None:
            return self._read_from_pump(size, deadline, doing)
        chunks, left = [], size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                self._on_timeout(doing)
            ready, _, _ = select.select([self._recv], [], [], None if wait == float("inf") else wait)
            if not ready:
                self._on_timeout(doing)
            chunk = os.read(self._recv, min(left, 1 << 20))
            if not chunk:
                self._on_crash(doing)
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _read_from_pump(self, size: int, deadline: float, doing: str) -> bytes:
        """Spawn start: bytes from the reader thread (``select`` cannot wait on a pipe on Windows)."""
        while len(self._pending) < size:
            wait = deadline - time.monotonic()
            if wait <= 0:
                self._on_timeout(doing)
            try:
                chunk = self._chunks.get(timeout=None if wait == float("inf") else wait)
            except queue.Empty:
                self._on_timeout(doing)
            if not chunk:
                self._on_crash(doing)
            self._pending += chunk
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _read(self, deadline: float, doing: str) -> Any:
        (size,) = HEADER.unpack(self._read_exactly(HEADER.size, deadline, doing))
        if size > MAX_FRAME:
            self.kill()
            raise WorkerCrashed(f"{doing}: the worker sent a frame of {size} bytes; stopped it")
        try:
            return loads(self._read_exactly(size, deadline, doing))
        except ProtocolError as exc:
            self.kill()
            raise WorkerCrashed(f"{doing}: {exc}") from None

    def _on_timeout(self, doing: str) -> None:
        self.kill()
        raise WorkerTimeout(f"{doing} ran past {self.limit:g} s: is there a loop that never ends, "
                            f"e.g. a while loop whose condition never changes?")

    def _on_crash(self, doing: str) -> None:
        tail = self._log_tail()
        self.kill()
        raise WorkerCrashed(f"{doing} stopped the process running your code: does your code call os._exit(), "
                            f"or crash Python? last output: {tail}")

    # ------------------------------------------------------------------ requests

    def begin_test(self, limit: float, run_ends: float = float("inf")) -> None:
        """A new test starts: its time limit (never past ``run_ends``, the end of the run's budget, on
        ``time.monotonic()``'s clock), and where its printed output starts in the log."""
        left = run_ends - time.monotonic()
        if left <= 0:
            raise WorkerTimeout("not run: this learner's run has spent its whole time budget (--grade-budget)")
        if left < limit or (limit <= 0 and left != float("inf")):
            limit = left
        self.limit, self.run_ends = limit, run_ends
        if self.log is not None:
            try:
                self.log_mark = self.log.seek(0, os.SEEK_END)
            except (OSError, ValueError):
                pass
        self.deadline = time.monotonic() + limit if limit > 0 else float("inf")

    def _request(self, request: dict, deadline: float, doing: str) -> dict:
        self.start()
        self._wait_ready()
        try:
            write_frame(self._send, request)
        except (BrokenPipeError, OSError):
            self._on_crash(doing)
        answer = self._read(deadline, doing)
        if not isinstance(answer, dict) or "ok" not in answer:
            self.kill()
            raise WorkerCrashed(f"{doing}: the worker sent an answer the grader cannot read")
        return answer

    def ensure_imported(self) -> None:
        if self.import_failure is not None:
            raise self.import_failure
        if self.imported:
            return
        file = f"{self.module}.py"
        doing = f"importing {file}"
        self.start()
        self._wait_ready()  # the worker's own start-up is not the learner's time
        deadline = time.monotonic() + self.limit if self.limit > 0 else float("inf")
        try:
            answer = self._request({"op": "import", "module": self.module}, deadline, doing)
        except WorkerTimeout:
            self.import_failure = WorkerTimeout(
                f"importing {file} ran past {self.limit:g} s: is there code at the bottom of the file "
                f"(a demo, a training loop) that should be inside a function or under "
                f"`if __name__ == \"__main__\":`?")
            raise self.import_failure from None
        except WorkerCrashed as exc:
            self.import_failure = WorkerCrashed(exc.message.replace("does your code call", "does the file call",
                                                                    1) + " (while importing it)")
            raise self.import_failure from None
        if not answer["ok"]:
            self.import_failure = self._import_error(answer["error"])
            raise self.import_failure
        self.imported = True
        # the test's own time starts once the file is imported (what the import printed stays in its output)
        self.deadline = min(time.monotonic() + self.limit if self.limit > 0 else float("inf"), self.run_ends)

    def _import_error(self, info: dict) -> Outcome:
        file, where = f"{self.module}.py", info.get("origin") or info.get("file")
        missing = info.get("missing_module") or ""
        owner = where if where and where != file else (f"{missing}.py" if missing.startswith("ex") else None)
        if owner and owner[:2] == "ex" and owner[2:4].isdigit() and owner != file:
            if info["not_implemented"]:
                return NotImplementedYet(f"not implemented yet: write `{info['function']}` in {owner}")
            return LearnerRaised(f"could not import {file}: it uses {owner}, which fails "
                                 f"({info['type']}: {info['message']}): finish chapter {int(owner[2:4])} first",
                                 info)
        line = f", line {info['line']}" if info.get("line") and where == file else ""
        return LearnerRaised(f"could not import {file}{line}: {info['type']}: {info['message']}", info)

    def run(self, op: str, name: str, args: list, kwargs: dict, doing: str) -> dict:
        """Send one request within the current test's deadline; return the answer (ok or error)."""
        self.ensure_imported()
        request = {"op": op, "module": self.module, "name": name, "args": list(args), "kwargs": dict(kwargs)}
        return self._request(request, self.deadline, doing)
