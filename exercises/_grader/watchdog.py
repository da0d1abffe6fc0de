"""The wall-clock watchdog of a grading run: a small process of its own, outside the workers' reach.

The time limits of :mod:`_grader.client` are kept by the pytest process. If something stopped that
process (a ``SIGSTOP``: the workers' sandbox refuses it, but a platform without a system-call
filter may not), its timers would stop with it and a class's batch would wait forever at one
learner. So every grading run also starts this watchdog (``python -I``, no torch, no learner code):

- every half second it sends ``SIGCONT`` to the grading process (POSIX), undoing any stop;
- it learns each worker's pid from the grading process (one line ``worker PID`` on its stdin) and,
  once the run's total budget and a grace period have passed, kills every worker's process tree,
  so a grading process waiting on one gets its answer (a crash) and finishes the report;
- when the grading process ends (its stdin closes), it kills what is left of the workers and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

TICK = 0.5  # seconds between two checks
GRACE = 30.0  # seconds after the run's budget before the workers are killed from here
START_GRACE = 120.0  # seconds a run may take to collect the graders and start before its first test


def kill_tree(pid: int) -> None:
    """Kill a worker and what it started: its process group on POSIX (the worker leads its own session),
    its process tree on Windows (``taskkill /T``)."""
    if os.name == "posix":
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


class Watchdog:
    """The grading process's handle on its watchdog (see the module's doc)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self, budget: float, boot: str, package_parent: str) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-I", "-c", boot, package_parent, "watchdog",
                                          str(os.getpid()), str(budget)], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def watch(self, pid: int) -> None:
        """Tell the watchdog about a worker it must kill if the run goes past its budget."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(f"worker {pid}\n")
                self.proc.stdin.flush()
            except OSError:
                pass

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def main(argv: list[str]) -> None:
    """``watchdog GRADING_PID BUDGET_SECONDS`` (0: no budget; the workers die with the run)."""
    grading, budget = int(argv[0]), float(argv[1])
    # the run's clock starts at its first test, after collection and the workers' start: counted here from
    # the watchdog's own start, plus a grace for that start-up, so it never fires before the run's own limit
    deadline = time.monotonic() + budget + START_GRACE + GRACE if budget > 0 else float("inf")
    workers: set[int] = set()
    ended = threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "worker" and parts[1].isdigit():
                workers.add(int(parts[1]))
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    while not ended.wait(TICK):
        if os.name == "posix":
            try:
                os.kill(grading, signal.SIGCONT)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
        if time.monotonic() > deadline:
            for pid in list(workers):
                kill_tree(pid)
            workers.clear()
    for pid in workers:
        kill_tree(pid)


if __name__ == "__main__":  # pragma: no cover - started through client.BOOT
    main(sys.argv[1:])
