"""The "by hand" rules, watched at run time in the worker: which library functions the learner's code called.

The integrity scan (:mod:`_grader.integrity`) reads the learner's file for the names a rule forbids;
a name it does not list (``torch.special.log_softmax``), a call through another module, or source run
by path would pass it. This watch sees the calls themselves: a ``TorchFunctionMode`` is active while a
learner's function or a probe runs, and every torch function whose name a rule covers
(``scaled_dot_product_attention``, ``log_softmax``, ``logsumexp``, ``cross_entropy``, ``dropout``,
``rms_norm``, ...), called while a frame of the learner's file is on the stack, is recorded. The
grading process fails the rule's tests when one was (``learner.Learner``). Grader code that runs
on its own (a probe's model computing its loss before the learner's code is called) is not counted.

Switching the watch off is seen too: if the mode is no longer on torch's stack after a request, the
request reports it as a broken rule (the integrity scan also flags the calls that would do it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

SWITCHED_OFF = "(the run-time watch of the by-hand rules was switched off)"


class ByHandWatch(TorchFunctionMode):
    """Record the covered torch functions that learner code (``folder``'s ``exNN_*.py``) calls."""

    def __init__(self, names: frozenset[str], folder: Path) -> None:
        super().__init__()
        self.names, self.folder = names, str(folder)
        self.seen: set[str] = set()

    def covers(self, name: str) -> bool:
        return any(forbidden in name for forbidden in self.names)

    def _from_learner_code(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            file = frame.f_code.co_filename
            if os.path.dirname(file) == self.folder and os.path.basename(file).startswith("ex"):
                return True
            frame = frame.f_back
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "") or ""
        if self.names and self.covers(name) and self._from_learner_code():
            self.seen.add(name)
        return func(*args, **(kwargs or {}))


def watched(call, names: frozenset[str], folder: Path, seen: list[str]):
    """Run ``call()`` under the watch and return its result; ``seen`` gets the covered functions the
    learner's code called (also when ``call`` raises), and ``SWITCHED_OFF`` if the watch was removed."""
    watch = ByHandWatch(names, folder)
    watch.__enter__()
    try:
        return call()
    finally:
        stack = _get_current_function_mode_stack()
        if stack and stack[-1] is watch:
            watch.__exit__(None, None, None)
        else:
            watch.seen.add(SWITCHED_OFF)
        seen.extend(sorted(watch.seen))


__all__ = ["ByHandWatch", "SWITCHED_OFF", "watched", "torch"]
