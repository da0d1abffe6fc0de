"""Tricks a hostile learner might try, and faults a careless one might leave (issue 7).

Each entry patches a copy of a chapter's file: ``base`` says whether the copy
starts from the stub (no real answer at all) or the solution, ``replacements``
are text patches (each ``old`` occurs exactly once), ``append`` is code added
at the bottom. ``tests/test_grader.py`` grades folders built from them and
checks that each costs the points of what it touches and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_FILE = Path(__file__).resolve().parents[2] / "exercises" / "_grader" / "snapshots" / "ex07_sampling.json"


@dataclass(frozen=True)
class Trick:
    name: str
    file: str
    base: str  # "stub" or "solution"
    replacements: tuple[tuple[str, str], ...] = ()
    append: str = ""


# Rewrites the __code__ of every test, check and assertion function it can find, so they all "pass".
CODE_REWRITE = '''
import sys as _sys
for _module in list(_sys.modules.values()):
    for _name, _value in list(getattr(_module, "__dict__", {}).items()):
        if _name.startswith(("test_", "check", "assert_", "fail", "probe_")) and hasattr(_value, "__code__"):
            try:
                _value.__code__ = (lambda *args, **kwargs: None).__code__
            except Exception:
                pass
'''

# Replaces the grader's check helpers with no-ops.
NOOP_CHECKS = '''
import _grading
_grading.check = lambda *args, **kwargs: None
_grading.fail = lambda *args, **kwargs: None
_grading.assert_close = lambda *args, **kwargs: None
_grading.assert_equal_seq = lambda *args, **kwargs: None
'''

# Makes every closeness test say "close".
PATCH_ISCLOSE = '''
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
torch.allclose = lambda *args, **kwargs: True
'''

# Runs the reference answer found through the installed package.
EXEC_SOLUTIONS = '''
import pathlib
import minigpt
exec(open(pathlib.Path(minigpt.__file__).resolve().parents[1] / "solutions" / "ex06_evaluation.py").read())
'''

# Takes the answers from the package.
IMPORT_MINIGPT = '''
from minigpt.sampling import top_k_filter, top_p_filter  # noqa: F401
'''

# An argmax-only generate that replays the frozen reference samples when the prompt matches.
REPLAY = f'''
    import json
    if idx.tolist() == [[1, 2, 3], [4, 4, 4]] and temperature > 0:
        stored = json.loads(open({str(SNAPSHOT_FILE)!r}).read())["generated_samples"]
        return torch.tensor(stored["temperature_1" if temperature == 1.0 else
                                   "temperature_0.5" if temperature == 0.5 else "temperature_2_top_k_3"])
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -context_length:])
        idx = torch.cat([idx, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return idx
'''

# The frozen samples written into the file itself: no file read, so only fresh cases can tell.
MEMORISED = f'''
    samples = {json.loads(SNAPSHOT_FILE.read_text())["generated_samples"]!r}
    if idx.tolist() == [[1, 2, 3], [4, 4, 4]] and max_new_tokens == 16 and temperature > 0:
        return torch.tensor(samples["temperature_1" if temperature == 1.0 else
                                    "temperature_0.5" if temperature == 0.5 else "temperature_2_top_k_3"])
'''

TRICKS = (
    Trick("code_rewrite", "ex05_training.py", "stub", append=CODE_REWRITE),
    Trick("noop_checks", "ex01_tokenization.py", "solution",
          (("            out.append(new_id)\n            i += 2", "            out.append(new_id)\n            i += 1"),),
          NOOP_CHECKS),
    Trick("patch_isclose", "ex04_model.py", "solution",
          (("x = x + self.ffwd(self.ln2(x))", "x = self.ln2(x + self.ffwd(x))"), ("self.act = nn.GELU()", "self.act = nn.ReLU()")),
          PATCH_ISCLOSE),
    Trick("exec_solutions", "ex06_evaluation.py", "stub", append=EXEC_SOLUTIONS),
    Trick("import_minigpt", "ex07_sampling.py", "stub", append=IMPORT_MINIGPT),
)

REPLAY_TRICK = Trick("replay_snapshot", "ex07_sampling.py", "solution",
                     (("    for _ in range(max_new_tokens):\n        logits, _ = model(idx[:, -context_length:])\n"
                       "        logits = logits[:, -1, :]  # (B, V)\n", REPLAY + "    for _ in range(0):\n"
                       "        logits, _ = model(idx[:, -context_length:])\n        logits = logits[:, -1, :]  # (B, V)\n"),))

MEMORISED_TRICK = Trick("memorised_samples", "ex07_sampling.py", "solution",
                        (("    for _ in range(max_new_tokens):\n        logits, _ = model(idx[:, -context_length:])",
                          MEMORISED + "    for _ in range(max_new_tokens):\n"
                                      "        logits, _ = model(idx[:, -context_length:])"),))

# Faults a careless learner leaves, graded together in one folder: each costs only what it touches.
FAULTS = (
    Trick("os_exit_in_a_function", "ex01_tokenization.py", "solution",
          (("    return len(encode_fn(text)) / len(text)", "    import os\n    os._exit(0)"),)),
    Trick("training_demo_at_import", "ex05_training.py", "solution",
          append="\nfor _step in range(10**12):  # a training demo left at the bottom\n    pass\n"),
    Trick("endless_loop_that_ignores_alarms", "ex06_evaluation.py", "solution",
          (('    best = min(history, key=lambda record: record["val"])',
            "    import signal\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "    signal.setitimer(signal.ITIMER_REAL, 0)\n    while True:\n        try:\n            pass\n"
            "        except BaseException:\n            continue\n    best = None"),)),
    Trick("pytest_exit_in_a_function", "ex07_sampling.py", "solution",
          (("    for _ in range(max_new_tokens):\n        logits, _ = model(idx[:, -context_length:])",
            "    import pytest\n    pytest.exit('done', returncode=0)\n"
            "    for _ in range(max_new_tokens):\n        logits, _ = model(idx[:, -context_length:])"),)),
)

# ---------------------------------------------------------------------------- hostile (issue 15)
# Reaching the grading process itself: signals with no audit event (pidfd), stopping it, lowering its
# limits, its niceness or its CPUs; each attempt prints what happened, then the function answers
# wrongly, so the test fails and its message shows the printed lines.
REACH_THE_GRADER = '''

def _ancestors():
    import os
    pids, pid = [], os.getpid()
    for _ in range(3):
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        pids.append(pid)
    return pids


def tokens_per_char(encode_fn, text):
    import os, resource, signal
    for pid in _ancestors():
        attacks = {
            "pidfd SIGSTOP": lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGSTOP),
            "prlimit NOFILE": lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (4, 4)),
            "prlimit CPU": lambda: resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1)),
            "setpriority": lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
            "affinity": lambda: os.sched_setaffinity(pid, {0}),
            "kill SIGSTOP": lambda: os.kill(pid, signal.SIGSTOP),
            "killpg": lambda: os.killpg(os.getpgid(pid), signal.SIGSTOP),
        }
        for name, attack in attacks.items():
            try:
                attack()
                print("DONE", name, pid, flush=True)
            except Exception as exc:
                print("refused", name, type(exc).__name__, flush=True)
    return -1.0
'''

# A grader module imported from learner code, to call PyTorch's fused attention through it.
IMPORT_THE_GRADER = '''

def scaled_dot_product_attention(q, k, v, mask=None):
    from _grader import oracles
    return oracles.F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask == 0)
'''

# The course package's own source, run by path (no import of minigpt at all).
RUN_THE_PACKAGE_BY_PATH = '''

def perplexity(loss):
    import os, runpy
    found = runpy.run_path(os.path.join(os.path.dirname(os.getcwd()), "minigpt", "evaluate.py"))
    return found["perplexity"](loss)
'''

# A stable log-softmax under a name the rule does not list, looked up by a name built at run time.
LOG_SOFTMAX_BY_ANOTHER_NAME = '''


def cross_entropy(logits, targets):
    import torch.special as sp
    stable = getattr(sp, "log_" + "soft" + "max")
    return -stable(logits, dim=-1)[torch.arange(len(targets)), targets].mean()
'''

HOSTILE = (
    Trick("reach_the_grading_process", "ex01_tokenization.py", "solution", append=REACH_THE_GRADER),
    Trick("import_the_grader", "ex03_attention.py", "stub", append=IMPORT_THE_GRADER),
    Trick("run_the_package_by_path", "ex06_evaluation.py", "stub", append=RUN_THE_PACKAGE_BY_PATH),
    Trick("log_softmax_by_another_name", "ex05_training.py", "solution", append=LOG_SOFTMAX_BY_ANOTHER_NAME),
)

# Files beside the learner's: named like the grader's modules, standard-library modules, pytest's own
# files. Each would end the process that runs it. None may run: the folder's exNN_*.py files alone count.
_EXIT = "import os\nos._exit(3)\n"
LOOKALIKES = {
    "conftest.py": _EXIT, "pytest.ini": "[pytest]\naddopts = -x -p no:terminal --co\n", "_grading.py": _EXIT,
    "_cases.py": _EXIT, "_worker.py": _EXIT, "_grader/__init__.py": _EXIT, "_grader/oracles.py": _EXIT,
    "random.py": _EXIT, "json.py": _EXIT, "inspect.py": _EXIT, "glob.py": _EXIT, "torch.py": _EXIT,
    "sitecustomize.py": _EXIT, "usercustomize.py": _EXIT, "pytest.py": _EXIT, "ex99_extra.py": _EXIT,
}
