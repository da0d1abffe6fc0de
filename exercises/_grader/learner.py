"""``ex``: the learner's module as the graders see it, a stand-in that runs every call in the worker.

``ex.merge([1, 2, 3], (1, 2), 9)`` sends the function's name and a copy of
the arguments to the chapter's worker and returns the plain data that comes
back. The call also brings back its arguments as they were after the call,
so a function that changes its input in place is caught and named. A class
or a model is driven by a probe, ``ex.probe(probe_fn, ...)``: grader code
from the chapter's test file that runs in the worker and returns data.

Every failure of the learner's code comes back as one line that names the
call and its input: "not implemented yet", "raised ValueError", a time
limit, a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from _grader.client import LearnerRaised, NotImplementedYet, Worker
from _grader.grading import GradeFailure
from _grader.integrity import Rule


def generator(seed: int) -> dict:
    """Stands for ``torch.Generator().manual_seed(seed)`` in a call's arguments (built in the worker)."""
    return {"__generator__": seed}


class Opaque:
    """Something the learner returned that is not plain data (shown by its type name and repr)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unmark(value: Any) -> Any:
    """Turn ``{"__object__": ...}`` descriptions back into objects whose type has the original name."""
    if type(value) is dict:
        if set(value) == {"__object__", "repr"}:
            return type(str(value["__object__"]), (Opaque,), {})(str(value["repr"]))
        return {k: _unmark(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_unmark(v) for v in value)
    return value


def short(value: Any, width: int = 70) -> str:
    """A value as a learner would want to see it in a one-line message."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            text = f"tensor({value.tolist()})"
            if len(text) <= width:
                return text
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if type(value) is dict and set(value) == {"__generator__"}:
        return f"generator=torch.Generator().manual_seed({value['__generator__']})"
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + " ..."


def describe_call(name: str, args: tuple, kwargs: dict) -> str:
    parts = [short(a) for a in args] + [f"{k}={short(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def same_data(a: Any, b: Any) -> bool:
    if type(a) is dict and set(a) == {"__generator__"}:
        return True  # a generator is meant to advance
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else torch.equal(a, b)
    if type(a) in (list, tuple):
        return type(b) is type(a) and len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return type(b) is dict and a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def first_change(before: Any, after: Any) -> str:
    """Where an argument changed, in a few words."""
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == after.shape:
        differ = before != after
        if differ.any():
            index = [int(i) for i in differ.nonzero()[0]]
            return f"at index {index} it was {before[tuple(index)].item():.6g}, now {after[tuple(index)].item():.6g}"
    if type(before) in (list, tuple) and type(after) is type(before):
        if len(before) != len(after):
            return f"it had {len(before)} items, now {len(after)}"
        for i, (b, a) in enumerate(zip(before, after)):
            if not same_data(b, a):
                return f"item {i} was {short(b, 40)}, now {short(a, 40)}"
    return f"it was {short(before)}, now {short(after)}"


def translate(info: dict, call: str, target: Path, display: Callable[[Path], str]) -> Exception:
    """The learner's exception, as the one-line outcome the grader reports."""
    if info.get("not_implemented"):
        return NotImplementedYet(f"not implemented yet: write `{info['function']}` "
                                 f"in {display(target / info['file'])}")
    where = ""
    if info.get("function"):
        where = f" in `{info['function']}` ({display(target / info['file'])}, line {info['line']})"
    hint = ""
    if info["type"] in ("SystemExit", "Exit", "KeyboardInterrupt"):
        hint = " (sys.exit(), exit() and pytest.exit() end nothing but this call: remove them)"
    return LearnerRaised(f"{call} raised {info['type']}{where}: {info['message']}{hint}", info)


class Learner:
    """The chapter's learner module, reached through its worker."""

    def __init__(self, worker: Worker, display: Callable[[Path], str], expected_cases: Callable[[str, int], Any],
                 seed_of: Callable[[str], int], rule: Rule | None = None) -> None:
        self._worker, self._display = worker, display
        self._expected_cases, self._seed_of = expected_cases, seed_of
        self._rule = rule  # the "by hand" rule this test belongs to, if any

    def _run(self, op: str, name: str, args: tuple, kwargs: dict, call: str) -> dict:
        """One request; a "by hand" rule of this test broken at run time fails it (whatever the answer)."""
        answer = self._worker.run(op, name, list(args), dict(kwargs), call)
        used = answer.get("by_hand") or []
        if used and self._rule is not None:
            raise GradeFailure(f"rule broken: {self._rule.text}; {call} called {', '.join(used)} (seen at run time)")
        return answer

    def _answer(self, op: str, name: str, args: tuple, kwargs: dict, call: str) -> dict:
        answer = self._run(op, name, args, kwargs, call)
        if not answer["ok"]:
            raise translate(answer["error"], call, self._worker.target, self._display)
        return answer

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            text = describe_call(name, args, kwargs)
            answer = self._answer("call", name, args, kwargs, text)
            after_args, after_kwargs = answer["args_after"]
            for i, (before, after) in enumerate(list(zip(args, after_args)) + list(zip(kwargs.values(),
                                                                                     after_kwargs.values()))):
                if not same_data(before, after):
                    raise GradeFailure(f"{text} changed its input in place (argument {i + 1}: "
                                       f"{first_change(before, after)}): build a new list or tensor instead")
            return _unmark(answer["value"])

        call.__name__ = name
        return call

    def probe(self, probe: Callable[..., Any], *args: Any, describe: str | None = None, **kwargs: Any) -> Any:
        """Run the grader's ``probe`` (a ``probe_*`` function of the test file) on the learner's module."""
        text = describe or describe_call(probe.__name__.removeprefix("probe_"), args, kwargs)
        return _unmark(self._answer("probe", probe.__name__, args, kwargs, text)["value"])

    def raises(self, exception: str, name: str, *args: Any, why: str, **kwargs: Any) -> None:
        """``name(*args, **kwargs)`` must raise ``exception`` (by class name, subclasses count)."""
        text = describe_call(name, args, kwargs)
        answer = self._run("call", name, args, kwargs, text)
        if answer["ok"]:
            raise GradeFailure(f"{text} should raise {exception} ({why}), but it returned "
                               f"{short(_unmark(answer['value']))}")
        info = answer["error"]
        if exception not in info.get("mro", []):
            if info.get("not_implemented"):
                raise translate(info, text, self._worker.target, self._display)
            raise GradeFailure(f"{text} should raise {exception} ({why}), but it raised {info['type']}: "
                               f"{info['message']}")

    def case_seed(self, case: str) -> int:
        return self._seed_of(case)

    def case(self, case: str) -> tuple[Any, Any]:
        """(the learner's result, the reference result) for a seeded snapshot case of ``cases.py``."""
        seed = self._seed_of(case)
        got = self._answer("case", case, (seed,), {}, f"the seeded case {case!r} (seed {seed})")["value"]
        return _unmark(got), self._expected_cases(case, seed)
