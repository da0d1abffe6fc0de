"""`minigpt train` and `minigpt sample` under faults and bad input: nothing lost, nothing misleading.

Most runs call `main()` in this process (the command's own code path, without an interpreter
start-up each); the signal tests run the command in a subprocess. Every refusal is checked for its
one-line message and for the files on disk being exactly as they were.
"""

import hashlib
import importlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import GPT, GPTConfig, TrainConfig, Trainer
from minigpt import cli
from minigpt.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from minigpt.cli import main, train_plan as plan_run
from minigpt.runfolder import LOCK_NAME
from minigpt.sampling import default_prompt
from minigpt.trainer import NonFiniteError, configure_optimizer

TINY = ["--context-length", "16", "--d-model", "32", "--num-heads", "2", "--num-blocks", "1",
        "--batch-size", "4", "--eval-iters", "2", "--device", "cpu"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` and a hash of its bytes: equal snapshots, untouched files."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse ends bad options this way, as the command does
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(capsys, *args) -> str:
    """Run, expect exit status 2 with one 'minigpt: error:' line and no traceback; return it."""
    status, _, err = run(capsys, *args)
    assert status == 2, err
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, corpus) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus_file) -> Path:
    """A finished 20-step run (evaluations at 0, 10, 20): ckpt.pt and best.pt at step 20."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(corpus_file), "--max-iters", "20", "--eval-interval", "10",
                 "--sample-tokens", "0", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, free to be written over by the test."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("ckpt.pt", "best.pt"):
        (out / name).write_bytes((finished_run / name).read_bytes())
    return out


# -- item 3: a run never destroys another run's work ----------------------------------------------

def test_existing_run_is_refused_and_left_intact(run_copy, corpus_file, capsys):
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--data", corpus_file, "--max-iters", "4", "--out", run_copy, *TINY)
    assert f"--out '{run_copy}' already holds a run (ckpt.pt, best.pt)" in err
    assert "--resume" in err and "--overwrite" in err
    assert snapshot(run_copy) == before


def test_default_out_is_protected_too(run_copy, corpus_file, capsys, monkeypatch):
    monkeypatch.chdir(run_copy.parent)
    os.rename(run_copy, run_copy.parent / "out")
    before = snapshot(run_copy.parent / "out")
    err = refused(capsys, "train", "--data", corpus_file, "--max-iters", "4", *TINY)
    assert "--out 'out' already holds a run" in err
    assert snapshot(run_copy.parent / "out") == before


def test_overwrite_replaces_the_run(run_copy, corpus_file, capsys):
    status, out, _ = run(capsys, "train", "--data", corpus_file, "--max-iters", "3",
                         "--eval-interval", "2", "--sample-tokens", "0", "--out", run_copy,
                         "--overwrite", *TINY)
    assert status == 0
    assert f"--overwrite: removed the earlier run's {run_copy / 'best.pt'}" in out
    assert read_checkpoint(run_copy / "ckpt.pt")["train_state"]["step"] == 3
    assert read_checkpoint(run_copy / "best.pt")["train_state"]["step"] in (2, 3)
    assert not (run_copy / LOCK_NAME).exists()


def test_resume_into_another_run_is_refused(run_copy, finished_run, capsys):
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", finished_run / "ckpt.pt", "--max-iters", "30",
                  "--out", run_copy)
    assert "already holds a run" in err and snapshot(run_copy) == before


def test_a_live_runs_lock_refuses_a_second_run(run_copy, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_copy / LOCK_NAME).write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        before = snapshot(run_copy)
        err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "22")
        assert f"is in use by another minigpt run (process {sleeper.pid}" in err
        assert snapshot(run_copy) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_runs_lock_is_taken_over_and_released(run_copy, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its process id now names no process
    (run_copy / LOCK_NAME).write_text(f"{dead.pid} {socket.gethostname()}\n")
    status, out, err = run(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "22",
                           "--sample-tokens", "0")
    assert status == 0, err
    assert f"took over the lock of '{run_copy}', left by run {dead.pid}, which is no longer " \
           f"running" in out
    assert not (run_copy / LOCK_NAME).exists()
    assert read_checkpoint(run_copy / "ckpt.pt")["train_state"]["step"] == 22


def test_an_unreadable_lock_is_taken_over_with_a_line(run_copy, capsys):
    (run_copy / LOCK_NAME).write_bytes(b"\xff garbage")
    status, out, err = run(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "21",
                           "--sample-tokens", "0")
    assert status == 0, err
    assert "whose lock file could not be read" in out and not (run_copy / LOCK_NAME).exists()


def test_resuming_on_text_the_tokenizer_cannot_encode_names_data(run_copy, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("日本語のテキスト" * 200, encoding="utf-8")
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--data", other,
                  "--max-iters", "21")
    assert f"--data '{other}' does not fit the checkpoint's tokenizer: " in err
    assert "'日' at position 0" in err
    assert snapshot(run_copy) == before


def test_a_learning_rate_below_min_lr_names_min_lr_not_the_checkpoint(run_copy, tmp_path, capsys):
    hint = ("--min-lr must be in [0, learning_rate=1e-05], got 0.0001 (not given here: the default "
            "or the checkpoint's value; give --min-lr too)")
    assert hint in refused(capsys, "train", "--learning-rate", "1e-5", "--out", tmp_path / "new",
                           *TINY)
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--learning-rate", "1e-5",
                  "--max-iters", "21")
    assert hint in err and "checkpoint" not in err.split("(")[0]  # the checkpoint is fine
    assert snapshot(run_copy) == before


def test_a_folder_where_the_lock_file_belongs_is_refused_by_name(run_copy, capsys):
    (run_copy / LOCK_NAME).mkdir()
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "21")
    assert f"--out '{run_copy}' holds a folder named '{LOCK_NAME}'" in err
    assert snapshot(run_copy) == before and (run_copy / LOCK_NAME).is_dir()


# -- item 4: non-finite values are refused, never saved -------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--learning-rate", "inf"], "--learning-rate must be a finite number in (0, 1], got inf"),
    (["--learning-rate", "1e10"], "--learning-rate must be a finite number in (0, 1], got 1"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number in (0, 1], got nan"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number in [0, 1], got inf"),
    (["--seed", "1e23"], "argument --seed: must be a whole number, got '1e23'"),
    (["--seed", str(10**23)], "--seed must be a whole number in [0, 4294967295]"),
    (["--grad-clip", "inf"], "--grad-clip must be a finite number >= 0, got inf"),
    (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
    (["--sample-tokens", "-5"], "--sample-tokens must be a whole number >= 0, got -5"),
    (["--tokenizer", "char", "--vocab-size", "5"], "--vocab-size applies only to --tokenizer bpe"),
    (["--tokenizer", "cl100k", "--vocab-size", "5"], "--vocab-size applies only to --tokenizer bpe"),
    (["--tokenizer", "word"], "argument --tokenizer: invalid choice: 'word'"),
])
def test_absurd_train_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, args,
                                                          message):
    monkeypatch.chdir(tmp_path)
    err = refused(capsys, "train", *args)
    assert message in err
    assert list(tmp_path.iterdir()) == []  # no out/ folder, nothing written


def test_resume_with_an_absurd_learning_rate_keeps_the_checkpoint(run_copy, capsys):
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "30",
                  "--learning-rate", "1e10")
    assert "--learning-rate must be a finite number in (0, 1]" in err
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("args, message", [
    (["--frequency-penalty", "1e300"], "--frequency-penalty must be a finite number in [0, 100]"),
    (["--presence-penalty", "1e300"], "--presence-penalty must be a finite number in [0, 100]"),
    (["--temperature", "inf"], "--temperature must be a finite number in [0, 100], got inf"),
    (["--temperature", "1e-300"], "--temperature must be 0 (greedy) or in [0.01, 100]"),
    (["--seed", "-1"], "--seed must be a whole number in [0, 4294967295], got -1"),
    (["--num-samples", "0"], "--num-samples must be a whole number >= 1, got 0"),
    (["--max-new-tokens", "-1"], "--max-new-tokens must be a whole number >= 0, got -1"),
    (["--device", "gpu"], "--device must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'"),
])
def test_absurd_sample_options_are_refused(finished_run, capsys, args, message):
    err = refused(capsys, "sample", "--checkpoint", finished_run / "ckpt.pt", *args)
    assert message in err


def test_a_prompt_the_vocabulary_cannot_encode_names_the_option(finished_run, capsys):
    err = refused(capsys, "sample", "--checkpoint", finished_run / "ckpt.pt", "--prompt", "日本")
    assert err.startswith("minigpt: error: --prompt '日本' cannot be encoded by this checkpoint's "
                          "tokenizer: ")
    assert "'日' at position 0" in err


def test_nan_loss_stops_the_command_and_keeps_the_checkpoint(run_copy, capsys):
    poisoned = load_checkpoint(run_copy / "ckpt.pt")
    payload = read_checkpoint(run_copy / "ckpt.pt")
    with torch.no_grad():  # finite weights (a save refuses others) whose logits overflow to NaN
        poisoned.model.lm_head.weight[:, ::2] = 3e38
        poisoned.model.lm_head.weight[:, 1::2] = -3e38
    optimizer = configure_optimizer(poisoned.model, TrainConfig(), torch.device("cpu"))
    optimizer.load_state_dict(payload["optimizer"])
    save_checkpoint(run_copy / "ckpt.pt", poisoned.model, poisoned.tokenizer, optimizer,
                    payload["train_state"])
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "30")
    assert "training diverged at step 20: the training loss is nan" in err
    assert "Try a lower learning_rate" in err
    assert snapshot(run_copy) == before


def small_trainer(tiny_config, char_tokenizer, splits, out, **overrides) -> Trainer:
    values = dict(batch_size=4, max_iters=20, eval_interval=10, eval_iters=2, seed=3, device="cpu")
    torch.manual_seed(0)
    return Trainer(GPT(tiny_config), char_tokenizer, *splits, TrainConfig(**{**values, **overrides}),
                   out_dir=out, progress=False)


def test_nan_weights_are_never_saved(tmp_path, tiny_config, char_tokenizer, splits):
    trainer = small_trainer(tiny_config, char_tokenizer, splits, tmp_path, checkpoint_interval=1)
    trainer.run(until=5)
    saved = snapshot(tmp_path)
    real_step = trainer.optimizer.step

    def step_then_poison():  # an update that turns a weight infinite (the loss before it was fine)
        real_step()
        with torch.no_grad():
            trainer.model.lm_head.weight[0, 0] = float("inf")

    trainer.optimizer.step = step_then_poison
    with pytest.raises(NonFiniteError, match="diverged at step 6: the weights hold NaN or infinite"):
        trainer.run()
    assert snapshot(tmp_path) == saved  # ckpt.pt still the one of step 5
    assert read_checkpoint(tmp_path / "ckpt.pt")["train_state"]["step"] == 5


def test_nan_loss_from_the_start_saves_nothing(tmp_path, tiny_config, char_tokenizer, splits):
    trainer = small_trainer(tiny_config, char_tokenizer, splits, tmp_path)
    with torch.no_grad():
        trainer.model.token_embedding.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="diverged at step 0: the estimated train loss is nan; "
                                             "this run saved nothing"):
        trainer.run()
    assert list(tmp_path.iterdir()) == []


# -- item 5: every check before the work ----------------------------------------------------------

def test_out_that_is_a_file_or_under_a_file(tmp_path, corpus_file, capsys):
    (tmp_path / "afile").write_text("keep me")
    err = refused(capsys, "train", "--data", corpus_file, "--out", tmp_path / "afile", *TINY)
    assert "is a file, not a folder" in err
    err = refused(capsys, "train", "--data", corpus_file, "--out", tmp_path / "afile" / "run", *TINY)
    assert f"cannot be created: '{tmp_path / 'afile'}' is a file" in err
    assert snapshot(tmp_path) == {"afile": hashlib.sha256(b"keep me").hexdigest()}


def test_out_without_write_permission(tmp_path, corpus_file, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Root may write anywhere, so permission is simulated at the one call that asks for it.
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    err = refused(capsys, "train", "--data", corpus_file, "--out", locked / "run", *TINY)
    assert f"is not writable: no permission to write in '{locked}'" in err
    assert list(locked.iterdir()) == []


def test_folders_where_files_are_expected(tmp_path, capsys):
    err = refused(capsys, "train", "--data", tmp_path)
    assert f"--data '{tmp_path}' is a folder, not a file" in err
    err = refused(capsys, "train", "--resume", tmp_path)
    assert f"--resume '{tmp_path}' is a folder, not a file" in err
    err = refused(capsys, "sample", "--checkpoint", tmp_path)
    assert f"--checkpoint: '{tmp_path}' is a folder, not a checkpoint file" in err


@pytest.mark.parametrize("args, message", [
    (["train", "--out", ""], "--out is empty; give a folder for the checkpoints"),
    (["train", "--data", ""], "--data is empty; give the path of a file"),
    (["train", "--resume", ""], "--resume is empty; give the path of a file"),
    (["sample", "--checkpoint", ""], "--checkpoint is empty; give the path of a file"),
])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(tmp_path, monkeypatch, capsys,
                                                                   args, message):
    # `--out "$OUT"` with OUT unset must not write checkpoints into whatever folder we are in
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    err = refused(capsys, *args, *(TINY if args[1] in ("--out", "--data") else []))
    assert message in err
    assert snapshot(tmp_path) == before


def test_resume_target_must_be_beyond_the_checkpoint(run_copy, capsys):
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "10")
    assert "--max-iters must be above the checkpoint's step 20 (a resume trains further), got 10\n" in err
    err = refused(capsys, "train", "--resume", run_copy / "ckpt.pt")  # its own max_iters: 20
    assert ("--max-iters must be above the checkpoint's step 20 (a resume trains further), got 20 (not "
            "given here: the default or the checkpoint's value; give --max-iters too)") in err
    assert snapshot(run_copy) == before


def test_plan_run_checks_without_side_effects(tmp_path, corpus_file):
    args = cli.build_parser().parse_args(["train", "--data", str(corpus_file), "--out",
                                          str(tmp_path / "new" / "run"), "--max-iters", "7", *TINY])
    plan = plan_run(args)
    assert plan.data == str(corpus_file.resolve()) and plan.train_config.max_iters == 7
    assert plan.model_options["d_model"] == 32 and plan.replace == [] and plan.resume is None
    assert not (tmp_path / "new").exists()


def test_a_run_that_appears_between_plan_and_execute_is_not_replaced(tmp_path, corpus_file):
    out = tmp_path / "run"
    args = cli.build_parser().parse_args(["train", "--data", str(corpus_file), "--out", str(out),
                                          "--max-iters", "2", *TINY])
    plan = plan_run(args)
    out.mkdir()
    (out / "best.pt").write_bytes(b"another run's checkpoint")  # it finished in the meantime
    with pytest.raises(ValueError, match="already holds a run"):
        cli.execute(plan)
    assert (out / "best.pt").read_bytes() == b"another run's checkpoint"
    assert not (out / LOCK_NAME).exists()


def test_corpus_without_newline_trains_and_samples(tmp_path, capsys):
    text = "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少" * 40  # one line, no "\n"
    (tmp_path / "poem.txt").write_text(text, encoding="utf-8")
    status, out, err = run(capsys, "train", "--data", tmp_path / "poem.txt", "--max-iters", "2",
                           "--eval-interval", "2", "--sample-tokens", "10", "--out",
                           tmp_path / "run", *TINY)
    assert status == 0, err
    assert "sample:\n" in out
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt").train_state["sample_prompt"] == "春"
    status, out, err = run(capsys, "sample", "--checkpoint", tmp_path / "run" / "ckpt.pt",
                           "--max-new-tokens", "5", "--seed", "1")
    assert status == 0, err
    assert out.startswith("春") and len(out.rstrip("\n")) == 6


def test_default_prompt(char_tokenizer):
    from minigpt.tokenizers import CharTokenizer

    assert default_prompt(char_tokenizer, "ROMEO") == "\n"
    no_newline = CharTokenizer.train("xyz")
    assert default_prompt(no_newline, "zyx") == "z"
    assert default_prompt(no_newline) == "x"  # no text at hand (an older checkpoint): token 0


# -- item 6: faults -------------------------------------------------------------------------------

def test_temp_files_of_an_interrupted_save_are_removed(run_copy, capsys):
    leftovers = [run_copy / ".ckpt.pt.k2j4h5g6.tmp", run_copy / ".best.pt.ab_cd123.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    (run_copy / "notes.tmp").write_text("mine")  # not a save's temp file: kept
    # the same shape as a save's temp file, but of a file minigpt train never writes: kept
    (run_copy / ".notes.txt.abcd1234.tmp").write_text("mine too")
    status, out, err = run(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "21",
                           "--sample-tokens", "0")
    assert status == 0, err
    for path in leftovers:
        assert f"removed {path}, left by an interrupted save" in out
        assert not path.exists()
    assert (run_copy / "notes.tmp").read_text() == "mine"
    assert (run_copy / ".notes.txt.abcd1234.tmp").read_text() == "mine too"


class Killed(BaseException):
    """Stands for a kill -9 in the middle of a save."""


@pytest.mark.parametrize("killed_save", ["best.pt", "ckpt.pt"])
def test_evaluation_cut_short_by_a_killed_save_is_redone(tmp_path, tiny_config, char_tokenizer,
                                                         splits, monkeypatch, killed_save):
    whole = small_trainer(tiny_config, char_tokenizer, splits, tmp_path / "whole").run()
    assert whole.history[2]["val"] < min(h["val"] for h in whole.history[:2])  # 20 is a new best

    train_module = importlib.import_module("minigpt.trainer")

    real_save = train_module.save_checkpoint

    def save_or_die(path, *args, **kwargs):
        if Path(path).name == killed_save and args[3]["step"] == 20:
            raise Killed
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", save_or_die)
    with pytest.raises(Killed):
        small_trainer(tiny_config, char_tokenizer, splits, tmp_path / "cut").run()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    resumed = small_trainer(tiny_config, char_tokenizer, splits, tmp_path / "cut")
    resumed.resume(tmp_path / "cut" / "ckpt.pt")
    assert resumed.result.step == 10  # the save at 20 never completed
    result = resumed.run()
    assert result.history == whole.history
    assert read_checkpoint(tmp_path / "cut" / "best.pt")["train_state"]["step"] == 20


def test_interrupt_during_start_up_exits_quietly(tmp_path, corpus_file, capsys, monkeypatch):
    # A shell's background job (`cmd &`, as a CI script may run us) inherits SIGINT ignored, and
    # Python then leaves it ignored; give Ctrl-C its interactive meaning for this test.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_during_start_up(tmp_path, corpus_file, capsys, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous_sigint)


def _interrupt_during_start_up(tmp_path, corpus_file, capsys, monkeypatch) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), signum)  # arrives while the tokenizer is being built
            raise AssertionError("the signal should have stopped the run")

        monkeypatch.setattr(importlib.import_module("minigpt.run"), "train_tokenizer", interrupted)
        status, out, err = run(capsys, "train", "--data", corpus_file, "--out", tmp_path / "run", *TINY)
        assert status == 128 + signum
        assert err == f"minigpt: stopped by {signal.Signals(signum).name}\n"
        assert not (tmp_path / "run").exists()  # the lock and the folder made for it are gone


def start_training(corpus_file, out) -> subprocess.Popen:
    """A long run in a subprocess, returned once its first evaluation is printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "train", "--data", str(corpus_file),
                             "--max-iters", "100000", "--eval-interval", "50000", "--out", str(out),
                             *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:
        if line.startswith("step      0"):
            break
    return proc


def test_sigterm_saves_and_exits_143_and_a_second_run_is_refused(tmp_path, corpus_file, capsys):
    proc = start_training(corpus_file, tmp_path / "run")
    try:
        assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(proc.pid)
        err = refused(capsys, "train", "--data", corpus_file, "--out", tmp_path / "run",
                      "--overwrite", *TINY)
        assert f"in use by another minigpt run (process {proc.pid}" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted at step" in out and "Traceback" not in err
    step = load_checkpoint(tmp_path / "run" / "ckpt.pt").train_state["step"]
    assert 0 < step < 100000
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_second_ctrl_c_exits_130_quietly(tmp_path, corpus_file):
    proc = start_training(corpus_file, tmp_path / "run")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not list((tmp_path / "run").glob(".*.tmp"))  # a save cut short leaves no temp file
    if (tmp_path / "run" / "ckpt.pt").exists():  # the second Ctrl-C may come before or after it
        load_checkpoint(tmp_path / "run" / "ckpt.pt")


# -- item 7: the data path is absolute in the checkpoint ------------------------------------------

def test_resume_from_another_folder_finds_the_data(tmp_path, corpus, capsys, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "corpus.txt").write_text(corpus, encoding="utf-8")
    monkeypatch.chdir(tmp_path / "project")
    status, _, err = run(capsys, "train", "--data", "corpus.txt", "--max-iters", "2",
                         "--eval-interval", "2", "--sample-tokens", "0", "--out", "run", *TINY)
    assert status == 0, err
    state = load_checkpoint(tmp_path / "project" / "run" / "ckpt.pt").train_state
    assert state["data"] == str(tmp_path / "project" / "corpus.txt")
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "train", "--resume", "project/run/ckpt.pt", "--max-iters", "3",
                           "--sample-tokens", "0")
    assert status == 0, err
    assert "resumed from project/run/ckpt.pt at step 2" in out


# -- item 11: logs a person can read --------------------------------------------------------------

def test_no_progress_bar_when_not_a_terminal(tmp_path, corpus_file):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "minigpt", "train", "--data", str(corpus_file),
                           "--max-iters", "30", "--eval-interval", "10", "--sample-tokens", "0",
                           "--out", str(tmp_path), *TINY], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar: it would write here
    steps = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0].split()[1] for line in steps] == ["0", "10", "20", "30"]


def test_resume_from_best_beside_a_later_checkpoint_is_refused(run_copy, capsys):
    """Continuing from best.pt would replace the later ckpt.pt of the same folder."""
    before = snapshot(run_copy)
    err = refused(capsys, "train", "--resume", run_copy / "best.pt", "--max-iters", "30")
    assert "already holds a run (ckpt.pt)" in err and snapshot(run_copy) == before


def test_overwrite_never_removes_the_checkpoint_resumed_from(run_copy, capsys):
    best = (run_copy / "best.pt").read_bytes()
    status, out, err = run(capsys, "train", "--resume", run_copy / "ckpt.pt", "--max-iters", "21",
                           "--sample-tokens", "0", "--overwrite")
    assert status == 0, err
    assert "removed" not in out  # resuming a folder's own ckpt.pt: nothing is replaced
    assert read_checkpoint(run_copy / "ckpt.pt")["train_state"]["step"] == 21
    assert (run_copy / "best.pt").exists()
    best_step = read_checkpoint(run_copy / "best.pt")["train_state"]["step"]
    assert best_step == 21 or (run_copy / "best.pt").read_bytes() == best


def test_output_cut_short_by_the_reader_is_quiet(finished_run):
    """`minigpt sample ... | head -1`: exit as if by SIGPIPE, without an error message."""
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "sample", "--checkpoint",
                             str(finished_run / "ckpt.pt"), "--num-samples", "200", "--seed", "1",
                             "--max-new-tokens", "50"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b""


def test_a_crafted_sample_prompt_is_ignored(run_copy, capsys):
    ckpt = load_checkpoint(run_copy / "ckpt.pt")
    save_checkpoint(run_copy / "odd.pt", ckpt.model, ckpt.tokenizer, None,
                    {**ckpt.train_state, "sample_prompt": 5})
    status, out, err = run(capsys, "sample", "--checkpoint", run_copy / "odd.pt", "--seed", "1",
                           "--max-new-tokens", "5")
    assert status == 0, err
    assert out.startswith("\n")  # the default prompt, not the crafted one


# -- messages name what the user typed --------------------------------------------------------------

def test_messages_name_the_options_typed(tmp_path, corpus_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (tmp_path / "short.txt").write_text("To be, or not to be: that is the question." * 3)
    expected = {
        ("train", "--num-heads", "3"): "--num-heads must be a divisor of d_model=128 (each head gets "
                                       "d_model // num_heads dimensions), got 3",
        ("train", "--d-model", "30", "--num-heads", "4"): "--d-model must be divisible by num_heads=4",
        ("train", "--data", "short.txt", "--context-length", "200", "--no-progress"):
            "has 113 tokens but must have at least --context-length + 1 = 201; use more text or a "
            "smaller --context-length",
        ("train", "--data", str(corpus_file), "--tokenizer", "bpe", "--vocab-size", "100"):
            "--vocab-size must be a whole number > ",
        ("sample",): "--checkpoint: no such file 'out/ckpt.pt'",
        ("sample", "--checkpoint", "picture.png"): "--checkpoint: 'picture.png' is not a minigpt "
                                                   "checkpoint (not a torch.save archive",
        ("evaluate", "--checkpoint", "picture.png"): "is not a minigpt checkpoint",
    }
    if not torch.cuda.is_available():
        expected[("train", "--device", "cuda")] = ("--device must be one present here (CUDA is not "
                                                   "available here; use 'auto' or 'cpu'), got 'cuda'")
    for args, message in expected.items():
        err = refused(capsys, *args)
        assert message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png", "short.txt"]


def test_train_from_python_draws_no_progress_bar_into_a_log(tiny_model, char_tokenizer, splits, capfd):
    """Not a terminal (a log file, a pipe): one line per evaluation, no bar frames."""
    from minigpt import train

    train(tiny_model, char_tokenizer, *splits, TrainConfig(max_iters=30, eval_interval=10, eval_iters=1,
                                                           batch_size=2, device="cpu"))
    out, err = capfd.readouterr()
    assert "\r" not in out + err and "training:" not in err and "step/s" not in err
    assert [line.split(":")[0] for line in out.splitlines()] == ["step      0", "step     10",
                                                                  "step     20", "step     30"]


@pytest.mark.parametrize("until", [20, 7, 8])
def test_each_step_is_saved_at_most_once(tmp_path, tiny_config, char_tokenizer, splits, until):
    """--checkpoint-interval steps that are also evaluation steps, the last step, or where a run
    stops (`until`) are written once, not once per rule (the other ranks wait out every save)."""
    trainer = small_trainer(tiny_config, char_tokenizer, splits, tmp_path, checkpoint_interval=4,
                            eval_interval=8)
    saves, real_save = [], trainer._save
    trainer._save = lambda name: saves.append((name, trainer.state.step)) or real_save(name)
    trainer.run(until=until)
    ckpt_steps = [step for name, step in saves if name == "ckpt.pt"]
    expected = {20: [4, 8, 12, 16, 20], 7: [4, 7], 8: [4, 8]}[until]
    assert ckpt_steps == expected, saves
