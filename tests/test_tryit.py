"""chapters/tryit.py: the learner's own code runs in the chapter, beside minigpt's, re-read at every call.

Unit tests write a learner folder of their own (``MINIGPT_LEARNER_DIR``) and call ``try_it``/``pick``:
a stub says "not written yet" and names every unwritten part; a learner's exception shows the
learner's traceback and hands on minigpt's result; an edit is seen at the next call; ``same`` holds
within the grader's tolerance and not beyond.

The chapter runs (``--notebooks``, ``make test-tryit``; several minutes, so not in the default run, and
skipped with that message) execute every chapter notebook in a temporary copy, with cwd chapters/:
once with ``MINIGPT_LEARNER_DIR=solutions/`` (every try-it cell must print "same as minigpt's (...):
True" and never "not written yet"), once with fresh stubs made from the solutions (every try-it cell
must print "not written yet").
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
sys.path.insert(0, str(CHAPTERS))

import tryit  # noqa: E402
from tryit import pick, same, try_it  # noqa: E402

MODULE = "ex90_demo"  # an exNN_ name, so tryit re-reads it from disk at every call


@pytest.fixture
def learner(tmp_path, monkeypatch):
    """A learner folder (MINIGPT_LEARNER_DIR): write(text) replaces ex90_demo.py there."""
    monkeypatch.setenv("MINIGPT_LEARNER_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))  # tryit puts the folder first; undo that afterwards
    yield lambda text: (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    for name in [n for n in sys.modules if n[:2] == "ex" and n[2:4].isdigit()]:
        del sys.modules[name]


STUBS = '''
    import torch


    def double(x):
        """Twice x."""
        # Your code here.
        raise NotImplementedError


    class Scale(torch.nn.Module):
        """Multiply by a factor."""

        def __init__(self, factor):
            """Keep the factor."""
            # Your code here.
            raise NotImplementedError

        def forward(self, x):
            raise NotImplementedError
'''


def test_a_stub_says_not_written_yet_naming_every_unwritten_part(learner, capsys):
    learner(STUBS)
    x = torch.arange(3.0)
    got = try_it(MODULE, "double", lambda f: f(x), reference=lambda: x * 2)
    out = capsys.readouterr().out
    assert "double: not written yet (double raises NotImplementedError in" in out and f"{MODULE}.py" in out
    assert "same as minigpt's" not in out
    assert torch.equal(got, x * 2), "the chapter goes on with minigpt's result"

    got = try_it(MODULE, "Scale", lambda cls: cls(3.0)(x), reference=lambda: x * 3)
    out = capsys.readouterr().out
    assert "Scale: not written yet (Scale.__init__, Scale.forward raises NotImplementedError" in out
    assert len([line for line in out.splitlines() if "not written yet" in line]) == 1
    assert torch.equal(got, x * 3)


def test_a_half_written_class_names_only_what_is_left(learner, capsys):
    learner(STUBS.replace("            # Your code here.\n            raise NotImplementedError",
                          "            super().__init__()\n            self.factor = factor"))
    try_it(MODULE, "Scale", lambda cls: cls(3.0)(torch.ones(2)), reference=lambda: torch.full((2,), 3.0))
    out = capsys.readouterr().out
    assert "not written yet (Scale.forward raises" in out and "Scale.__init__" not in out


def test_the_learners_exception_shows_their_traceback_and_minigpts_result(learner, capsys):
    learner('''
        def double(x):
            ys = [v * 2 for v in x]
            return ys[len(x)]  # one past the end
    ''')
    got = try_it(MODULE, "double", lambda f: f([1, 2]), reference=lambda: [2, 4])
    captured = capsys.readouterr()
    assert got == [2, 4]
    assert "Traceback (your code)" in captured.err and f"{MODULE}.py" in captured.err
    assert "return ys[len(x)]" in captured.err and "IndexError" in captured.err
    assert "test_tryit.py" not in captured.err, "the traceback starts in the learner's file"
    assert "your code raised (traceback above)" in captured.out


def test_a_written_function_is_shown_beside_minigpts(learner, capsys):
    learner('''
        def double(x):
            return x + x
    ''')
    x = torch.arange(4.0)
    got = try_it(MODULE, "double", lambda f: f(x), reference=lambda: 2 * x)
    out = capsys.readouterr().out
    assert torch.equal(got, 2 * x)
    assert "yours (" in out and "minigpt's:" in out
    assert "same as minigpt's (rtol 0.0001, atol 1e-05): True" in out
    try_it(MODULE, "double", lambda f: f(x), reference=lambda: 3 * x)
    assert "same as minigpt's (rtol 0.0001, atol 1e-05): False" in capsys.readouterr().out


def test_a_file_that_does_not_parse_gets_one_line_and_minigpts_result(learner, capsys):
    learner("def double(x)\n    return 2 * x\n")  # the colon forgotten
    got = try_it(MODULE, "double", lambda f: f(3), reference=lambda: 6)
    captured = capsys.readouterr()
    assert got == 6 and "Traceback" not in captured.err
    assert f"{MODULE}.py has a syntax error (line 1: expected ':'); the chapter goes on" in captured.out
    assert pick(MODULE, "double", "fallback") == "fallback"
    assert f"{MODULE}.py has a syntax error (line 1: expected ':'): using minigpt's" in capsys.readouterr().out


def test_a_result_of_another_kind_hands_on_minigpts(learner, capsys):
    """A stub-like forward (None), a str for a list, another shape: the cells below get minigpt's."""
    learner('''
        import torch
        def none(x):
            pass
        def text(x):
            return "ab"
        def row(x):
            return torch.zeros(1, 3)
        def other_values(x):
            return torch.ones(3)
    ''')
    x = torch.zeros(3)
    assert try_it(MODULE, "none", lambda f: f(x), reference=lambda: x) is x
    assert "yours is not of the kind minigpt's is (NoneType where minigpt's is tensor (3,) float32)" in capsys.readouterr().out
    assert try_it(MODULE, "text", lambda f: f(x), reference=lambda: [0, 1]) == [0, 1]
    assert "(str where minigpt's is list of 2)" in capsys.readouterr().out
    assert try_it(MODULE, "row", lambda f: f(x), reference=lambda: x) is x
    assert "(tensor (1, 3) float32 where minigpt's is tensor (3,) float32)" in capsys.readouterr().out
    assert torch.equal(try_it(MODULE, "other_values", lambda f: f(x), reference=lambda: x), torch.ones(3))
    assert "not of the kind" not in capsys.readouterr().out  # same kind, other numbers: the learner's


def test_a_learner_helper_named_like_pythons_own_module_shadows_nothing(learner, tmp_path):
    (tmp_path / "statistics.py").write_text("raise RuntimeError('the learner helper was imported')\n")
    learner("import statistics\n\ndef mean(xs):\n    return statistics.fmean(xs)\n")
    sys.modules.pop("statistics", None)
    assert try_it(MODULE, "mean", lambda f: f([1.0, 3.0])) == 2.0
    assert sys.modules["statistics"].__file__ != str(tmp_path / "statistics.py")


def test_an_edit_is_seen_at_the_next_call_without_restarting(learner, capsys):
    """Same size, same second: a stale cached module or bytecode would give the old answer."""
    learner("def double(x):\n    return x * 2\n")
    assert try_it(MODULE, "double", lambda f: f(5)) == 10
    learner("def double(x):\n    return x * 3\n")
    assert try_it(MODULE, "double", lambda f: f(5)) == 15
    learner("def double(x):\n    raise NotImplementedError\n")
    assert try_it(MODULE, "double", lambda f: f(5), reference=lambda: 10) == 10
    assert "not written yet" in capsys.readouterr().out


def test_an_edit_in_the_same_second_is_seen_too(learner, tmp_path, monkeypatch):
    """Python's bytecode cache checks a source's size and whole-second time: an edit that keeps both must still count."""
    import os

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a learner's machine (this one may set it)
    learner("def double(x):\n    return x * 2\n")
    stamp = (tmp_path / f"{MODULE}.py").stat().st_mtime_ns
    assert try_it(MODULE, "double", lambda f: f(5)) == 10
    learner("def double(x):\n    return x * 3\n")
    os.utime(tmp_path / f"{MODULE}.py", ns=(stamp, stamp))
    assert try_it(MODULE, "double", lambda f: f(5)) == 15


def test_an_earlier_chapters_file_is_re_read_too(learner, tmp_path):
    """ex91 imports ex90 (as chapter 4 imports chapter 3): an edit of ex90 is seen through ex91."""
    (tmp_path / "ex91_later.py").write_text("from ex90_demo import double\n\n\ndef quadruple(x):\n"
                                            "    return double(double(x))\n")
    learner("def double(x):\n    return x * 2\n")
    assert try_it("ex91_later", "quadruple", lambda f: f(1)) == 4
    learner("def double(x):\n    return x * 5\n")
    assert try_it("ex91_later", "quadruple", lambda f: f(1)) == 25


def test_pick_returns_the_learners_piece_or_the_fallback(learner, capsys):
    learner(STUBS)
    assert pick(MODULE, "double", "minigpt's double") == "minigpt's double"
    assert "double: not written yet" in capsys.readouterr().out
    learner("def double(x):\n    return 2 * x\n")
    assert pick(MODULE, "double", None)(4) == 8
    assert f"double: yours, from" in capsys.readouterr().out
    learner("def double(x):\n    return 2 * x\n\nimport no_such_module\n")
    assert pick(MODULE, "double", "fallback") == "fallback"
    assert "did not import: using minigpt's" in capsys.readouterr().out


def test_the_learner_folder_is_exercises_unless_minigpt_learner_dir_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIGPT_LEARNER_DIR", raising=False)
    assert tryit.learner_dir() == ROOT / "exercises"
    assert tryit.where("ex02_batching") == "exercises/ex02_batching.py"
    monkeypatch.setenv("MINIGPT_LEARNER_DIR", str(ROOT / "solutions"))
    assert tryit.where("ex02_batching") == "solutions/ex02_batching.py"
    monkeypatch.setenv("MINIGPT_LEARNER_DIR", str(tmp_path))
    assert tryit.where("ex02_batching") == str(tmp_path / "ex02_batching.py")


def test_same_holds_within_the_graders_tolerance_and_not_beyond():
    x = torch.tensor([1.0, -2.0, 1e-7])
    assert same(x, x * (1 + 5e-5) + 5e-6)          # inside rtol 1e-4 and atol 1e-5
    assert not same(x, x + 1e-3)
    assert not same(x, x.double()), "dtypes differ"
    assert not same(x, x[:2]), "shapes differ"
    assert same(torch.tensor([float("nan")]), torch.tensor([float("nan")]))
    assert same(1.0, 1.00005) and not same(1.0, 1.01)
    assert same(2, 2.0) and not same(2, 3)
    assert same((x, [1, 2]), (x.clone(), [1, 2])) and not same((x, [1, 2]), (x, [1, 3]))
    assert same({"a": x}, {"a": x.clone()}) and not same({"a": x}, {"b": x})
    assert not same([1, 2], [1, 2, 3]) and not same("ab", "ba") and not same(1, "1")


# ---------------------------------------------------------------- every chapter, executed

NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
SAME_TRUE = "same as minigpt's (rtol 0.0001, atol 1e-05): True"


def try_it_outputs(notebook: dict) -> list[tuple[int, str]]:
    """(cell index, everything the cell printed) for every code cell that calls try_it."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and "try_it(" in text:
            printed = []
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    printed.append("".join(output["text"]) if isinstance(output["text"], list) else output["text"])
                elif output.get("output_type") == "error":
                    printed.append(f"{output['ename']}: {output['evalue']}")
            found.append((index, "".join(printed)))
    return found


def execute(notebook: Path, learner_dir: Path, out: Path) -> tuple[dict, float]:
    """Run a copy of ``notebook`` top to bottom with cwd chapters/ and the learner's files in ``learner_dir``."""
    script = (f"import nbformat, os; from nbclient import NotebookClient\n"
              f"os.environ['MINIGPT_LEARNER_DIR'] = {str(learner_dir)!r}\n"
              f"nb = nbformat.read({str(notebook)!r}, as_version=4)\n"
              f"NotebookClient(nb, timeout=900, kernel_name='python3', allow_errors=True,\n"
              f"               resources={{'metadata': {{'path': {str(CHAPTERS)!r}}}}}).execute()\n"
              f"nbformat.write(nb, {str(out)!r})\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=1800)
    return json.loads(out.read_text(encoding="utf-8")), time.perf_counter() - start


@pytest.fixture(scope="module")
def fresh_stubs(tmp_path_factory):
    """The stubs as make_stubs.py makes them from solutions/ (the learner's exercises/ may hold their work)."""
    folder = tmp_path_factory.mktemp("stubs")
    script = ROOT / "exercises" / "_grader" / "make_stubs.py"
    script = script if script.is_file() else ROOT / "exercises" / "make_stubs.py"
    subprocess.run([sys.executable, str(script), "--solutions", str(ROOT / "solutions"), "--exercises", str(folder)],
                   check=True, capture_output=True, cwd=ROOT)
    return folder


def test_the_committed_chapters_were_run_with_the_stubs():
    """What a learner reads first: every try-it cell's committed output says "not written yet"."""
    problems = [f"{notebook.name} cell {index}: " + (f"{printed.strip()[:200]!r}" if printed.strip() else
                                                       "printed nothing (not executed?)")
                for notebook in NOTEBOOKS
                for index, printed in try_it_outputs(json.loads(notebook.read_text(encoding="utf-8")))
                if "not written yet" not in printed]
    assert not problems, ("committed try-it outputs that do not say 'not written yet' (execute the chapter with "
                          "the stubs in exercises/, not with MINIGPT_LEARNER_DIR set):\n" + "\n".join(problems))


@pytest.mark.notebooks
@pytest.mark.parametrize("learner_files", ["solutions", "stubs"])
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_every_try_it_cell_runs_the_learners_files(notebook, learner_files, fresh_stubs, tmp_path):
    folder = ROOT / "solutions" if learner_files == "solutions" else fresh_stubs
    executed, seconds = execute(notebook, folder, tmp_path / notebook.name)
    print(f"{notebook.name} with {learner_files}: {seconds:.0f} s")
    cells = try_it_outputs(executed)
    errors = [f"cell {i}: {o['ename']}: {o['evalue']}" for i, c in enumerate(executed["cells"])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{notebook.name} with {learner_files}/ raised:\n" + "\n".join(errors)
    if learner_files == "solutions":
        wrong = [f"cell {i}: {printed.strip()[-300:]!r}" for i, printed in cells
                 if SAME_TRUE not in printed or "not written yet" in printed or "raised" in printed]
        assert not wrong, (f"{notebook.name} with solutions/ as the learner's files: every try-it cell should print "
                           f"{SAME_TRUE!r}:\n" + "\n".join(wrong))
    else:
        wrong = [f"cell {i}: {printed.strip()[-300:]!r}" for i, printed in cells if "not written yet" not in printed]
        assert not wrong, f"{notebook.name} with the stubs: every try-it cell should say 'not written yet':\n" + \
            "\n".join(wrong)
