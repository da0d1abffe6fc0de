"""Integrity checks on a learner's files, read as text (never imported).

Two kinds of findings, each with the file, the line and the construct:

- **integrity**: code that reaches for answers or for the grader instead of
  computing: importing ``minigpt``, ``solutions`` or the grader's modules,
  naming ``solutions/`` or ``snapshots/``, ``exec``/``eval``/``compile``/
  ``__import__``/``importlib``, touching ``__code__``, ``sys.modules`` or
  frames, patching a module (``torch.isclose = ...``) or ``builtins``. With
  ``--strict`` the chapter earns 0 (and so does every chapter whose file
  imports the flagged one); without it, the learner sees a warning.
- **by hand**: an exercise that says "by hand" must not call the library
  function that does the work (fused attention in chapter 3, ``F.cross_entropy``,
  ``F.log_softmax`` or ``torch.logsumexp`` in chapter 5's ``cross_entropy``,
  ``F.dropout`` or ``nn.Dropout`` in chapter 6's ``dropout``, ``F.rms_norm``, ``nn.RMSNorm`` or
  torch's Muon in chapter 8), by attribute, by name (``getattr(F, "dropout")``) or through a
  variant whose name contains it (``torch._fused_rms_norm``, ``F.dropout1d``).
  The tests of that function fail, in every mode, with a message naming the rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from pathlib import Path

EXERCISE_FILE = re.compile(r"^ex\d\d_\w+\.py$")
FORBIDDEN_MODULES = {"minigpt", "solutions", "importlib", "builtins", "ctypes", "pytest", "_pytest", "conftest",
                     "_grader", "_grading", "_cases", "_client", "_learner", "_worker", "_protocol", "_target",
                     "_integrity", "_oracles",
                     "gc", "inspect", "_posixsubprocess"}
FORBIDDEN_NAMES = {"exec", "eval", "compile", "__import__", "__builtins__", "globals", "breakpoint", "vars",
                   "__loader__", "__spec__"}
FORBIDDEN_ATTRIBUTES = {"__code__", "__globals__", "__builtins__", "__closure__", "__subclasses__", "f_globals",
                        "f_locals", "f_back", "f_builtins", "_getframe", "gi_frame", "tb_frame",
                        "__defaults__", "__kwdefaults__", "meta_path", "path_hooks",
                        "__self__", "ctypes", "__getattribute__", "__dict__",
                        # what would switch off the run-time watch of the by-hand rules (watch.py)
                        "DisableTorchFunction", "DisableTorchFunctionSubclass", "_pop_torch_function_stack",
                        "_push_on_torch_function_stack", "_set_torch_function_mode", "_pop_mode",
                        "_get_current_function_mode_stack", "_len_torch_function_stack", "_disable_dynamo"}  # print.__self__ is the builtins module; torch.ctypes is ctypes
FORBIDDEN_WORDS = re.compile(r"solutions|snapshots|_grader|_grading|_cases|conftest|test_ex\d\d")


@dataclass(frozen=True)
class Rule:
    """An exercise that must be done by hand."""

    file: str
    names: frozenset[str]  # attribute or imported names that may not appear in the file
    tests: frozenset[str]  # the grader tests that fail when the rule is broken
    text: str

    def covers(self, name: str) -> bool:
        """Whether ``name`` is one of the rule's functions or a variant of one (torch._fused_rms_norm, dropout1d)."""
        return any(forbidden in name for forbidden in self.names)


RULES = (
    Rule("ex03_attention.py", frozenset({"scaled_dot_product_attention", "multi_head_attention_forward",
                                         "MultiheadAttention"}),
         frozenset({"test_attention_matches_pytorch_without_mask", "test_attention_with_causal_mask",
                    "test_attention_softmax_is_stable_for_large_scores", "test_head_matches_pytorch",
                    "test_head_is_causal", "test_multi_head_matches_pytorch", "test_multi_head_is_causal"}),
         "attention is written by hand in chapter 3 (softmax(q @ k^T / sqrt(head_size)) @ v): "
         "PyTorch's fused attention is not allowed"),
    Rule("ex05_training.py", frozenset({"cross_entropy", "log_softmax", "logsumexp", "nll_loss", "CrossEntropyLoss",
                                        "NLLLoss", "LogSoftmax"}),
         frozenset({"test_cross_entropy_matches_pytorch", "test_cross_entropy_is_stable_for_large_logits",
                    "test_cross_entropy_gradient", "test_cross_entropy_rows_of_different_scales"}),
         "cross_entropy is written by hand in chapter 5 (its docstring: do not call F.cross_entropy, "
         "F.log_softmax or torch.logsumexp; subtract each row's maximum yourself)"),
    Rule("ex06_evaluation.py", frozenset({"dropout", "Dropout", "dropout_", "native_dropout", "alpha_dropout",
                                          "feature_alpha_dropout"}),
         frozenset({"test_dropout_zeros_and_scales", "test_dropout_off_and_edges", "test_dropout_rejects_bad_p"}),
         "dropout is written by hand in chapter 6 (draw the mask with torch.rand and scale by 1 / (1 - p)): "
         "F.dropout and nn.Dropout are not allowed"),
    Rule("ex08_modern.py", frozenset({"rms_norm", "RMSNorm", "Muon", "_zeropower_via_newtonschulz"}),
         frozenset({"test_rms_norm_matches_pytorch", "test_rms_norm_properties", "test_newton_schulz_orthogonalises",
                    "test_newton_schulz_works_on_the_short_side"}),
         "rms_norm and newton_schulz are written by hand in chapter 8 (x / sqrt(mean(x ** 2) + eps); the "
         "Newton-Schulz rounds): F.rms_norm, nn.RMSNorm and torch's Muon helpers are not allowed"),
)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    construct: str
    kind: str  # "integrity" or "by hand"
    why: str

    def text(self) -> str:
        return f"{self.file}, line {self.line}: {self.construct}: {self.why}"

    def as_dict(self) -> dict:
        return asdict(self)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


NAME_LOOKUPS = {"getattr": 1, "attrgetter": 0, "methodcaller": 0}  # the argument that names the attribute


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def scan(file: Path) -> list[Finding]:
    """Every finding in one learner file (a file that does not parse has none: its import will say why)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=file.name)  # bytes: the coding cookie counts, as for Python
    except (SyntaxError, ValueError):
        return []
    name = file.name
    found: list[Finding] = []

    def add(node: ast.AST, construct: str, why: str, kind: str = "integrity") -> None:
        found.append(Finding(name, getattr(node, "lineno", 0), construct, kind, why))

    modules: set[str] = set()  # names bound to imported modules in this file
    docstrings = _docstring_nodes(tree)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.add((alias.asname or alias.name).split(".")[0])
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    add(node, f"import {alias.name}", "the exercises are done without the course's answers, "
                                                      "the grader's modules or import machinery")
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if node.level == 0 and top in FORBIDDEN_MODULES:
                add(node, f"from {node.module} import ...", "the exercises are done without the course's answers, "
                                                            "the grader's modules or import machinery")
            for alias in node.names:
                modules.add(alias.asname or alias.name)
                if alias.name in FORBIDDEN_NAMES or alias.name in FORBIDDEN_ATTRIBUTES:
                    add(node, f"from {node.module} import {alias.name}", "reaches into Python's machinery")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            add(node, node.id, "runs or reaches code that is not written in the file")
        elif isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in called \
                and (node.id if isinstance(node, ast.Name) else node.attr) in NAME_LOOKUPS:
            # reduce(getattr, names, torch) or g = getattr: the names it will look up are not in sight
            add(node, ast.unparse(node), "passes a lookup by name around: call it with a constant name")
        elif isinstance(node, ast.Attribute) and (node.attr in FORBIDDEN_ATTRIBUTES
                                                  or (node.attr == "modules" and _root_name(node) == "sys")):
            add(node, f".{node.attr}", "reaches into Python's machinery (code objects, frames, loaded modules)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = sorted(set(FORBIDDEN_WORDS.findall(node.value)))  # a snapshot's path names _grader and snapshots
            if words:
                add(node, repr(node.value[:40]), f"names {', '.join(words)}: the answers and the grader are off limits")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                root = _root_name(target) if isinstance(target, (ast.Attribute, ast.Subscript)) else None
                if root in modules:
                    add(node, f"assignment to {ast.unparse(target)}", "patches a library module; "
                                                                     "write your own function instead")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Name) and first.id == "self"):
                add(node, f"{node.func.id}({ast.unparse(first) if first else ''}, ...)",
                    "changes another object's attributes by name")
        elif isinstance(node, ast.Call) and _called_name(node) in NAME_LOOKUPS \
                and len(node.args) > NAME_LOOKUPS[_called_name(node)]:
            lookup, attr = _called_name(node), node.args[NAME_LOOKUPS[_called_name(node)]]
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                add(node, f"{lookup}(..., {ast.unparse(attr)})", "looks up an attribute by a name built at run time")
            elif attr.value.split(".")[0] in FORBIDDEN_NAMES | FORBIDDEN_ATTRIBUTES | {"modules"}:
                add(node, f"{lookup}(..., {attr.value!r})", "reaches into Python's machinery by name")
    for rule in RULES:
        if rule.file != name:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and rule.covers(node.attr):
                add(node, ast.unparse(node), rule.text, kind="by hand")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and any(part.isidentifier() and rule.covers(part) for part in node.value.split(".")):
                # getattr(F, "dropout"), attrgetter("functional.rms_norm"): lookups by name
                add(node, repr(node.value[:40]), rule.text, kind="by hand")
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if rule.covers(alias.name):
                        add(node, f"from {node.module} import {alias.name}", rule.text, kind="by hand")
    return sorted(set(found), key=lambda f: (f.line, f.construct))


def imported_exercises(file: Path) -> set[str]:
    """The other ``exNN_*`` files ``file`` imports (by module name)."""
    try:
        tree = ast.parse(file.read_bytes())
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and EXERCISE_FILE.match(node.module + ".py"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if EXERCISE_FILE.match(a.name + ".py"))
    return names


def scan_target(folder: Path) -> dict[str, list[Finding]]:
    """Findings per chapter: a chapter carries its own file's and those of the files it imports."""
    files = {f.stem: f for f in sorted(folder.glob("ex[0-9][0-9]_*.py")) if EXERCISE_FILE.match(f.name)}
    own = {stem: scan(file) for stem, file in files.items()}
    result = {}
    for stem, file in files.items():
        seen, todo, findings = {stem}, [stem], []
        while todo:
            current = todo.pop()
            findings.extend(own.get(current, []))
            for dep in imported_exercises(files[current]) if current in files else ():
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        result[stem] = findings
    return result


def broken_rules(findings: list[Finding], test: str) -> list[Finding]:
    """The "by hand" findings that make ``test`` fail."""
    rules = {r.text: r for r in RULES}
    return [f for f in findings if f.kind == "by hand" and test in rules[f.why].tests]
