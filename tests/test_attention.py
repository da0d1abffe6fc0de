import math

import torch
import torch.nn.functional as F

from minigpt import GPTConfig
from minigpt.attention import Head, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from minigpt.kvcache import KVCache


def test_causal_mask_is_lower_triangle():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


def test_explicit_attention_matches_torch_and_rows_sum_to_one():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(10))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 10))
    assert torch.all(weights.triu(1) == 0)


def test_scaling_keeps_score_variance_near_one():
    torch.manual_seed(0)
    q, k = torch.randn(1000, 64), torch.randn(1000, 64)
    scores = (q * k).sum(-1) / math.sqrt(64)
    assert 0.8 < scores.var().item() < 1.2


def test_fused_and_explicit_multi_head_agree():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=10, context_length=32, d_model=48, num_heads=6)
    fused, explicit = MultiHeadAttention(config, fused=True), MultiHeadAttention(config, fused=False)
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(3, 32, 48)
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-6, rtol=1e-5)


def test_changing_a_later_token_never_changes_an_earlier_output():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=10, context_length=16, d_model=32, num_heads=4)
    for attention in (MultiHeadAttention(config, fused=True), MultiHeadAttention(config, fused=False)):
        x = torch.randn(1, 16, 32)
        changed = x.clone()
        changed[0, 9] += 5.0
        a, b = attention(x), attention(changed)
        torch.testing.assert_close(a[:, :9], b[:, :9])
        assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_single_head_matches_a_one_head_layer():
    torch.manual_seed(0)
    head = Head(d_model=16, head_size=16, context_length=8)
    x = torch.randn(2, 8, 16)
    q, k, v = head.query(x), head.key(x), head.value(x)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(head(x), expected)


def test_kv_cache_one_token_at_a_time_equals_full_pass():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=10, context_length=16, d_model=32, num_heads=4)
    for fused in (True, False):
        attention = MultiHeadAttention(config, fused=fused).eval()
        x = torch.randn(2, 12, 32)
        cache = KVCache(window=16)
        prefix = attention(x[:, :5], cache)
        steps = [attention(x[:, t:t + 1], cache) for t in range(5, 12)]
        torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), attention(x), atol=1e-6, rtol=1e-5)
        assert len(cache) == 12


def test_attention_weights_shape_and_rows():
    config = GPTConfig(vocab_size=10, context_length=16, d_model=32, num_heads=4)
    weights = MultiHeadAttention(config).attention_weights(torch.randn(2, 7, 32))
    assert weights.shape == (2, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
