"""The learner's path holds together: each chapter teaches what it grades, in one vocabulary.

Reads the notebooks (JSON), the stubs and the package's signatures; runs no notebook. Checks:

* the stubs are what ``exercises/make_stubs.py`` makes of ``solutions/`` (they cannot drift);
* each chapter's ``## Your turn`` lists exactly its exercise file's public names and is followed
  by the one grading cell, and the markdown gives the terminal command too;
* each exercise name is defined in its chapter with the same parameters, in the same order,
  and, where ``minigpt`` has the same name, the package's function takes them in that order;
* every "section N" and "chapter N" resolves;
* nbval markers are cell tags (no ``# NBVAL_`` comments), and only known tags are used;
* the committed notebooks were executed (outputs committed);
* every ``figures/<name>.png`` exists, and ``make_diagrams.py --check`` passes.

Each check is a function returning a list of problems, each naming the notebook, the cell and
what to fix. The tests at the end run them on synthetic notebooks to show each one catches its
own mistake.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
EXERCISES = ROOT / "exercises"

GRADING_CELL = "import sys\n!{{sys.executable}} -m pytest -q ../exercises/{grader}"
TERMINAL_COMMAND = "`pytest exercises/{grader}`"

# Tags nbval understands (we run `pytest --nbval-lax`, so only "nbval-check-output" cells are
# compared), and no others: an unknown tag is usually a typo of one of these that nbval ignores.
ALLOWED_TAGS = {"nbval-check-output", "nbval-ignore-output", "nbval-skip", "raises-exception",
                "nbval-raises-exception"}
NBVAL_COMMENT = re.compile(r"^\s*#+\s*(NBVAL_|PYTEST_VALIDATE_)")

# Exercise names whose parameters deliberately differ from minigpt's function of the same name,
# with the reason the notebook gives. Keep it empty: make the names agree instead.
PACKAGE_DIFFERENCES: dict[str, str] = {}

Problems = list[str]


# ---------------------------------------------------------------- reading notebooks and files

def cells_of(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def where(notebook: Path, index: int) -> str:
    return f"{notebook.name} cell {index}"


def notebooks(chapters: Path = CHAPTERS) -> dict[str, Path]:
    """{'02': chapters/02_batching.ipynb, ...}"""
    return {p.name[:2]: p for p in sorted(chapters.glob("[0-9][0-9]_*.ipynb"))}


def exercise_files(exercises: Path = EXERCISES) -> dict[str, Path]:
    """{'02': exercises/ex02_batching.py, ...}"""
    return {p.name[2:4]: p for p in sorted(exercises.glob("ex[0-9][0-9]_*.py"))}


def chapter_pairs(chapters: Path = CHAPTERS, exercises: Path = EXERCISES) -> list[tuple[Path, Path]]:
    """(notebook, exercise file) for every chapter 01-08 that has both."""
    books, stubs = notebooks(chapters), exercise_files(exercises)
    return [(books[n], stubs[n]) for n in sorted(books.keys() & stubs.keys()) if 1 <= int(n) <= 8]


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, method: bool = False) -> list[str]:
    """Parameter names in order (``*args``/``**kwargs`` with their stars); a class gives its ``__init__``'s."""
    if isinstance(node, ast.ClassDef):
        inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        return parameters(inits[0], method=True) if inits else []
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args]
    names += [f"*{args.vararg.arg}"] if args.vararg else []
    names += [a.arg for a in args.kwonlyargs]
    names += [f"**{args.kwarg.arg}"] if args.kwarg else []
    return names[1:] if method else names


def public_definitions(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level functions and classes whose names do not start with ``_``."""
    return {n.name: n for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_")}


def exercise_api(exercise: Path) -> dict[str, list[str]]:
    """{public name: parameter names} of an exercise file."""
    tree = ast.parse(exercise.read_text(encoding="utf-8"))
    return {name: parameters(node) for name, node in public_definitions(tree).items()}


def python_of(cell_source: str) -> ast.Module | None:
    """A code cell as Python (``!cmd`` and ``%magic`` turned into calls), or None if it does not parse."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(cell_source))
    except SyntaxError:
        return None


def headings(cells: list[dict]) -> set[int]:
    """The N of every ``## N. ...`` heading line in the markdown cells."""
    found = set()
    for cell in cells:
        if cell["cell_type"] == "markdown":
            found |= {int(n) for n in re.findall(r"^##\s+(\d+)\.", source(cell), flags=re.M)}
    return found


# ---------------------------------------------------------------- the checks

def stub_problems(exercises: Path = EXERCISES) -> Problems:
    run = subprocess.run([sys.executable, str(exercises / "make_stubs.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    if run.returncode == 0:
        return []
    return [f"exercises/make_stubs.py --check failed: the stubs differ from what solutions/ gives. Edit the "
            f"solution, then run .venv/bin/python exercises/make_stubs.py exNN.\n{run.stdout}{run.stderr}"]


def your_turn_problems(notebook: Path, exercise: Path) -> Problems:
    """One ``## Your turn`` cell, last section, listing the exercise's public names, then the grading cell."""
    cells = cells_of(notebook)
    grader = f"test_{exercise.name}"
    turns = [i for i, c in enumerate(cells)
             if c["cell_type"] == "markdown" and source(c).strip().split("\n")[0].strip() == "## Your turn"]
    if len(turns) != 1:
        return [f"{notebook.name}: needs exactly one markdown cell whose first line is '## Your turn' "
                f"(found {len(turns)}: cells {turns})"]
    index = turns[0]
    text = source(cells[index])
    problems = []
    # Every list item counts ("-", "*", "+", "1." or "1)", nested too): each renders as a thing to write.
    listed = re.findall(r"^\s*(?:[-*+]|\d+[.)])\s+`([A-Za-z_]\w*)", text, flags=re.M)
    wanted = list(exercise_api(exercise))
    if sorted(listed) != sorted(wanted):
        problems.append(f"{where(notebook, index)}: the '## Your turn' bullets name {listed}, but "
                        f"exercises/{exercise.name} holds {wanted}: start one bullet with each name in backticks, "
                        f"e.g. - `{wanted[0] if wanted else 'name'}(...)` — what it does")
    if TERMINAL_COMMAND.format(grader=grader) not in text:
        problems.append(f"{where(notebook, index)}: the '## Your turn' text should give the terminal command "
                        f"{TERMINAL_COMMAND.format(grader=grader)} (JupyterLab's terminal after `make lab`)")
    later = [i for i, c in enumerate(cells[index + 1:], index + 1)
             if c["cell_type"] == "markdown" and re.search(r"^#{1,2}\s", source(c), flags=re.M)]
    if later:
        problems.append(f"{where(notebook, later[0])}: a heading after '## Your turn' (cell {index}): "
                        f"'Your turn' must be the chapter's last section")
    expected = GRADING_CELL.format(grader=grader)
    following = cells[index + 1] if index + 1 < len(cells) else None
    if following is None or following["cell_type"] != "code" or source(following).strip() != expected:
        found = "nothing" if following is None else f"a {following['cell_type']} cell: {source(following)[:80]!r}"
        problems.append(f"{where(notebook, index + 1)}: right after '## Your turn' comes one code cell that is "
                        f"exactly:\n{expected}\n(found {found})")
    return problems


def definition_problems(notebook: Path, exercise: Path) -> Problems:
    """Every public exercise name is defined at top level of a code cell, with the same parameters."""
    definitions: dict[str, list[tuple[int, list[str]]]] = {}
    for index, cell in enumerate(cells_of(notebook)):
        tree = python_of(source(cell)) if cell["cell_type"] == "code" else None
        for name, node in (public_definitions(tree) if tree else {}).items():
            definitions.setdefault(name, []).append((index, parameters(node)))
    problems = []
    for name, wanted in exercise_api(exercise).items():
        if name not in definitions:
            problems.append(f"{notebook.name}: exercises/{exercise.name} grades {name}({', '.join(wanted)}), but no "
                            f"code cell defines it (def/class {name} at the top level of a cell): teach it there")
        for index, found in definitions.get(name, []):
            if found != wanted:
                problems.append(f"{where(notebook, index)}: {name}({', '.join(found)}) differs from "
                                f"exercises/{exercise.name}'s {name}({', '.join(wanted)}): use the same parameter "
                                f"names in the same order")
    return problems


def package_parameters(obj) -> list[str]:
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [stars.get(p.kind, "") + p.name for p in inspect.signature(obj).parameters.values()]


def is_in_order(names: list[str], within: list[str]) -> bool:
    """Whether every one of ``names`` appears in ``within``, in the same relative order."""
    rest = iter(within)
    return all(name in rest for name in names)


def package_problems(exercise: Path, package, config_fields: set[str]) -> Problems:
    """Where the package exports an exercise's name, it takes the exercise's parameters in the same order.

    A package class built from a ``config`` (``MultiHeadAttention(config)``) takes the exercise's
    sizes from the config instead: each exercise parameter it does not name must be a field of
    ``GPTConfig`` (``d_model``, not ``n_embd``).
    """
    problems = []
    for name, wanted in exercise_api(exercise).items():
        obj = getattr(package, name, None)
        if obj is None or name in PACKAGE_DIFFERENCES:
            continue
        found = package_parameters(obj)
        if "config" in found:
            unknown = [p for p in wanted if p not in found and p not in config_fields]
            if unknown:
                problems.append(f"exercises/{exercise.name}: {name} takes {unknown}, which are neither parameters "
                                f"of minigpt.{name}({', '.join(found)}) nor fields of GPTConfig: rename them")
        elif not is_in_order(wanted, found):
            problems.append(f"exercises/{exercise.name}: {name}({', '.join(wanted)}) should take its parameters "
                            f"with the names and in the order of minigpt.{name}({', '.join(found)}) "
                            f"(the package may have more, optional ones)")
    return problems


REFERENCE = re.compile(
    r"\b(?:[Cc]hapter\s+(?P<of>\d+)(?:,|'s|’s)?\s+)?(?P<kind>[Ss]ections?|[Cc]hapters?)\s+"
    r"(?P<numbers>\d+(?:\s*(?:–|-|,|and|or|to)\s*\d+)*)")


def referenced_numbers(text: str) -> list[int]:
    """'2–4' -> [2, 3, 4]; '2 and 5' -> [2, 5]."""
    numbers = []
    for part in re.split(r"\s*(?:,|and|or)\s*", text):
        ends = [int(n) for n in re.split(r"\s*(?:–|-|to)\s*", part)]
        numbers += list(range(ends[0], ends[-1] + 1)) if len(ends) == 2 else ends
    return numbers


def cross_reference_problems(notebook: Path, chapters: Path = CHAPTERS) -> Problems:
    """Every "section N" names a "## N." heading (of chapter M after "chapter M,"); every "chapter N" exists."""
    books = notebooks(chapters)
    cells = cells_of(notebook)
    own = headings(cells)
    problems = []
    for index, cell in enumerate(cells):
        for match in REFERENCE.finditer(source(cell)):
            numbers = referenced_numbers(match["numbers"])
            said = match.group(0)
            if match["kind"].lower().startswith("chapter"):
                missing = [n for n in numbers if f"{n:02d}" not in books]
                if missing:
                    problems.append(f"{where(notebook, index)}: '{said}' names chapter {missing[0]}, but there is no "
                                    f"chapters/{missing[0]:02d}_*.ipynb")
                continue
            target, sections = notebook, own
            if match["of"]:
                target = books.get(f"{int(match['of']):02d}")
                if target is None:
                    problems.append(f"{where(notebook, index)}: '{said}': there is no chapters/"
                                    f"{int(match['of']):02d}_*.ipynb")
                    continue
                sections = headings(cells_of(target))
            missing = [n for n in numbers if n not in sections]
            if missing:
                problems.append(f"{where(notebook, index)}: '{said}' points to section {missing[0]}, but "
                                f"{target.name} has no heading '## {missing[0]}. ...' (it has {sorted(sections)})")
    return problems


def tag_problems(notebook: Path) -> Problems:
    """No ``# NBVAL_`` comment lines; only nbval's tags; not both check- and ignore-output."""
    problems, commented = [], []
    for index, cell in enumerate(cells_of(notebook)):
        commented += [(index, line.strip()) for line in source(cell).splitlines() if NBVAL_COMMENT.match(line)]
        tags = cell.get("metadata", {}).get("tags", [])
        unknown = sorted(set(tags) - ALLOWED_TAGS)
        if unknown:
            problems.append(f"{where(notebook, index)}: unknown cell tag(s) {unknown}; allowed: {sorted(ALLOWED_TAGS)}")
        if {"nbval-check-output", "nbval-ignore-output"} <= set(tags):
            problems.append(f"{where(notebook, index)}: tagged both nbval-check-output and nbval-ignore-output: "
                            f"keep one")
    if commented:
        places = ", ".join(str(index) for index, _ in commented)
        markers = sorted({line for _, line in commented})
        problems.append(f"{notebook.name} cells {places}: {markers} comments are in what the learner reads: remove "
                        f"the line and give the cell the tag instead (# NBVAL_CHECK_OUTPUT -> nbval-check-output)")
    return problems


def execution_problems(notebook: Path) -> Problems:
    """Every code cell was run, so the committed notebook reads with its outputs."""
    code = [(index, cell) for index, cell in enumerate(cells_of(notebook)) if cell["cell_type"] == "code"]
    problems = [f"{where(notebook, index)}: empty code cell: delete it" for index, cell in code
                if not source(cell).strip()]
    unrun = [str(index) for index, cell in code if source(cell).strip() and cell.get("execution_count") is None]
    if unrun:
        problems.append(f"{notebook.name} cells {', '.join(unrun)}: never executed: run the notebook top to bottom "
                        f"(JupyterLab's Run All, or jupyter nbconvert --to notebook --execute --inplace "
                        f"chapters/{notebook.name}, both installed by `make lab`) and commit it with its outputs")
    return problems


def figure_problems(notebook: Path) -> Problems:
    """Every ``figures/<name>.png`` the notebook mentions is a file in chapters/figures/."""
    problems = []
    for index, cell in enumerate(cells_of(notebook)):
        for name in re.findall(r"figures/([\w.-]+\.png)", source(cell)):
            if not (notebook.parent / "figures" / name).is_file():
                problems.append(f"{where(notebook, index)}: shows figures/{name}, which is not in chapters/figures/: "
                                f"draw it in chapters/diagrams/ and run make_diagrams.py")
    return problems


def diagram_problems(chapters: Path = CHAPTERS) -> Problems:
    run = subprocess.run([sys.executable, str(chapters / "diagrams" / "make_diagrams.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    return [] if run.returncode == 0 else [f"make_diagrams.py --check failed:\n{run.stdout}{run.stderr}"]


def report(problems: Problems) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in problems)


# ---------------------------------------------------------------- the course as committed

PAIRS = chapter_pairs()
NOTEBOOKS = list(notebooks().values())


def test_stubs_are_generated_from_the_solutions():
    assert not (problems := stub_problems()), report(problems)


def test_every_exercise_file_has_its_chapter():
    missing = [f"exercises/{e.name} has no chapters/{n}_*.ipynb" for n, e in exercise_files().items()
               if n not in notebooks()]
    assert not missing, report(missing)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_your_turn_lists_the_exercises_and_grades_them(notebook, exercise):
    assert not (problems := your_turn_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_every_exercise_is_taught_with_its_signature(notebook, exercise):
    assert not (problems := definition_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("exercise", [e for _, e in PAIRS], ids=[e.stem for _, e in PAIRS])
def test_exercise_names_take_the_packages_parameters(exercise):
    import minigpt

    config_fields = {f.name for f in fields(minigpt.GPTConfig)}
    assert not (problems := package_problems(exercise, minigpt, config_fields)), report(problems)


NOTEBOOK_CHECKS = {
    "cross_references": cross_reference_problems,
    "nbval_tags": tag_problems,
    "executed": execution_problems,
    "figures_exist": figure_problems,
}


@pytest.mark.parametrize("check", NOTEBOOK_CHECKS)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook(notebook, check):
    assert not (problems := NOTEBOOK_CHECKS[check](notebook)), report(problems)


def test_readme_grades_with_the_notebooks_commands():
    """The README's learner's loop gives a chapter's grading cell and terminal command, as the notebooks do."""
    readme = "\n".join(line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    graders = re.findall(r"-m pytest -q \.\./exercises/(test_ex\d\d_\w+\.py)", readme)
    assert graders, "README.md: the learner's loop should show the grading cell: " + GRADING_CELL.format(grader="...")
    for grader in graders:
        assert (EXERCISES / grader).is_file(), f"README.md names exercises/{grader}, which does not exist"
        assert GRADING_CELL.format(grader=grader) in readme, "README.md: write the grading cell exactly as the notebooks do"
        assert TERMINAL_COMMAND.format(grader=grader) in readme, \
            f"README.md: give the terminal command {TERMINAL_COMMAND.format(grader=grader)} beside the grading cell"


def test_diagrams_regenerate_and_match_what_is_committed():
    assert not (problems := diagram_problems()), report(problems)


# ---------------------------------------------------------------- each check catches its mistake

def write_notebook(path: Path, cells: list[tuple[str, str] | dict]) -> Path:
    """A minimal notebook from (cell_type, source) pairs (or ready cell dicts); code cells count as run."""
    built = []
    for cell in cells:
        if isinstance(cell, tuple):
            kind, text = cell
            cell = {"cell_type": kind, "metadata": {}, "source": text}
            if kind == "code":
                cell.update(execution_count=1, outputs=[])
        built.append(cell)
    path.write_text(json.dumps({"cells": built, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1))
    return path


EXERCISE = '''"""Chapter 2 exercises."""


def get_batch(data, batch_size, context_length, generator=None):
    """Doc."""
    raise NotImplementedError


def _helper(x):
    return x


class Window:
    """Doc."""

    def __init__(self, data, context_length):
        """Doc."""
        raise NotImplementedError
'''
TURN = ("## Your turn\n\n- `get_batch(data, batch_size, context_length)` — random windows\n"
        "- `Window(data, context_length)` — a dataset\n\nOr, in JupyterLab's terminal: "
        "`pytest exercises/test_ex02_batching.py`\n")
GRADE = "import sys\n!{sys.executable} -m pytest -q ../exercises/test_ex02_batching.py"
TEACH = ("def get_batch(data, batch_size, context_length, generator=None):\n    return data\n\n"
         "class Window:\n    def __init__(self, data, context_length):\n        self.data = data\n")
GOOD = [("markdown", "# Chapter 2\n\n## 1. Shift\n\nAs section 1 shows; chapter 1, section 1 too."),
        ("code", TEACH), ("markdown", TURN), ("code", GRADE)]
CHAPTER_1 = [("markdown", "# Chapter 1\n\n## 1. Ids\n\nText.")]


@pytest.fixture
def course(tmp_path):
    """A two-chapter course: write(cells) makes chapter 2 with those cells; returns (notebook, exercise)."""
    (tmp_path / "figures").mkdir()
    write_notebook(tmp_path / "01_tokens.ipynb", CHAPTER_1)
    exercise = tmp_path / "ex02_batching.py"
    exercise.write_text(EXERCISE)

    def write(cells):
        return write_notebook(tmp_path / "02_batching.ipynb", cells), exercise
    return write


def all_problems(notebook: Path, exercise: Path) -> Problems:
    return (your_turn_problems(notebook, exercise) + definition_problems(notebook, exercise)
            + cross_reference_problems(notebook, notebook.parent) + tag_problems(notebook)
            + execution_problems(notebook) + figure_problems(notebook))


def test_a_consistent_chapter_has_no_problems(course):
    assert all_problems(*course(GOOD)) == []


def replace(index: int, cell):
    return [cell if i == index else c for i, c in enumerate(GOOD)]


BAD_CHAPTERS = {
    "a bullet missing": (replace(2, ("markdown", TURN.replace("- `Window", "- Window"))), "bullets name"),
    "a bullet too many": (replace(2, ("markdown", TURN + "- `_helper(x)` — no\n")), "bullets name"),
    "a '+' bullet too many": (replace(2, ("markdown", TURN + "+ `extra(x)` — no\n")), "bullets name"),
    "a nested bullet too many": (replace(2, ("markdown", TURN + "  - `extra(x)` — no\n")), "bullets name"),
    "a numbered item too many": (replace(2, ("markdown", TURN + "1. `extra(x)` — no\n")), "bullets name"),
    "taught only under if False": (replace(1, ("code", "if False:\n" + "".join(f"    {line}\n" for line in
                                                                               TEACH.splitlines()))),
                                   "no code cell defines it"),
    "taught only in a raw cell": (replace(1, ("raw", TEACH)), "no code cell defines it"),
    "no Your turn": (GOOD[:2], "exactly one markdown cell"),
    "two Your turns": (GOOD + [("markdown", TURN)], "exactly one markdown cell"),
    "Your turn not first line": (replace(2, ("markdown", "Now:\n" + TURN)), "exactly one markdown cell"),
    "no terminal command": (replace(2, ("markdown", TURN.replace("`pytest exercises/test_ex02_batching.py`", ""))),
                            "terminal command"),
    "grading cell missing": (GOOD[:3], "right after '## Your turn'"),
    "grading cell for another chapter": (replace(3, ("code", GRADE.replace("ex02", "ex03"))), "exactly:"),
    "grading cell with .venv/bin/pytest": (replace(3, ("code", "!.venv/bin/pytest exercises/")), "exactly:"),
    "a section after Your turn": (GOOD + [("markdown", "## 9. More")], "must be the chapter's last section"),
    "exercise not taught": (replace(1, ("code", "x = 1")), "no code cell defines it"),
    "my_ prefix": (replace(1, ("code", TEACH.replace("def get_batch", "def my_get_batch"))), "no code cell defines"),
    "parameters reordered": (replace(1, ("code", TEACH.replace("batch_size, context_length,",
                                                               "context_length, batch_size,"))), "differs from"),
    "class parameter renamed": (replace(1, ("code", TEACH.replace("(self, data, context_length)",
                                                                  "(self, data, block_size)"))), "Window(data, "),
    "second, different definition": (GOOD[:2] + [("code", "def get_batch(data):\n    pass")] + GOOD[2:],
                                     "differs from"),
    "missing section": (replace(0, ("markdown", "# Chapter 2\n\n## 1. Shift\n\nSee section 2.")), "section 2"),
    "section range past the end": (replace(0, ("markdown", "## 1. A\n\nSections 1–3 say it.")), "section 2"),
    "section in a code comment": (replace(1, ("code", TEACH + "# as in section 4\n")), "section 4"),
    "chapter that does not exist": (replace(0, ("markdown", "## 1. A\n\nChapter 8 will.")), "no chapters/08_"),
    "section of another chapter": (replace(0, ("markdown", "## 1. A\n\nchapter 1, section 2 did.")),
                                   "01_tokens.ipynb has no heading '## 2."),
    "nbval comment": (replace(1, ("code", "# NBVAL_CHECK_OUTPUT\n" + TEACH)), "NBVAL_CHECK_OUTPUT"),
    "unknown tag": (replace(1, {"cell_type": "code", "execution_count": 1, "outputs": [], "source": TEACH,
                                "metadata": {"tags": ["nbval-check-outputs"]}}), "unknown cell tag"),
    "never executed": (replace(1, {"cell_type": "code", "execution_count": None, "outputs": [], "source": TEACH,
                                   "metadata": {}}), "never executed"),
    "empty code cell": (GOOD + [("code", "")], "empty code cell"),
    "missing figure": (replace(0, ("markdown", "## 1. A\n\n![x/y](figures/ch02_shift.png)")), "figures/ch02_shift"),
}


@pytest.mark.parametrize("case", BAD_CHAPTERS)
def test_each_mistake_is_reported_with_its_place(course, case):
    cells, expected = BAD_CHAPTERS[case]
    problems = all_problems(*course(cells))
    assert any(expected in p for p in problems), report(problems)
    assert all("02_batching.ipynb" in p or "ex02" in p for p in problems), report(problems)


def test_package_parameters_are_checked_in_order(tmp_path):
    exercise = tmp_path / "ex02_batching.py"
    exercise.write_text(EXERCISE)

    class Package:
        @staticmethod
        def get_batch(data, batch_size, context_length, generator=None, device="cpu"):
            pass

        class Window:
            def __init__(self, data, config):
                pass

    assert package_problems(exercise, Package, {"context_length"}) == []
    assert "neither parameters" in " ".join(package_problems(exercise, Package, {"d_model"}))
    Package.get_batch = staticmethod(lambda data, context_length, batch_size, generator=None: None)
    assert "in the order of minigpt.get_batch" in " ".join(package_problems(exercise, Package, {"context_length"}))
    Package.get_batch = staticmethod(lambda data, batch_size, **options: None)
    assert "minigpt.get_batch(data, batch_size, **options)" in " ".join(
        package_problems(exercise, Package, {"context_length"}))


def test_section_lists_and_ranges_are_read_whole():
    assert referenced_numbers("2–4") == [2, 3, 4]
    assert referenced_numbers("2 and 5") == [2, 5]
    assert referenced_numbers("1, 3 or 6") == [1, 3, 6]


SOLUTION = '''"""Module."""

import torch

SIZE = 4  # kept


def public(x,  # a comment in the signature
           y):
    """Doc."""
    # a solution comment
    return x + y


def _private_helper():
    return 1


def helper(x):  # given
    return x * 2


class Model:
    """Doc."""

    def __init__(self, n):
        """Doc."""
        self.n = n

    @staticmethod
    def _init_weights(m):
        return m

    def forward(self, x):
        return x
        # trailing solution comment
'''
STUB = '''"""Module."""

import torch

SIZE = 4  # kept


def public(x,  # a comment in the signature
           y):
    """Doc."""
    # Your code here.
    raise NotImplementedError


def helper(x):  # given
    return x * 2


class Model:
    """Doc."""

    def __init__(self, n):
        """Doc."""
        # Your code here.
        raise NotImplementedError

    def forward(self, x):
        # Your code here.
        raise NotImplementedError
'''


def test_make_stub_keeps_the_text_around_the_bodies():
    import runpy

    make_stub = runpy.run_path(str(EXERCISES / "make_stubs.py"))["make_stub"]
    assert make_stub(SOLUTION) == STUB
    with pytest.raises(ValueError, match="own line"):
        make_stub("def f(x): return x\n")


def test_a_stub_edited_by_hand_fails_the_stub_check(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "solutions" / "ex02_batching.py").write_text('def f(x):\n    """Doc."""\n    return x\n')
    stub = tmp_path / "exercises" / "ex02_batching.py"
    command = [sys.executable, str(EXERCISES / "make_stubs.py"), "--solutions", str(tmp_path / "solutions"),
               "--exercises", str(tmp_path / "exercises")]
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert stub.read_text() == 'def f(x):\n    """Doc."""\n    # Your code here.\n    raise NotImplementedError\n'
    assert subprocess.run(command + ["--check"], capture_output=True).returncode == 0
    stub.write_text(stub.read_text().replace("Doc.", "Docs."))
    run = subprocess.run(command + ["--check"], capture_output=True, text=True)
    assert run.returncode == 1 and "ex02_batching.py" in run.stdout + run.stderr
    assert "Docs." in stub.read_text(), "--check must write nothing"


DIAGRAM = '''from _draw import box, new_diagram


def figures():
    fig, ax = new_diagram(2, 1)
    box(ax, 0.2, 0.2, 1.5, 0.6, "x")
    return {NAMES}
'''


def diagram_course(root: Path, names: str, shown: str) -> None:
    """chapters-like folder: diagrams/ (_draw.py and one chapter-2 module), a notebook showing ``shown``."""
    diagrams = root / "diagrams"
    diagrams.mkdir()
    (diagrams / "_draw.py").write_text((CHAPTERS / "diagrams" / "_draw.py").read_text())
    (diagrams / "ch02_batching.py").write_text(DIAGRAM.replace("{NAMES}", names))
    write_notebook(root / "02_batching.ipynb", [("markdown", f"![the shift]({shown})")])


def run_make_diagrams(argv: list[str], capsys) -> tuple[int, str]:
    """make_diagrams.main in this process (matplotlib loads once): (exit status, what it printed)."""
    spec = importlib.util.spec_from_file_location("make_diagrams", CHAPTERS / "diagrams" / "make_diagrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        status = module.main(argv)
    except SystemExit as stop:  # a refusal: the message is the exit code
        print(stop.code)
        status = 1
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.mark.parametrize("case, expected", [
    ("consistent", None),
    ("not drawn", "which no chapters/diagrams/chNN_*.py draws"),
    ("not committed", "missing from chapters/figures/"),
    ("no generator", "is drawn by no chapters/diagrams"),
    ("resized", "pixels"),
    ("bad name", "must look like"),
])
def test_diagram_check_catches_each_disagreement(tmp_path, capsys, case, expected):
    names = '{"ch02_shift.png": fig}' if case != "bad name" else '{"shift.png": fig}'
    diagram_course(tmp_path, names, "figures/ch02_window.png" if case == "not drawn" else "figures/ch02_shift.png")
    status, out = run_make_diagrams(["--root", str(tmp_path)], capsys)
    assert status == (1 if case == "bad name" else 0), out
    figure = tmp_path / "figures" / "ch02_shift.png"
    assert figure.is_file() == (case != "bad name")
    if case == "not committed":
        figure.unlink()
    if case == "no generator":
        (tmp_path / "figures" / "ch02_old.png").write_bytes(figure.read_bytes())
    if case == "resized":
        import matplotlib.pyplot as plt

        fig, _ = plt.subplots(figsize=(1, 1))
        fig.savefig(figure, dpi=110)
        plt.close(fig)
    status, out = run_make_diagrams(["--root", str(tmp_path), "--check"], capsys)
    if expected is None:
        assert status == 0, out
    else:
        assert status == 1 and expected in out, out


def test_diagrams_are_the_same_bytes_when_drawn_twice(tmp_path):
    diagrams = tmp_path / "diagrams"
    diagrams.mkdir()
    (diagrams / "_draw.py").write_text((CHAPTERS / "diagrams" / "_draw.py").read_text())
    (diagrams / "ch02_batching.py").write_text(DIAGRAM.replace("{NAMES}", '{"ch02_shift.png": fig}'))
    script = [sys.executable, str(CHAPTERS / "diagrams" / "make_diagrams.py"), "--root", str(tmp_path)]
    drawn = []
    for _ in range(2):
        subprocess.run(script, check=True, capture_output=True)
        drawn.append((tmp_path / "figures" / "ch02_shift.png").read_bytes())
        (tmp_path / "figures" / "ch02_shift.png").unlink()
    assert drawn[0] == drawn[1]
    assert b"Software" not in drawn[0] and b"matplotlib" not in drawn[0].lower()
