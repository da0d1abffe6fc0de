"""Grader for chapter 9: exercises/ex09_scale.py.

Your code never starts a process here: the token file is written by the grader and only read by
your functions, and ``average_gradients`` runs in one process while the grader stands in for the
other ranks (it takes the place of ``torch.distributed.all_reduce`` and ``get_world_size`` during
the call and adds the other ranks' gradients itself). Expected weights, batches and gradients are
computed here, in the grader's process, from what your functions return.
"""

import os
import tempfile

import numpy as np
import pytest
import torch

from _grader.cases import TrainableBigram
from _grader.grading import SNAPSHOT_ATOL, SNAPSHOT_RTOL, assert_close, assert_number, assert_tensor, check, fail
from _grader.learner import generator

STEP_ATOL = 1e-5  # one SGD step on float32 gradients summed in another order


def probe_shard(m, path, dtype, batch_size, context_length, seed):
    """Runs in the worker: open_shard(path, dtype), then shard_batch on it."""
    tokens = m.open_shard(path, dtype)
    info = {"type": [c.__name__ for c in type(tokens).__mro__], "dtype": str(getattr(tokens, "dtype", None)),
            "length": len(tokens), "writeable": bool(getattr(getattr(tokens, "flags", None), "writeable", True)),
            "first": [int(t) for t in tokens[:5]]}
    x, y = m.shard_batch(tokens, batch_size, context_length, torch.Generator().manual_seed(seed))
    info.update(x=x, y=y)
    return info


def probe_shard_batch_of_list(m, ids, dtype, batch_size, context_length, seed):
    """Runs in the worker: shard_batch on an in-memory numpy array of the given ids and dtype."""
    return m.shard_batch(np.array(ids, dtype=dtype), batch_size, context_length, torch.Generator().manual_seed(seed))


def probe_accumulation(m, seed, micro_batches, lr, stale_grad=None, optimizer="sgd"):
    """Runs in the worker: one accumulation_step of a seeded bigram; what it returned, the weights, the calls."""
    model = TrainableBigram(8, seed=seed)
    model.train()
    if stale_grad is not None:
        model.logits_table.weight.grad = torch.full_like(model.logits_table.weight, stale_grad)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9 if optimizer == "momentum" else 0.0)
    steps = []
    original = opt.step

    def counted_step(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    opt.step = counted_step
    returned = m.accumulation_step(model, opt, micro_batches)
    return {"returned": returned, "weight": model.logits_table.weight.detach(), "steps": len(steps)}


def probe_average_gradients(m, grads_of_ranks):
    """Runs in the worker: average_gradients on rank 0's model while the grader plays ranks 1 .. W - 1.

    ``grads_of_ranks[r]`` holds rank r's gradient of each parameter (None: no gradient). During the
    call, ``dist.all_reduce`` adds the other ranks' gradient of the same parameter to the tensor it
    is given (a sum, as gloo does) and ``dist.get_world_size()`` answers W.
    """
    import torch.distributed as dist
    import torch.nn as nn

    world_size = len(grads_of_ranks)
    model = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(2, 4)})
    params = list(model.parameters())
    for p, g in zip(params, grads_of_ranks[0]):
        p.grad = None if g is None else g.clone()
    mine = [None if p.grad is None else p.grad.clone() for p in params]
    calls = []

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        name = str(op).rsplit(".", 1)[-1].upper()
        index = next((i for i, g in enumerate(mine) if g is not None and g.shape == tensor.shape
                      and torch.equal(g, tensor)), None)
        calls.append({"op": name, "index": index})
        if index is None:
            raise RuntimeError("all_reduce was given a tensor that is not one of this rank's gradients")
        others = sum(rank[index] for rank in grads_of_ranks[1:])
        if name == "SUM":
            tensor += others
        elif name == "AVG":
            raise RuntimeError("Cannot use ReduceOp.AVG with Gloo (the CPU backend sums; divide yourself)")
        else:
            raise RuntimeError(f"all_reduce with op {name}: the mean of the gradients needs a sum")
        mine[index] = tensor.clone()
        return None

    replaced = {"all_reduce": all_reduce, "get_world_size": lambda group=None: world_size,
                "get_rank": lambda group=None: 0, "is_initialized": lambda: True}
    saved = {name: getattr(dist, name) for name in replaced}
    aliases = {k: replaced[n] for k, v in list(vars(m).items()) for n in replaced if v is saved[n]}
    saved_aliases = {k: getattr(m, k) for k in aliases}
    try:
        for name, fake in replaced.items():
            setattr(dist, name, fake)
        for name, fake in aliases.items():
            setattr(m, name, fake)
        returned = m.average_gradients(model)
    finally:
        for name, real in saved.items():
            setattr(dist, name, real)
        for name, real in saved_aliases.items():
            setattr(m, name, real)
    return {"grads": [None if p.grad is None else p.grad.detach() for p in params], "calls": calls,
            "returned": returned}


def bigram_batches(seed, count, rows=3, T=5):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(8, (rows, T), generator=g), torch.randint(8, (rows, T), generator=g))
            for _ in range(count)]


def expected_big_batch_step(seed, micro_batches, lr, optimizer="sgd"):
    """The loss and weights after one step on all the micro-batches stacked into one batch."""
    model = TrainableBigram(8, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9 if optimizer == "momentum" else 0.0)
    x = torch.cat([b[0] for b in micro_batches])
    y = torch.cat([b[1] for b in micro_batches])
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    return loss.item(), model.logits_table.weight.detach()


def windows_of(ids, starts, T):
    ids = torch.as_tensor(ids, dtype=torch.long)
    x = torch.stack([ids[s:s + T] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + T + 1] for s in starts.tolist()])
    return x, y


@pytest.fixture(scope="module")
def token_file():
    """A uint16 file of 3,000 ids above 255 (so a uint8 or int8 reading is wrong), readable by the worker."""
    folder = tempfile.mkdtemp(prefix="ex09-")
    os.chmod(folder, 0o755)  # a worker that runs as another user (Gradescope) reads it too
    ids = (np.arange(3000, dtype=np.int64) * 7919 % 60000 + 300).astype(np.uint16)
    path = os.path.join(folder, "train.bin")
    ids.tofile(path)
    os.chmod(path, 0o644)
    yield path, ids
    os.remove(path)
    os.rmdir(folder)


# --------------------------------------------------------------------------- token shards

@pytest.mark.points(1)
def test_open_shard_maps_the_file(ex, token_file):
    path, ids = token_file
    got = ex.probe(probe_shard, path, "uint16", 2, 4, 0, describe=f"open_shard({path!r}, 'uint16')")
    check("memmap" in got["type"], f"open_shard returned a {got['type'][0]}: it should be an np.memmap (the file "
                                   f"mapped, not read into memory)")
    check(got["dtype"] == "uint16" and got["length"] == len(ids),
          f"open_shard(path, 'uint16') on a file of {len(ids)} uint16 ids gave {got['length']} ids of dtype "
          f"{got['dtype']} (use the dtype given)")
    check(got["first"] == ids[:5].tolist(), f"open_shard's first ids are {got['first']}, the file starts with "
                                            f"{ids[:5].tolist()}")
    check(not got["writeable"], "open_shard's array is writeable: open the file read-only (mode='r')")


@pytest.mark.points(3)
def test_shard_batch_draws_like_get_batch(ex, token_file):
    path, ids = token_file
    for batch_size, T, seed in [(4, 8, 1), (6, 3, 2)]:
        got = ex.probe(probe_shard, path, "uint16", batch_size, T, seed,
                       describe=f"shard_batch(open_shard(file), {batch_size}, {T}, generator seeded {seed})")
        starts = torch.randint(len(ids) - T, (batch_size,), generator=torch.Generator().manual_seed(seed))
        x, y = windows_of(ids.astype(np.int64), starts, T)
        name = f"shard_batch(tokens of {len(ids)} ids, batch_size={batch_size}, context_length={T})"
        assert_tensor(got["x"], name + "'s x", shape=(batch_size, T), dtype=torch.int64)
        assert_tensor(got["y"], name + "'s y", shape=(batch_size, T), dtype=torch.int64)
        check(torch.equal(got["y"][:, :-1], got["x"][:, 1:]), f"{name}: y is not x shifted by one")
        check(torch.equal(got["x"], x) and torch.equal(got["y"], y),
              f"{name}: the windows are not the ones get_batch draws with the same generator (one call "
              f"torch.randint(len(tokens) - context_length, (batch_size,), generator=generator), then x = "
              f"tokens[s : s + T], y = tokens[s + 1 : s + T + 1])")
    # The last start is reachable: 3 ids, T = 2 -> starts in {0}; 2 ids would be too few.
    short = [40000, 50000, 60000]
    x, y = ex.probe(probe_shard_batch_of_list, short, "uint16", 3, 2, 0,
                    describe="shard_batch(np.array([40000, 50000, 60000], uint16), 3, 2)")
    assert_close(x, torch.tensor([[40000, 50000]] * 3), "shard_batch on 3 ids with context_length 2: x (uint16 "
                                                          "ids above 32767 kept as int64)")
    assert_close(y, torch.tensor([[50000, 60000]] * 3), "shard_batch on 3 ids with context_length 2: y")
    got, expected = ex.case("shard_batch_outputs")
    assert_close(got["x"], torch.as_tensor(expected["x"]), "shard_batch on the seeded case: x")
    assert_close(got["y"], torch.as_tensor(expected["y"]), "shard_batch on the seeded case: y")


# --------------------------------------------------------------------------- gradient accumulation

@pytest.mark.points(2)
def test_accumulation_equals_one_big_batch(ex):
    for count, lr, optimizer in [(4, 0.5, "sgd"), (2, 0.05, "momentum"), (1, 0.5, "sgd")]:
        batches = bigram_batches(count, count)
        got = ex.probe(probe_accumulation, 3, batches, lr, optimizer=optimizer,
                       describe=f"accumulation_step(model, {optimizer}(lr={lr}), {count} micro-batches of 3 rows)")
        loss, weight = expected_big_batch_step(3, batches, lr, optimizer)
        assert_number(got["returned"], loss, f"accumulation_step's return value with {count} micro-batches (the "
                                             f"mean of their losses: the big batch's loss)", atol=1e-5)
        check(got["steps"] == 1, f"accumulation_step called optimizer.step() {got['steps']} times for {count} "
                                 f"micro-batches: one step per call")
        assert_close(got["weight"], weight, f"the weights after accumulation_step with {count} micro-batches "
                                            f"against one {optimizer} step on the {3 * count} rows together (divide "
                                            f"each micro-batch's loss by {count} before backward)", atol=STEP_ATOL)
    got, expected = ex.case("accumulation_outputs")
    assert_number(got["loss"], expected["loss"], "accumulation_step's return value on the seeded case", atol=1e-5)
    assert_close(got["weight"], torch.as_tensor(expected["weight"]), "accumulation_step on the seeded case: the "
                 "weights after one SGD step on 2 micro-batches", atol=STEP_ATOL)


@pytest.mark.points(2)
def test_accumulation_clears_old_gradients_once(ex):
    batches = bigram_batches(9, 3)
    got = ex.probe(probe_accumulation, 4, batches, 0.5, stale_grad=100.0,
                   describe="accumulation_step(model, SGD(lr=0.5), 3 micro-batches) with old gradients in .grad")
    _, weight = expected_big_batch_step(4, batches, 0.5)
    assert_close(got["weight"], weight, "the weights after accumulation_step when old gradients were left in .grad "
                                        "(clear them once, before the first micro-batch; clearing between "
                                        "micro-batches throws away all but the last one)", atol=STEP_ATOL)


# --------------------------------------------------------------------------- who does what

@pytest.mark.points(1)
def test_micro_steps_of_rank(ex):
    cases = {(4, 0, 2): [0, 2], (4, 1, 2): [1, 3], (6, 2, 3): [2, 5], (3, 0, 1): [0, 1, 2], (8, 3, 4): [3, 7]}
    for (steps, rank, world), expected in cases.items():
        got = ex.micro_steps_of_rank(steps, rank, world)
        check(list(got) == expected, f"micro_steps_of_rank(grad_accum_steps={steps}, rank={rank}, "
                                     f"world_size={world}) gave {got}, expected {expected}")
    every = sorted(i for r in range(4) for i in ex.micro_steps_of_rank(12, r, 4))
    check(every == list(range(12)), f"the micro-steps of ranks 0..3 for 12 steps together are {every}: each of "
                                    f"0..11 exactly once")


@pytest.mark.points(1)
def test_micro_steps_of_rank_refuses_uneven_work(ex):
    ex.raises("ValueError", "micro_steps_of_rank", 3, 0, 2, why="3 micro-batches cannot be shared evenly by 2 ranks")
    ex.raises("ValueError", "micro_steps_of_rank", 4, 2, 2, why="rank 2 does not exist in a world of 2")
    ex.raises("ValueError", "micro_steps_of_rank", 4, -1, 2, why="a rank is never negative")


@pytest.mark.points(2)
def test_rank_slice(ex):
    batch = torch.arange(24).reshape(6, 4)
    for world in (1, 2, 3, 6):
        parts = [ex.rank_slice(batch, r, world) for r in range(world)]
        for r, part in enumerate(parts):
            assert_tensor(part, f"rank_slice(batch (6, 4), rank={r}, world_size={world})", shape=(6 // world, 4))
        assert_close(torch.cat(parts), batch, f"the rank_slice blocks of ranks 0..{world - 1} put end to end "
                                              f"(world_size={world}): they should be the batch, in order")
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0))
    assert_close(ex.rank_slice(x, 1, 2), x[2:], "rank_slice(x (4, 3, 2), rank=1, world_size=2)")
    got, expected = ex.case("rank_slice_outputs")
    check(got == expected, f"rank_slice on the seeded case (a (6, 2) batch, 3 ranks) gave {got}, expected {expected}")
    ex.raises("ValueError", "rank_slice", batch, 0, 4, why="6 rows do not split into 4 equal blocks")
    ex.raises("ValueError", "rank_slice", batch, 3, 3, why="rank 3 does not exist in a world of 3")


# --------------------------------------------------------------------------- averaging gradients

def rank_grads(seed, world_size, with_none=True):
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 3), (2,), (4, 2), (4,)]
    grads = []
    for _ in range(world_size):
        grads.append([torch.randn(s, generator=g) for s in shapes])
        if with_none:
            grads[-1][1] = None  # one parameter without a gradient (frozen, or unused this step)
    return grads


@pytest.mark.points(3)
def test_average_gradients(ex):
    for world_size in (2, 3):
        grads = rank_grads(world_size, world_size)
        got = ex.probe(probe_average_gradients, grads,
                       describe=f"average_gradients(model) on rank 0 of {world_size} (the grader plays the others)")
        check(got["returned"] is None, "average_gradients changes the gradients in place and returns None")
        ops = sorted({c["op"] for c in got["calls"]})
        check(ops in ([], ["SUM"]), f"average_gradients called all_reduce with op {ops}: use the sum "
                                    f"(dist.ReduceOp.SUM), then divide")
        reduced = sorted(c["index"] for c in got["calls"])
        check(reduced == [0, 2, 3], f"average_gradients all-reduced the gradients of parameters {reduced}; expected "
                                    f"each parameter that has a gradient once: [0, 2, 3] (parameter 1 has none)")
        for i, grad in enumerate(got["grads"]):
            if i == 1:
                check(grad is None, "average_gradients gave a gradient to a parameter that had none")
                continue
            mean = sum(rank[i] for rank in grads) / world_size
            assert_close(grad, mean, f"parameter {i}'s gradient after average_gradients on {world_size} ranks (the "
                                     f"mean of the ranks' gradients: all_reduce sums, then divide by world_size)",
                         atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL)
