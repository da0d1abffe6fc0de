"""Grader for chapter 3: exercises/ex03_attention.py.

References come from PyTorch itself (``F.scaled_dot_product_attention``), with
the weights read from your own layers, plus properties every causal attention
must have.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _grading import assert_close, assert_param_names, assert_tensor, check, fill_parameters


def qkv(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g) for _ in range(3))


def reference_attention(q, k, v, mask=None):
    T = q.shape[-2]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    weights = F.scaled_dot_product_attention(q, k, torch.eye(T).expand(*q.shape[:-1], T), attn_mask=mask)
    return out, weights


def check_causal(fn, x, name, changed=5):
    """Changing input position ``changed`` may only change outputs at positions >= ``changed``."""
    with torch.no_grad():
        before = fn(x)
        x2 = x.clone()
        x2[:, changed] += 1.0
        after = fn(x2)
    for t in range(changed):
        check(torch.allclose(before[:, t], after[:, t], atol=1e-6),
              f"{name}: output position {t} changed when only position {changed} of the input changed: "
              f"is the mask applied (and the right way round)?")
    check(not torch.allclose(before[:, changed], after[:, changed], atol=1e-6),
          f"{name}: output position {changed} did not change when its own input changed: "
          f"a position must be able to attend to itself (the diagonal of the mask is True)")


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
    hint = " (softmax(q @ k^T / sqrt(head_size)) over the last axis)"
    assert_close(weights, ref_weights, "weights" + hint, atol=1e-5)
    assert_close(out, ref_out, "out", atol=1e-5)


@pytest.mark.points(2)
def test_attention_with_causal_mask(ex):
    q, k, v = qkv((2, 6, 8), seed=1)
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    out, weights = ex.scaled_dot_product_attention(q, k, v, mask)
    assert_tensor(weights, "weights", shape=(2, 6, 6))
    check(torch.allclose(weights.sum(-1), torch.ones(2, 6), atol=1e-5),
          "every row of weights must sum to one: take the softmax over the last axis (the keys)")
    above = weights.masked_select(~mask)
    check(bool((above == 0).all()), "weights above the diagonal must be exactly 0 where the mask is False "
                                    "(fill those scores with -inf before the softmax)")
    ref_out, ref_weights = reference_attention(q, k, v, mask)
    assert_close(weights, ref_weights, "weights with the causal mask", atol=1e-5)
    assert_close(out, ref_out, "out with the causal mask", atol=1e-5)


@pytest.mark.points(1)
def test_head_layers(ex):
    head = ex.Head(d_model=12, head_size=4, context_length=8)
    check(isinstance(head, nn.Module), "Head must be an nn.Module")
    for name in ("key", "query", "value"):
        check(isinstance(getattr(head, name, None), nn.Linear), f"Head.{name} should be an nn.Linear")
    assert_param_names(head, {"key.weight": (4, 12), "query.weight": (4, 12), "value.weight": (4, 12)}, "Head(12, 4, 8)")


@pytest.mark.points(2)
def test_head_matches_pytorch(ex):
    torch.manual_seed(0)
    head = ex.Head(d_model=12, head_size=4, context_length=8)
    fill_parameters(head, seed=1)
    x = torch.randn(2, 6, 12, generator=torch.Generator().manual_seed(2))  # T=6 < context_length=8
    with torch.no_grad():
        got = head(x)
        expected = F.scaled_dot_product_attention(head.query(x), head.key(x), head.value(x), is_causal=True)
    assert_close(got, expected, "Head output for x of shape (2, 6, 12)", atol=1e-5)


@pytest.mark.points(1)
def test_head_is_causal(ex):
    torch.manual_seed(0)
    head = ex.Head(d_model=12, head_size=4, context_length=8)
    fill_parameters(head, seed=3)
    check_causal(head, torch.randn(2, 8, 12, generator=torch.Generator().manual_seed(4)), "Head")


def mha_expected_params(d_model, num_heads):
    hs = d_model // num_heads
    names = {f"heads.{h}.{p}.weight": (hs, d_model) for h in range(num_heads) for p in ("key", "query", "value")}
    names.update({"proj.weight": (d_model, d_model), "proj.bias": (d_model,)})
    return names


@pytest.mark.points(1)
def test_multi_head_layers(ex):
    mha = ex.MultiHeadAttention(d_model=12, num_heads=3, context_length=8)
    check(isinstance(getattr(mha, "heads", None), nn.ModuleList), "MultiHeadAttention.heads should be an nn.ModuleList")
    check(len(mha.heads) == 3, f"MultiHeadAttention(12, 3, 8) should have 3 heads, got {len(mha.heads)}")
    assert_param_names(mha, mha_expected_params(12, 3), "MultiHeadAttention(12, 3, 8)")
    with pytest.raises(ValueError):
        ex.MultiHeadAttention(d_model=10, num_heads=3, context_length=8)


@pytest.mark.points(2)
def test_multi_head_matches_pytorch(ex):
    torch.manual_seed(0)
    mha = ex.MultiHeadAttention(d_model=12, num_heads=3, context_length=8)
    fill_parameters(mha, seed=5)
    x = torch.randn(2, 7, 12, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        outs = [F.scaled_dot_product_attention(h.query(x), h.key(x), h.value(x), is_causal=True) for h in mha.heads]
        expected = mha.proj(torch.cat(outs, dim=-1))
        got = mha(x)
    assert_close(got, expected, "MultiHeadAttention output (heads concatenated on the last axis, then proj)", atol=1e-5)


@pytest.mark.points(1)
def test_multi_head_is_causal(ex):
    torch.manual_seed(0)
    mha = ex.MultiHeadAttention(d_model=12, num_heads=3, context_length=8)
    fill_parameters(mha, seed=7)
    check_causal(mha, torch.randn(2, 8, 12, generator=torch.Generator().manual_seed(8)), "MultiHeadAttention")
