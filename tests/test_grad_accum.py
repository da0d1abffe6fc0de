"""Gradient accumulation (TrainConfig.grad_accum_steps, `--grad-accum-steps`): N micro-batches of B
sequences make the same optimizer step as one batch of N * B."""

import subprocess
import sys

import pytest
import torch

from minigpt import GPT, TrainConfig, Trainer
from minigpt.config import ConfigError

WEIGHT_ATOL = 1e-5  # the same float32 numbers summed in another order, over a few AdamW steps


def run(tiny_config, char_tokenizer, splits, batch_size, grad_accum_steps, steps=6):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    config = TrainConfig(batch_size=batch_size, grad_accum_steps=grad_accum_steps, max_iters=steps,
                         learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, eval_interval=1000, eval_iters=1,
                         seed=5, device="cpu")
    trainer = Trainer(model, char_tokenizer, *splits, config, progress=False)
    trainer.run()
    return model.state_dict(), trainer.state.train_losses


@pytest.mark.parametrize("accum", [2, 4])
def test_accumulated_steps_equal_one_batch_that_many_times_larger(tiny_config, char_tokenizer, splits, accum):
    big, big_losses = run(tiny_config, char_tokenizer, splits, batch_size=8, grad_accum_steps=1)
    small, small_losses = run(tiny_config, char_tokenizer, splits, batch_size=8 // accum, grad_accum_steps=accum)
    assert small_losses == pytest.approx(big_losses, abs=1e-5)
    worst = max((big[name] - small[name]).abs().max().item() for name in big)
    assert worst < WEIGHT_ATOL, f"weights differ by {worst} after 6 steps"
    # and it is not trivially equal: a run of batch 8 // accum without accumulation differs
    alone, _ = run(tiny_config, char_tokenizer, splits, batch_size=8 // accum, grad_accum_steps=1)
    assert max((big[name] - alone[name]).abs().max().item() for name in big) > 1e-3


def test_bad_grad_accum_steps_is_refused_by_name():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="grad_accum_steps"):
            TrainConfig(grad_accum_steps=bad)


def test_the_command_takes_the_option():
    out = subprocess.run([sys.executable, "-m", "minigpt", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert "--grad-accum-steps" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "minigpt", "train", "--grad-accum-steps", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "grad-accum-steps" in bad.stderr + bad.stdout
