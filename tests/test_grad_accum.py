"""Gradient accumulation (TrainConfig.grad_accum_steps, `--grad-accum-steps`): N micro-batches of B
sequences make the same optimizer step as one batch of N * B."""

import subprocess
import sys

import pytest
import torch

from minigpt import GPT, TrainConfig, Trainer
from minigpt.config import ConfigError

WEIGHT_ATOL = 1e-5  # the same float32 numbers summed in another order, over a few AdamW steps


def make_trainer(tiny_config, char_tokenizer, splits, batch_size, grad_accum_steps, steps=6,
                 cls=Trainer):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    config = TrainConfig(batch_size=batch_size, grad_accum_steps=grad_accum_steps, max_iters=steps,
                         learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, eval_interval=1000, eval_iters=1,
                         seed=5, device="cpu")
    return cls(model, char_tokenizer, *splits, config, progress=False)


def run(trainer):
    trainer.run()
    return trainer.model.state_dict(), trainer.state.train_losses


@pytest.mark.parametrize("accum", [2, 4])
def test_accumulated_steps_equal_one_batch_that_many_times_larger(tiny_config, char_tokenizer, splits, accum):
    small_trainer = make_trainer(tiny_config, char_tokenizer, splits, 8 // accum, accum)

    class OneBigBatch(Trainer):
        """Each step: the accumulating run's micro-batches stacked into one batch of 8."""

        def micro_batch(self, step, index):
            parts = [small_trainer.micro_batch(step, i) for i in range(accum)]
            return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])  # (8, T) each

    big, big_losses = run(make_trainer(tiny_config, char_tokenizer, splits, 8, 1, cls=OneBigBatch))
    small, small_losses = run(small_trainer)
    assert small_losses == pytest.approx(big_losses, abs=1e-5)
    worst = max((big[name] - small[name]).abs().max().item() for name in big)
    assert worst < WEIGHT_ATOL, f"weights differ by {worst} after 6 steps"
    # and it is not trivially equal: a run of batch 8 // accum without accumulation differs
    alone, _ = run(make_trainer(tiny_config, char_tokenizer, splits, 8 // accum, 1))
    assert max((big[name] - alone[name]).abs().max().item() for name in big) > 1e-3


def test_micro_batches_are_keyed_by_step_and_index(tiny_config, char_tokenizer, splits):
    """The rows of micro-batch i of step s do not depend on what ran before: a resume, or another
    rank running it, draws the same ones; different (s, i) draw different rows."""
    first = make_trainer(tiny_config, char_tokenizer, splits, 4, 2)
    again = make_trainer(tiny_config, char_tokenizer, splits, 4, 2)
    again.micro_batch(0, 0), again.micro_batch(7, 1)  # other draws first: no effect
    assert torch.equal(first.micro_batch(3, 1)[0], again.micro_batch(3, 1)[0])
    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    rows = {key: first.micro_batch(*key)[0] for key in keys}
    assert all(not torch.equal(rows[a], rows[b]) for a in keys for b in keys if a < b)


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
