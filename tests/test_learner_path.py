"""The learner's path holds together: each chapter teaches what it grades, in one vocabulary.

Reads the notebooks (JSON), the stubs and the package's signatures; runs no notebook. Checks:

* the stubs are what ``exercises/_grader/make_stubs.py`` makes of ``solutions/`` (they cannot drift);
* each chapter's ``## Your turn`` lists exactly its exercise file's public names and is followed
  by the one grading cell, and the markdown gives the terminal command too;
* each public graded name has, where the chapter teaches it, a markdown cell "### Your turn: `name`"
  naming the stub's file and a grading command ``pytest exercises/test_exNN_x.py -k ...`` whose ``-k``
  selects that piece's tests and no other (pytest's own collection decides), then a try-it code cell
  ``try_it("exNN_x", "name", lambda f: f(...), ...)`` whose calls of ``f`` bind to the stub's signature:
  one name and one signature everywhere, without printing the answer in the chapter;
* a by-hand piece's "Your turn" names every call the grader's by-hand rule table forbids;
* every ``try_it``/``pick`` names an exercise file and one of its public names;
* where ``minigpt`` has an exercise's name, the package's function takes its parameters in that order;
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
import os
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

def grader_file(name: str) -> Path:
    """One of the grader's own modules (``cases.py``), in ``exercises/_grader/`` or, before the move, ``exercises/_*.py``."""
    moved = EXERCISES / "_grader" / name
    return moved if moved.is_file() else EXERCISES / f"_{name}"


GRADER_CASES = grader_file("cases.py")


def by_hand_rules() -> tuple:
    """The grader's by-hand rule table (``integrity.RULES``): each rule's file, forbidden names and tests."""
    spec = importlib.util.spec_from_file_location("_grader_integrity", grader_file("integrity.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.RULES


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


def api_source(exercise: Path) -> Path:
    """Where an exercise's names and signatures are read: for exercises/, its solution (the stub is made from it,
    and a learner's clone may hold their own helpers or mistakes in exercises/); else the file itself."""
    solution = ROOT / "solutions" / exercise.name
    return solution if exercise.parent == EXERCISES and solution.is_file() else exercise


def exercise_api(exercise: Path) -> dict[str, list[str]]:
    """{public name: parameter names} of an exercise file."""
    tree = ast.parse(api_source(exercise).read_text(encoding="utf-8"))
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

def make_stubs_script(exercises: Path = EXERCISES) -> Path:
    """``make_stubs.py``, in ``exercises/_grader/`` or, before the move, ``exercises/``."""
    moved = exercises / "_grader" / "make_stubs.py"
    return moved if moved.is_file() else exercises / "make_stubs.py"


def stub_problems(exercises: Path = EXERCISES) -> Problems:
    run = subprocess.run([sys.executable, str(make_stubs_script(exercises)), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    if run.returncode == 0:
        return []
    return [f"exercises/_grader/make_stubs.py --check failed: the stubs differ from what solutions/ gives. Edit the "
            f"solution, then run .venv/bin/python exercises/_grader/make_stubs.py exNN.\n{run.stdout}{run.stderr}"]


def is_stub_body(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body that is only a docstring and ``raise NotImplementedError`` (comments are not in the tree)."""
    body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return (len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None
            and ast.unparse(body[0].exc) in ("NotImplementedError", "NotImplementedError()"))


def stub_functions(tree: ast.Module) -> dict[str, ast.AST]:
    """{"name" or "Class.method": node} for every function and method of a module, top level and one class deep."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found |= {f"{node.name}.{m.name}": m for m in node.body
                      if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return found


def learner_work(folder: Path, exercises: Path = EXERCISES) -> str:
    """Which pieces of ``exercises/`` a learner has written: "ex02_batching.py: get_batch, ..." ('' if none).

    A piece is written when make_stubs.py's stub (made into ``folder``) leaves its body to the learner
    and the file in ``exercises/`` holds more than the ``raise NotImplementedError``.
    """
    subprocess.run([sys.executable, str(make_stubs_script()), "--solutions", str(ROOT / "solutions"),
                    "--exercises", str(folder)], check=True, capture_output=True, cwd=ROOT)
    written = []
    for stub in sorted(folder.glob("ex[0-9][0-9]_*.py")):
        mine = exercises / stub.name
        try:
            theirs = stub_functions(ast.parse(mine.read_text(encoding="utf-8")))
        except (OSError, SyntaxError):
            continue
        pieces = [name for name, node in stub_functions(ast.parse(stub.read_text(encoding="utf-8"))).items()
                  if is_stub_body(node) and name in theirs and not is_stub_body(theirs[name])]
        if pieces:
            written.append(f"{stub.name}: {', '.join(pieces)}")
    return "; ".join(written)


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


# A piece's own "Your turn": "### Your turn: `get_batch`", then its try-it cell.
PIECE_TURN = re.compile(r"^#{2,4}\s+Your turn:\s*`([A-Za-z_]\w*)")
# "pytest exercises/test_ex02_batching.py -k get_batch" (or -k "a or b"), in the terminal or the notebook.
PIECE_COMMAND = re.compile(r"pytest\s+(?:-[a-jl-z]\w*\s+)*(?:\.\./)?exercises/(test_ex\d\d_\w+\.py)"
                           r"(?:\s+-[a-jl-z]\w*)*\s+-k\s+(\"[^\"]+\"|'[^']+'|[^\s`\"']+)")
TRY_IT_FUNCTIONS = {"try_it", "pick"}


def piece_turns(cells: list[dict]) -> dict[str, list[int]]:
    """{name: [indices of markdown cells with a heading line "### Your turn: `name`"]}"""
    turns: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            for line in source(cell).split("\n"):
                if match := PIECE_TURN.match(line.strip()):
                    turns.setdefault(match[1], []).append(index)
    return turns


def piece_text(cell: dict, name: str) -> str:
    """The part of a markdown cell that is name's "Your turn": from its heading to the next heading or the end."""
    lines = source(cell).split("\n")
    start = next(i for i, line in enumerate(lines) if (m := PIECE_TURN.match(line.strip())) and m[1] == name)
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^#{1,4}\s", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def piece_commands(text: str) -> list[tuple[str, str]]:
    """(grader file, -k expression) of every per-piece grading command in ``text``."""
    return [(grader, expression.strip("\"'")) for grader, expression in PIECE_COMMAND.findall(text)]


def signature_of(node: ast.FunctionDef | ast.ClassDef) -> inspect.Signature:
    """The call signature of a stub read as text: a function's, or a class's ``__init__`` without ``self``."""
    if isinstance(node, ast.ClassDef):
        inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        if not inits:
            return inspect.Signature([])
        return signature_of(inits[0]).replace(parameters=list(signature_of(inits[0]).parameters.values())[1:])
    P, args, given = inspect.Parameter, node.args, object()
    positional = args.posonlyargs + args.args
    defaults = [P.empty] * (len(positional) - len(args.defaults)) + [given] * len(args.defaults)
    found = [P(a.arg, P.POSITIONAL_ONLY if i < len(args.posonlyargs) else P.POSITIONAL_OR_KEYWORD, default=d)
             for i, (a, d) in enumerate(zip(positional, defaults))]
    found += [P(args.vararg.arg, P.VAR_POSITIONAL)] if args.vararg else []
    found += [P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else given)
              for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    found += [P(args.kwarg.arg, P.VAR_KEYWORD)] if args.kwarg else []
    return inspect.Signature(found)


def stub_signatures(exercise: Path) -> dict[str, inspect.Signature]:
    tree = ast.parse(api_source(exercise).read_text(encoding="utf-8"))
    return {name: signature_of(node) for name, node in public_definitions(tree).items()}


def try_it_calls(tree: ast.Module) -> list[ast.Call]:
    """Every ``try_it(...)`` or ``pick(...)`` call in a cell."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", None)) in TRY_IT_FUNCTIONS]


def constant_args(call: ast.Call) -> list:
    """The call's first two arguments when they are written as strings (module, name), else Nones."""
    return [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
            for a in (call.args + [None, None])[:2]]


def calls_of_the_piece(call: ast.Call, tree: ast.Module) -> list[ast.Call] | None:
    """The calls ``run`` makes of the learner's object: ``f(...)`` in ``lambda f: f(...)`` (or a def in the cell).

    None when ``run`` is neither a lambda nor a function defined in the cell.
    """
    run = call.args[2] if len(call.args) > 2 else next((k.value for k in call.keywords if k.arg == "run"), None)
    if isinstance(run, ast.Name):
        run = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == run.id), None)
    if not isinstance(run, (ast.Lambda, ast.FunctionDef)) or not run.args.args:
        return None
    learner = run.args.args[0].arg
    body = run.body if isinstance(run.body, list) else [run.body]
    return [n for statement in body for n in ast.walk(statement)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == learner]


def binding_problem(call: ast.Call, signature: inspect.Signature) -> str | None:
    """Why the call's arguments, as written, do not bind to ``signature`` (None if they do, or cannot be told)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None  # *args / **kwargs: the count is not in the text
    try:
        signature.bind(*range(len(call.args)), **{k.arg: 0 for k in call.keywords})
    except TypeError as error:
        return str(error)
    return None


def turn_problems(notebook: Path, exercise: Path) -> Problems:
    """Each public graded name has its "### Your turn: `name`" cell, then a try-it cell that calls it as the stub says.

    The cell names the stub's file and a grading command ``pytest exercises/test_exNN_x.py -k ...`` (what the
    ``-k`` selects is checked by ``selection_problems``); the next cell calls ``try_it("exNN_x", "name",
    lambda f: f(...))``, and every call of ``f`` there binds to the stub's parameters.
    """
    cells = cells_of(notebook)
    turns, signatures = piece_turns(cells), stub_signatures(exercise)
    stub, grader, problems = f"exercises/{exercise.name}", f"test_{exercise.name}", []
    for name in [n for n in turns if n not in signatures]:
        problems.append(f"{where(notebook, turns[name][0])}: 'Your turn: `{name}`', but {stub} has no public {name} "
                        f"(it holds {list(signatures)})")
    for name, signature in signatures.items():
        if name not in turns:
            problems.append(f"{notebook.name}: {stub} grades {name}{signature}, but no markdown cell starts with "
                            f"'### Your turn: `{name}`' where the chapter teaches it")
            continue
        if len(turns[name]) > 1:
            problems.append(f"{notebook.name} cells {turns[name]}: more than one 'Your turn: `{name}`' cell")
        index = turns[name][0]
        text = piece_text(cells[index], name)
        if stub not in text:
            problems.append(f"{where(notebook, index)}: 'Your turn: `{name}`' should name the file {stub}")
        commands = piece_commands(text)
        if not commands:
            problems.append(f"{where(notebook, index)}: 'Your turn: `{name}`' should give the grading command for just "
                            f"this piece: `pytest exercises/{grader} -k {name}` (a -k that selects its tests)")
        problems += [f"{where(notebook, index)}: the grading command names exercises/{file}; {name} is graded by "
                     f"exercises/{grader}" for file, _ in commands if file != grader]
        following = cells[index + 1] if index + 1 < len(cells) else None
        tree = python_of(source(following)) if following and following["cell_type"] == "code" else None
        calls = [c for c in try_it_calls(tree) if constant_args(c) == [exercise.stem, name]] if tree else []
        if not calls:
            found = "nothing" if following is None else f"a {following['cell_type']} cell: {source(following)[:80]!r}"
            problems.append(f"{where(notebook, index + 1)}: right after 'Your turn: `{name}`' comes a try-it code cell "
                            f"calling try_it(\"{exercise.stem}\", \"{name}\", lambda f: f(<the chapter's example>), "
                            f"reference=lambda: ...) (found {found})")
            continue
        if "nbval-check-output" in following.get("metadata", {}).get("tags", []):
            problems.append(f"{where(notebook, index + 1)}: a try-it cell's output depends on the learner's file: "
                            f"remove its nbval-check-output tag")
        for call in calls:
            uses = calls_of_the_piece(call, tree)
            if not uses:
                problems.append(f"{where(notebook, index + 1)}: try_it's run argument should call {name} itself, "
                                f"as in lambda f: f(...) (found {ast.unparse(call)[:100]!r})")
            for use in uses or []:
                if (why := binding_problem(use, signature)) is not None:
                    problems.append(f"{where(notebook, index + 1)}: {ast.unparse(use)} does not fit {stub}'s "
                                    f"{name}{signature}: {why}")
    return problems


def try_it_target_problems(notebook: Path, exercises: Path = EXERCISES) -> Problems:
    """Every ``try_it``/``pick`` in the chapter names an exercise file and one of its public names."""
    apis = {path.stem: exercise_api(path) for path in exercise_files(exercises).values()}
    problems = []
    for index, cell in enumerate(cells_of(notebook)):
        tree = python_of(source(cell)) if cell["cell_type"] == "code" else None
        for call in try_it_calls(tree) if tree else []:
            module, name = constant_args(call)
            if module not in apis:
                problems.append(f"{where(notebook, index)}: {ast.unparse(call)[:80]!r}: the first argument should be "
                                f"an exercise file's name, one of {sorted(apis)}")
            elif name not in apis[module]:
                problems.append(f"{where(notebook, index)}: {ast.unparse(call)[:80]!r}: exercises/{module}.py has no "
                                f"public {name!r} (it holds {list(apis[module])})")
    return problems


# ---------------------------------------------------------------- what a -k selects

def referenced_pieces(grader: Path, names: set[str], cases: Path | None) -> dict[str, set[str]]:
    """{test function: the graded names it exercises}, read from the grader's text.

    A test exercises a name it uses as an attribute (``ex.get_batch``) or a string (``ex.probe(..., "Head")``),
    directly or through the grader file's own functions and the seeded cases it names (``ex.case("bpe_rounds")``).
    """
    tree = ast.parse(grader.read_text(encoding="utf-8"))
    tables = [{n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}]
    if cases is not None and cases.is_file():
        tables.append({n.name: n for n in ast.parse(cases.read_text(encoding="utf-8")).body
                       if isinstance(n, ast.FunctionDef)})

    def uses(node: ast.AST, seen: set) -> set[str]:
        found = set()
        for n in ast.walk(node):
            word = (n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name)
                    else n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None)
            if word is None:
                continue
            found |= {word} & names
            for number, table in enumerate(tables):
                if word in table and (number, word) not in seen:
                    seen.add((number, word))
                    found |= uses(table[word], seen)
        return found

    return {name: uses(node, set()) for name, node in tables[0].items() if name.startswith("test")}


def squashed(text: str) -> str:
    return text.replace("_", "").lower()


def pieces_tests(grader: Path, name: str, names: set[str], cases: Path | None) -> tuple[set[str], set[str]]:
    """(the tests a -k for ``name`` may select, the tests it must select).

    It may select a test that exercises ``name``; it must select those that exercise ``name`` alone or are
    named after it (``test_get_batch_...``, ``test_tinygpt_...`` for ``TinyGPT``).
    """
    pieces = referenced_pieces(grader, names, cases)
    allowed = {test for test, used in pieces.items() if name in used}
    required = {test for test in allowed if pieces[test] == {name} or squashed(name) in squashed(test)}
    return allowed, required


COLLECT = r"""
import json, sys
from pathlib import Path
import pytest
from _pytest.mark import KeywordMatcher
from _pytest.mark.expression import Expression

wanted, out = json.loads(sys.argv[1]), sys.argv[2]
grabbed = []

class Grab:
    def pytest_collection_modifyitems(self, items):
        grabbed.extend(items)

status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sorted({f for f, _ in wanted})],
                     plugins=[Grab()])
results = []
for file, expression in wanted:
    try:
        compiled = Expression.compile(expression)
    except Exception as error:
        results.append({"error": f"-k {expression!r} is not a pytest expression: {error}"})
        continue
    results.append({"selected": sorted({item.originalname for item in grabbed if item.path == Path(file).resolve()
                                        and compiled.evaluate(KeywordMatcher.from_item(item))})})
Path(out).write_text(json.dumps({"status": int(status), "results": results}))
"""
_SELECTED: dict[tuple[str, str, str], dict] = {}


def selected_tests(wanted: list[tuple[Path, str]], cwd: Path = ROOT) -> list[dict]:
    """What ``pytest <grader> -k <expression>`` collects, for each (grader, expression): {"selected": [...]} or {"error"}.

    One pytest collection (in a subprocess, with pytest's own -k matching) for every pair not asked before.
    """
    key = lambda file, expression: (file.name, file.read_text(encoding="utf-8"), expression)  # noqa: E731
    missing = [(file, expression) for file, expression in wanted if key(file, expression) not in _SELECTED]
    if missing:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "selected.json"
            run = subprocess.run([sys.executable, "-c", COLLECT, json.dumps([[str(f), e] for f, e in missing]), str(out)],
                                 capture_output=True, text=True, cwd=cwd, timeout=600)
            if not out.is_file():
                raise RuntimeError(f"collecting the graders failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
            for (file, expression), result in zip(missing, json.loads(out.read_text())["results"]):
                _SELECTED[key(file, expression)] = result
    return [_SELECTED[key(file, expression)] for file, expression in wanted]


def selection_problems(notebook: Path, exercise: Path, cases: Path | None = None) -> Problems:
    """Each "Your turn: `name`" grading command's ``-k`` selects that piece's tests, and only tests of that piece."""
    cases = cases if cases is not None else GRADER_CASES
    cells, names = cells_of(notebook), set(exercise_api(exercise))
    grader = exercise.parent / f"test_{exercise.name}"
    asked = [(index, name, expression) for name, indices in piece_turns(cells).items() if name in names
             for index in indices for file, expression in piece_commands(piece_text(cells[index], name))
             if file == grader.name]
    if not asked or not grader.is_file():
        return []
    problems = []
    results = selected_tests([(grader, expression) for _, _, expression in asked], cwd=exercise.parent.parent)
    for (index, name, expression), result in zip(asked, results):
        command = f"pytest exercises/{grader.name} -k {expression!r}"
        if "error" in result:
            problems.append(f"{where(notebook, index)}: {command}: {result['error']}")
            continue
        allowed, required = pieces_tests(grader, name, names, cases)
        chosen = set(result["selected"])
        if not chosen:
            problems.append(f"{where(notebook, index)}: {command} selects no test: {name}'s tests are "
                            f"{sorted(required or allowed)}")
        if extra := sorted(chosen - allowed):
            problems.append(f"{where(notebook, index)}: {command} also selects {extra}, which do not grade {name}")
        if left := sorted(required - chosen):
            problems.append(f"{where(notebook, index)}: {command} leaves out {left}, which grade {name}")
    return problems


def catalogue_points(exercises: Path = EXERCISES) -> dict[str, int]:
    """{"01": points, ...}: each grader's ``@pytest.mark.points(n)`` marks summed (a test without one counts 1)."""
    points = {}
    for number, exercise in exercise_files(exercises).items():
        grader = exercises / f"test_{exercise.name}"
        if grader.is_file():
            tests = [n for n in ast.parse(grader.read_text(encoding="utf-8")).body
                     if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
            points[number] = sum(next((d.args[0].value for d in t.decorator_list if isinstance(d, ast.Call)
                                       and ast.unparse(d.func).endswith("points")), 1) for t in tests)
    return points


def grading_output_problems(notebook: Path, exercise: Path) -> Problems:
    """The committed output of the grading cell shows the grader's points as they are now (0/N for the chapter, the total)."""
    cells, grader = cells_of(notebook), f"test_{exercise.name}"
    points = catalogue_points(exercise.parent)
    problems = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code" or source(cell).strip() != GRADING_CELL.format(grader=grader):
            continue
        printed = re.sub(r"\x1b\[[0-9;]*m", "", "".join(source(o) if "source" in o else "".join(o.get("text", ""))
                                                         for o in cell.get("outputs", [])))
        shown = {m[0]: int(m[1]) for m in re.findall(r"^(\d\d|total)\b\D*?\d+(?:\.\d+)?/(\d+)", printed, flags=re.M)}
        number = exercise.name[2:4]
        wanted = {number: points.get(number), "total": sum(points.values())}
        if any(shown.get(key) != value for key, value in wanted.items()):
            problems.append(f"{where(notebook, index)}: the committed grading output shows "
                            f"{ {k: shown.get(k) for k in wanted} } points, the graders give {wanted}: re-execute the "
                            f"chapter (its grading cell prints the score table)")
    return problems


def by_hand_problems(notebook: Path, exercise: Path, rules: tuple | None = None,
                     cases: Path | None = None) -> Problems:
    """A "Your turn" for a by-hand piece (one whose tests a by-hand rule covers) names every call the rule forbids."""
    cells, names = cells_of(notebook), set(exercise_api(exercise))
    cases = cases if cases is not None else GRADER_CASES
    problems = []
    for rule in rules if rules is not None else by_hand_rules():
        if rule.file != exercise.name:
            continue
        for name, indices in piece_turns(cells).items():
            allowed, _ = pieces_tests(exercise.parent / f"test_{exercise.name}", name, names, cases) \
                if name in names else (set(), set())
            if not allowed & set(rule.tests):
                continue
            text = piece_text(cells[indices[0]], name)
            if missing := sorted(n for n in rule.names if n not in text):
                problems.append(f"{where(notebook, indices[0])}: 'Your turn: `{name}`' is by hand; list every call the "
                                f"grader forbids (exercises' by-hand rule table): {missing} are not named")
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


def test_stubs_are_generated_from_the_solutions(tmp_path):
    problems = stub_problems()
    if problems and not os.environ.get("CI") and (work := learner_work(tmp_path)):
        pytest.skip(f"exercises/ holds your own code ({work}): this check (the stubs are exactly what "
                    f"make_stubs.py makes of solutions/) is for the course's own copy, and runs where CI is set. "
                    f"Your files are left as they are")
    assert not problems, report(problems)


def test_every_exercise_file_has_its_chapter():
    missing = [f"exercises/{e.name} has no chapters/{n}_*.ipynb" for n, e in exercise_files().items()
               if n not in notebooks()]
    assert not missing, report(missing)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_your_turn_lists_the_exercises_and_grades_them(notebook, exercise):
    assert not (problems := your_turn_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_every_piece_has_its_turn_and_try_it_cell_with_the_stubs_signature(notebook, exercise):
    assert not (problems := turn_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_each_pieces_grading_command_selects_its_tests(notebook, exercise):
    assert not (problems := selection_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_the_committed_score_table_shows_todays_points(notebook, exercise):
    assert not (problems := grading_output_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook, exercise", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_by_hand_pieces_list_every_forbidden_call(notebook, exercise):
    assert not (problems := by_hand_problems(notebook, exercise)), report(problems)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_try_it_cells_name_an_exercise_and_its_piece(notebook):
    assert not (problems := try_it_target_problems(notebook)), report(problems)


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


def test_readme_lists_every_call_a_by_hand_rule_forbids():
    """The learner's loop in the README names every forbidden call of the grader's by-hand rules, as the chapters do."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### The learner's loop")
    learner = readme[start:readme.index("\n### ", start + 1)]
    missing = {rule.file: sorted(n for n in rule.names if n not in learner) for rule in by_hand_rules()}
    assert not any(missing.values()), f"README.md's learner's loop does not name {missing}"


def test_make_clean_keeps_every_committed_file(tmp_path):
    """`make clean` removes the environment and the runs, never a committed file (chapter 6 loads chapters/runs/)."""
    listed = subprocess.run(["git", "ls-files", "chapters/runs"], capture_output=True, text=True, cwd=ROOT)
    if listed.returncode != 0:
        pytest.skip("not a git clone: which files are committed cannot be told")
    committed = listed.stdout.split()
    made = [".venv/bin/python", "runs/demo/ckpt.pt", "chapters/runs/ch05/ckpt.pt", "chapters/runs/bpe1000.json",
            "chapters/runs/ch06_overfit/best.pt"]
    for name in ["Makefile", "pyproject.toml"]:
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    for name in committed + made:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    run = subprocess.run(["make", "clean"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (lost := [name for name in committed if not (tmp_path / name).is_file()]), \
        f"make clean deleted committed files: {lost}"
    assert not (left := [name for name in made if (tmp_path / name).exists()]), f"make clean left {left}"


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
# The chapter's grader: which test exercises which piece is read from its text.
GRADER = '''def test_get_batch_shapes(ex):
    ex.get_batch([1, 2, 3], 2, 1)


def test_y_is_shifted(ex):
    assert ex.get_batch


def test_window_length(ex):
    ex.probe(probe_window, "Window")


def test_batches_from_a_dataset(ex):
    ex.get_batch(ex.Window([1], 1), 1, 1)


def probe_window(m):
    return m.Window
'''
TURN = ("## Your turn\n\n- `get_batch(data, batch_size, context_length)` — random windows\n"
        "- `Window(data, context_length)` — a dataset\n\nOr, in JupyterLab's terminal: "
        "`pytest exercises/test_ex02_batching.py`\n")
GRADE = "import sys\n!{sys.executable} -m pytest -q ../exercises/test_ex02_batching.py"
TEACH = "windows = [data[i:i + 4] for i in (0, 3)]  # one window at a time, not the batch\nprint(windows)\n"
TURN_GET_BATCH = ("### Your turn: `get_batch`\n\nWrite `get_batch(data, batch_size, context_length, generator=None)` in "
                  "`exercises/ex02_batching.py`: it returns `x` and `y`, both `(batch_size, context_length)` int64.\n\n"
                  "Grade just this piece: `pytest exercises/test_ex02_batching.py -k \"get_batch or shifted\"`\n")
TRY_GET_BATCH = ('from tryit import try_it\n\n'
                 'try_it("ex02_batching", "get_batch", lambda f: f(data, 2, 4, generator=None),\n'
                 '       reference=lambda: minigpt.get_batch(data, 2, 4))')
TURN_WINDOW = ("### Your turn: `Window`\n\n`Window(data, context_length)` in `exercises/ex02_batching.py`.\n\n"
               "`pytest exercises/test_ex02_batching.py -k window_length`\n")
TRY_WINDOW = 'try_it("ex02_batching", "Window", lambda cls: len(cls(data, context_length=4)))'
GOOD = [("markdown", "# Chapter 2\n\n## 1. Shift\n\nAs section 1 shows; chapter 1, section 1 too."),
        ("code", TEACH), ("markdown", TURN_GET_BATCH), ("code", TRY_GET_BATCH), ("markdown", TURN_WINDOW),
        ("code", TRY_WINDOW), ("markdown", TURN), ("code", GRADE)]
CHAPTER_1 = [("markdown", "# Chapter 1\n\n## 1. Ids\n\nText.")]


@pytest.fixture(scope="module")
def selections_collected(tmp_path_factory):
    """What each -k of the synthetic cases selects, collected once (one pytest run) instead of once per case."""
    grader = tmp_path_factory.mktemp("grader") / "test_ex02_batching.py"
    grader.write_text(GRADER)
    every = [cells for cells, _ in BAD_CHAPTERS.values()] + list(GOOD_VARIANTS.values()) + [GOOD]
    texts = [cell[1] for cells in every for cell in cells if isinstance(cell, tuple) and cell[0] == "markdown"]
    selected_tests(sorted({(grader, expression) for text in texts for _, expression in piece_commands(text)}),
                   cwd=grader.parent)


@pytest.fixture
def course(tmp_path, selections_collected):
    """A two-chapter course: write(cells) makes chapter 2 with those cells; returns (notebook, exercise)."""
    (tmp_path / "figures").mkdir()
    write_notebook(tmp_path / "01_tokens.ipynb", CHAPTER_1)
    exercise = tmp_path / "ex02_batching.py"
    exercise.write_text(EXERCISE)
    (tmp_path / "test_ex02_batching.py").write_text(GRADER)

    def write(cells):
        return write_notebook(tmp_path / "02_batching.ipynb", cells), exercise
    return write


NO_CASES = Path("no-such-cases.py")


def all_problems(notebook: Path, exercise: Path) -> Problems:
    return (your_turn_problems(notebook, exercise) + turn_problems(notebook, exercise)
            + selection_problems(notebook, exercise, cases=NO_CASES) + try_it_target_problems(notebook, exercise.parent)
            + cross_reference_problems(notebook, notebook.parent) + tag_problems(notebook)
            + execution_problems(notebook) + figure_problems(notebook))


def test_a_consistent_chapter_has_no_problems(course):
    assert all_problems(*course(GOOD)) == []


def replace(index: int, cell) -> list:
    return [cell if i == index else c for i, c in enumerate(GOOD)]


def with_command(expression: str) -> list:
    return replace(2, ("markdown", TURN_GET_BATCH.replace('-k "get_batch or shifted"', f"-k {expression}")))


def with_try(text: str) -> list:
    return replace(3, ("code", text))


def tagged(text: str, tag: str) -> dict:
    return {"cell_type": "code", "execution_count": 1, "outputs": [], "source": text, "metadata": {"tags": [tag]}}


BAD_CHAPTERS = {
    "a bullet missing": (replace(6, ("markdown", TURN.replace("- `Window", "- Window"))), "bullets name"),
    "a bullet too many": (replace(6, ("markdown", TURN + "- `_helper(x)` — no\n")), "bullets name"),
    "a '+' bullet too many": (replace(6, ("markdown", TURN + "+ `extra(x)` — no\n")), "bullets name"),
    "a nested bullet too many": (replace(6, ("markdown", TURN + "  - `extra(x)` — no\n")), "bullets name"),
    "a numbered item too many": (replace(6, ("markdown", TURN + "1. `extra(x)` — no\n")), "bullets name"),
    "no Your turn": (GOOD[:6], "exactly one markdown cell"),
    "two Your turns": (GOOD + [("markdown", TURN)], "exactly one markdown cell"),
    "Your turn not first line": (replace(6, ("markdown", "Now:\n" + TURN)), "exactly one markdown cell"),
    "no terminal command": (replace(6, ("markdown", TURN.replace("`pytest exercises/test_ex02_batching.py`", ""))),
                            "terminal command"),
    "grading cell missing": (GOOD[:7], "right after '## Your turn'"),
    "grading cell for another chapter": (replace(7, ("code", GRADE.replace("ex02", "ex03"))), "exactly:"),
    "grading cell with .venv/bin/pytest": (replace(7, ("code", "!.venv/bin/pytest exercises/")), "exactly:"),
    "a section after Your turn": (GOOD + [("markdown", "## 9. More")], "must be the chapter's last section"),
    # each piece's own "Your turn" and try-it cell
    "a piece without its turn": (GOOD[:4] + GOOD[6:], "no markdown cell starts with '### Your turn: `Window`'"),
    "a turn for a name the stub lacks": (replace(4, ("markdown", TURN_WINDOW.replace("`Window`", "`Windows`", 1))),
                                         "has no public Windows"),
    "a piece's turn twice": (GOOD[:6] + GOOD[4:], "more than one 'Your turn: `Window`'"),
    "the turn names no file": (replace(4, ("markdown", TURN_WINDOW.replace("`exercises/ex02_batching.py`", "the file"))),
                               "should name the file exercises/ex02_batching.py"),
    "the -k command after the turn's section": (replace(4, ("markdown", TURN_WINDOW.replace(
        "`pytest exercises", "### Then\n\n`pytest exercises"))), "the grading command for just this piece"),
    "the turn has no -k command": (replace(4, ("markdown", TURN_WINDOW.replace(" -k window_length", ""))),
                                   "the grading command for just this piece"),
    "the command names another grader": (replace(2, ("markdown", TURN_GET_BATCH.replace(
        "test_ex02_batching.py -k", "test_ex03_attention.py -k"))), "is graded by exercises/test_ex02_batching.py"),
    "-k selects nothing": (with_command("getbatch"), "selects no test"),
    "-k selects another piece's test": (with_command("ex02"), "which do not grade get_batch"),
    "-k leaves a test out": (with_command("get_batch"), "leaves out ['test_y_is_shifted']"),
    "-k is not an expression": (with_command('"get_batch or"'), "is not a pytest expression"),
    "no try-it cell after the turn": (GOOD[:3] + GOOD[4:], "right after 'Your turn: `get_batch`' comes a try-it"),
    "try-it for another piece": (with_try(TRY_WINDOW), "right after 'Your turn: `get_batch`' comes a try-it"),
    "try-it for another file": (with_try(TRY_GET_BATCH.replace('"ex02_batching", "get_batch"',
                                                              '"ex03_attention", "get_batch"')), "comes a try-it"),
    "try-it tagged nbval-check-output": (replace(3, tagged(TRY_GET_BATCH, "nbval-check-output")),
                                         "remove its nbval-check-output tag"),
    "try-it call with an argument too many": (with_try(TRY_GET_BATCH.replace("generator=None", "None, 5")),
                                              "does not fit exercises/ex02_batching.py's get_batch"),
    "try-it call with a renamed keyword": (with_try(TRY_GET_BATCH.replace("generator=None", "block_size=4")),
                                           "unexpected keyword argument 'block_size'"),
    "try-it call missing an argument": (with_try(TRY_GET_BATCH.replace("f(data, 2, 4, generator=None)", "f(data)")),
                                        "missing a required argument"),
    "try-it building a class wrongly": (replace(5, ("code", TRY_WINDOW.replace("cls(data, context_length=4)",
                                                                               "cls(data, block_size=4)"))),
                                        "does not fit exercises/ex02_batching.py's Window"),
    "try-it that never calls the piece": (with_try('try_it("ex02_batching", "get_batch", lambda f: 1)'),
                                          "should call get_batch itself"),
    "try-it of a file that does not exist": (GOOD + [("code", 'try_it("ex02_bathing", "get_batch", lambda f: f())')],
                                             "an exercise file's name"),
    "pick of a name the file lacks": (GOOD + [("code", 'f = pick("ex02_batching", "get_batches", None)')],
                                      "has no public 'get_batches'"),
    # the rest of the chapter
    "missing section": (replace(0, ("markdown", "# Chapter 2\n\n## 1. Shift\n\nSee section 2.")), "section 2"),
    "section range past the end": (replace(0, ("markdown", "## 1. A\n\nSections 1–3 say it.")), "section 2"),
    "section in a code comment": (replace(1, ("code", TEACH + "# as in section 4\n")), "section 4"),
    "chapter that does not exist": (replace(0, ("markdown", "## 1. A\n\nChapter 8 will.")), "no chapters/08_"),
    "section of another chapter": (replace(0, ("markdown", "## 1. A\n\nchapter 1, section 2 did.")),
                                   "01_tokens.ipynb has no heading '## 2."),
    "nbval comment": (replace(1, ("code", "# NBVAL_CHECK_OUTPUT\n" + TEACH)), "NBVAL_CHECK_OUTPUT"),
    "unknown tag": (replace(1, tagged(TEACH, "nbval-check-outputs")), "unknown cell tag"),
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


GOOD_VARIANTS = {
    "run as a function of the cell": with_try('def run(f):\n    x, y = f(data, batch_size=2, context_length=4)\n'
                                              '    return y\n\ntry_it("ex02_batching", "get_batch", run)'),
    "the command in the notebook's form": replace(4, ("markdown", TURN_WINDOW.replace(
        "`pytest exercises/test_ex02_batching.py -k window_length`",
        "`!{sys.executable} -m pytest -q ../exercises/test_ex02_batching.py -k 'window and length'`"))),
    "*args are not counted": with_try('try_it("ex02_batching", "get_batch", lambda f: f(*args))'),
    "options around the file": replace(4, ("markdown", TURN_WINDOW.replace(
        "pytest exercises/test_ex02_batching.py -k", "pytest -q exercises/test_ex02_batching.py -x -k"))),
    "a pick in a later cell": GOOD + [("code", 'from tryit import pick\nW = pick("ex02_batching", "Window", None)')],
    "the turn after a paragraph of the same cell": replace(4, ("markdown", "So a window is a slice.\n\n" + TURN_WINDOW)),
}


@pytest.mark.parametrize("case", GOOD_VARIANTS)
def test_other_good_ways_to_write_a_turn_pass(course, case):
    assert all_problems(*course(GOOD_VARIANTS[case])) == []


def test_by_hand_turns_must_list_every_forbidden_call(course):
    from types import SimpleNamespace

    rule = SimpleNamespace(file="ex02_batching.py", names=frozenset({"unfold", "as_strided"}),
                           tests=frozenset({"test_y_is_shifted"}))
    notebook, exercise = course(GOOD)
    problems = by_hand_problems(notebook, exercise, rules=(rule,), cases=NO_CASES)
    assert len(problems) == 1 and "['as_strided', 'unfold'] are not named" in problems[0], report(problems)
    listed = TURN_GET_BATCH + "By hand: no `unfold`, no `as_strided`.\n"
    notebook, exercise = course(replace(2, ("markdown", listed)))
    assert by_hand_problems(notebook, exercise, rules=(rule,), cases=NO_CASES) == []


def test_a_stale_score_table_is_reported(course):
    """The grading cell's committed output must show the chapter's points and the total as the graders give them."""
    def graded(table: str) -> list:
        cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": GRADE,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": table}]}
        return GOOD[:7] + [cell]

    today = "chapter   points   passed\n02 batching   0/4   0/4\n\x1b[1mtotal   0/4   0/4\x1b[0m\n"
    assert grading_output_problems(*course(graded(today))) == []
    for stale in (today.replace("0/4   0/4\n\x1b", "0/5   0/4\n\x1b"), today.replace("total   0/4", "total   0/99")):
        problems = grading_output_problems(*course(graded(stale)))
        assert len(problems) == 1 and "re-execute the chapter" in problems[0], report(problems)


def test_tests_are_tied_to_the_pieces_they_exercise(tmp_path):
    grader, names = tmp_path / "test_ex02_batching.py", {"get_batch", "Window"}
    grader.write_text(GRADER)
    assert referenced_pieces(grader, names, None) == {
        "test_get_batch_shapes": {"get_batch"}, "test_y_is_shifted": {"get_batch"},
        "test_window_length": {"Window"}, "test_batches_from_a_dataset": {"get_batch", "Window"}}
    allowed, required = pieces_tests(grader, "get_batch", names, None)
    assert required == {"test_get_batch_shapes", "test_y_is_shifted"}
    assert allowed == required | {"test_batches_from_a_dataset"}


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


def test_a_learners_written_pieces_are_told_apart_from_the_stubs(tmp_path):
    """On a learner's clone the stub check skips, naming what they wrote; on fresh stubs there is nothing to name."""
    (tmp_path / "stubs").mkdir()
    (tmp_path / "mine").mkdir()
    subprocess.run([sys.executable, str(make_stubs_script()), "--exercises", str(tmp_path / "mine")], check=True,
                   capture_output=True, cwd=ROOT)
    assert learner_work(tmp_path / "stubs", exercises=tmp_path / "mine") == ""
    solution = (ROOT / "solutions" / "ex02_batching.py").read_text()
    (tmp_path / "mine" / "ex02_batching.py").write_text("import math\n" + solution)  # their own import too
    assert learner_work(tmp_path / "stubs", exercises=tmp_path / "mine") == (
        "ex02_batching.py: train_val_split, get_batch, sliding_windows, sequential_batches, WindowDataset.__init__, "
        "WindowDataset.__len__, WindowDataset.__getitem__")


def test_make_stub_keeps_the_text_around_the_bodies():
    import runpy

    make_stub = runpy.run_path(str(make_stubs_script()))["make_stub"]
    assert make_stub(SOLUTION) == STUB
    with pytest.raises(ValueError, match="own line"):
        make_stub("def f(x): return x\n")


def test_a_stub_edited_by_hand_fails_the_stub_check(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "solutions" / "ex02_batching.py").write_text('def f(x):\n    """Doc."""\n    return x\n')
    stub = tmp_path / "exercises" / "ex02_batching.py"
    command = [sys.executable, str(make_stubs_script()), "--solutions", str(tmp_path / "solutions"),
               "--exercises", str(tmp_path / "exercises")]
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert stub.read_text() == 'def f(x):\n    """Doc."""\n    # Your code here.\n    raise NotImplementedError\n'
    assert subprocess.run(command + ["--check"], capture_output=True).returncode == 0
    stub.write_text(stub.read_text().replace("Doc.", "Docs."))
    run = subprocess.run(command + ["--check"], capture_output=True, text=True)
    assert run.returncode == 1 and "ex02_batching.py" in run.stdout + run.stderr
    assert "Docs." in stub.read_text(), "--check must write nothing"


def test_make_stubs_never_overwrites_a_learners_work_unless_asked(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "solutions" / "ex02_batching.py").write_text('def f(x):\n    """Doc."""\n    return x + 1\n')
    stub = tmp_path / "exercises" / "ex02_batching.py"
    command = [sys.executable, str(make_stubs_script()), "--solutions", str(tmp_path / "solutions"),
               "--exercises", str(tmp_path / "exercises")]
    assert subprocess.run(command, capture_output=True).returncode == 0
    mine = 'def f(x):\n    """Doc."""\n    return x + 2  # my own answer\n'
    stub.write_text(mine)
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 1 and stub.read_text() == mine, run.stdout + run.stderr
    assert "kept exercises/ex02_batching.py: it holds written code (f)" in run.stderr
    assert "--overwrite-work" in run.stderr
    run = subprocess.run(command + ["ex02", "--overwrite-work"], capture_output=True, text=True)
    assert run.returncode == 0 and "raise NotImplementedError" in stub.read_text(), run.stdout + run.stderr


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
