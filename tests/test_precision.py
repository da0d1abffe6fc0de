"""Mixed precision (TrainConfig.dtype, `--dtype`): autocast on the CPU, a gradient scaler for float16,
float32 master weights and checkpoints, and a clear refusal where the device cannot run a dtype."""

import subprocess
import sys

import pytest
import torch

from minigpt import GPT, TrainConfig, Trainer
from minigpt.checkpoint import load_checkpoint
from minigpt.config import ConfigError
from minigpt import precision

LOSS_TOLERANCE = 0.05  # nats after 30 steps: 16-bit matmuls round to ~3 (bf16: 2) digits, not more


def train(tiny_config, char_tokenizer, splits, dtype, out_dir=None, steps=30, resume=None):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    config = TrainConfig(batch_size=8, max_iters=steps, learning_rate=3e-3, min_lr=3e-4,
                         warmup_iters=5, eval_interval=15, eval_iters=4, seed=2, device="cpu",
                         dtype=dtype)
    trainer = Trainer(model, char_tokenizer, *splits, config, out_dir=out_dir, progress=False)
    if resume is not None:
        trainer.resume(resume)
    return trainer, trainer.run()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_autocast_trains_near_float32_and_saves_float32(tmp_path, tiny_config, char_tokenizer,
                                                               splits, dtype):
    _, full = train(tiny_config, char_tokenizer, splits, "float32")
    trainer, half = train(tiny_config, char_tokenizer, splits, dtype, out_dir=tmp_path)
    assert trainer.scaler.is_enabled() == (dtype == "float16")
    assert half.history[-1]["val"] == pytest.approx(full.history[-1]["val"], abs=LOSS_TOLERANCE)
    assert half.train_losses != full.train_losses  # autocast did change the arithmetic
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert {t.dtype for t in ckpt.model.state_dict().values()} == {torch.float32}
    assert all(t.dtype == torch.float32 for s in ckpt.optimizer_state["state"].values()
               for t in s.values() if t.is_floating_point())
    assert ckpt.train_state["train_config"]["dtype"] == dtype
    assert (ckpt.train_state["scaler"] is not None) == (dtype == "float16")


def test_the_float16_scaler_is_saved_and_resumed(tmp_path, tiny_config, char_tokenizer, splits):
    trainer, _ = train(tiny_config, char_tokenizer, splits, "float16", out_dir=tmp_path, steps=15)
    saved = load_checkpoint(tmp_path / "ckpt.pt").train_state["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale() > 1.0
    resumed, result = train(tiny_config, char_tokenizer, splits, "float16", out_dir=tmp_path / "on",
                            steps=30, resume=tmp_path / "ckpt.pt")
    assert result.step == 30 and resumed.scaler.get_scale() >= 1.0
    assert resumed.scaler.state_dict()["_growth_tracker"] == saved["_growth_tracker"] + 15


def test_a_dtype_the_device_cannot_run_is_refused_by_name(monkeypatch):
    def broken(device, dtype):
        raise RuntimeError("no 16-bit kernels here")

    monkeypatch.setattr(precision, "autocast", broken)
    with pytest.raises(ConfigError, match=r"dtype must be float32 on cpu \(it cannot run float16 under "
                                          r"autocast: no 16-bit kernels here\), got 'float16'"):
        precision.check_dtype("float16", torch.device("cpu"))
    assert precision.check_dtype("float32", torch.device("cpu")) == torch.float32  # never probed


def test_an_unknown_dtype_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="dtype must be one of float32, bfloat16, float16"):
        TrainConfig(dtype="float64")
    out = subprocess.run([sys.executable, "-m", "minigpt", "train", "--dtype", "half"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--dtype" in out.stderr and "bfloat16" in out.stderr
