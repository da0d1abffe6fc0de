"""Data-parallel training on real processes: torchrun (and `minigpt train --nproc`) with gloo on the
CPU, one thread per rank, every wait bounded (a subprocess timeout here, --dist-timeout in the ranks).

The checks: 2 ranks make the same weights as 1 (same global batch); a run stopped on 2 ranks resumes
on 1 and ends where an uninterrupted run ends; SIGTERM saves once and every rank exits; a rank that
dies, or hangs, makes the other stop with a message instead of waiting gloo's 30 minutes.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from minigpt import shakespeare
from minigpt.checkpoint import load_checkpoint
from minigpt.cli import _rank_argv, build_parser
from minigpt.config import ConfigError
from minigpt.distributed import _TORCHRUN, _say_why_ranks_failed, micro_steps_of_rank
from minigpt.runfolder import RunLock

WEIGHT_ATOL = 1e-5  # gloo sums two float32 gradients, then DDP divides: rounding only, over 20 AdamW steps
RUN_TIMEOUT = 240   # seconds for any one command here (start-up of 2 Pythons with torch is ~10 s)
TINY = ["--context-length", "32", "--d-model", "32", "--num-heads", "2", "--num-blocks", "2",
        "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0", "--no-progress",
        "--dist-timeout", "20", "--seed", "3"]
FLAT = ["--warmup-iters", "0", "--learning-rate", "3e-3", "--min-lr", "3e-3"]  # a constant rate


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(shakespeare(40_000), encoding="utf-8")
    return path


def env_one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def minigpt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "minigpt", *args], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=env_one_thread(), cwd=cwd)
    return result


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=env_one_thread())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def largest_difference(a: dict, b: dict) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


# -- the rules, in one process ------------------------------------------------------------------

def test_micro_batches_are_shared_out_by_rank():
    assert micro_steps_of_rank(4, 0, 1) == [0, 1, 2, 3]
    assert micro_steps_of_rank(4, 0, 2) == [0, 2] and micro_steps_of_rank(4, 1, 2) == [1, 3]
    assert sorted(sum((micro_steps_of_rank(6, r, 3) for r in range(3)), [])) == list(range(6))
    with pytest.raises(ConfigError, match="grad_accum_steps must be a multiple of the number of ranks"):
        micro_steps_of_rank(3, 0, 2)


def test_what_each_rank_runs_has_no_nproc_and_every_option_spelled_out():
    """torchrun's parser reads the words after `-m minigpt` too: --nproc would be its
    --nproc-per-node, and an abbreviation argparse accepted (--max) would be ambiguous there."""
    train = build_parser().train_command
    rank_argv = lambda *words: _rank_argv(["train", *words], train)  # noqa: E731
    assert rank_argv("--nproc", "2", "--out", "x") == ["train", "--out", "x"]
    assert rank_argv("--nproc=2", "--max-iters", "5") == ["train", "--max-iters", "5"]
    assert rank_argv("--npro", "2", "--no-prog") == ["train", "--no-progress"]
    assert rank_argv("--max", "20", "--grad-a=2", "--data", "a=b.txt") == [
        "train", "--max-iters", "20", "--grad-accum-steps=2", "--data", "a=b.txt"]
    from torch.distributed.run import get_args_parser  # every full name passes torchrun's parser
    names = sorted({n for action in train._actions for n in action.option_strings if n != "--nproc"})
    for name in names:
        parsed = get_args_parser().parse_args(["--standalone", "-m", "minigpt", "train", name, "1"])
        assert parsed.training_script_args[-2:] == [name, "1"]


@pytest.mark.parametrize("exitcodes, status, line", [
    ({0: 2, 1: 7}, 7, "minigpt: rank 1 exited with status 7; torchrun stopped the others"),
    ({0: -15, 1: -9}, 137, "minigpt: rank 1 was killed by SIGKILL; torchrun stopped the others"),
    ({0: 143, 1: 143}, 143, "minigpt: the ranks were stopped by SIGTERM"),
    ({0: 2, 1: 2}, 2, ""),  # a minigpt error: the ranks printed it
])
def test_the_rank_that_failed_first_is_named_not_the_ones_stopped(exitcodes, status, line, capsys):
    """torchrun records the ranks it stopped (SIGTERM) and those that stopped on another's loss (2)
    beside the cause, with whole-second timestamps: the cause is found by its exit code."""
    assert _say_why_ranks_failed(exitcodes) == status
    assert capsys.readouterr().err.strip() == line


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc must be a whole number >= 1, got 0"),
    (["--nproc", "2", "--grad-accum-steps", "3"],
     "--grad-accum-steps must be a multiple of the number of ranks \\(2\\)"),
    (["--nproc", "2", "--device", "cuda"], "--device must be one present here"),
])
def test_bad_nproc_settings_are_refused_before_any_rank_starts(tmp_path, text_file, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is allowed")
    result = minigpt("train", "--data", str(text_file), "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "run").exists()


def test_nproc_that_disagrees_with_the_launcher_is_refused(tmp_path, text_file):
    """torchrun itself takes no --nproc after the command (it reads it as its own --nproc-per-node);
    another launcher's environment says how many ranks there are."""
    env = {**env_one_thread(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}
    result = subprocess.run([sys.executable, "-m", "minigpt", "train", "--nproc", "3", "--data",
                             str(text_file), "--out", str(tmp_path / "run"), *TINY],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert result.returncode == 2
    assert "minigpt: error (rank 0): --nproc 3, but torchrun started 2 ranks" in result.stderr


@pytest.mark.parametrize("extra, message", [
    ({}, "RANK and WORLD_SIZE are set but not MASTER_ADDR and MASTER_PORT: start the ranks with torchrun"),
    ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "free"},
     r"rank 1 could not join the other ranks at 127\.0\.0\.1:\d+ within 2 s \("),
])
def test_a_rank_that_cannot_join_says_why(tmp_path, text_file, extra, message):
    """Rank 1 alone: nobody listens at the address (or there is none); it gives up after
    --dist-timeout with one line, not a traceback."""
    env = {**env_one_thread(), "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", **extra}
    if env.get("MASTER_PORT") == "free":
        env["MASTER_PORT"] = str(_free_port())
    result = subprocess.run([sys.executable, "-m", "minigpt", "train", "--data", str(text_file),
                             "--out", str(tmp_path / "run"), "--grad-accum-steps", "2", *TINY,
                             "--dist-timeout", "2"],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.search("minigpt: error \\(rank 1\\): " + message, result.stderr), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0.5", "1e9", "nan"])
def test_dist_timeout_out_of_range_is_refused(tmp_path, text_file, value):
    result = minigpt("train", "--data", str(text_file), "--out", str(tmp_path / "run"),
                     "--dist-timeout", value)
    assert result.returncode == 2
    assert "--dist-timeout must be a finite number in [1, 604800]" in result.stderr, result.stderr


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "the environment variable WORLD_SIZE must be a whole number >= 1 (torchrun sets it), got 'abc'"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "the environment variable RANK must be a whole number in [0, 1]"),
])
def test_a_garbled_launcher_environment_is_named(tmp_path, text_file, env, message):
    result = subprocess.run([sys.executable, "-m", "minigpt", "train", "--data", str(text_file),
                             "--out", str(tmp_path / "run"), *TINY], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env={**env_one_thread(), **env})
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_a_folder_in_use_is_refused_once_before_the_ranks_start(tmp_path, text_file):
    out = tmp_path / "run"
    with RunLock(out):  # a live run (this test's process) holds it
        result = minigpt("train", "--nproc", "2", "--grad-accum-steps", "2", "--data", str(text_file),
                         "--out", str(out), *TINY)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("minigpt: error") == 1 and "is in use by another minigpt run" in result.stderr
    assert "Traceback" not in result.stderr and "rank" not in result.stderr  # torchrun never started


# -- the same numbers on any number of ranks ----------------------------------------------------

def test_two_ranks_under_torchrun_equal_one_process(tmp_path, text_file):
    common = ["--data", str(text_file), "--grad-accum-steps", "2", "--max-iters", "20",
              "--eval-interval", "10", *TINY]
    two = ok(torchrun(2, "-m", "minigpt", "train", "--out", str(tmp_path / "two"), *common))
    one = ok(minigpt("train", "--out", str(tmp_path / "one"), *common))
    assert "device: cpu; 2 ranks (gloo)" in two.stdout and "device: cpu\n" in one.stdout
    assert two.stdout.count("step     10:") == 1, "rank 0 alone logs"
    a, b = weights(tmp_path / "two" / "ckpt.pt"), weights(tmp_path / "one" / "ckpt.pt")
    assert largest_difference(a, b) < WEIGHT_ATOL
    assert largest_difference(a, weights(tmp_path / "two" / "best.pt")) == 0.0  # step 20 was best
    # not trivially equal: the first evaluation's weights are far from the last
    assert load_checkpoint(tmp_path / "two" / "ckpt.pt").train_state["step"] == 20
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "ckpt.pt", "loss.png"]


def test_a_run_stopped_on_two_ranks_resumes_on_one_to_the_same_weights(tmp_path, text_file):
    common = ["--grad-accum-steps", "2", "--eval-interval", "10", *TINY, *FLAT]
    ok(minigpt("train", "--nproc", "2", "--data", str(text_file), "--out", str(tmp_path / "split"),
               "--max-iters", "10", *common))
    ok(minigpt("train", "--resume", str(tmp_path / "split" / "ckpt.pt"), "--max-iters", "20",
               "--no-progress", "--sample-tokens", "0"))
    ok(minigpt("train", "--data", str(text_file), "--out", str(tmp_path / "whole"), "--max-iters",
               "20", *common))
    split, whole = weights(tmp_path / "split" / "ckpt.pt"), weights(tmp_path / "whole" / "ckpt.pt")
    assert largest_difference(split, whole) < WEIGHT_ATOL
    history = load_checkpoint(tmp_path / "split" / "ckpt.pt").train_state["history"]
    assert [entry["step"] for entry in history] == [0, 10, 20]


# -- stopping: a signal, a rank that dies, a rank that hangs ------------------------------------

def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line holds `text` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the ranks' command lines from /proc")
@pytest.mark.parametrize("signum, victim", [(signal.SIGTERM, "launcher"), (signal.SIGHUP, "launcher"),
                                            (signal.SIGKILL, "launcher"), (signal.SIGKILL, "torchrun")],
                         ids=["SIGTERM", "SIGHUP", "SIGKILL", "SIGKILL-torchrun"])
def test_a_stopped_launcher_saves_once_and_every_rank_exits(tmp_path, text_file, signum, victim):
    """SIGTERM and a hang-up are passed on; a process killed outright (SIGKILL: the launcher, or
    torchrun) leaves its child a parent-death SIGTERM: each time the ranks stop after the same step
    and rank 0 saves once."""
    out = tmp_path / "stopped"
    log = (tmp_path / "log.txt").open("w+")
    launcher = subprocess.Popen([sys.executable, "-m", "minigpt", "train", "--nproc", "2", "--data",
                                 str(text_file), "--out", str(out), "--grad-accum-steps", "2",
                                 "--max-iters", "100000", "--eval-interval", "100000", *TINY],
                                stdout=log, stderr=subprocess.STDOUT, env=env_one_thread())
    try:
        assert _wait_for(lambda: "step      0:" in Path(log.name).read_text(), RUN_TIMEOUT), \
            Path(log.name).read_text()[-3000:]
        assert len(_processes_mentioning(str(out))) >= 3  # the launcher, torchrun, 2 ranks
        time.sleep(1.0)  # a few steps
        if victim == "launcher":
            launcher.send_signal(signum)
            assert launcher.wait(timeout=60) == (-signum if signum == signal.SIGKILL else 128 + signum)
        else:
            [torchrun_pid] = [pid for pid in _processes_mentioning(str(out))
                              if b"torchrun_quietly" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            os.kill(torchrun_pid, signum)
            assert launcher.wait(timeout=60) == 128 + signum  # as a shell reports a killed command
    finally:
        if launcher.poll() is None:
            launcher.kill()
    gone = _wait_for(lambda: not _processes_mentioning(str(out)), 30)
    outlived = [] if gone else _processes_mentioning(str(out))
    for pid in outlived:  # a failed check leaves nothing running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not outlived, f"torchrun or a rank outlived the launcher: {outlived}"
    text = Path(log.name).read_text()
    assert "Traceback" not in text, text[-3000:]  # torchrun's own is left out (torchrun_quietly)
    if victim == "launcher" and signum != signal.SIGKILL:  # passed on to torchrun as SIGTERM
        assert "minigpt: the ranks were stopped by SIGTERM" in text, text[-2000:]
    assert text.count("interrupted at step") == 1 and text.count("checkpoint: ") == 1, text[-3000:]
    step = int(text.split("interrupted at step ")[1].split()[0])
    assert step > 0 and load_checkpoint(out / "ckpt.pt").train_state["step"] == step
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "loss.png"]  # no lock, no temp file
    if signum != signal.SIGTERM:
        return  # resumed once, below
    resumed = ok(minigpt("train", "--resume", str(out / "ckpt.pt"), "--max-iters", str(step + 3),
                         "--no-progress", "--sample-tokens", "0"))  # on one rank
    assert f"resumed from {out / 'ckpt.pt'} at step {step}" in resumed.stdout
    assert load_checkpoint(out / "ckpt.pt").train_state["step"] == step + 3


RANK_FAILS = """
import os, sys, time
from minigpt import cli
from minigpt.model import GPT
from minigpt.trainer import Trainer

how, at_step = sys.argv[1], int(sys.argv[2])
original = Trainer.train_step

def broken_forward(self, *args, **kwargs):
    raise RuntimeError("rank 1's own bug")

def train_step(self):
    if os.environ["RANK"] == "1" and self.state.step == at_step:
        if how == "dies":
            os._exit(7)          # as if killed: no goodbye to the others
        if how == "raises":      # in the model's forward, inside the step: its own bug
            GPT.forward = broken_forward
        else:
            time.sleep(600)      # hangs: alive, but never joins the next collective
    return original(self)

Trainer.train_step = train_step
sys.exit(cli.main(sys.argv[3:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["torchrun", "torchrun_quietly"])
def test_a_rank_that_dies_stops_the_other_with_a_message(tmp_path, text_file, launcher):
    """torchrun's own summary names the exit code; `torchrun_quietly` (how `minigpt train --nproc`
    runs torchrun) says it in one line, without torchrun's traceback."""
    script = tmp_path / "rank_fails.py"
    script.write_text(RANK_FAILS)
    args = [str(script), "dies", "5", "train", "--data", str(text_file), "--out", str(tmp_path / "run"),
            "--grad-accum-steps", "2", "--max-iters", "1000", "--eval-interval", "3", *TINY]
    if launcher == "torchrun":
        result = torchrun(2, *args)
        assert result.returncode != 0  # within RUN_TIMEOUT, not gloo's 30 minutes
        assert re.search(r"exitcode\s*:\s*7\b", result.stderr), result.stderr[-3000:]  # torchrun's summary
    else:
        result = subprocess.run([sys.executable, "-c", _TORCHRUN, "--standalone", "--nproc_per_node=2",
                                 *args], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                                env=env_one_thread())
        assert result.returncode == 7, result.stderr[-3000:]
        assert "minigpt: rank 1 exited with status 7; torchrun stopped the others" in result.stderr
        assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert "minigpt: error (rank 0): rank 0 of 2: another rank died or stopped answering during step 5" in result.stderr
    # the checkpoint of step 3 is kept as it was
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt").train_state["step"] == 3


def test_a_ranks_own_error_is_not_blamed_on_another_rank(tmp_path, text_file):
    script = tmp_path / "rank_fails.py"
    script.write_text(RANK_FAILS)
    result = torchrun(2, str(script), "raises", "2", "train", "--data", str(text_file), "--out",
                      str(tmp_path / "run"), "--grad-accum-steps", "2", "--max-iters", "1000",
                      "--eval-interval", "1000", *TINY)
    assert result.returncode != 0
    assert "RuntimeError: rank 1's own bug" in result.stderr, result.stderr[-3000:]  # its traceback
    assert "(rank 1): rank 1 of 2: another rank" not in result.stderr


def test_a_rank_that_hangs_is_given_up_after_the_timeout(tmp_path, text_file):
    """Without torchrun to kill the others: rank 0 gives up after --dist-timeout and says why."""
    script = tmp_path / "rank_fails.py"
    script.write_text(RANK_FAILS)
    port = _free_port()
    ranks = []
    for rank in (0, 1):
        env = {**env_one_thread(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen(
            [sys.executable, str(script), "hangs", "4", "train", "--data", str(text_file), "--out",
             str(tmp_path / "run"), "--grad-accum-steps", "2", "--max-iters", "1000",
             "--eval-interval", "3", *TINY, "--dist-timeout", "5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        out, err = ranks[0].communicate(timeout=RUN_TIMEOUT)
        assert ranks[0].returncode == 2, err[-3000:]
        assert "minigpt: error (rank 0): rank 0 of 2: another rank died or stopped answering during step 4" in err
        assert "the last checkpoint (" in err and "resume with --resume on any number of ranks" in err
        assert ranks[1].poll() is None  # the hung one was still there: rank 0 did not wait for it
    finally:
        for process in ranks:
            process.kill()
            process.communicate()
