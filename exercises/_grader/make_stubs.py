"""Write the exercise stubs from the solutions, so the two can never drift.

``exercises/exNN_<topic>.py`` is derived from ``solutions/exNN_<topic>.py``:

* every function and method keeps its decorators, signature (comments and
  line breaks included) and docstring; the rest of its body becomes

      # Your code here.
      raise NotImplementedError

* private helpers (a def whose name starts with one underscore, such as
  ``TinyGPT._init_weights``) are solution detail and are left out of the stub;
  the learner writes their own (dunder methods like ``__init__`` are kept);
* code marked as given stays verbatim: end the line that holds the ``def``
  or ``class`` keyword with ``# given`` (or ``# given: why``). Use it for a
  helper the learner should call rather than write (a private one too); the
  marker stays in the stub, so the learner sees it;
* everything else (module docstring, imports, constants, class docstrings and
  class attributes) is copied as it is.

The source text is edited line by line where ``ast`` locates the bodies, so
comments and layout outside the removed bodies survive. Instructors edit the
solution, then run::

    python exercises/_grader/make_stubs.py              # rewrite every stub
    python exercises/_grader/make_stubs.py ex02         # only chapter 2 (or ex02_batching.py)
    python exercises/_grader/make_stubs.py --check      # exit 1 naming each stub that differs
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # exercises/
SOLUTIONS = HERE.parent / "solutions"
EXERCISE_NAME = re.compile(r"ex\d\d_\w+\.py")
GIVEN = re.compile(r"#\s*given\s*(?:$|[:(\u2014-])")  # "# given", "# given: why"
TODO = ("# Your code here.", "raise NotImplementedError")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def is_private(name: str) -> bool:
    """A private helper: one leading underscore, not a dunder such as ``__init__``."""
    return name.startswith("_") and not name.startswith("__")


def is_given(node: ast.AST, lines: list[str]) -> bool:
    """Whether the node's ``def``/``class`` line carries the ``# given`` marker."""
    return bool(GIVEN.search(lines[node.lineno - 1]))


def first_line(node: ast.stmt) -> int:
    """The first line of a statement, its decorators included (1-based)."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip())


def is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def body_span(fn: Function, lines: list[str]) -> tuple[int, int, str]:
    """Lines ``[start, end)`` (0-based) of the body to replace, and its indentation.

    The span runs from just after the docstring (or from the first statement,
    with the comments right above it) to the last statement, with any comment
    lines at the body's indentation that follow it.
    """
    body = fn.body
    has_docstring = ast.get_docstring(fn, clean=False) is not None
    code = body[1:] if has_docstring else body
    if body[0].lineno == fn.lineno:
        raise ValueError(f"line {fn.lineno}: put the body of {fn.name}() on its own line, below the signature")
    first = lines[body[0].lineno - 1]
    indent = first[:len(first) - len(first.lstrip())]  # the body's own whitespace (spaces or tabs)
    if has_docstring:
        start = body[0].end_lineno  # 0-based index of the line after the docstring
        if code and code[0].lineno == body[0].end_lineno:
            raise ValueError(f"line {fn.lineno}: put the code of {fn.name}() on its own line, after the docstring")
    else:
        start = first_line(code[0]) - 1
        while start - 1 >= fn.lineno and is_comment(lines[start - 1]) \
                and indentation(lines[start - 1]) >= len(indent):
            start -= 1
    end = code[-1].end_lineno if code else start
    probe = end
    while probe < len(lines) and (not lines[probe].strip() or is_comment(lines[probe])):
        if lines[probe].strip() and indentation(lines[probe]) < len(indent):
            break
        if lines[probe].strip():
            end = probe + 1
        probe += 1
    return start, end, indent


def stub_edits(tree: ast.Module, lines: list[str]) -> list[tuple[int, int, list[str]]]:
    """Every edit ``(start, end, new_lines)`` that turns the solution into the stub."""
    edits: list[tuple[int, int, list[str]]] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for block in ("body", "orelse", "finalbody"):  # defs under if/try/with/for
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            if is_given(node, lines):
                continue
            if is_private(node.name):
                edits.append(drop(node, lines))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            else:
                start, end, indent = body_span(node, lines)
                edits.append((start, end, [indent + TODO[0], indent + TODO[1]]))

    visit(tree.body)
    return edits


def drop(node: ast.stmt, lines: list[str]) -> tuple[int, int, list[str]]:
    """Remove a private helper, its decorators, and the blank lines before it."""
    start, end = first_line(node) - 1, node.end_lineno
    while start > 0 and not lines[start - 1].strip():
        start -= 1
    return start, end, []


def make_stub(source: str, name: str = "<solution>") -> str:
    """The stub text for a solution's source text."""
    tree = ast.parse(source, filename=name)
    lines = source.splitlines()
    try:
        edits = stub_edits(tree, lines)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    return "\n".join(lines) + "\n"


def written_pieces(current: str, wanted: str) -> list[str]:
    """Functions the stub leaves to the learner (``raise NotImplementedError``) that ``current`` fills in.

    A file with such a piece holds a learner's work: it is not overwritten unless asked (``--overwrite-work``).
    """
    def bodies(source: str) -> dict[str, bool]:
        """{qualified name: whether its body is only a docstring and the raise}."""
        found = {}

        def visit(statements: list[ast.stmt], prefix: str) -> None:
            for node in statements:
                if isinstance(node, ast.ClassDef):
                    visit(node.body, f"{prefix}{node.name}.")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    code = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
                    found[prefix + node.name] = (len(code) == 1 and isinstance(code[0], ast.Raise)
                                                 and code[0].exc is not None
                                                 and "NotImplementedError" in ast.unparse(code[0].exc))
        visit(ast.parse(source).body, "")
        return found

    try:
        mine = bodies(current)
    except SyntaxError:
        return ["(the file does not parse)"]
    return [name for name, is_todo in bodies(wanted).items() if is_todo and name in mine and not mine[name]]


def select(names: list[str], solutions: Path) -> list[Path]:
    """The solution files the selectors name (``ex02``, ``ex02_batching.py``, a path); all without any."""
    files = sorted(p for p in solutions.glob("ex[0-9][0-9]_*.py") if EXERCISE_NAME.fullmatch(p.name))
    if not files:
        raise SystemExit(f"make_stubs.py: no exNN_<topic>.py in {solutions}")
    if not names:
        return files
    chosen = []
    for raw in names:
        key = Path(raw).name
        match = [p for p in files if p.name == key or p.name.split("_")[0] == key or p.stem == key]
        if not match:
            known = ", ".join(p.name.split("_")[0] for p in files)
            raise SystemExit(f"make_stubs.py: no solution matches {raw!r} (chapters: {known}; "
                             f"give exNN, exNN_<topic>.py or a path)")
        chosen += [p for p in match if p not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="exNN or exNN_<topic>.py (default: every chapter)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stub that differs")
    parser.add_argument("--overwrite-work", action="store_true",
                        help="also replace a file whose stubbed functions hold code (a learner's work is lost)")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--exercises", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stale, kept = [], []
    if not args.chapters:
        orphans = sorted(p.name for p in args.exercises.glob("ex[0-9][0-9]_*.py")
                         if not (args.solutions / p.name).exists())
        for orphan in orphans:
            print(f"exercises/{orphan} has no solutions/{orphan} to be generated from")
        stale += orphans
    for solution in select(args.chapters, args.solutions):
        stub_path = args.exercises / solution.name
        try:
            wanted = make_stub(solution.read_text(encoding="utf-8"), f"solutions/{solution.name}")
        except (SyntaxError, ValueError) as error:
            print(f"make_stubs.py: {error}", file=sys.stderr)
            return 2
        current = stub_path.read_text(encoding="utf-8") if stub_path.exists() else None
        if current == wanted:
            continue
        if args.check:
            stale.append(stub_path.name)
            diff = difflib.unified_diff((current or "").splitlines(), wanted.splitlines(),
                                        f"exercises/{stub_path.name}", "generated from solutions/", lineterm="", n=1)
            print("\n".join(list(diff)[:40]))
        elif current is not None and not args.overwrite_work and (work := written_pieces(current, wanted)):
            print(f"kept exercises/{stub_path.name}: it holds written code ({', '.join(work)}), which a new stub "
                  f"would erase; to replace it anyway: make_stubs.py {solution.name.split('_')[0]} --overwrite-work",
                  file=sys.stderr)
            kept.append(stub_path.name)
        else:
            stub_path.write_text(wanted, encoding="utf-8")
            print(f"wrote exercises/{stub_path.name}")
    if kept:
        return 1
    if stale:
        print(f"\nout of date: {', '.join(stale)}; run: python exercises/_grader/make_stubs.py "
              f"{' '.join(s.split('_')[0] for s in stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
