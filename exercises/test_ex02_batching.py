"""Grader for chapter 2: exercises/ex02_batching.py."""

import pytest
import torch

from _cases import windows
from _grading import assert_close, assert_tensor, check
from _learner import generator


def probe_global_seed(m, data, batch_size, context_length, seed):
    """Runs in the worker: get_batch without a generator, after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return m.get_batch(data, batch_size, context_length)


def probe_first_ids(m, data, batch_size, context_length, seed, times):
    """Runs in the worker: the first id of every row of ``times`` batches from one generator."""
    g = torch.Generator().manual_seed(seed)
    return [m.get_batch(data, batch_size, context_length, g)[0][:, 0].tolist() for _ in range(times)]


@pytest.mark.points(2)
def test_train_val_split_keeps_order_and_sizes(ex):
    for n, fraction in [(1000, 0.1), (37, 0.25), (10, 0.5)]:
        data = torch.arange(n) * 3
        n_train = int(n * (1 - fraction))
        train, val = ex.train_val_split(data, fraction) if fraction != 0.1 else ex.train_val_split(data)
        name = f"train_val_split(N={n}, val_fraction={fraction})"
        assert_close(train, data[:n_train], f"{name}, train part (the first {n_train} ids, in order)")
        assert_close(val, data[n_train:], f"{name}, val part (the last {n - n_train} ids, in order)")


@pytest.mark.points(1)
def test_get_batch_shapes_and_dtype(ex):
    data = torch.arange(100)
    x, y = ex.get_batch(data, 4, 8)
    assert_tensor(x, "x from get_batch(data, batch_size=4, context_length=8)", shape=(4, 8), dtype=torch.long)
    assert_tensor(y, "y from get_batch(data, batch_size=4, context_length=8)", shape=(4, 8), dtype=torch.long)


@pytest.mark.points(2)
def test_y_is_x_shifted_by_one(ex):
    g = torch.Generator().manual_seed(0)
    data = torch.randperm(200, generator=g)  # distinct values, so a window's start can be found
    position = torch.empty_like(data)
    position[data] = torch.arange(len(data))
    x, y = ex.get_batch(data, 6, 10, generator(1))
    assert_tensor(x, "x", shape=(6, 10))
    assert_tensor(y, "y", shape=(6, 10))
    for row in range(6):
        s = int(position[x[row, 0]])
        check(torch.equal(x[row], data[s : s + 10]),
              f"row {row} of x is not a window of consecutive ids from data (x[{row}] should be data[s : s + 10])")
        expected = data[s + 1 : s + 11]
        if not torch.equal(y[row], expected):
            t = int((y[row] != expected).nonzero()[0])
            check(False, f"row {row}: y should be x moved one step to the right, y[{row}, {t}] == data[s + {t} + 1] "
                         f"= {int(expected[t])}, got {int(y[row, t])}")


@pytest.mark.points(2)
def test_get_batch_draws_the_stated_offsets(ex):
    data = torch.arange(50) * 10 + 7
    x, y = ex.get_batch(data, 5, 6, generator(3))
    starts = torch.randint(len(data) - 6, (5,), generator=torch.Generator().manual_seed(3))
    ex_x, ex_y = windows(data, starts, 6)
    hint = " (draw the starts with torch.randint(len(data) - context_length, (batch_size,), generator=generator))"
    assert_close(x, ex_x, "x for a seeded generator" + hint)
    assert_close(y, ex_y, "y for a seeded generator" + hint)
    x, _ = ex.probe(probe_global_seed, data, 5, 6, seed=4,
                    describe="get_batch(data, 5, 6) after torch.manual_seed(4)")
    torch.manual_seed(4)
    ex_x, _ = windows(data, torch.randint(len(data) - 6, (5,)), 6)
    assert_close(x, ex_x, "x with generator=None after torch.manual_seed(4) (use the global generator)")


@pytest.mark.points(1)
def test_every_start_is_reachable(ex):
    data = torch.arange(12)
    T = 8  # possible starts: 0, 1, 2, 3
    seen = set()
    for firsts in ex.probe(probe_first_ids, data, 4, T, seed=0, times=100,
                           describe="100 calls get_batch(torch.arange(12), 4, 8, generator)"):
        seen.update(firsts)
    last = len(data) - T - 1
    check(last in seen, f"start {last} (the last possible one, len(data) - context_length - 1) was never drawn in "
                        f"400 windows: check the upper bound you give torch.randint")
    check(seen == set(range(last + 1)), f"the starts drawn were {sorted(seen)}, expected exactly {list(range(last + 1))}")


@pytest.mark.points(2)
def test_sequential_batches_cover_the_data_in_order(ex):
    for n, batch_size, T, sizes in [(21, 2, 4, [2, 2, 1]), (20, 2, 4, [2, 2]), (30, 3, 5, [3, 2]), (5, 4, 4, [1])]:
        data = torch.arange(n) * 2 + 1
        name = f"sequential_batches(N={n}, batch_size={batch_size}, context_length={T})"
        batches = ex.sequential_batches(data, batch_size, T)
        check(isinstance(batches, list), f"{name} should return a list of (x, y) pairs, got {type(batches).__name__}")
        got_sizes = [len(x) for x, _ in batches]
        check(got_sizes == sizes, f"{name}: expected batches of sizes {sizes} (windows start at 0, T, 2T, ... while "
                                  f"start + T + 1 <= N), got sizes {got_sizes}")
        starts = torch.arange(0, n - T, T)
        done = 0
        for i, (x, y) in enumerate(batches):
            ex_x, ex_y = windows(data, starts[done : done + len(x)], T)
            assert_close(x, ex_x, f"{name}, x of batch {i}")
            assert_close(y, ex_y, f"{name}, y of batch {i} (x shifted by one)")
            done += len(x)
    empty = ex.sequential_batches(torch.arange(4), 2, 4)
    check(empty == [], f"sequential_batches(N=4, context_length=4) should be [] (no window and target fit), got {empty!r}")
