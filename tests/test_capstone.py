"""Chapter 7's capstone trains the learner's GPT as well as minigpt's own pieces do.

The capstone (chapter 7, section 11) trains ``TinyGPT`` with the learner's ``get_batch``,
``cross_entropy``, ``train_step``, ``learning_rate`` and ``estimate_loss``, and samples with their
``generate``; ``pick`` swaps in minigpt's piece for each one not written yet. This test runs the
section's own code cells, read from the committed notebook, twice with the same seed and settings:

* with ``solutions/`` as the learner's files (``MINIGPT_LEARNER_DIR``): every piece is "yours";
* with a folder of empty exercise files: every piece is minigpt's (or the stand-in in
  ``chapters/capstone.py``).

Both must learn (val loss well below its start), and the solutions' final val loss must be within
``TOLERANCE`` nats of minigpt's. The two models differ in their initialisation (TinyGPT draws every
weight from N(0, 0.02); minigpt's GPT scales the residual projections down) and in the attention
kernel (four heads by hand against one fused call), so the two runs are not equal step for step;
what must hold is that the learner's loop trains as well. Two runs of 400 small steps: about half a
minute on a quiet 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "07_sampling.ipynb"
TOLERANCE = 0.05  # nats per character, on val losses near 2.5
PIECES = {"get_batch", "TinyGPT", "cross_entropy", "train_step", "learning_rate", "estimate_loss", "generate"}
# What the capstone takes from the chapter's setup cell (the rest of that cell loads a checkpoint).
PREAMBLE = """
import time
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import minigpt
from minigpt import CharTokenizer, encode_corpus, shakespeare, train_val_split
"""


def capstone_cells(notebook: Path = CHAPTER) -> list[str]:
    """The code cells of the section headed '## 11. Capstone', up to the next '## ' heading."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    text = ["".join(c["source"]) for c in cells]
    start = next(i for i, t in enumerate(text) if cells[i]["cell_type"] == "markdown"
                 and t.startswith("## 11. Capstone"))
    end = next(i for i in range(start + 1, len(cells)) if cells[i]["cell_type"] == "markdown"
               and text[i].startswith("## "))
    return [text[i] for i in range(start + 1, end) if cells[i]["cell_type"] == "code"]


def run_capstone(learner_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str]:
    """Execute the capstone's cells with ``learner_dir`` as the learner's files: (namespace, printed text)."""
    monkeypatch.setenv("MINIGPT_LEARNER_DIR", str(learner_dir))
    monkeypatch.chdir(ROOT / "chapters")  # notebooks run with cwd chapters/
    monkeypatch.syspath_prepend(str(ROOT / "chapters"))
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(PREAMBLE, "<capstone preamble>", "exec"), namespace)
        for index, cell in enumerate(capstone_cells()):
            exec(compile(cell, f"<capstone cell {index}>", "exec"), namespace)
    namespace["plt"].close("all")
    return namespace, printed.getvalue()


@pytest.fixture
def empty_learner_dir(tmp_path: Path) -> Path:
    """Exercise files with nothing in them: pick() falls back to minigpt's piece for every name."""
    for stub in sorted((ROOT / "solutions").glob("ex0*.py")):
        (tmp_path / stub.name).write_text('"""Not written yet."""\n', encoding="utf-8")
    return tmp_path


def test_capstone_finds_its_section():
    cells = capstone_cells()
    joined = "\n".join(cells)
    for name in PIECES:
        assert f'"{name}"' in joined, f"the capstone should pick the learner's {name}"


def test_capstone_with_solutions_reaches_minigpts_val_loss(monkeypatch, empty_learner_dir):
    yours, said_yours = run_capstone(ROOT / "solutions", monkeypatch)
    theirs, said_theirs = run_capstone(empty_learner_dir, monkeypatch)
    for name in PIECES:
        assert f"{name}: yours" in said_yours, f"with solutions/, {name} should be the learner's:\n{said_yours}"
        assert f"{name}: not written yet" in said_theirs, f"with empty files, {name} should be minigpt's"
    assert "using minigpt's" not in said_yours, said_yours
    first, last = yours["history"][0]["val"], yours["history"][-1]["val"]
    reference = theirs["history"][-1]["val"]
    assert last < first - 1.0, f"the learner's run did not learn: val {first:.3f} -> {last:.3f}"
    assert theirs["history"][-1]["val"] < theirs["history"][0]["val"] - 1.0
    assert abs(last - reference) <= TOLERANCE, (
        f"val loss with solutions/ {last:.4f}, with minigpt's pieces {reference:.4f}: "
        f"differ by more than {TOLERANCE}")
    print(f"capstone val loss: solutions {last:.4f}, minigpt's pieces {reference:.4f} (from {first:.4f})")
    for run in (yours, theirs):  # generate wrote 300 new characters after the 7-character prompt
        assert tuple(run["written"].shape) == (1, 7 + 300)


def test_a_learners_model_of_the_wrong_form_or_that_raises_is_replaced_with_one_line(capsys, monkeypatch):
    """A TinyGPT whose forward returns None, or raises its own error, costs one line, not the section."""
    import sys

    import torch.nn as nn

    monkeypatch.syspath_prepend(str(ROOT / "chapters"))
    sys.modules.pop("capstone", None)
    from capstone import build_model

    class ReturnsNothing(nn.Module):
        def __init__(self, vocab_size, **settings):
            super().__init__()
            self.head = nn.Linear(2, vocab_size)

        def forward(self, idx, targets=None):
            return None

    class Raises(ReturnsNothing):
        def forward(self, idx, targets=None):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    settings = dict(context_length=8, d_model=16, num_heads=2, num_blocks=1)
    for learner_class, said in ((ReturnsNothing, "returned NoneType"), (Raises, "raised RuntimeError")):
        model = build_model(learner_class, 10, settings, seed=0)
        out = capsys.readouterr().out
        assert not isinstance(model, learner_class) and said in out and "using minigpt's GPT" in out, out
