"""The modern options of GPTConfig (chapter 8): each alone and all together, on tiny models."""

import itertools
import math

import pytest
import torch
from torch import nn

from minigpt import GPT, CharTokenizer, GPTConfig, generate
from minigpt.attention import scaled_dot_product_attention
from minigpt.kvcache import KVCache
from minigpt.model import rms_norm
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.config import ConfigError
from minigpt.rotary import apply_rotary

MODERN = dict(position="rotary", norm="rms", qk_norm=True, mlp="relu2", tie_weights=False, bias=False)
OPTIONS = {
    "today": {}, "rotary": dict(position="rotary"), "rms": dict(norm="rms"), "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"), "swiglu": dict(mlp="swiglu"), "untied": dict(tie_weights=False),
    "no_bias": dict(bias=False), "speedrun": MODERN, "speedrun_swiglu": dict(MODERN, mlp="swiglu"),
}
TOL = dict(atol=1e-5, rtol=1e-5)  # float32, sums over at most 64 numbers


def tiny(vocab_size=65, context_length=16, num_blocks=2, **options) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=32, num_heads=4,
                     num_blocks=num_blocks, **options)


def model_for(config: GPTConfig, fused: bool = True, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config, fused=fused).eval()


@pytest.fixture(params=list(OPTIONS), ids=list(OPTIONS))
def options(request):
    return OPTIONS[request.param]


# ----------------------------------------------------------------------------- each option alone

def test_forward_shapes_and_loss_at_initialisation(options):
    V = 65
    model = model_for(tiny(V, **options))
    idx = torch.randint(V, (4, 16), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, torch.randint(V, (4, 16), generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (4, 16, V)
    assert abs(loss.item() - math.log(V)) < 0.1  # ln 65 = 4.17: logits near zero at the start


def test_fused_and_explicit_attention_agree(options):
    config = tiny(**options)
    fused, explicit = model_for(config, fused=True), model_for(config, fused=False)
    explicit.load_state_dict(fused.state_dict())
    idx = torch.randint(65, (3, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fused(idx)[0], explicit(idx)[0], **TOL)


@pytest.mark.parametrize("fused", [True, False])
def test_cached_forward_equals_the_full_forward(options, fused):
    model = model_for(tiny(**options), fused=fused)
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(0))
    caches = model.new_kv_caches()
    first, _ = model(idx[:, :9], kv_caches=caches)
    rest = [model(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(9, 16)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), model(idx)[0], **TOL)


def test_checkpoint_round_trip_gives_the_same_logits(options, tmp_path):
    tokenizer = CharTokenizer.train("abcdefghij ")
    model = model_for(tiny(tokenizer.vocab_size, **options), seed=3)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, tokenizer)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    idx = torch.randint(tokenizer.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], atol=1e-6, rtol=0)
    tied = loaded.model.lm_head.weight is loaded.model.token_embedding.weight
    assert tied == model.config.tie_weights


@pytest.mark.parametrize("combo", list(itertools.product(
    ["learned", "rotary"], ["layer", "rms"], [False, True], ["gelu", "relu2", "swiglu"], [True, False],
    [True, False])), ids=lambda c: "-".join(map(str, c)))
def test_every_combination_caches_exactly_within_the_window(combo):
    """Greedy and seeded sampling: 6-token prompt + 10 new tokens fill context_length 16 exactly."""
    position, norm, qk_norm, mlp, tie_weights, bias = combo
    model = model_for(tiny(position=position, norm=norm, qk_norm=qk_norm, mlp=mlp,
                           tie_weights=tie_weights, bias=bias))
    prompt = torch.randint(65, (2, 6), generator=torch.Generator().manual_seed(0))
    for options in (dict(temperature=0), dict(temperature=1.0, top_p=0.95, presence_penalty=0.5)):
        cached, plain = (generate(model, prompt, 10, generator=torch.Generator().manual_seed(1),
                                  use_cache=use_cache, **options) for use_cache in (True, False))
        assert torch.equal(cached, plain), options


# ----------------------------------------------------------------------------- structure

def test_rotary_has_no_position_table_and_untied_has_its_own_head():
    model = model_for(tiny(**MODERN))
    assert model.position_embedding is None
    assert model.lm_head.weight is not model.token_embedding.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert all(isinstance(m, nn.RMSNorm) for m in (model.blocks[0].ln1, model.blocks[0].ln2, model.ln_f))
    torch.testing.assert_close(model.lm_head.weight.std().item(), 0.02, atol=0.002, rtol=0)


def test_parameter_count_of_the_speedrun_shape_by_hand():
    V, d, L = 65, 32, 2
    model = model_for(tiny(V, **MODERN))
    per_block = 2 * d + 4 * d * d + 8 * d * d  # two RMSNorm gains, qkv + proj, up + down
    expected = V * d + L * per_block + d + V * d  # embedding, blocks, final gain, untied head
    assert model.num_parameters() == expected
    assert model.num_parameters(include_embeddings=False) == expected - V * d


def test_swiglu_has_about_as_many_weights_as_gelu():
    gelu, swiglu = (model_for(tiny(mlp=mlp)).blocks[0].ffwd for mlp in ("gelu", "swiglu"))
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert swiglu.gate.out_features == 8 * 32 // 3
    assert abs(count(swiglu) - count(gelu)) / count(gelu) < 0.02


def test_an_old_checkpoint_without_the_new_fields_loads_as_todays_model(tmp_path, tiny_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "old.pt", tiny_model, char_tokenizer)
    payload = torch.load(path, weights_only=True)
    for name in ("position", "norm", "qk_norm", "mlp", "tie_weights"):
        del payload["config"][name]
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.config == tiny_model.config  # the defaults: learned, layer, no QK-norm, gelu, tied
    idx = torch.randint(tiny_model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.model(idx)[0], tiny_model(idx)[0], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("options, message", [
    (dict(position="absolute"), r"position must be one of learned, rotary, got 'absolute'"),
    (dict(norm="batch"), r"norm must be one of layer, rms, got 'batch'"),
    (dict(mlp="relu"), r"mlp must be one of gelu, relu2, swiglu, got 'relu'"),
    (dict(qk_norm="yes"), r"qk_norm must be True or False, got 'yes'"),
    (dict(tie_weights=1), r"tie_weights must be True or False, got 1"),
    (dict(bias=None), r"bias must be True or False, got None"),
    (dict(position="rotary", d_model=36, num_heads=4),
     r"position must be 'learned' when head_size = d_model // num_heads = 9 is odd"),
])
def test_bad_options_name_the_parameter(options, message):
    values = dict(vocab_size=10, context_length=8, d_model=32, num_heads=4, num_blocks=1)
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**dict(values, **options))


def test_rotary_refuses_an_odd_head_size_by_name():
    with pytest.raises(ValueError, match="head_size must be even for rotary embeddings"):
        apply_rotary(torch.randn(1, 4, 5), torch.arange(4))


# ----------------------------------------------------------------------------- the pieces

def test_rotary_scores_depend_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 8), torch.randn(1, 8)
    score = lambda p, s: (apply_rotary(q, torch.tensor([p])) * apply_rotary(k, torch.tensor([s]))).sum()
    for shift in (1, 7, 100):
        torch.testing.assert_close(score(3, 1), score(3 + shift, 1 + shift), atol=1e-4, rtol=1e-4)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3  # a different distance gives a different score


def test_rotary_keeps_lengths_and_position_zero_is_the_identity():
    x = torch.randn(2, 4, 6, 16)
    turned = apply_rotary(x, torch.arange(6))
    torch.testing.assert_close(turned.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(turned[..., 0, :], x[..., 0, :])


def test_qk_norm_gives_unit_root_mean_square():
    x = 50 * torch.randn(3, 4, 5, 8)
    torch.testing.assert_close(rms_norm(x).square().mean(-1), torch.ones(3, 4, 5), atol=1e-4, rtol=1e-4)


def test_rms_norm_takes_chapter_8s_weight_and_eps_and_matches_nn_rmsnorm():
    x, weight = torch.randn(3, 5, 8), torch.randn(8)
    norm = nn.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(weight)
    torch.testing.assert_close(rms_norm(x, weight), norm(x), **TOL)
    by_hand = x / (x.square().mean(-1, keepdim=True) + 0.5).sqrt()  # eps inside the square root
    torch.testing.assert_close(rms_norm(x, None, 0.5), by_hand, **TOL)
    torch.testing.assert_close(rms_norm(x, eps=0.5) * weight, rms_norm(x, weight, eps=0.5), **TOL)


def test_relu_squared_feed_forward():
    ffwd = model_for(tiny(mlp="relu2")).blocks[0].ffwd
    x = torch.randn(2, 3, 32)
    expected = ffwd.down(torch.relu(ffwd.up(x)) ** 2)
    torch.testing.assert_close(ffwd(x), expected)


# ----------------------------------------------------------------------------- the cache itself

def test_cache_buffers_are_allocated_once_and_written_in_place():
    cache = KVCache(window=8)
    cache.append(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    pointer = cache.k.data_ptr()
    for _ in range(5):
        cache.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    assert cache.k.data_ptr() == pointer and cache.k.shape == (1, 2, 8, 4) and len(cache) == 8
    with pytest.raises(ValueError, match=r"the KV cache holds 8 tokens; 1 more would exceed its window of 8"):
        cache.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))


def test_a_cache_refuses_another_batch_size_by_name():
    cache = KVCache(window=8)
    cache.append(torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4))
    with pytest.raises(ValueError, match=r"the KV cache holds batch size 2, got a batch of 3"):
        cache.append(torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))


def test_hand_made_caches_that_do_not_fit_the_model_are_refused_by_name():
    model = model_for(tiny(context_length=8))  # two blocks, learned positions up to 8
    idx = torch.zeros(1, 4, dtype=torch.long)
    for caches in ([KVCache(20), KVCache(20)], [KVCache(8)]):
        with pytest.raises(ValueError, match=r"kv_caches must hold one cache per block \(2\), each with "
                                             r"a window of at most context_length=8"):
            model(idx, kv_caches=caches)


def test_a_sliding_cache_shows_the_last_window_tokens_in_order():
    cache = KVCache(window=4, slide=True)
    keys = torch.arange(11.0).view(1, 1, 11, 1)  # token t's key is t
    for t in range(11):
        k, v = cache.append(keys[:, :, t:t + 1], -keys[:, :, t:t + 1])
        expected = torch.arange(max(0, t - 3), t + 1.0)
        assert torch.equal(k.flatten(), expected) and torch.equal(v.flatten(), -expected), t
    assert cache.seen == 11 and len(cache) == 4 and cache.k.shape[2] == 8
    with pytest.raises(ValueError, match="window of 4"):  # two at once would hide keys from the first
        cache.append(keys[:, :, :2], keys[:, :, :2])


def test_past_the_window_a_one_block_rotary_model_gives_the_plain_loops_tokens():
    """One block: its keys depend on the token alone, so a sliding cache is exactly the plain loop."""
    model = model_for(tiny(num_blocks=1, context_length=8, **MODERN))
    prompt = torch.randint(65, (2, 3), generator=torch.Generator().manual_seed(0))
    for options in (dict(temperature=0), dict(temperature=1.0, top_k=20, frequency_penalty=0.2)):
        cached, plain = (generate(model, prompt, 30, generator=torch.Generator().manual_seed(1),
                                  use_cache=use_cache, **options) for use_cache in (True, False))
        assert torch.equal(cached, plain), options


@torch.no_grad()
def sliding_window_logits(model: GPT, idx: torch.Tensor, window: int) -> torch.Tensor:
    """The whole text through a rotary model, each query seeing itself and the window - 1 tokens before."""
    N = idx.size(1)
    rows, cols = torch.arange(N)[:, None], torch.arange(N)[None, :]
    band = (cols <= rows) & (cols > rows - window)  # (N, N)
    x = model.token_embedding(idx)
    for block in model.blocks:
        q, k, v = block.attn._split_heads(block.ln1(x))  # positions 0..N-1
        out, _ = scaled_dot_product_attention(q, k, v, band)
        x = x + block.attn.proj(out.transpose(1, 2).reshape(x.shape))
        x = x + block.ffwd(block.ln2(x))
    return model.lm_head(model.ln_f(x))


def test_past_the_window_a_rotary_cache_equals_sliding_window_attention():
    """Several blocks: greedy tokens are those of the whole text under a sliding-window mask."""
    model = model_for(tiny(context_length=8, **MODERN))
    prompt = torch.randint(65, (1, 3), generator=torch.Generator().manual_seed(0))
    cached = generate(model, prompt, 25, temperature=0)
    expected = prompt
    for _ in range(25):
        token = sliding_window_logits(model, expected, 8)[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, token], dim=1)
    assert torch.equal(cached, expected)


def test_rotary_angles_stay_float32_in_a_bfloat16_model():
    model = model_for(tiny(**MODERN))
    idx = torch.randint(65, (1, 16), generator=torch.Generator().manual_seed(0))
    expected = model(idx)[0]
    low = model_for(tiny(**MODERN)).to(torch.bfloat16)
    assert low.blocks[0].attn._rotary_frequencies(idx.device).dtype == torch.float32
    # bfloat16 keeps ~3 significant digits: logits near 0 agree to about 0.05
    torch.testing.assert_close(low(idx)[0].float(), expected, atol=0.05, rtol=0.05)


def test_neighbour_paired_rotary_weights_load_by_reordering_each_heads_rows():
    """rotary.py's recipe: a model that turns pairs (x[2i], x[2i + 1]) (the RoFormer paper's way)
    gives the same scores as minigpt's half-split pairs once each head's query and key rows are
    reordered [0, 2, 4, ..., 1, 3, 5, ...]."""
    torch.manual_seed(0)
    T, d = 6, 8
    q, k = torch.randn(T, d), torch.randn(T, d)
    positions = torch.arange(T)
    angles = positions[:, None].float() * 10_000.0 ** (-torch.arange(0, d, 2).float() / d)  # (T, d/2)

    def neighbour_rotary(x):  # pairs (x[2i], x[2i + 1]) turned by angle i
        even, odd = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = even * angles.cos() - odd * angles.sin()
        out[:, 1::2] = even * angles.sin() + odd * angles.cos()
        return out

    order = list(range(0, d, 2)) + list(range(1, d, 2))
    theirs = neighbour_rotary(q) @ neighbour_rotary(k).T
    ours = apply_rotary(q[:, order], positions) @ apply_rotary(k[:, order], positions).T
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
