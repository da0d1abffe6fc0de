"""Grader for chapter 5: exercises/ex05_training.py (estimate_loss uses your ex02_batching.py)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from _cases import LR_SETTINGS, SNAPSHOT_CASES, Recorder, TrainableBigram, windows
from _grading import assert_close, assert_number, assert_tensor, check, fail, load_snapshot

SNAPSHOT = load_snapshot("ex05_training")


@pytest.mark.points(2)
def test_cross_entropy_matches_pytorch(ex):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 9, generator=g) * 3
    targets = torch.randint(9, (12,), generator=g)
    got = ex.cross_entropy(logits, targets)
    assert_tensor(got, "cross_entropy(logits (12, 9), targets (12,))", shape=())
    assert_close(got, F.cross_entropy(logits, targets), "cross_entropy (the mean over the 12 rows)", atol=1e-5)


@pytest.mark.points(1)
def test_cross_entropy_is_stable_for_large_logits(ex):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g) * 10 + 1000.0
    targets = torch.randint(5, (6,), generator=g)
    got = ex.cross_entropy(logits, targets)
    check(bool(torch.isfinite(got)), f"cross_entropy gave {got.item()} for logits around 1000: subtract each row's "
                                     f"maximum before exp (and add it back after log)")
    assert_close(got, F.cross_entropy(logits, targets), "cross_entropy for logits around 1000", atol=1e-4)


@pytest.mark.points(1)
def test_cross_entropy_gradient(ex):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, generator=g)
    targets = torch.randint(7, (4,), generator=g)
    mine = logits.clone().requires_grad_(True)
    ex.cross_entropy(mine, targets).backward()
    ref = logits.clone().requires_grad_(True)
    F.cross_entropy(ref, targets).backward()
    check(mine.grad is not None, "no gradient reached the logits: keep the computation in torch (no .item(), no numpy)")
    assert_close(mine.grad, ref.grad, "gradient of cross_entropy with respect to the logits", atol=1e-5)


def bigram_batch(seed=0, vocab_size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(vocab_size, (4, 6), generator=g), torch.randint(vocab_size, (4, 6), generator=g)


@pytest.mark.points(2)
def test_train_step_returns_the_loss_and_updates(ex):
    model = TrainableBigram(8, seed=0)
    x, y = bigram_batch()
    before = copy.deepcopy(model)
    expected_loss = before(x, y)[1]
    expected_loss.backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    got = ex.train_step(model, optimizer, x, y)
    assert_number(got, expected_loss.item(), "train_step's return value (the batch loss before the update)", atol=1e-5)
    expected_weight = before.logits_table.weight - 0.5 * before.logits_table.weight.grad
    assert_close(model.logits_table.weight.detach(), expected_weight.detach(),
                 "the weights after one SGD step (lr=0.5): did you call loss.backward() and optimizer.step()?", atol=1e-5)


@pytest.mark.points(2)
def test_train_step_clears_old_gradients(ex):
    model = TrainableBigram(8, seed=1)
    x, y = bigram_batch(seed=1)
    before = copy.deepcopy(model)
    before(x, y)[1].backward()
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # left over from an earlier step
    ex.train_step(model, torch.optim.SGD(model.parameters(), lr=0.5), x, y)
    expected_weight = before.logits_table.weight - 0.5 * before.logits_table.weight.grad
    assert_close(model.logits_table.weight.detach(), expected_weight.detach(),
                 "the weights after one step when old gradients were left in .grad "
                 "(call optimizer.zero_grad() before loss.backward())", atol=1e-5)


@pytest.mark.points(1)
def test_loss_falls_when_training(ex):
    torch.manual_seed(0)
    model = TrainableBigram(8, seed=2)
    x, y = bigram_batch(seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    losses = [ex.train_step(model, optimizer, x, y) for _ in range(30)]
    check(all(isinstance(v, float) for v in losses), "train_step should return a Python float (loss.item())")
    check(losses[-1] < losses[0] - 0.5,
          f"the loss went from {losses[0]:.3f} to {losses[-1]:.3f} in 30 steps on one batch; it should fall by more than 0.5")


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
    assert_number(ex.learning_rate(0, 1.0, 0.1, 0, 100), 1.0, "learning_rate(0, ..., warmup_iters=0) (no warm-up)", atol=1e-9)


@pytest.mark.points(1)
def test_learning_rate_curve_matches_reference(ex):
    got = SNAPSHOT_CASES["ex05_training"]["lr_curve"](ex)
    for step, (g, e) in enumerate(zip(got, SNAPSHOT["lr_curve"])):
        if not math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-12):
            fail(f"learning_rate(step={step}, {LR_SETTINGS}) is {g!r}, expected {e!r}")
    rising = got[: LR_SETTINGS["warmup_iters"]]
    check(all(a < b for a, b in zip(rising, rising[1:])), "the learning rate must rise during warm-up")
    falling = got[LR_SETTINGS["warmup_iters"]:]
    check(all(a >= b for a, b in zip(falling, falling[1:])), "the learning rate must never rise after warm-up")


def splits():
    g = torch.Generator().manual_seed(3)
    return {"train": torch.randint(8, (300,), generator=g), "val": torch.randint(8, (80,), generator=g)}


@pytest.mark.points(2)
def test_estimate_loss_uses_eval_mode_and_no_grad(ex):
    for start_in_train in (True, False):
        model = Recorder(TrainableBigram(8, seed=4))
        model.train(start_in_train)
        out = ex.estimate_loss(model, splits(), eval_iters=2, batch_size=3, context_length=5)
        mode = "train" if start_in_train else "eval"
        check(len(model.calls) == 4, f"with 2 splits and eval_iters=2 the model should be called 4 times, "
                                     f"got {len(model.calls)}")
        check(not any(c["training"] for c in model.calls), "the model ran in train mode: call model.eval() first")
        check(not any(c["grad_enabled"] for c in model.calls),
              "the model ran with gradients enabled: wrap the loop in torch.no_grad() so no graph is built")
        check(model.training == start_in_train, f"the model was in {mode} mode before estimate_loss and "
                                                f"in {'train' if model.training else 'eval'} mode after: restore it")
        check(isinstance(out, dict) and list(out) == ["train", "val"],
              f"estimate_loss should return a dict with the keys ['train', 'val'], got {out!r}")
        check(all(type(v) is float for v in out.values()),
              "estimate_loss should return Python floats (loss.item()), not tensors")


@pytest.mark.points(2)
def test_estimate_loss_value(ex):
    model = TrainableBigram(8, seed=5)
    data = splits()
    got = ex.estimate_loss(model, data, eval_iters=3, batch_size=4, context_length=5,
                           generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, split in data.items():
            losses = []
            for _ in range(3):
                x, y = windows(split, torch.randint(len(split) - 5, (4,), generator=g), 5)
                losses.append(model(x, y)[1].item())
            assert_number(got.get(name), sum(losses) / 3,
                          f"estimate_loss(...)[{name!r}] (mean over eval_iters batches drawn with get_batch, "
                          f"splits in the dict's order)", atol=1e-5)
