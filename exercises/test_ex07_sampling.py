"""Grader for chapter 7: exercises/ex07_sampling.py."""


import pytest
import torch

from _grader.cases import BigramTable, Recorder
from _grader.grading import assert_close, assert_tensor, check, fail
from _grader.learner import generator

NEG_INF = float("-inf")


def probe_generate(m, table_seed, prompt, max_new_tokens, record=False, **settings):
    """Runs in the worker: generate from a fixed bigram table (optionally recording every model call)."""
    model = BigramTable(vocab_size=9, seed=table_seed)
    if record:
        model = Recorder(model)
    out = m.generate(model, prompt, max_new_tokens, **settings)
    return {"out": out, "calls": model.calls if record else []}


def check_removed_are_minus_inf(got, keep, name):
    """Every removed logit must be exactly -inf (a large negative number still leaves some probability)."""
    removed = got[~keep]
    bad = removed[removed != NEG_INF]
    if bad.numel():
        fail(f"{name}: removed logits must be -inf, got {bad[0].item():.4g}: a large negative number such as -1e9 "
             f"still leaves a small probability (and breaks with other dtypes); use float('-inf')")


def random_logits(shape, seed, scale=2.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.points(1)
def test_apply_temperature(ex):
    logits = random_logits((3, 7), seed=0)
    for t in (0.5, 1.0, 2.0):
        assert_close(ex.apply_temperature(logits, t), logits / t, f"apply_temperature(logits, {t}) (logits / temperature)")
    for bad in (0.0, -1.0):
        ex.raises("ValueError", "apply_temperature", logits, bad, why="temperature must be > 0")


def kept(filtered):
    return filtered != NEG_INF


@pytest.mark.points(2)
def test_top_k_keeps_exactly_the_k_largest(ex):
    logits = random_logits((4, 10), seed=1)
    for k in (1, 3, 9):
        got = ex.top_k_filter(logits, k)  # the call fails if it changes logits in place
        name = f"top_k_filter(logits (4, 10), {k})"
        assert_tensor(got, name, shape=(4, 10))
        expected_keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)
        check_removed_are_minus_inf(got, expected_keep, name)
        for row in range(4):
            if not torch.equal(kept(got[row]), expected_keep[row]):
                fail(f"{name}, row {row}: should keep positions "
                     f"{expected_keep[row].nonzero().flatten().tolist()}, kept {kept(got[row]).nonzero().flatten().tolist()}")
        check(torch.equal(got[expected_keep], logits[expected_keep]), f"{name} changed the kept values")
    assert_close(ex.top_k_filter(logits, 10), logits, "top_k_filter(logits, k=V) (nothing removed)")
    assert_close(ex.top_k_filter(logits, 50), logits, "top_k_filter(logits, k > V) (nothing removed)")
    one_d = logits[0]
    check(int(kept(ex.top_k_filter(one_d, 2)).sum()) == 2, "top_k_filter on a 1-D tensor (V,) should keep 2 of 10 for k=2")


@pytest.mark.points(1)
def test_top_k_keeps_every_logit_tied_with_the_kth(ex):
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 1.0, 0.0]])
    for k, keep in [(2, [[0, 2, 3], [0, 1, 2]]), (1, [[0], [0, 1, 2]])]:
        got = ex.top_k_filter(logits, k)
        name = f"top_k_filter({logits.tolist()}, {k})"
        assert_tensor(got, name, shape=(2, 5))
        for row in range(2):
            got_keep = kept(got[row]).nonzero().flatten().tolist()
            if got_keep != keep[row]:
                fail(f"{name}, row {row}: should keep positions {keep[row]} (the docstring's tie rule: every logit "
                     f"equal to the k-th largest is kept), kept {got_keep}")


@pytest.mark.points(2)
def test_top_p_keeps_the_smallest_sufficient_set(ex):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = probs.log()
    for p, keep in [(0.4, [1]), (0.75, [1, 3]), (0.85, [0, 1, 3]), (1.0, [0, 1, 2, 3])]:
        got = ex.top_p_filter(logits, p)
        assert_tensor(got, f"top_p_filter(logits, {p})", shape=(4,))
        check_removed_are_minus_inf(got, torch.zeros(4, dtype=torch.bool).index_fill(0, torch.tensor(keep), True),
                                    f"top_p_filter(logits, {p})")
        got_keep = kept(got).nonzero().flatten().tolist()
        if got_keep != keep:
            fail(f"top_p_filter with probabilities {[round(v, 4) for v in probs.tolist()]} and p={p} should keep "
                 f"the tokens with probabilities {[round(probs[i].item(), 4) for i in keep]} "
                 f"(the smallest most-probable set whose sum reaches p), "
                 f"kept {[round(probs[i].item(), 4) for i in got_keep]}")
        check(torch.allclose(got[keep], logits[keep]), f"top_p_filter(p={p}) changed the kept logits")
    check(int(kept(ex.top_p_filter(torch.tensor([5.0, 0.0, 0.0]), 0.01)).sum()) == 1,
          "top_p_filter must always keep the most probable token, even for a tiny p")
    tiny_tail = torch.tensor([0.0, -30.0, -40.0])  # float32 sums of these probabilities reach 1.0 early
    check(bool(kept(ex.top_p_filter(tiny_tail, 1.0)).all()),
          f"top_p_filter({tiny_tail.tolist()}, p=1.0) must keep every token (p = 1 keeps all); the running "
          f"sum of float32 probabilities reaches 1.0 before the last tokens, so return early when p >= 1")


@pytest.mark.points(1)
def test_top_p_on_random_rows(ex):
    logits = random_logits((5, 30), seed=2)
    for p in (0.3, 0.6, 0.9):
        got = ex.top_p_filter(logits, p)  # the call fails if it changes logits in place
        assert_tensor(got, f"top_p_filter(logits (5, 30), {p})", shape=(5, 30))
        probs = torch.softmax(logits.double(), dim=-1)
        for row in range(5):
            sorted_probs, order = probs[row].sort(descending=True)
            m = int((sorted_probs.cumsum(0) < p).sum()) + 1  # the smallest prefix reaching p
            expected = sorted(order[:m].tolist())
            got_keep = kept(got[row]).nonzero().flatten().tolist()
            if got_keep != expected:
                fail(f"top_p_filter(p={p}), row {row}: should keep {m} tokens {expected}, kept {len(got_keep)}: {got_keep}")


@pytest.mark.points(1)
def test_apply_penalties(ex):
    logits = random_logits((2, 6), seed=3)
    counts = torch.tensor([[0, 1, 3, 0, 2, 0], [5, 0, 0, 1, 0, 0]])
    got = ex.apply_penalties(logits, counts, 0.5, 0.25)
    expected = logits - 0.5 * counts - 0.25 * (counts > 0).float()
    assert_close(got, expected, "apply_penalties(logits, counts, frequency_penalty=0.5, presence_penalty=0.25) "
                                "(logits - 0.5 * counts - 0.25 * (counts > 0))")
    assert_close(ex.apply_penalties(logits, counts, 0.0, 0.0), logits, "apply_penalties with both penalties 0")


@pytest.mark.points(1)
def test_generate_shape_and_prompt(ex):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = ex.probe(probe_generate, 1, prompt, 10, context_length=4, generator=generator(0),
                   describe="generate(model, prompt (2, 3), max_new_tokens=10, context_length=4)")["out"]
    assert_tensor(out, "generate(model, prompt (2, 3), max_new_tokens=10)", shape=(2, 13), dtype=torch.long)
    check(torch.equal(out[:, :3], prompt), "the output of generate should start with the prompt, unchanged")
    check(bool(((out >= 0) & (out < 9)).all()), "generate produced ids outside [0, vocab_size)")


@pytest.mark.points(2)
def test_generate_crops_the_context(ex):
    prompt = torch.tensor([[1, 2]])
    got = ex.probe(probe_generate, 2, prompt, 8, record=True, context_length=4, generator=generator(0),
                   describe="generate(model, prompt (1, 2), max_new_tokens=8, context_length=4)")
    out, calls = got["out"], got["calls"]
    assert_tensor(out, "generate(model, prompt (1, 2), max_new_tokens=8)", shape=(1, 10))
    check(len(calls) == 8, f"generate(max_new_tokens=8) should call the model 8 times, got {len(calls)}")
    for i, call in enumerate(calls):
        length = 2 + i  # tokens known before step i
        expected = out[:, :length][:, -4:]
        if not torch.equal(call["idx"], expected):
            fail(f"step {i}: the model got a sequence of length {call['idx'].shape[1]}, expected the last "
                 f"{expected.shape[1]} of the {length} tokens so far (crop idx to its last context_length=4 tokens)")


@pytest.mark.points(2)
def test_generate_greedy_when_temperature_is_zero(ex):
    table = BigramTable(vocab_size=9, seed=3)
    prompt = torch.tensor([[0], [5]])
    expected = prompt.clone()
    for _ in range(6):
        expected = torch.cat([expected, table.table[expected[:, -1]].argmax(-1, keepdim=True)], dim=1)
    got = ex.probe(probe_generate, 3, prompt, 6, context_length=4, temperature=0.0,
                   describe="generate(model, prompt, 6, context_length=4, temperature=0)")["out"]
    assert_close(got, expected, "generate(..., temperature=0) (always the argmax of the last position's logits)")
    got = ex.probe(probe_generate, 3, prompt, 6, context_length=4, top_k=1, generator=generator(0),
                   describe="generate(model, prompt, 6, context_length=4, top_k=1)")["out"]
    assert_close(got, expected, "generate(..., top_k=1) (only one token left to sample)")


@pytest.mark.points(2)
def test_generate_matches_reference_samples(ex):
    got, expected = ex.case("generated_samples")
    hint = ("(one torch.multinomial(probs, num_samples=1, generator=generator) per step, "
            "on softmax(top_k_filter(logits / temperature)))")
    for name, tokens in expected.items():
        assert_close(got[name], torch.as_tensor(tokens), f"tokens sampled with {name.replace('_', ' ')} {hint}")
