"""Load exercise modules (``exNN_<topic>.py``) from one chosen folder.

The grader can run against three folders: the learner's ``exercises/`` (the
default), the reference ``solutions/`` (``--solutions``) or any other folder
(``--target DIR``). Exercise files import each other by their plain names
(``ex04_model.py`` does ``from ex03_attention import MultiHeadAttention``), so
the folder is never put on ``sys.path`` (any other file there, a ``torch.py``,
a ``random.py``, a ``conftest.py``, would be imported in its place). A small
import hook answers every ``exNN_*`` import from the chosen folder and
nowhere else, and any ``exNN_*`` module already imported from another folder
is dropped first, so two targets can never be mixed.

Used only where a learner's code may run: in a worker (``worker.py``) and by
``make_snapshots.py`` on ``solutions/``; the pytest process never imports an
exercise file.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

EXERCISE_NAME = re.compile(r"^ex\d\d_\w+$")


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compile the ``.py`` file itself: a ``__pycache__/*.pyc`` beside it could hold other code than the
    file the integrity checks read (an "unchecked-hash" .pyc is used whatever the source says). The
    source was read when the folder was chosen, so the worker needs no right to read it afterwards."""

    def __init__(self, fullname: str, path: str, source: bytes) -> None:
        super().__init__(fullname, path)
        self.source = source

    def get_code(self, fullname):
        return self.source_to_code(self.source, self.path)


class _TargetFinder(importlib.abc.MetaPathFinder):
    """Resolve ``exNN_<topic>`` imports to files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sources = {f.stem: f.read_bytes() for f in sorted(folder.glob("ex[0-9][0-9]_*.py"))
                        if EXERCISE_NAME.match(f.stem) and f.is_file()}

    def find_spec(self, fullname, path=None, target=None):
        if not EXERCISE_NAME.match(fullname):
            return None
        file = self.folder / f"{fullname}.py"
        if fullname not in self.sources:  # never fall back to another folder's copy (the stubs, say)
            raise ModuleNotFoundError(f"{fullname}.py is not in the folder being graded, {self.folder}",
                                      name=fullname)
        loader = _SourceOnlyLoader(fullname, str(file), self.sources[fullname])
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_current: _TargetFinder | None = None


def use_target(folder: str | Path) -> Path:
    """Make ``folder`` the only place ``exNN_*`` modules are imported from."""
    global _current
    folder = Path(folder).resolve()
    if _current is not None and _current.folder == folder:
        return folder
    if _current is not None:
        sys.meta_path.remove(_current)
    for name in [n for n in sys.modules if EXERCISE_NAME.match(n)]:
        del sys.modules[name]
    _current = _TargetFinder(folder)
    sys.meta_path.insert(0, _current)
    return folder


def target_folder() -> Path:
    if _current is None:
        raise RuntimeError("use_target(folder) has not been called")
    return _current.folder


def load(name: str) -> ModuleType:
    """Import exercise module ``name`` (e.g. ``"ex02_batching"``) from the target."""
    file = target_folder() / f"{name}.py"
    if name not in _current.sources:
        raise FileNotFoundError(f"{file} does not exist")
    module = importlib.import_module(name)
    if Path(module.__file__).resolve() != file.resolve():  # pragma: no cover - safety net
        raise ImportError(f"{name} was imported from {module.__file__}, expected {file}")
    return module
