"""Grader for chapter 6: exercises/ex06_evaluation.py."""

import math

import pytest

from _grading import assert_number, check


@pytest.mark.points(1)
def test_perplexity(ex):
    for loss, expected in [(0.0, 1.0), (math.log(65), 65.0), (2.5, math.exp(2.5))]:
        assert_number(ex.perplexity(loss), expected, f"perplexity({loss:.4g})", rtol=1e-9)


@pytest.mark.points(2)
def test_bits_per_char(ex):
    cases = [
        ((1.0, 100, 100), 1 / math.log(2), "one token per character, 1 nat per token"),
        ((2.0, 50, 200), 2.0 * 50 / (200 * math.log(2)), "4 characters per token"),
        ((math.log(2), 30, 10), 3.0, "1 bit per token, 3 tokens per character"),
    ]
    for args, expected, why in cases:
        assert_number(ex.bits_per_char(*args), expected,
                      f"bits_per_char(loss_nats_per_token={args[0]:.4g}, num_tokens={args[1]}, num_chars={args[2]}) "
                      f"({why})", rtol=1e-9)


@pytest.mark.points(2)
def test_best_step(ex):
    history = [
        {"step": 0, "train": 4.1, "val": 4.2},
        {"step": 100, "train": 2.0, "val": 2.3},
        {"step": 200, "train": 1.6, "val": 2.1},
        {"step": 300, "train": 1.2, "val": 2.4},
    ]
    got = ex.best_step(history)
    check(got == 200, f"best_step: the lowest validation loss (2.1) is at step 200, got {got!r} "
                      f"(return the record's \"step\", look at \"val\", not \"train\")")
    tie = [{"step": 10, "train": 3.0, "val": 2.5}, {"step": 20, "train": 2.9, "val": 1.5},
           {"step": 30, "train": 2.8, "val": 1.5}, {"step": 40, "train": 2.7, "val": 1.7}]
    got = ex.best_step(tie)
    check(got == 20, f"best_step: steps 20 and 30 tie at val 1.5, the first one (20) should win, got {got!r}")
    several_minima = [{"step": s, "train": 3.0, "val": v} for s, v in
                      [(0, 4.0), (10, 3.0), (20, 3.5), (30, 2.0), (40, 2.6), (50, 2.2)]]
    got = ex.best_step(several_minima)
    check(got == 30, f"best_step: the validation loss falls, rises at step 20, then falls lower at step 30 (2.0): "
                     f"the lowest over the whole history wins, got {got!r} (do not stop at the first rise)")
    small_steps = [{"step": s, "train": 3.0, "val": v} for s, v in [(0, 2.0), (1, 1.995), (2, 1.991), (3, 1.999)]]
    got = ex.best_step(small_steps)
    check(got == 2, f"best_step: val 2.0, 1.995, 1.991, 1.999: the smallest is at step 2, got {got!r} "
                    f"(every improvement counts, however small)")
    single = [{"step": 7, "train": 1.0, "val": 1.0}]
    check(ex.best_step(single) == 7, "best_step of a one-record history should be that record's step (7)")
