"""Grader for chapter 2: exercises/ex02_batching.py."""

import pytest
import torch

from _grader.cases import windows
from _grader.grading import assert_close, assert_tensor, check
from _grader.learner import generator


def probe_global_seed(m, data, batch_size, context_length, seed):
    """Runs in the worker: get_batch without a generator, after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return m.get_batch(data, batch_size, context_length)


def probe_first_ids(m, data, batch_size, context_length, seed, times):
    """Runs in the worker: the first id of every row of ``times`` batches from one generator."""
    g = torch.Generator().manual_seed(seed)
    return [m.get_batch(data, batch_size, context_length, g)[0][:, 0].tolist() for _ in range(times)]


@pytest.mark.points(1)
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


def probe_window_dataset(m, data, context_length, stride, max_items=200):
    """Runs in the worker: build a WindowDataset, read its length, its items, and the item just past the end."""
    import torch.utils.data

    ds = m.WindowDataset(data, context_length) if stride is None else m.WindowDataset(data, context_length, stride)
    n = len(ds)
    items = [tuple(ds[i]) for i in range(min(n, max_items))]
    try:
        ds[n]
        past_end = "no error"
    except IndexError:
        past_end = "IndexError"
    except Exception as exc:  # reported by name: the test says what was expected
        past_end = type(exc).__name__
    return {"is_dataset": isinstance(ds, torch.utils.data.Dataset), "len": n, "items": items, "past_end": past_end}


def probe_dataloader(m, data, context_length, stride, batch_size):
    """Runs in the worker: the batches of a DataLoader (no shuffling) over the learner's WindowDataset."""
    from torch.utils.data import DataLoader

    loader = DataLoader(m.WindowDataset(data, context_length, stride), batch_size=batch_size, shuffle=False)
    return [(xb, yb) for xb, yb in loader]


WINDOW_CASES = [  # (N, T, stride): overlapping, touching, with gaps, last start reachable or not
    (20, 4, 1), (20, 4, 4), (21, 4, 4), (20, 4, 5), (23, 3, 2), (9, 8, 1), (9, 8, 3), (30, 5, 7),
]


def expected_starts(n: int, T: int, stride: int) -> torch.Tensor:
    """Starts 0, stride, 2 * stride, ... while a window and its target fit (start + T + 1 <= n)."""
    return torch.arange(0, n - T, stride)


@pytest.mark.points(2)
def test_sliding_windows_count_order_and_last_window(ex):
    for n, T, stride in WINDOW_CASES:
        data = torch.arange(n) * 3 + 2  # ids that are not their positions
        name = f"sliding_windows(N={n}, context_length={T}, stride={stride})"
        x, y = ex.sliding_windows(data, T, stride)
        starts = expected_starts(n, T, stride)
        count = len(starts)
        assert_tensor(x, f"x from {name}", dtype=torch.long)
        check(x.dim() == 2 and len(x) == count,
              f"{name}: expected {count} windows, x of shape ({count}, {T}) (starts 0, {stride}, {2 * stride}, ... "
              f"while start + T + 1 <= N, i.e. (N - T - 1) // stride + 1 windows), got shape {tuple(x.shape)}")
        ex_x, ex_y = windows(data, starts, T)
        assert_close(x, ex_x, f"x from {name} (row i is data[i * stride : i * stride + T])")
        assert_close(y, ex_y, f"y from {name} (row i is x's window shifted by one)")
    data = torch.arange(13)
    x, y = ex.sliding_windows(data, 4, 4)  # starts 0, 4, 8: the last target ends exactly on data[12]
    check(len(x) == 3 and int(y[-1, -1]) == 12,
          f"sliding_windows(torch.arange(13), 4, 4): the last window (start 8, y ending on the last id 12) must be "
          f"included, got {len(x)} windows")


@pytest.mark.points(2)
def test_window_dataset_length_items_and_end(ex):
    for n, T, stride in WINDOW_CASES + [(40, 8, None)]:
        data = torch.arange(n) * 5 + 1
        shown = "" if stride is None else f", stride={stride}"
        name = f"WindowDataset(data (N={n}), context_length={T}{shown})"
        info = ex.probe(probe_window_dataset, data, T, stride, describe=name)
        check(info["is_dataset"], f"{name} should be a torch.utils.data.Dataset (class WindowDataset(Dataset))")
        starts = expected_starts(n, T, 1 if stride is None else stride)
        check(info["len"] == len(starts), f"len({name}) should be {len(starts)} ((N - T - 1) // stride + 1"
                                          f"{', stride defaults to 1' if stride is None else ''}), got {info['len']}")
        ex_x, ex_y = windows(data, starts, T)
        for i, item in enumerate(info["items"]):
            check(len(item) == 2, f"{name}[{i}] should be a pair (x, y), got {len(item)} values")
            assert_close(item[0], ex_x[i], f"x of {name}[{i}] (data[s : s + T] with s = {i} * stride)")
            assert_close(item[1], ex_y[i], f"y of {name}[{i}] (x shifted by one)")
        check(info["past_end"] == "IndexError",
              f"{name}[{info['len']}] (one past the last window) should raise IndexError, got {info['past_end']} "
              f"(a for loop over a Dataset stops only at an IndexError)")


@pytest.mark.points(1)
def test_dataloader_over_window_dataset_gives_sequential_batches(ex):
    for n, T, batch_size in [(41, 4, 3), (30, 5, 2)]:
        data = torch.arange(n) * 7 % 31
        name = f"DataLoader(WindowDataset(data (N={n}), {T}, stride={T}), batch_size={batch_size})"
        got = ex.probe(probe_dataloader, data, T, T, batch_size, describe=name)
        starts = expected_starts(n, T, T)
        sizes = [len(starts[i : i + batch_size]) for i in range(0, len(starts), batch_size)]
        check(len(got) == len(sizes), f"{name}: expected {len(sizes)} batches, got {len(got)}")
        done = 0
        for i, (xb, yb) in enumerate(got):
            ex_x, ex_y = windows(data, starts[done : done + sizes[i]], T)
            assert_close(xb, ex_x, f"{name}, x of batch {i}")
            assert_close(yb, ex_y, f"{name}, y of batch {i}")
            done += sizes[i]
