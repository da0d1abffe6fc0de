"""No chapter prints a graded answer: each solution is compared with the code its chapter shows.

The measure (``tests/answer_similarity.py``): every graded definition of ``solutions/exNN_*.py`` (a
public top-level function or class not marked ``# given``) and every ``def``/``class`` in chapter NN's
code cells are normalised (docstrings dropped, comments gone, every name the code binds renamed
``v0, v1, ...`` in order of first appearance; attribute names such as ``torch.tril`` and constants
kept) and turned into token streams. Their similarity is difflib's ratio, 2·matches / (len(a) + len(b)):
1.0 for a copy up to renaming. An answer of 30 tokens or more is also compared with each code cell
as a whole, so a body pasted outside a ``def`` counts. A pair at or above ``THRESHOLD`` (0.6) means the
chapter shows the answer, or most of it, and fails its chapter's test with every such pair listed.

The unit cases at the end show what the measure catches (a renamed copy, a copy with its docstring
and comments changed) and what it lets through (a loop where the answer is one tensor operation).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from answer_similarity import THRESHOLD, matches, pairs, similarity, tokens

PAIRS = pairs()


@pytest.mark.parametrize("notebook, solution", PAIRS, ids=[n.stem for n, _ in PAIRS])
def test_chapter_does_not_show_a_graded_answer(notebook: Path, solution: Path):
    found = sorted(matches(notebook, solution), key=lambda m: -m.similarity)
    lines = [f"{m.similarity:.2f}  {m.answer} (solutions/{solution.name})  ~  {m.where}" for m in found]
    assert not found, (f"chapters/{notebook.name} shows {len({m.answer for m in found})} graded answer(s) "
                       f"(similarity >= {THRESHOLD}; teach the operations one by one, or a different version, "
                       f"and leave the body to the learner):\n" + "\n".join(lines))


def test_every_solution_file_is_compared_with_its_chapter():
    solutions = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "solutions").glob("ex[0-9][0-9]_*.py"))
    compared = [solution.name for _, solution in PAIRS]
    assert compared == solutions, f"solutions without a chapter notebook to compare: {sorted(set(solutions) - set(compared))}"


ANSWER = '''
def causal_scores(q, k, mask=None):
    """Scores of each query against each key, masked where mask is False."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
'''
RENAMED = '''
def attend(queries, keys, allowed=None):
    s = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1)
'''
REDOCUMENTED = '''
def causal_scores(q, k, mask=None):
    """Another docstring, longer, that says something quite different about the function."""
    # scale by the square root of the head size
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T, T)
    if mask is not None:
        # hide the future
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)  # rows sum to one
'''
ONE_OP = '''
def shift(data, starts, context_length):
    """Rows of x and y for the given starts, in one indexing operation."""
    offsets = starts[:, None] + torch.arange(context_length)
    return data[offsets], data[offsets + 1]
'''
LOOP = '''
xs, ys = [], []
for start in [0, 5, 9]:
    x = data[start:start + 4]
    y = data[start + 1:start + 5]
    print(start, x.tolist(), y.tolist())
    xs.append(x)
    ys.append(y)
'''


def score(a: str, b: str) -> float:
    return similarity(tokens(textwrap.dedent(a)), tokens(textwrap.dedent(b)))


def test_a_renamed_copy_is_caught():
    assert score(ANSWER, RENAMED) == 1.0


def test_a_copy_with_its_docstring_and_comments_changed_is_caught():
    assert score(ANSWER, REDOCUMENTED) == 1.0


def test_a_clearly_different_version_is_not_flagged():
    assert score(ONE_OP, LOOP) < THRESHOLD


def test_a_half_changed_copy_still_counts():
    """Most of the answer, with one line left out, stays above the threshold."""
    partial = RENAMED.replace('    if allowed is not None:\n        s = s.masked_fill(~allowed, float("-inf"))\n', "")
    assert score(ANSWER, partial) >= THRESHOLD


def test_a_copy_pasted_into_a_cell_is_found(tmp_path):
    """End to end: a chapter whose cell holds the answer's body (outside any def) fails its test."""
    import json

    solution = tmp_path / "ex03_attention.py"
    solution.write_text(textwrap.dedent(ANSWER).replace("def causal_scores", "import math\nimport torch\n\n\n"
                                                         "def causal_scores", 1))
    body = "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n" \
           "if mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\n" \
           "weights = torch.softmax(scores, dim=-1)\nprint(weights)\n"
    notebook = tmp_path / "03_attention.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": body,
                                               "outputs": [], "execution_count": 1}],
                                    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    found = matches(notebook, solution)
    assert [(m.answer, m.where) for m in found] == [("causal_scores", "cell 0")]
