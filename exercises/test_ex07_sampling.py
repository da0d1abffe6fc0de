"""Grader for chapter 7: exercises/ex07_sampling.py."""


import pytest
import torch

from _cases import SNAPSHOT_CASES, BigramTable, Recorder
from _grading import assert_close, assert_tensor, check, fail, load_snapshot

SNAPSHOT = load_snapshot("ex07_sampling")
NEG_INF = float("-inf")


def random_logits(shape, seed, scale=2.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.points(1)
def test_apply_temperature(ex):
    logits = random_logits((3, 7), seed=0)
    for t in (0.5, 1.0, 2.0):
        assert_close(ex.apply_temperature(logits, t), logits / t, f"apply_temperature(logits, {t}) (logits / temperature)")
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError):
            ex.apply_temperature(logits, bad)


def kept(filtered):
    return filtered != NEG_INF


@pytest.mark.points(2)
def test_top_k_keeps_exactly_the_k_largest(ex):
    logits = random_logits((4, 10), seed=1)
    original = logits.clone()
    for k in (1, 3, 9):
        got = ex.top_k_filter(logits, k)
        assert_tensor(got, f"top_k_filter(logits, {k})", shape=(4, 10))
        check(torch.equal(logits, original), "top_k_filter changed its input: return a new tensor")
        expected_keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)
        for row in range(4):
            if not torch.equal(kept(got[row]), expected_keep[row]):
                fail(f"top_k_filter(logits, {k}), row {row}: should keep positions "
                     f"{expected_keep[row].nonzero().flatten().tolist()}, kept {kept(got[row]).nonzero().flatten().tolist()}")
        check(torch.equal(got[expected_keep], logits[expected_keep]), f"top_k_filter(logits, {k}) changed the kept values")
    assert_close(ex.top_k_filter(logits, 10), logits, "top_k_filter(logits, k=V) (nothing removed)")
    assert_close(ex.top_k_filter(logits, 50), logits, "top_k_filter(logits, k > V) (nothing removed)")
    one_d = logits[0]
    check(int(kept(ex.top_k_filter(one_d, 2)).sum()) == 2, "top_k_filter on a 1-D tensor (V,) should keep 2 of 10 for k=2")


@pytest.mark.points(2)
def test_top_p_keeps_the_smallest_sufficient_set(ex):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = probs.log()
    for p, keep in [(0.4, [1]), (0.75, [1, 3]), (0.85, [0, 1, 3]), (1.0, [0, 1, 2, 3])]:
        got = ex.top_p_filter(logits, p)
        assert_tensor(got, f"top_p_filter(logits, {p})", shape=(4,))
        got_keep = kept(got).nonzero().flatten().tolist()
        if got_keep != keep:
            fail(f"top_p_filter with probabilities {[round(v, 4) for v in probs.tolist()]} and p={p} should keep "
                 f"the tokens with probabilities {[round(probs[i].item(), 4) for i in keep]} "
                 f"(the smallest most-probable set whose sum reaches p), "
                 f"kept {[round(probs[i].item(), 4) for i in got_keep]}")
        check(torch.allclose(got[keep], logits[keep]), f"top_p_filter(p={p}) changed the kept logits")
    check(int(kept(ex.top_p_filter(torch.tensor([5.0, 0.0, 0.0]), 0.01)).sum()) == 1,
          "top_p_filter must always keep the most probable token, even for a tiny p")


@pytest.mark.points(1)
def test_top_p_on_random_rows(ex):
    logits = random_logits((5, 30), seed=2)
    original = logits.clone()
    for p in (0.3, 0.6, 0.9):
        got = ex.top_p_filter(logits, p)
        assert_tensor(got, f"top_p_filter(logits (5, 30), {p})", shape=(5, 30))
        check(torch.equal(logits, original), "top_p_filter changed its input: return a new tensor")
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
    model = BigramTable(vocab_size=9, seed=1)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = ex.generate(model, prompt, 10, context_length=4, generator=torch.Generator().manual_seed(0))
    assert_tensor(out, "generate(model, prompt (2, 3), max_new_tokens=10)", shape=(2, 13), dtype=torch.long)
    check(torch.equal(out[:, :3], prompt), "the output of generate should start with the prompt, unchanged")
    check(bool(((out >= 0) & (out < 9)).all()), "generate produced ids outside [0, vocab_size)")


@pytest.mark.points(2)
def test_generate_crops_the_context(ex):
    model = Recorder(BigramTable(vocab_size=9, seed=2))
    prompt = torch.tensor([[1, 2]])
    out = ex.generate(model, prompt, 8, context_length=4, generator=torch.Generator().manual_seed(0))
    check(len(model.calls) == 8, f"generate(max_new_tokens=8) should call the model 8 times, got {len(model.calls)}")
    for i, call in enumerate(model.calls):
        length = 2 + i  # tokens known before step i
        expected = out[:, :length][:, -4:]
        if not torch.equal(call["idx"], expected):
            fail(f"step {i}: the model got a sequence of length {call['idx'].shape[1]}, expected the last "
                 f"{expected.shape[1]} of the {length} tokens so far (crop idx to its last context_length=4 tokens)")


@pytest.mark.points(2)
def test_generate_greedy_when_temperature_is_zero(ex):
    model = BigramTable(vocab_size=9, seed=3)
    prompt = torch.tensor([[0], [5]])
    expected = prompt.clone()
    for _ in range(6):
        expected = torch.cat([expected, model.table[expected[:, -1]].argmax(-1, keepdim=True)], dim=1)
    got = ex.generate(model, prompt, 6, context_length=4, temperature=0.0)
    assert_close(got, expected, "generate(..., temperature=0) (always the argmax of the last position's logits)")
    got = ex.generate(model, prompt, 6, context_length=4, top_k=1, generator=torch.Generator().manual_seed(0))
    assert_close(got, expected, "generate(..., top_k=1) (only one token left to sample)")


@pytest.mark.points(2)
def test_generate_matches_reference_samples(ex):
    got = SNAPSHOT_CASES["ex07_sampling"]["generated_samples"](ex)
    hint = ("(one torch.multinomial(probs, num_samples=1, generator=generator) per step, "
            "on softmax(top_k_filter(logits / temperature)))")
    for name, expected in SNAPSHOT["generated_samples"].items():
        assert_close(got[name], torch.tensor(expected), f"tokens sampled with {name.replace('_', ' ')} {hint}")
