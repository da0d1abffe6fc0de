"""Grader for chapter 3: exercises/ex03_attention.py.

References come from PyTorch itself (``F.scaled_dot_product_attention``), run
in the grader's process on weights the grader chose, plus properties every
causal attention must have. Your classes run in the worker through the probes
of ``_grader/cases.py`` (``probe_module``, ``probe_on_another_device``).
"""

import pytest
import torch
import torch.nn.functional as F

import _grader.oracles as ref
from _grader.cases import probe_module, probe_on_another_device  # noqa: F401 (run in the worker by name)
from _grader.grading import (assert_close, assert_param_names, assert_tensor, check, check_buffers, check_device_ready,
                      fail, seeded_weights)


def qkv(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g) * scale for _ in range(3))


def reference_attention(q, k, v, mask=None):
    T = q.shape[-2]
    q64, k64, v64 = q.double(), k.double(), v.double()
    out = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=mask)
    weights = F.scaled_dot_product_attention(q64, k64, torch.eye(T, dtype=torch.float64).expand(*q.shape[:-1], T),
                                             attn_mask=mask)
    return out.float(), weights.float()


def check_causal(before, after, name, changed):
    """Changing input position ``changed`` may only change outputs at positions >= ``changed``."""
    for t in range(changed):
        check(torch.allclose(before[:, t], after[:, t], atol=1e-6),
              f"{name}: output position {t} changed when only position {changed} of the input changed: "
              f"is the mask applied (and the right way round)?")
    check(not torch.allclose(before[:, changed], after[:, changed], atol=1e-6),
          f"{name}: output position {changed} did not change when its own input changed: "
          f"a position must be able to attend to itself (the diagonal of the mask is True)")


def run_causal(ex, cls, kwargs, seed, x, changed=5):
    x2 = x.clone()
    x2[:, changed] += 1.0
    before, after = ex.probe(probe_module, cls, kwargs, seed, [[x], [x2]],
                             describe=f"{cls}({kwargs}) on x and on x with position {changed} changed")["outputs"]
    assert_tensor(before, f"{cls} output", shape=x.shape[:2] + before.shape[2:])
    check_causal(before, after, cls, changed)


def check_weights_rows(weights, mask, call):
    """Rows of weights: zero where masked, summing to one, and the hint that fits the mistake."""
    if mask is not None:
        above = weights.masked_select(~mask.expand_as(weights))
        check(bool((above == 0).all()), f"{call}: weights above the diagonal must be exactly 0 where the mask is "
                                        f"False (fill those scores with -inf before the softmax)")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
        row = int((sums - 1).abs().flatten().argmax())
        fail(f"{call}: every row of weights must sum to one, a row sums to {sums.flatten()[row].item():.4g}: "
             f"take the softmax over the last axis (the keys), apply the mask before the softmax "
             f"(not after), and no dropout in this function")


@pytest.mark.points(1)
def test_causal_mask(ex):
    for T in [1, 4, 7]:
        mask = ex.causal_mask(T)
        assert_tensor(mask, f"causal_mask({T})", shape=(T, T), dtype=torch.bool)
        for i in range(T):
            for j in range(T):
                check(bool(mask[i, j]) == (j <= i),
                      f"causal_mask({T})[{i}, {j}] should be {j <= i}: position {i} "
                      f"{'may' if j <= i else 'may not'} look at position {j}")


@pytest.mark.points(2)
def test_attention_matches_pytorch_without_mask(ex):
    q, k, v = qkv((2, 3, 5, 16), seed=0)
    out, weights = ex.scaled_dot_product_attention(q, k, v)
    ref_out, ref_weights = reference_attention(q, k, v)
    call = "scaled_dot_product_attention(q, k, v) with q, k, v of shape (2, 3, 5, 16)"
    assert_tensor(weights, f"weights from {call}", shape=(2, 3, 5, 5))
    check_weights_rows(weights, None, call)
    assert_close(weights, ref_weights, f"weights from {call} (softmax(q @ k^T / sqrt(head_size)) over the last axis)")
    assert_close(out, ref_out, f"out from {call} (weights @ v)")


@pytest.mark.points(2)
def test_attention_with_causal_mask(ex):
    q, k, v = qkv((2, 6, 8), seed=1)
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    call = "scaled_dot_product_attention(q, k, v, mask) with q, k, v of shape (2, 6, 8) and a causal mask"
    out, weights = ex.scaled_dot_product_attention(q, k, v, mask)
    assert_tensor(weights, f"weights from {call}", shape=(2, 6, 6))
    check_weights_rows(weights, mask, call)
    ref_out, ref_weights = reference_attention(q, k, v, mask)
    assert_close(weights, ref_weights, f"weights from {call}")
    assert_close(out, ref_out, f"out from {call}")


@pytest.mark.points(2)
def test_attention_softmax_is_stable_for_large_scores(ex):
    # Scores up to a few hundred, and very different from row to row: exp() alone overflows past ~88.
    q, k, v = qkv((2, 5, 8), seed=2)
    q = q * torch.tensor([40.0, 1.0, 90.0, 0.5, 60.0]).view(1, 5, 1)
    k = k * 4
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    call = "scaled_dot_product_attention(q, k, v, mask) with scores in the hundreds"
    out, weights = ex.scaled_dot_product_attention(q, k, v, mask)
    assert_tensor(weights, f"weights from {call}", shape=(2, 5, 5))
    check(bool(torch.isfinite(weights).all()), f"{call}: the weights hold NaN or inf: subtract each row's maximum "
                                               f"score before exp (torch.softmax does this for you)")
    ref_out, ref_weights = reference_attention(q, k, v, mask)
    assert_close(weights, ref_weights, f"weights from {call}", atol=1e-5)
    assert_close(out, ref_out, f"out from {call}", atol=1e-4)


@pytest.mark.points(1)
def test_head_layers(ex):
    info = ex.probe(probe_module, "Head", dict(d_model=12, head_size=4, context_length=8), None, [],
                    ("key", "query", "value"), describe="Head(d_model=12, head_size=4, context_length=8)")
    check(info["is_module"], "Head must be an nn.Module")
    for name in ("key", "query", "value"):
        check("Linear" in info["types"][name], f"Head.{name} should be an nn.Linear, got {info['types'][name][0]}")
    assert_param_names(info["params"], {"key.weight": (4, 12), "query.weight": (4, 12), "value.weight": (4, 12)},
                       "Head(12, 4, 8)")
    check_buffers(info, "Head(12, 4, 8)")
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(9))
    check_device_ready(ex.probe(probe_on_another_device, "Head", dict(d_model=12, head_size=4, context_length=8),
                                [x], describe="Head(12, 4, 8) moved to another device"), "Head")


@pytest.mark.points(2)
def test_head_matches_pytorch(ex):
    kwargs = dict(d_model=12, head_size=4, context_length=8)
    x = torch.randn(2, 6, 12, generator=torch.Generator().manual_seed(2))  # T=6 < context_length=8
    info = ex.probe(probe_module, "Head", kwargs, 1, [[x]], describe="Head(12, 4, 8) on x of shape (2, 6, 12)")
    assert_param_names(info["params"], {"key.weight": (4, 12), "query.weight": (4, 12), "value.weight": (4, 12)},
                       "Head(12, 4, 8)")
    expected = ref.head(seeded_weights(info["params"], 1), "", x)
    assert_close(info["outputs"][0], expected, "Head output for x of shape (2, 6, 12)", atol=1e-5)


@pytest.mark.points(1)
def test_head_is_causal(ex):
    run_causal(ex, "Head", dict(d_model=12, head_size=4, context_length=8), 3,
               torch.randn(2, 8, 12, generator=torch.Generator().manual_seed(4)))


def mha_expected_params(d_model, num_heads):
    hs = d_model // num_heads
    names = {f"heads.{h}.{p}.weight": (hs, d_model) for h in range(num_heads) for p in ("key", "query", "value")}
    names.update({"proj.weight": (d_model, d_model), "proj.bias": (d_model,)})
    return names


@pytest.mark.points(1)
def test_multi_head_layers(ex):
    info = ex.probe(probe_module, "MultiHeadAttention", dict(d_model=12, num_heads=3, context_length=8), None, [],
                    ("heads",), describe="MultiHeadAttention(d_model=12, num_heads=3, context_length=8)")
    check("ModuleList" in info["types"]["heads"], "MultiHeadAttention.heads should be an nn.ModuleList")
    assert_param_names(info["params"], mha_expected_params(12, 3), "MultiHeadAttention(12, 3, 8)")
    ex.raises("ValueError", "MultiHeadAttention", d_model=10, num_heads=3, context_length=8,
              why="d_model must be divisible by num_heads")


@pytest.mark.points(2)
def test_multi_head_matches_pytorch(ex):
    x = torch.randn(2, 7, 12, generator=torch.Generator().manual_seed(6))
    info = ex.probe(probe_module, "MultiHeadAttention", dict(d_model=12, num_heads=3, context_length=8), 5, [[x]],
                    describe="MultiHeadAttention(12, 3, 8) on x of shape (2, 7, 12)")
    assert_param_names(info["params"], mha_expected_params(12, 3), "MultiHeadAttention(12, 3, 8)")
    expected = ref.multi_head(seeded_weights(info["params"], 5), "", x, num_heads=3)
    assert_close(info["outputs"][0], expected,
                 "MultiHeadAttention output (heads concatenated on the last axis, then proj)", atol=1e-5)


@pytest.mark.points(1)
def test_multi_head_is_causal(ex):
    run_causal(ex, "MultiHeadAttention", dict(d_model=12, num_heads=3, context_length=8), 7,
               torch.randn(2, 8, 12, generator=torch.Generator().manual_seed(8)))
