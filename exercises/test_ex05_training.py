"""Grader for chapter 5: exercises/ex05_training.py (estimate_loss uses your ex02_batching.py).

Rule: ``cross_entropy`` is written by hand (no torch function or class whose name
contains cross_entropy, log_softmax, logsumexp, nll_loss, CrossEntropyLoss, NLLLoss or
LogSoftmax); ``_grader/integrity.py`` enforces it.
The small models come from ``_grader/cases.py``; the grader builds the same ones in
its own process to compute the expected losses and weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from _grader.cases import DropoutBigram, Recorder, TrainableBigram, lr_settings, modes, windows
from _grader.grading import assert_close, assert_number, assert_tensor, check, fail
from _grader.learner import generator


def probe_cross_entropy_gradient(m, logits, targets):
    """Runs in the worker: the gradient of the learner's cross_entropy with respect to the logits."""
    mine = logits.clone().requires_grad_(True)
    m.cross_entropy(mine, targets).backward()
    return mine.grad


class LoudBigram(TrainableBigram):
    """A bigram whose loss is multiplied by ``LOUD``: its gradient's norm is far above 1, where a clipping
    step (which train_step must not add) would shrink it."""

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return logits, None if loss is None else loss * LOUD


LOUD = 100.0


def probe_train_step(m, seed, x, y, lr, stale_grad=None, dropout=False, loud=False):
    """Runs in the worker: one train_step of a seeded bigram with SGD; what it returned and did."""
    inner = (DropoutBigram if dropout else LoudBigram if loud else TrainableBigram)(8, seed=seed)
    model = Recorder(inner)
    model.train()
    if stale_grad is not None:
        for p in model.parameters():
            p.grad = torch.full_like(p, stale_grad)  # left over from an earlier step
    returned = m.train_step(model, torch.optim.SGD(model.parameters(), lr=lr), x, y)
    return {"returned": returned, "weight": inner.logits_table.weight.detach(), "calls": model.calls}


def probe_training(m, seed, x, y, steps):
    """Runs in the worker: ``steps`` calls of train_step with AdamW on one batch."""
    torch.manual_seed(0)
    model = TrainableBigram(8, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return [m.train_step(model, optimizer, x, y) for _ in range(steps)]


def probe_estimate_loss(m, splits, start_in_train, **kwargs):
    """Runs in the worker: estimate_loss on a recorded bigram with dropout inside."""
    model = Recorder(DropoutBigram(8, seed=4))
    model.train(start_in_train)
    out = m.estimate_loss(model, splits, **kwargs)
    return {"out": out, "calls": model.calls, "after": modes(model)}


def probe_estimate_loss_value(m, seed, splits, **kwargs):
    """Runs in the worker: estimate_loss of a seeded bigram."""
    return m.estimate_loss(TrainableBigram(8, seed=seed), splits, **kwargs)


def check_cross_entropy(ex, logits, targets, what, atol=1e-5):
    got = ex.cross_entropy(logits, targets)
    name = f"cross_entropy(logits of shape {tuple(logits.shape)}, targets) for {what}"
    assert_tensor(got, name, shape=())
    check(bool(torch.isfinite(got)), f"{name} gave {got.item()}: subtract each row's own maximum before exp (and "
                                     f"add it back after log); -log(softmax(...)) overflows for a confident "
                                     f"wrong prediction")
    assert_close(got, F.cross_entropy(logits.double(), targets).float(), f"{name} (the mean over the rows)", atol=atol)


@pytest.mark.points(2)
def test_cross_entropy_matches_pytorch(ex):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 9, generator=g) * 3
    targets = torch.randint(9, (12,), generator=g)
    check_cross_entropy(ex, logits, targets, "random logits")


@pytest.mark.points(1)
def test_cross_entropy_is_stable_for_large_logits(ex):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g) * 10 + 1000.0
    targets = torch.randint(5, (6,), generator=g)
    check_cross_entropy(ex, logits, targets, "logits around 1000", atol=1e-4)


@pytest.mark.points(1)
def test_cross_entropy_rows_of_different_scales(ex):
    # One row around 0, one around 300, one confident and wrong: a single maximum for the whole batch, or
    # -log(softmax(...)), gives inf here.
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0], [300.0, 310.0, 290.0, 305.0], [0.0, 200.0, 0.0, 0.0]])
    targets = torch.tensor([2, 0, 0])
    check_cross_entropy(ex, logits, targets, "rows of very different scales and a confident wrong prediction",
                        atol=1e-3)


@pytest.mark.points(1)
def test_cross_entropy_gradient(ex):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, generator=g)
    targets = torch.randint(7, (4,), generator=g)
    grad = ex.probe(probe_cross_entropy_gradient, logits, targets,
                    describe="cross_entropy(logits (4, 7), targets).backward()")
    check(grad is not None, "no gradient reached the logits: keep the computation in torch (no .item(), no numpy)")
    ref = logits.clone().requires_grad_(True)
    F.cross_entropy(ref, targets).backward()
    assert_close(grad, ref.grad, "gradient of cross_entropy with respect to the logits", atol=1e-5)


def bigram_batch(seed=0, vocab_size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(vocab_size, (4, 6), generator=g), torch.randint(vocab_size, (4, 6), generator=g)


def expected_after_sgd(seed, x, y, lr, scale=1.0):
    """The loss before and the weights after one plain SGD step (on the loss times ``scale``), computed here."""
    model = TrainableBigram(8, seed=seed)
    loss = model(x, y)[1] * scale
    loss.backward()
    weight = model.logits_table.weight
    return loss.item(), (weight - lr * weight.grad).detach()


@pytest.mark.points(1)
def test_train_step_returns_the_loss_and_updates(ex):
    x, y = bigram_batch()
    got = ex.probe(probe_train_step, 0, x, y, 0.5, describe="train_step(model, SGD(lr=0.5), x, y)")
    loss, weight = expected_after_sgd(0, x, y, 0.5)
    assert_number(got["returned"], loss, "train_step's return value (the batch loss before the update)", atol=1e-5)
    assert_close(got["weight"], weight, "the weights after one SGD step (lr=0.5): did you call loss.backward() "
                                        "and optimizer.step()?", atol=1e-5)
    got = ex.probe(probe_train_step, 0, x, y, 0.001, loud=True,
                   describe=f"train_step(model whose loss is x{LOUD:g}, SGD(lr=0.001), x, y)")
    loss, weight = expected_after_sgd(0, x, y, 0.001, scale=LOUD)
    assert_close(got["weight"], weight, f"the weights after one SGD step on a loss x{LOUD:g} (a gradient norm far "
                                        f"above 1): train_step uses the whole gradient; the spec asks for no "
                                        f"clipping (that is the training loop's option, not this step's)",
                 atol=1e-4, rtol=1e-4)


@pytest.mark.points(1)
def test_train_step_clears_old_gradients(ex):
    x, y = bigram_batch(seed=1)
    got = ex.probe(probe_train_step, 1, x, y, 0.5, stale_grad=100.0,
                   describe="train_step(model, SGD(lr=0.5), x, y) with old gradients left in .grad")
    _, weight = expected_after_sgd(1, x, y, 0.5)
    assert_close(got["weight"], weight, "the weights after one step when old gradients were left in .grad "
                                        "(call optimizer.zero_grad() before loss.backward())", atol=1e-5)


@pytest.mark.points(1)
def test_train_step_runs_the_model_in_train_mode(ex):
    x, y = bigram_batch(seed=2)
    got = ex.probe(probe_train_step, 2, x, y, 0.1, dropout=True,
                   describe="train_step(model with dropout, SGD(lr=0.1), x, y)")
    check(len(got["calls"]) >= 1, "train_step never called the model")
    for call in got["calls"]:
        off = [name for name, training in call["modes"].items() if not training]
        check(not off, f"train_step ran the model with {', '.join(off)} in eval mode: training needs dropout on "
                       f"(do not call model.eval() in train_step)")
        check(call["grad_enabled"], "train_step ran the model without gradients (torch.no_grad()): "
                                    "the loss must be differentiable")


@pytest.mark.points(1)
def test_train_step_makes_the_loss_fall(ex):
    x, y = bigram_batch(seed=2)
    losses = ex.probe(probe_training, 2, x, y, 30, describe="30 calls of train_step(model, AdamW(lr=0.1), x, y)")
    check(all(type(v) is float for v in losses), "train_step should return a Python float (loss.item())")
    check(losses[-1] < losses[0] - 0.5,
          f"the loss went from {losses[0]:.3f} to {losses[-1]:.3f} in 30 steps on one batch; it should fall by more "
          f"than 0.5")


@pytest.mark.points(2)
def test_learning_rate_hits_its_stated_points(ex):
    settings = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    points = [
        (0, 0.1, "warm-up: step 0 gets max_lr * (0 + 1) / warmup_iters"),
        (4, 0.5, "warm-up: step 4 gets max_lr * 5 / warmup_iters"),
        (9, 1.0, "the last warm-up step reaches max_lr"),
        (10, 1.0, "the decay starts at max_lr"),
        (60, 0.55, "halfway through the decay: (max_lr + min_lr) / 2"),
        (110, 0.1, "the decay ends at min_lr at max_iters"),
        (500, 0.1, "after max_iters: min_lr"),
    ]
    for step, expected, why in points:
        got = ex.learning_rate(step, **settings)
        assert_number(got, expected, f"learning_rate({step}, max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110) "
                                     f"({why})", atol=1e-9)
    assert_number(ex.learning_rate(0, 1.0, 0.1, 0, 100), 1.0, "learning_rate(0, ..., warmup_iters=0) (no warm-up)",
                  atol=1e-9)


@pytest.mark.points(1)
def test_learning_rate_curve_matches_reference(ex):
    got, expected = ex.case("lr_curve")
    settings = lr_settings(ex.case_seed("lr_curve"))
    for step, (g, e) in enumerate(zip(got, expected)):
        if not (isinstance(g, float) and math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-12)):
            fail(f"learning_rate({step}, {settings}) is {g!r}, expected {e!r}")
    rising = got[: settings["warmup_iters"]]
    check(all(a < b for a, b in zip(rising, rising[1:])), "the learning rate must rise during warm-up")
    falling = got[settings["warmup_iters"]:]
    check(all(a >= b for a, b in zip(falling, falling[1:])), "the learning rate must never rise after warm-up")


def splits():
    g = torch.Generator().manual_seed(3)
    return {"train": torch.randint(8, (300,), generator=g), "val": torch.randint(8, (80,), generator=g)}


@pytest.mark.points(2)
def test_estimate_loss_uses_eval_mode_and_no_grad(ex):
    for start_in_train in (True, False):
        mode = "train" if start_in_train else "eval"
        got = ex.probe(probe_estimate_loss, splits(), start_in_train, eval_iters=2, batch_size=3, context_length=5,
                       describe=f"estimate_loss(model in {mode} mode, splits, eval_iters=2, batch_size=3, "
                                f"context_length=5)")
        calls, out = got["calls"], got["out"]
        check(len(calls) == 4, f"with 2 splits and eval_iters=2 the model should be called 4 times, got {len(calls)}")
        for call in calls:
            on = [name for name, training in call["modes"].items() if training]
            check(not on, f"the model ran with {', '.join(on)} in train mode: call model.eval(), which switches "
                          f"every submodule (setting model.training = False switches only the model itself)")
            check(not call["grad_enabled"],
                  "the model ran with gradients enabled: wrap the loop in torch.no_grad() so no graph is built")
        wrong = [name for name, training in got["after"].items() if training != start_in_train]
        check(not wrong, f"the model was in {mode} mode before estimate_loss, and after it {', '.join(wrong)} "
                         f"{'is' if len(wrong) == 1 else 'are'} not: put it back with model.train(was_training)")
        check(isinstance(out, dict) and list(out) == ["train", "val"],
              f"estimate_loss should return a dict with the keys ['train', 'val'], got {out!r}")
        check(all(type(v) is float for v in out.values()),
              "estimate_loss should return Python floats (loss.item()), not tensors")


@pytest.mark.points(2)
def test_estimate_loss_value(ex):
    data = dict(reversed(splits().items()))  # {"val": ..., "train": ...}: the dict's order is not the sorted one
    got = ex.probe(probe_estimate_loss_value, 5, data, eval_iters=3, batch_size=4, context_length=5,
                   generator=generator(6),
                   describe="estimate_loss(model, splits, eval_iters=3, batch_size=4, context_length=5, generator)")
    check(isinstance(got, dict), f"estimate_loss should return a dict, got {type(got).__name__}")
    model = TrainableBigram(8, seed=5)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, split in data.items():
            losses = []
            for _ in range(3):
                x, y = windows(split, torch.randint(len(split) - 5, (4,), generator=g), 5)
                losses.append(model(x, y)[1].item())
            assert_number(got.get(name), sum(losses) / 3,
                          f"estimate_loss(...)[{name!r}] (mean over eval_iters batches drawn with get_batch, "
                          f"splits in the dict's order, here {list(data)}: every batch is drawn from the one "
                          f"generator, so the order changes the draws)", atol=1e-5)

