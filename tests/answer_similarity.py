"""How close a chapter comes to printing a graded answer: normalised syntax trees, compared as tokens.

Each graded definition in ``solutions/exNN_*.py`` (a public top-level function or class, not marked
``# given``) is compared with every function and class defined in chapter NN's code cells, and,
when the answer's body is long enough to be more than one operation, with each code cell as a whole.
Both sides are normalised first: docstrings removed, every identifier that the code binds (function,
class, parameter and variable names) renamed to ``v0, v1, ...`` in order of first appearance, so a
renamed copy reads the same; attribute names (``torch.tril``, ``.masked_fill``) and constants stay.
The similarity is difflib's ratio between the two token streams, 2·matches / (len(a) + len(b)),
1.0 for a copy up to renaming. ``THRESHOLD`` is where a chapter counts as printing the answer.

Run it as a script to see every pair at or above a similarity: ``python tests/answer_similarity.py [0.5]``.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.6       # at or above: the chapter shows the answer (up to renaming) or most of it
CELL_MIN_TOKENS = 30  # answers shorter than this (one operation) are compared with definitions only
KEEP = set(dir(builtins)) | {"self", "torch", "nn", "F", "math", "np", "super"}


@dataclass
class Match:
    chapter: str
    answer: str
    where: str  # "def NAME in cell N" or "cell N"
    similarity: float


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


class _Rename(ast.NodeTransformer):
    """Rename bound identifiers to v0, v1, ... in order of first appearance."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in KEEP:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg, node.annotation = self._new(node.arg), None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name, node.returns, node.decorator_list = self._new(node.name), None, []
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._new(node.name)
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        node.annotation = ast.Constant(None)
        self.generic_visit(node)
        return node


def tokens(code: str | ast.AST) -> list[str]:
    """The normalised token stream of ``code`` (source text or a syntax tree)."""
    tree = ast.parse(code) if isinstance(code, str) else ast.parse(ast.unparse(code))
    _strip_docstrings(tree)
    tree = _Rename().visit(tree)
    text = ast.unparse(ast.fix_missing_locations(tree))
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    return [t.string for t in tokenize.tokenize(io.BytesIO(text.encode()).readline) if t.type not in skip]


def similarity(a: list[str], b: list[str]) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def graded_answers(solution: Path) -> dict[str, ast.AST]:
    """Public top-level functions and classes of a solution file, except those marked ``# given``."""
    source = solution.read_text(encoding="utf-8")
    lines = source.splitlines()
    answers = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            around = " ".join(lines[max(first - 2, 0):node.lineno])
            if "# given" not in around:
                answers[node.name] = node
    return answers


def _body(node: ast.AST) -> ast.Module:
    """A function's body (a class's whole body) as a module, so it compares with a cell's code."""
    return ast.Module(body=list(node.body), type_ignores=[])


def chapter_code(notebook: Path) -> list[tuple[int, ast.Module]]:
    """(cell index, parsed code) of every code cell; IPython lines (``!``, ``%``) dropped."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    parsed = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join(l for l in source.splitlines() if not re.match(r"\s*[!%]", l))
        try:
            parsed.append((index, ast.parse(source)))
        except SyntaxError:
            continue
    return parsed


def matches(chapter: Path, solution: Path, at_least: float = THRESHOLD) -> list[Match]:
    """Every (answer, chapter code) pair whose similarity is at least ``at_least``."""
    found = []
    for name, answer in graded_answers(solution).items():
        whole, body = tokens(answer), tokens(_body(answer))
        for index, cell in chapter_code(chapter):
            for node in ast.walk(cell):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    score = similarity(whole, tokens(node))
                    if score >= at_least:
                        found.append(Match(chapter.name, name, f"def {node.name} in cell {index}", score))
            if len(body) >= CELL_MIN_TOKENS:
                score = similarity(body, tokens(cell))
                if score >= at_least:
                    found.append(Match(chapter.name, name, f"cell {index}", score))
    return found


def pairs() -> list[tuple[Path, Path]]:
    """(chapter notebook, solution file) for every chapter that has both."""
    out = []
    for solution in sorted((ROOT / "solutions").glob("ex[0-9][0-9]_*.py")):
        number = solution.name[2:4]
        for notebook in sorted((ROOT / "chapters").glob(f"{number}_*.ipynb")):
            out.append((notebook, solution))
    return out


if __name__ == "__main__":
    level = float(sys.argv[1]) if len(sys.argv) > 1 else THRESHOLD
    total = 0
    for notebook, solution in pairs():
        answers = graded_answers(solution)
        total += len(answers)
        best = {}
        for m in matches(notebook, solution, level):
            if m.answer not in best or m.similarity > best[m.answer].similarity:
                best[m.answer] = m
        for m in best.values():
            print(f"{m.similarity:.2f}  {m.chapter}: {m.answer}  ~  {m.where}")
    print(f"graded definitions: {total}")
