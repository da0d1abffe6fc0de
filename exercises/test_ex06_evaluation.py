"""Grader for chapter 6: exercises/ex06_evaluation.py.

``loss_by_position`` is run in the worker on a small model whose logits depend
on the position (built from a seed); this process builds the same model to
compute the expected losses; ``evaluate_split`` likewise, and with ids that
are all different its recorded calls show which targets it predicted.
``dropout`` is random, so it is graded by its
properties (each entry zeroed or scaled by 1 / (1 - p), the fraction zeroed
close to p, nothing changed outside training), not against fixed values.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _grader.cases import Recorder, modes
from _grader.grading import assert_close, assert_number, assert_tensor, check

# --------------------------------------------------------------------------- helpers shared with the worker


class PositionalBigram(nn.Module):
    """Logits from the current token plus a learned offset per position, so the loss depends on the position."""

    def __init__(self, vocab_size: int, context_length: int, seed: int, dropout: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab_size, vocab_size, generator=g))
        self.position = nn.Parameter(torch.randn(context_length, vocab_size, generator=g) * 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        logits = self.drop(self.table[idx] + self.position[:T])  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def probe_loss_by_position(m, seed, data, context_length, batch_size, start_in_train=False, dropout=0.0):
    """Runs in the worker: loss_by_position of a seeded positional bigram, with every call recorded."""
    model = Recorder(PositionalBigram(7, context_length, seed, dropout))
    model.train(start_in_train)
    out = m.loss_by_position(model, data, context_length, batch_size=batch_size)
    calls = [{"rows": c["idx"].shape[0], "first": c["idx"][:, 0].tolist(), "training": c["training"],
              "modes": c["modes"], "grad_enabled": c["grad_enabled"]} for c in model.calls]
    return {"out": out, "calls": calls, "after": modes(model)}


def probe_evaluate_split(m, seed, data, context_length, batch_size, vocab_size=7, start_in_train=False,
                         dropout=0.0):
    """Runs in the worker: evaluate_split of a seeded positional bigram, with every call's input rows recorded."""
    model = Recorder(PositionalBigram(vocab_size, context_length, seed, dropout))
    model.train(start_in_train)
    out = m.evaluate_split(model, data, context_length, batch_size=batch_size)
    calls = [{"rows": c["idx"].tolist(), "training": c["training"], "modes": c["modes"],
              "grad_enabled": c["grad_enabled"]} for c in model.calls]
    return {"out": out, "calls": calls, "after": modes(model)}


def probe_dropout(m, seed, x, p, training=True, calls=1):
    """Runs in the worker: ``calls`` dropout calls after torch.manual_seed(seed); the input afterwards too."""
    torch.manual_seed(seed)
    original = x.clone()
    outs = [m.dropout(x, p, training) for _ in range(calls)]
    return {"outs": outs, "x_unchanged": bool(torch.equal(x, original))}


def probe_error(m, name, *args, model_for=None):
    """Runs in the worker: the exception ``m.<name>(*args)`` raises, as 'Type: message' (None if it returns).

    With ``model_for=context_length``, a positional bigram for that context goes first in the arguments.
    """
    if model_for is not None:
        args = (PositionalBigram(7, model_for, seed=0), *args)
    try:
        getattr(m, name)(*args)
    except NotImplementedError:
        raise  # a stub: the grader reports "not implemented yet"
    except Exception as exc:  # noqa: BLE001 - any exception is reported to the grader as text
        return f"{type(exc).__name__}: {exc}"
    return None


def check_value_error(ex, name, args, parameter, why, model_for=None):
    shown = ["model"] * (model_for is not None)
    shown += [f"tensor of {len(a)} values" if isinstance(a, torch.Tensor) else repr(a) for a in args]
    text = f"{name}({', '.join(shown)})"
    got = ex.probe(probe_error, name, *args, model_for=model_for, describe=text)
    check(got is not None, f"{text} should raise ValueError ({why}), but it returned a value")
    check(got.startswith("ValueError"), f"{text} should raise ValueError ({why}), but it raised {got}")
    check(parameter in got, f"{text}: the error should name {parameter!r} so the caller knows what to fix; got {got}")


def check_ran_like_an_evaluation(name, result, start_in_train):
    """Every recorded call in eval mode without gradients, and the model's mode put back afterwards."""
    calls = result["calls"]
    check(calls, f"{name} never called the model")
    check(all(not c["training"] and not any(c["modes"].values()) for c in calls),
          f"{name}: the model ran in training mode (dropout on): call model.eval() first")
    check(all(not c["grad_enabled"] for c in calls),
          f"{name}: the model ran with gradients enabled: use torch.no_grad(), no graph is needed")
    check(all(mode == start_in_train for mode in result["after"].values()),
          f"{name}: put the model back in the mode it was in ({'train' if start_in_train else 'eval'})")


# --------------------------------------------------------------------------- perplexity, bits, best step


@pytest.mark.points(1)
def test_perplexity(ex):
    for loss, expected in [(0.0, 1.0), (math.log(65), 65.0), (2.5, math.exp(2.5))]:
        assert_number(ex.perplexity(loss), expected, f"perplexity({loss:.4g})", rtol=1e-9)


@pytest.mark.points(1)
def test_bits_per_char(ex):
    cases = [
        ((1.0, 100, 100), 1 / math.log(2), "one token per character, 1 nat per token"),
        ((2.0, 50, 200), 2.0 * 50 / (200 * math.log(2)), "4 characters per token"),
        ((math.log(2), 30, 10), 3.0, "1 bit per token, 3 tokens per character"),
    ]
    for args, expected, why in cases:
        assert_number(ex.bits_per_char(*args), expected,
                      f"bits_per_char(loss={args[0]:.4g}, num_tokens={args[1]}, num_chars={args[2]}) "
                      f"({why})", rtol=1e-9)


@pytest.mark.points(1)
def test_bits_per_byte(ex):
    cases = [
        ((1.0, 100, 100), 1 / math.log(2), "one token per byte, 1 nat per token"),
        ((math.log(2), 30, 10), 3.0, "1 bit per token, 3 tokens per byte"),
        ((3.0, 40, 160), 3.0 * 40 / (160 * math.log(2)), "4 bytes per token"),
    ]
    for args, expected, why in cases:
        assert_number(ex.bits_per_byte(*args), expected,
                      f"bits_per_byte(loss={args[0]:.4g}, num_tokens={args[1]}, num_bytes={args[2]}) ({why})",
                      rtol=1e-9)
    # The same loss on a text whose characters take two bytes each: half the bits per byte of bits per char.
    text = "Ωμέγα ψυχή"  # 10 characters, 19 bytes
    chars, num_bytes = len(text), len(text.encode("utf-8"))
    per_char = 2.0 * 12 / (chars * math.log(2))
    assert_number(ex.bits_per_byte(2.0, 12, num_bytes), per_char * chars / num_bytes,
                  f"bits_per_byte(loss=2, num_tokens=12, num_bytes={num_bytes}) for {text!r} ({chars} characters, "
                  f"{num_bytes} UTF-8 bytes): bits per char times characters / bytes", rtol=1e-9)
    for bad in (0, -5, 2.5):
        check_value_error(ex, "bits_per_byte", (1.0, 10, bad), "num_bytes", "num_bytes must be a whole number >= 1")


@pytest.mark.points(1)
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


# --------------------------------------------------------------------------- dropout


def dropout_input(rows=200, cols=500, seed=0):
    """Values in [0.5, 1.5): none is zero, so a zero in the output is a dropped entry.

    Drawn from another seed than the worker's torch.manual_seed, so the mask cannot follow x.
    """
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(1000 + seed)) + 0.5


@pytest.mark.points(2)
def test_dropout_zeros_and_scales(ex):
    x = dropout_input()
    for p in (0.1, 0.5, 0.8):
        name = f"dropout(x of shape {tuple(x.shape)}, p={p})"
        result = ex.probe(probe_dropout, 0, x, p, True, 2, describe=name)
        check(result["x_unchanged"], f"{name} changed x itself: return a new tensor (no in-place *= or masked_fill_)")
        first, second = result["outs"]
        assert_tensor(first, name, shape=x.shape, dtype=x.dtype)
        kept = first != 0
        dropped = 1 - kept.double().mean().item()
        check(abs(dropped - p) < 0.01, f"{name}: {dropped:.3f} of the entries are zero, expected about p = {p} "
                                       f"(zero an entry WITH probability p, keep it with probability 1 - p)")
        assert_close(first[kept], x[kept] / (1 - p), f"{name}, the entries that were kept", atol=1e-6, rtol=1e-5)
        rows_alike = bool((kept == kept[0]).all(dim=1).all())
        cols_alike = bool((kept == kept[:, :1]).all(dim=0).all())
        check(not rows_alike and not cols_alike, f"{name}: the same entries are dropped in every row (or column): "
                                                 f"draw one random number per entry")
        check(not torch.equal(first != 0, second != 0),
              f"{name}: two calls in a row dropped the same entries: draw new random numbers on every call")
        mean_ratio = (first.sum() / x.sum()).item()
        check(abs(mean_ratio - 1) < 0.02, f"{name}: the output's sum is {mean_ratio:.3f} times the input's; "
                                          f"scaling the kept entries by 1 / (1 - p) keeps it about 1")


@pytest.mark.points(1)
def test_dropout_off_and_edges(ex):
    x = dropout_input(20, 30, seed=1)
    result = ex.probe(probe_dropout, 0, x, 0.5, False, describe="dropout(x, p=0.5, training=False)")
    assert_close(result["outs"][0], x, "dropout(x, p=0.5, training=False) (evaluation: x unchanged)", atol=0)
    result = ex.probe(probe_dropout, 0, x, 0.0, True, describe="dropout(x, p=0.0)")
    assert_close(result["outs"][0], x, "dropout(x, p=0.0) (nothing dropped, nothing scaled)", atol=0)
    result = ex.probe(probe_dropout, 0, x, 1.0, True, describe="dropout(x, p=1.0)")
    assert_close(result["outs"][0], torch.zeros_like(x),
                 "dropout(x, p=1.0) (everything dropped: all zeros, not 0 / 0 = nan)", atol=0)


@pytest.mark.points(1)
def test_dropout_rejects_bad_p(ex):
    x = dropout_input(2, 3)
    for bad in (-0.1, 1.5):
        check_value_error(ex, "dropout", (x, bad), "p", "p is a probability, between 0 and 1")


# --------------------------------------------------------------------------- evaluate_split


def expected_evaluate_split(seed, data, context_length, vocab_size=7):
    """Computed here, one target at a time: the loss of target i + 1 given its window's inputs up to i."""
    model = PositionalBigram(vocab_size, context_length, seed).eval()
    total = 0.0
    with torch.no_grad():
        for i in range(len(data) - 1):
            start = i - i % context_length  # the window that holds input i starts here
            logits, _ = model(data[start : i + 1][None])  # (1, i - start + 1, V)
            total += F.cross_entropy(logits[0, -1].double(), data[i + 1]).item()
    return total / (len(data) - 1)


@pytest.mark.points(2)
def test_evaluate_split_values(ex):
    cases = ((41, 8, 2, "5 full windows of 8 targets, no shorter one"), (45, 8, 2, "5 full windows and one of 4"),
             (83, 6, 64, "13 full windows and one of 4, all in one batch"), (30, 7, 1, "4 full windows and one of 1"),
             (6, 8, 4, "only one window, of 5 targets"), (2, 3, 3, "one input and its target"))
    for length, T, batch_size, why in cases:
        data = random_ids(length, seed=100 + length)
        name = f"evaluate_split(model, data of {length} ids, context_length={T}, batch_size={batch_size}) ({why})"
        result = ex.probe(probe_evaluate_split, 3, data, T, batch_size, describe=name)
        check(type(result["out"]) is float, f"{name} should return a Python float (.item()), got "
                                            f"{type(result['out']).__name__}")
        assert_number(result["out"], expected_evaluate_split(3, data, T),
                      f"{name}: the sum of every target's loss over the {length - 1} targets", atol=1e-5)


@pytest.mark.points(2)
def test_evaluate_split_predicts_every_target_once(ex):
    # Every id different, so an input row shows exactly which positions of data the model was run on.
    for length, T, batch_size in ((40, 6, 4), (25, 8, 2), (19, 3, 64)):
        data = torch.randperm(length, generator=torch.Generator().manual_seed(length))
        name = f"evaluate_split(model, data of {length} ids, context_length={T}, batch_size={batch_size})"
        result = ex.probe(probe_evaluate_split, 1, data, T, batch_size, length, describe=name)
        rows = [row for call in result["calls"] for row in call["rows"]]
        check(rows, f"{name} never called the model")
        position = {int(token): i for i, token in enumerate(data)}
        starts = []
        for row in rows:
            first = position[row[0]]
            check(row == data[first : first + len(row)].tolist(),
                  f"{name}: an input row is not a run of consecutive ids of data: {row}")
            check(len(row) <= T, f"{name}: an input row holds {len(row)} ids, more than context_length={T}")
            starts.append(first)
        seen = sorted(position[token] for row in rows for token in row)
        twice = sorted({i for i in seen if seen.count(i) > 1})
        check(not twice, f"{name}: the inputs at positions {twice[:6]} of data were run more than once, so their "
                         f"targets count twice: the windows must not overlap (start at 0, T, 2T, ...)")
        missing = sorted(set(range(length - 1)) - set(seen))
        check(not missing, f"{name}: the inputs at positions {missing[:6]} of data were never run, so the targets "
                           f"after them were not predicted (the last, shorter window is needed too)")
        check(length - 1 not in seen, f"{name}: the last id of data was used as an input, but it has no target")
        check(sorted(starts) == list(range(0, length - 1, T)),
              f"{name}: the windows should start at 0, {T}, {2 * T}, ...; they started at {sorted(starts)}")
        widest = max(len(call["rows"]) for call in result["calls"])
        check(widest <= batch_size, f"{name}: a call ran {widest} windows at once; run at most batch_size")


@pytest.mark.points(1)
def test_evaluate_split_runs_like_an_evaluation(ex):
    data = random_ids(45, seed=4)
    for start_in_train in (True, False):
        mode = "train" if start_in_train else "eval"
        name = f"evaluate_split(model with dropout in {mode} mode, data of 45 ids, context_length=8, batch_size=2)"
        result = ex.probe(probe_evaluate_split, 2, data, 8, 2, 7, start_in_train, 0.5, describe=name)
        check_ran_like_an_evaluation(name, result, start_in_train)


@pytest.mark.points(1)
def test_evaluate_split_rejects_bad_input(ex):
    check_value_error(ex, "evaluate_split", (random_ids(1, 0), 4), "data",
                      "one id has no target to predict", model_for=4)
    check_value_error(ex, "evaluate_split", (random_ids(20, 0), 0), "context_length",
                      "context_length must be a whole number >= 1", model_for=4)
    check_value_error(ex, "evaluate_split", (random_ids(20, 0), 4, 0), "batch_size",
                      "batch_size must be a whole number >= 1", model_for=4)


# --------------------------------------------------------------------------- loss by position


def expected_loss_by_position(seed, data, context_length):
    """Computed here, without the learner's code: every window, its per-position losses, the mean."""
    model = PositionalBigram(7, context_length, seed).eval()
    starts = range(0, len(data) - context_length, context_length)
    x = torch.stack([data[s : s + context_length] for s in starts])
    y = torch.stack([data[s + 1 : s + context_length + 1] for s in starts])
    with torch.no_grad():
        logits, _ = model(x)
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=0), len(starts)


def random_ids(length, seed):
    return torch.randint(7, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.points(2)
def test_loss_by_position_values(ex):
    for length, T, batch_size in ((83, 8, 3), (41, 5, 64), (9, 8, 4), (120, 6, 7)):
        data = random_ids(length, seed=length)
        expected, windows = expected_loss_by_position(2, data, T)
        name = (f"loss_by_position(model, data of {length} ids, context_length={T}, batch_size={batch_size}) "
                f"({windows} windows starting at 0, {T}, {2 * T}, ...)")
        result = ex.probe(probe_loss_by_position, 2, data, T, batch_size, describe=name)
        assert_tensor(result["out"], name, shape=(T,))
        check(result["out"].is_floating_point(), f"{name}: expected a float tensor, got {result['out'].dtype}")
        assert_close(result["out"], expected, name + ": the mean over windows of each position's cross-entropy",
                     atol=1e-5, check_dtype=False)


@pytest.mark.points(1)
def test_loss_by_position_runs_like_an_evaluation(ex):
    data = random_ids(83, seed=3)
    for start_in_train in (True, False):
        name = (f"loss_by_position(model in {'train' if start_in_train else 'eval'} mode, data of 83 ids, "
                f"context_length=8, batch_size=3)")
        result = ex.probe(probe_loss_by_position, 2, data, 8, 3, start_in_train, 0.5, describe=name)
        check_ran_like_an_evaluation(name, result, start_in_train)
        calls = result["calls"]
        check(all(c["rows"] <= 3 for c in calls), f"{name}: a call ran {max(c['rows'] for c in calls)} windows at "
                                                  f"once; run at most batch_size windows per call")
        firsts = sorted(i for c in calls for i in c["first"])
        check(len(firsts) == 10, f"{name}: the model saw {len(firsts)} windows in all, expected 10 "
                                 f"(each consecutive window once)")


@pytest.mark.points(1)
def test_loss_by_position_rejects_bad_input(ex):
    check_value_error(ex, "loss_by_position", (random_ids(8, 0), 8), "data",
                      "8 ids hold no window of 8 inputs and their 8 targets", model_for=8)
    check_value_error(ex, "loss_by_position", (random_ids(20, 0), 0), "context_length",
                      "context_length must be a whole number >= 1", model_for=8)
