"""The `minigpt` command, run for real in subprocesses on a small configuration."""

import os
import signal
import subprocess
import sys
import time

import pytest

from minigpt.checkpoint import load_checkpoint
from minigpt.cli import main

SMALL = ["--context-length", "16", "--d-model", "32", "--num-heads", "2", "--num-blocks", "1",
         "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "20", "--no-progress",
         "--device", "cpu"]


def minigpt(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "minigpt", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, corpus):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("run")
    proc = minigpt("train", "--data", corpus_file, "--max-iters", "30", "--eval-interval", "10",
                   "--out", out, *SMALL)
    return out, proc


def test_train_end_to_end(trained):
    out, proc = trained
    assert "step     30: train loss" in proc.stdout
    assert "sample:" in proc.stdout
    assert {"ckpt.pt", "best.pt", "loss.png"} <= set(os.listdir(out))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt.train_state["step"] == 30 and ckpt.config.d_model == 32


def test_sample_is_reproducible_and_stops(trained):
    out, _ = trained
    args = ["sample", "--checkpoint", out / "ckpt.pt", "--prompt", "ROMEO:", "--max-new-tokens", "40",
            "--seed", "3", "--top-k", "10", "--top-p", "0.9", "--num-samples", "2"]
    a, b = minigpt(*args), minigpt(*args)
    assert a.stdout == b.stdout and a.stdout.count("ROMEO:") == 2 and "--- sample 2 ---" in a.stdout
    cached = minigpt(*args[:-2], "--num-samples", "1", "--temperature", "0")
    plain = minigpt(*args[:-2], "--num-samples", "1", "--temperature", "0", "--no-cache")
    assert cached.stdout == plain.stdout
    stopped = minigpt("sample", "--checkpoint", out / "ckpt.pt", "--prompt", "A", "--seed", "3",
                      "--max-new-tokens", "200", "--stop", "\n")
    assert stopped.stdout.rstrip("\n").count("\n") == 0


def test_resume_continues_to_more_steps(trained, tmp_path):
    out, _ = trained
    (tmp_path / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes())
    proc = minigpt("train", "--resume", tmp_path / "ckpt.pt", "--max-iters", "40",
                   "--sample-tokens", "0", "--no-progress")  # writes beside the checkpoint
    assert "resumed from" in proc.stdout and "at step 30" in proc.stdout
    assert load_checkpoint(tmp_path / "ckpt.pt").train_state["step"] == 40
    assert (tmp_path / "loss.png").exists()
    proc = minigpt("train", "--resume", tmp_path / "ckpt.pt", "--tokenizer", "bpe", check=False)
    assert proc.returncode == 2 and "drop --tokenizer" in proc.stderr


def test_bpe_and_cl100k_tokenizers(corpus_file, tmp_path):
    for kind, extra in (("bpe", ["--vocab-size", "400"]), ("cl100k", [])):
        proc = minigpt("train", "--data", corpus_file, "--tokenizer", kind, *extra,
                       "--max-iters", "4", "--eval-interval", "2", "--out", tmp_path / kind, *SMALL)
        assert "vocabulary of" in proc.stdout
        assert load_checkpoint(tmp_path / kind / "ckpt.pt").tokenizer.kind == kind


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "missing.txt"], "no such file 'missing.txt'"),
    (["train", "--data", "latin1.txt"], "latin1.txt' is not UTF-8 text"),
    (["train", "--data", "empty.txt"], "is empty"),
    (["train", "--data", "short.txt"], "at least --context-length + 1 = 17; use more text or a smaller --context-length"),
    (["train", "--d-model", "30", "--num-heads", "4"], "--d-model must be divisible by num_heads=4"),
    (["train", "--dropout", "1.5"], "--dropout must be a finite number in [0, 1), got 1.5"),
    (["train", "--resume", "missing.pt"], "--resume: no such file 'missing.pt'"),
    (["train", "--resume", "garbage.pt"], "--resume: 'garbage.pt' is not a minigpt checkpoint (not a torch.save archive"),
    (["sample", "--checkpoint", "missing.pt"], "no such file"),
    (["sample", "--temperature", "-1"], "--temperature must be a finite number in [0, 100], got -1.0"),
    (["sample", "--top-k", "0"], "--top-k must be a whole number >= 1, got 0"),
    (["sample", "--top-p", "0"], "--top-p must be a finite number in (0, 1], got 0.0"),
    (["sample", "--top-p", "1.01"], "--top-p must be a finite number in (0, 1], got 1.01"),
    (["sample", "--frequency-penalty", "-1"], "--frequency-penalty must be a finite number in [0, 100], got -1.0"),
    (["sample", "--presence-penalty", "-0.5"], "--presence-penalty must be a finite number in [0, 100], got -0.5"),
])
def test_bad_input_gets_one_clear_line(tmp_path, monkeypatch, capsys, args, message):
    """In-process `main()` (the same code path as the command, without 15 interpreter start-ups)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("tiny")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    extra = ["--context-length", "16", "--no-progress"] if args[1] == "--data" else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["empty.txt", "garbage.pt", "latin1.txt", "short.txt"]


def test_sample_empty_prompt_and_unknown_character(trained):
    out, _ = trained
    proc = minigpt("sample", "--checkpoint", out / "ckpt.pt", "--prompt", "", check=False)
    assert proc.returncode == 2 and "prompt must encode to at least one token" in proc.stderr
    proc = minigpt("sample", "--checkpoint", out / "ckpt.pt", "--prompt", "日本", check=False)
    assert proc.returncode == 2 and "'日' at position 0" in proc.stderr


def test_ctrl_c_saves_a_checkpoint(corpus_file, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "train", "--data", str(corpus_file),
                             "--max-iters", "100000", "--eval-interval", "50000", "--out", str(tmp_path),
                             *SMALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait until training has started
        if line.startswith("step      0"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out
    step = load_checkpoint(tmp_path / "ckpt.pt").train_state["step"]
    assert 0 < step < 100000


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_is_complete(capsys):
    text = help_text("train", capsys)
    for option in ("--data", "--tokenizer", "--context-length", "--d-model", "--num-heads",
                   "--num-blocks", "--dropout", "--batch-size", "--max-iters", "--learning-rate",
                   "--eval-interval", "--resume", "--out"):
        assert option in text
    text = help_text("sample", capsys)
    for option in ("--checkpoint", "--prompt", "--temperature", "--top-k", "--top-p",
                   "--frequency-penalty", "--presence-penalty", "--stop", "--num-samples", "--seed"):
        assert option in text


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "minigpt")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout and "sample" in proc.stdout


def test_options_are_made_from_the_configs(capsys):
    """Each config field is an option whose help gives the config's own default and range."""
    from dataclasses import fields

    from minigpt.cli import option_name
    from minigpt.config import DataConfig, GPTConfig, SampleConfig, TrainConfig, describe, field_type

    for command, classes in (("train", (DataConfig, GPTConfig, TrainConfig)), ("sample", (SampleConfig,))):
        text = " ".join(help_text(command, capsys).split())  # argparse wraps lines
        for cls in classes:
            for f in fields(cls):
                if not f.metadata["option"]:  # GPTConfig.vocab_size: the tokenizer sets it
                    continue
                assert option_name(f.name) in text
                assert f"[default: {'not set' if f.default is None else f.default}]" in text
                if field_type(cls, f)[0] in (int, float) or f.metadata["allowed"]:
                    assert describe(cls, f).removesuffix(" (or None)") in text  # e.g. --device's names


def test_parsed_options_build_the_configs():
    from minigpt.cli import build_parser, train_plan

    args = build_parser().parse_args(["train", "--learning-rate", "0.002", "--no-bias",
                                      "--tokenizer", "bpe", "--out", "somewhere/new"])
    plan = train_plan(args)
    assert plan.train_config.learning_rate == 0.002 and plan.model_options == {"bias": False}
    assert plan.data_config.tokenizer == "bpe" and plan.data_config.vocab_size == 512
    assert plan.train_config.max_iters == 2000  # the TrainConfig default, written only there


def test_ctrl_c_while_torch_loads_exits_quietly():
    # The KeyboardInterrupt a Ctrl-C raises, made to arrive exactly while `import torch` runs.
    code = ("import sys\n"
            "class CtrlC:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "from minigpt.__main__ import main\n"
            "sys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", code, "train"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130
    assert proc.stderr == "minigpt: stopped by SIGINT\n"


def test_import_minigpt_is_lazy_and_complete():
    code = ("import sys, minigpt\n"
            "assert 'torch' not in sys.modules, 'import minigpt loaded torch'\n"
            "assert minigpt.rotary.apply_rotary and minigpt.optim.OptimizerChain\n"
            "assert minigpt.presets.PRESETS and minigpt.runfolder.RunLock\n"
            "missing = [n for n in minigpt.__all__ if getattr(minigpt, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert minigpt.plotting.plot_loss_curves\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_training_loop_module_is_minigpt_trainer_and_minigpt_train_the_function():
    code = ("import minigpt.trainer as t, minigpt.cli\n"
            "assert t.Trainer and t.TrainState and t.learning_rate\n"
            "from minigpt import train, Trainer\n"
            "assert callable(train) and train.__module__ == 'minigpt.trainer', train\n"
            "import minigpt; assert type(minigpt).__name__ == 'module'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import minigpt
    assert "__class__" not in open(minigpt.__file__).read()


def test_a_mistyped_option_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--max_iters", "5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "unrecognized arguments: --max_iters 5; did you mean --max-iters?" in err
    with pytest.raises(SystemExit):
        main(["sample", "--temprature", "0.5"])
    assert "did you mean --temperature?" in capsys.readouterr().err


def test_a_bug_shows_its_traceback_and_bad_input_one_line(tmp_path, monkeypatch):
    """Only the project's own refusals (MinigptError) become one line; a RuntimeError from inside
    the model is a bug, and its traceback is what a bug report needs."""
    script = ("import sys, torch\n"
              "import minigpt.model\n"
              "def broken(self, x, kv_cache=None):\n"
              "    raise RuntimeError('mat1 and mat2 shapes cannot be multiplied (a bug)')\n"
              "minigpt.model.Block.forward = broken\n"
              "from minigpt.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    args = ["train", "--max-iters", "2", "--context-length", "16", "--d-model", "32", "--num-heads",
            "2", "--num-blocks", "1", "--batch-size", "2", "--eval-iters", "1", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied (a bug)" in proc.stderr
    assert "minigpt: error:" not in proc.stderr
    bad = subprocess.run([sys.executable, "-c", script, *args, "--dropout", "2"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("minigpt: error: --dropout must be")


# -- presets ---------------------------------------------------------------------------------------

def test_a_preset_sets_its_values_and_given_options_win(tmp_path):
    from minigpt.cli import build_parser, train_plan as plan_run

    parse = build_parser().parse_args
    plan = plan_run(parse(["train", "--preset", "speedrun", "--out", str(tmp_path / "a")]))
    assert plan.train_config.optimizer == "muon" and plan.train_config.max_iters == 450
    assert plan.model_options["position"] == "rotary" and plan.model_options["tie_weights"] is False
    plan = plan_run(parse(["train", "--preset", "speedrun", "--max-iters", "7", "--mlp", "swiglu",
                           "--optimizer", "adamw", "--out", str(tmp_path / "b")]))
    assert plan.train_config.max_iters == 7 and plan.train_config.optimizer == "adamw"
    assert plan.model_options["mlp"] == "swiglu" and plan.model_options["norm"] == "rms"
    assert plan.train_config.schedule == "wsd"  # not given: the preset's
    tied = plan_run(parse(["train", "--preset", "speedrun", "--tie-weights", "--out",
                           str(tmp_path / "e")]))  # the preset's head_lr has nothing to do then
    assert tied.model_options["tie_weights"] is True and tied.train_config.head_lr is None
    baby = plan_run(parse(["train", "--preset", "baby", "--out", str(tmp_path / "c")]))
    default = plan_run(parse(["train", "--out", str(tmp_path / "d")]))
    assert baby.train_config == default.train_config


def test_preset_errors_name_the_option(tmp_path, capsys, trained):
    out, _ = trained
    assert main(["train", "--preset", "speedrun", "--resume", str(out / "ckpt.pt")]) == 2
    assert "--preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal of an unknown choice
        main(["train", "--preset", "fast"])
    assert exit_.value.code == 2 and "--preset" in capsys.readouterr().err
    assert main(["train", "--head-lr", "0.01", "--out", str(tmp_path)]) == 2  # tied by default
    assert "--head-lr" in capsys.readouterr().err
    assert main(["train", "--preset", "speedrun", "--tie-weights", "--head-lr", "0.01", "--out",
                 str(tmp_path)]) == 2
    assert "--no-tie-weights" in capsys.readouterr().err
    # a value that clashes with the preset's: the option named is the preset's field
    assert main(["train", "--preset", "baby", "--learning-rate", "1e-5", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--min-lr must be" in err and "not given here: the preset's or the default value" in err


def test_help_lists_the_presets_and_what_they_set(capsys):
    from minigpt.presets import PRESETS

    text = " ".join(help_text("train", capsys).split())
    assert "--preset {baby,speedrun}" in text
    for name, values in PRESETS.items():
        assert f"{name}: " in text
        for key, value in values.items():
            assert f"{key}={value}" in text


def test_speedrun_preset_trains_and_resumes_through_the_command(corpus_file, tmp_path):
    small = ["--context-length", "16", "--d-model", "32", "--num-heads", "2", "--num-blocks", "1",
             "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0", "--no-progress"]
    minigpt("train", "--preset", "speedrun", "--data", corpus_file, "--max-iters", "6",
            "--eval-interval", "3", "--out", tmp_path, *small)
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt.config.position == "rotary" and ckpt.train_state["train_config"]["optimizer"] == "muon"
    refused = minigpt("train", "--resume", tmp_path / "ckpt.pt", "--max-iters", "9", "--optimizer",
                      "adamw", check=False)
    assert refused.returncode == 2 and "--optimizer must be 'muon', the checkpoint's" in refused.stderr
    proc = minigpt("train", "--resume", tmp_path / "ckpt.pt", "--max-iters", "9", "--no-progress")
    assert "resumed from" in proc.stdout and "done at step 9" in proc.stdout


# -- minigpt evaluate ------------------------------------------------------------------------------

def test_evaluate_prints_loss_perplexity_and_bits_per_character(trained):
    import math

    import torch

    from minigpt.data import encode_corpus, load_text, train_val_split
    from minigpt.evaluate import evaluate_split

    out, _ = trained
    proc = minigpt("evaluate", "--checkpoint", out / "best.pt", "--device", "cpu")
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines()[1:])
    assert set(lines) == {"loss", "perplexity", "bits per character"}
    loss = float(lines["loss"])
    ckpt = load_checkpoint(out / "best.pt")
    ids = encode_corpus(load_text(ckpt.train_state["data"]), ckpt.tokenizer)
    val = train_val_split(ids, ckpt.train_state["val_fraction"])[1]
    torch.manual_seed(0)
    assert loss == pytest.approx(evaluate_split(ckpt.model, val, 16, 7), abs=1e-4)
    assert float(lines["perplexity"]) == pytest.approx(math.exp(loss), rel=1e-3)
    assert float(lines["bits per character"]) == pytest.approx(loss / math.log(2), rel=1e-3)
    whole = minigpt("evaluate", "--checkpoint", out / "best.pt", "--split", "all")
    assert f"{len(ids) - 1:,} tokens predicted" in whole.stdout


def test_evaluate_errors_name_the_option(trained, tmp_path, capsys):
    out, _ = trained
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((out / "best.pt").read_bytes()[:1000])
    assert main(["evaluate", "--checkpoint", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "corrupt" in err
    alien = tmp_path / "alien.txt"
    alien.write_text("日本語のテキスト" * 20, encoding="utf-8")
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(alien)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize("tie_weights", [True, False])
def test_resume_with_head_lr_the_checkpoint_lacks_is_refused_before_any_work(
        tmp_path, capsys, char_tokenizer, splits, tie_weights):
    """A tied output layer has no rate of its own; an untied one trained without --head-lr has no
    optimizer group of its own to continue."""
    from minigpt import GPT, GPTConfig, TrainConfig, Trainer

    config = GPTConfig(vocab_size=char_tokenizer.vocab_size, context_length=16, d_model=32,
                       num_heads=2, num_blocks=1, tie_weights=tie_weights)
    Trainer(GPT(config), char_tokenizer, *splits, TrainConfig(max_iters=2, eval_interval=2,
            eval_iters=1, batch_size=2, warmup_iters=1, device="cpu"), tmp_path,
            progress=False).run()
    before = (tmp_path / "ckpt.pt").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "ckpt.pt"), "--head-lr", "0.01",
                 "--max-iters", "4", "--no-progress"]) == 2
    err = capsys.readouterr()
    assert "--head-lr" in err.err and "resumed from" not in err.out
    assert (tmp_path / "ckpt.pt").read_bytes() == before
