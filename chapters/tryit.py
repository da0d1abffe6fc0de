"""Try your own exercise code inside a chapter, beside minigpt's.

A chapter's "Your turn" asks you to write a function in ``exercises/exNN_*.py``. The cell after it
calls ``try_it``, which imports your file afresh (an edit is seen without restarting the kernel),
runs your function on the chapter's example and prints your result beside minigpt's. Not written
yet? One line says so and the chapter goes on with minigpt's piece. Your code raises? You see your
own traceback, and the chapter goes on with minigpt's piece.

This is not grading: your code runs here, in the notebook's own kernel. ``pytest exercises/`` grades.

The folder of your files is ``exercises/`` beside ``chapters/``; the environment variable
``MINIGPT_LEARNER_DIR`` points elsewhere (the project's tests point it at ``solutions/``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import math
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

PROJECT = Path(__file__).resolve().parent.parent
RTOL, ATOL = 1e-4, 1e-5  # the grader's float tolerance


def learner_dir() -> Path:
    """The folder that holds the learner's ``exNN_*.py`` files."""
    return Path(os.environ.get("MINIGPT_LEARNER_DIR", PROJECT / "exercises")).resolve()


def where(module: str) -> str:
    """The learner's file as the learner names it: ``exercises/ex02_batching.py``."""
    path = learner_dir() / f"{module}.py"
    try:
        return str(path.relative_to(PROJECT))
    except ValueError:
        return str(path)


class _FromSource(importlib.machinery.SourceFileLoader):
    """Compiles a learner's file from its text at every import: no ``__pycache__`` read or written.

    Python's bytecode cache trusts a source's size and whole-second time, so an edit made within the
    second that keeps the size would otherwise run the old code.
    """

    def path_stats(self, path: str) -> dict:
        raise OSError("a learner's file is always compiled from its source")


class _LearnerFiles(importlib.abc.MetaPathFinder):
    """Finds ``exNN_*`` modules in the learner's folder (before anything on ``sys.path``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        file = learner_dir() / f"{name}.py"
        if not (name[:2] == "ex" and name[2:4].isdigit() and file.is_file()):
            return None
        return importlib.util.spec_from_file_location(name, file, loader=_FromSource(name, str(file)))


def load(module: str) -> ModuleType:
    """Import the learner's ``module`` afresh, and the earlier chapters' files it imports."""
    folder = str(learner_dir())
    if folder not in sys.path:  # the learner's own helper modules, if any; last, so that a helper
        sys.path.append(folder)  # named like Python's own (statistics.py) shadows nothing
    if not any(isinstance(finder, _LearnerFiles) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LearnerFiles())
    for name in [n for n in sys.modules if n[:2] == "ex" and n[2:4].isdigit()]:
        del sys.modules[name]  # exNN_* modules: re-read from disk on this import
    importlib.invalidate_caches()
    return importlib.import_module(module)


def _is_stub(node: ast.AST) -> bool:
    """A def whose body, after its docstring and comments, is only ``raise NotImplementedError``."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def unwritten(module: str, name: str) -> list[str]:
    """The parts of ``name`` (a function, or a class's methods) still left as stubs in the file."""
    tree = ast.parse((learner_dir() / f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            if isinstance(node, ast.FunctionDef):
                return [name] if _is_stub(node) else []
            return [f"{name}.{m.name}" for m in node.body
                    if isinstance(m, ast.FunctionDef) and _is_stub(m)]
    return [name]  # not defined at all


def pick(module: str, name: str, fallback: Any) -> Any:
    """The learner's ``name`` if it is written (no stub left in it), else ``fallback``, saying which."""
    try:
        missing = unwritten(module, name)
    except SyntaxError as error:  # the file does not parse: say where, and keep the chapter running
        print(f"{name}: {_syntax(module, error)}: using minigpt's")
        return fallback
    if missing:
        print(f"{name}: not written yet ({', '.join(missing)} in {where(module)}): using minigpt's")
        return fallback
    try:
        value = getattr(load(module), name)
    except Exception:
        _show_traceback(module)
        print(f"{name}: {where(module)} did not import: using minigpt's")
        return fallback
    print(f"{name}: yours, from {where(module)}")
    return value


def _syntax(module: str, error: SyntaxError) -> str:
    """Where the learner's file fails to parse (``module``'s, or an earlier chapter's it imports), as one line."""
    if str(error.filename).endswith(".py"):  # ast.parse says '<unknown>'
        module = Path(error.filename).stem
    return f"{where(module)} has a syntax error (line {error.lineno}: {error.msg})"


def kind(value: Any) -> Any:
    """What the cells below rely on: the type, a tensor's shape and dtype, a container's length and items."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return ("sequence", [kind(v) for v in value])  # a tuple for a list is the same, as in `same`
    if isinstance(value, dict):
        return ("dict", {k: kind(v) for k, v in value.items()})
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def try_it(module: str, name: str, run: Callable[[Any], Any],
           reference: Callable[[], Any] | None = None) -> Any:
    """Run ``run(your_name)`` and print it beside ``reference()`` (minigpt's); return what the chapter uses.

    Returns your result when it runs and is of the kind minigpt's is (type, shape, dtype, length),
    else minigpt's (so the cells below keep working).
    """
    expected = reference() if reference is not None else None
    try:
        learners = load(module)
    except SyntaxError as error:
        if error.filename is None or not str(error.filename).startswith(str(learner_dir())):
            raise  # not the learner's file: a bug to see
        print(f"{name}: {_syntax(module, error)}; the chapter goes on with minigpt's.")
        return _fallback(expected, reference)
    try:
        mine = run(getattr(learners, name))
    except NotImplementedError:
        stubs = unwritten(module, name) or [_raised_in()]
        print(f"{name}: not written yet ({', '.join(stubs)} raises NotImplementedError in "
              f"{where(module)}); the chapter goes on with minigpt's.")
        return _fallback(expected, reference)
    except Exception:
        _show_traceback(module)
        print(f"{name}: your code raised (traceback above); the chapter goes on with minigpt's.")
        return _fallback(expected, reference)
    print(f"yours ({where(module)}):")
    show(mine)
    if reference is not None:
        print("minigpt's:")
        show(expected)
        print(f"same as minigpt's (rtol {RTOL:g}, atol {ATOL:g}): {same(mine, expected)}")
        if kind(mine) != kind(expected):
            print(f"{name}: yours is not of the kind minigpt's is ({_brief(mine)} where minigpt's is "
                  f"{_brief(expected)}); the chapter goes on with minigpt's.")
            return expected
    return mine


def _brief(value: Any) -> str:
    """A value's kind in a few words: ``tensor (2, 3) float32``, ``list of 2``, ``NoneType``."""
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, (list, tuple, dict)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _fallback(expected: Any, reference: Callable[[], Any] | None) -> Any:
    """Show minigpt's result (when there is one) and hand it on."""
    if reference is not None:
        print("minigpt's:")
        show(expected)
    return expected


def same(a: Any, b: Any) -> bool:
    """Equal within the grader's tolerance: tensors, numbers, and lists, tuples or dicts of them."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return (a.shape == b.shape and a.dtype == b.dtype
                and torch.allclose(a.detach().cpu().double(), b.detach().cpu().double(),
                                   rtol=RTOL, atol=ATOL, equal_nan=True))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(
            a, b, rel_tol=RTOL, abs_tol=ATOL)
    return type(a) is type(b) and a == b


def show(value: Any, indent: str = "  ") -> None:
    """Print a value briefly: a tensor's shape, dtype and (when small) its numbers."""
    if isinstance(value, torch.Tensor):
        head = f"{indent}tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
        if value.numel() <= 64:
            body = str(value.detach().cpu().tolist() if value.dim() else value.item())
        else:
            body = str(value.detach().flatten()[:8].cpu().tolist())[:-1] + ", ...]"
        print(f"{head}: {body}")
    elif isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        for item in value:
            show(item, indent)
    else:
        text = repr(value)
        print(indent + (text if len(text) <= 300 else text[:300] + " ..."))


def _raised_in() -> str:
    """The function that raised the exception being handled (a stub of an earlier chapter, say)."""
    frame = traceback.extract_tb(sys.exc_info()[2])[-1]
    return f"{frame.name} ({Path(frame.filename).name})"


def _show_traceback(module: str) -> None:
    """Print the exception being handled from the first frame in the learner's folder on."""
    kind, error, tb = sys.exc_info()
    frames = traceback.extract_tb(tb)
    folder = str(learner_dir())
    first = next((i for i, f in enumerate(frames) if f.filename.startswith(folder)), 0)
    print("Traceback (your code):", file=sys.stderr)
    print("".join(traceback.format_list(frames[first:])), end="", file=sys.stderr)
    print("".join(traceback.format_exception_only(kind, error)), end="", file=sys.stderr)
