import math

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.model import parameter_table


def test_logits_shape_and_loss(tiny_model, tiny_config, splits):
    x = splits[0][:32].view(2, 16)
    logits, loss = tiny_model(x)
    assert logits.shape == (2, 16, tiny_config.vocab_size) and loss is None
    _, loss = tiny_model(x, x)
    assert loss.dim() == 0


@pytest.mark.parametrize("vocab_size", [65, 512, 100277])
def test_loss_at_initialisation_is_ln_vocab_size(vocab_size):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=32, d_model=64, num_heads=4, num_blocks=2))
    idx = torch.randint(vocab_size, (4, 32))
    _, loss = model(idx, torch.randint(vocab_size, (4, 32)))
    assert abs(loss.item() - math.log(vocab_size)) < 0.1


def test_sequence_longer_than_context_is_refused(tiny_model):
    with pytest.raises(ValueError, match=r"sequence length 17 is longer than context_length=16"):
        tiny_model(torch.zeros(1, 17, dtype=torch.long))


def test_bad_idx_is_refused(tiny_model):
    with pytest.raises(ValueError, match="idx must be a"):
        tiny_model(torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"idx must be a \(batch, time\) tensor of integer token ids, got "
                                         r"shape \(1, 4\) and dtype torch.float32"):
        tiny_model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="idx must be a .* tensor of integer token ids, got a list"):
        tiny_model([[1, 2]])


@pytest.mark.parametrize("bad", ["vocab_size", 1000, -1])
def test_token_ids_out_of_range_are_named_where_they_enter(tiny_model, char_tokenizer, splits, bad):
    """Checked at the boundaries (generate, the trainer's data), not in every forward pass."""
    from minigpt import TrainConfig, Trainer, generate
    from minigpt.model import check_token_ids

    V = tiny_model.config.vocab_size
    bad = V if bad == "vocab_size" else bad
    idx = torch.ones(2, 5, dtype=torch.long)
    idx[1, 3] = bad
    message = rf"idx\[1, 3\] = {bad} is not a token id: idx must be in \[0, vocab_size={V}\)"
    with pytest.raises(ValueError, match=message):
        check_token_ids(idx, V, "idx")
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, idx, 2)
    with pytest.raises(ValueError, match=r"targets must hold integer token ids"):
        check_token_ids(idx.float(), V, "targets")
    data = splits[0].clone()
    data[100] = bad
    with pytest.raises(ValueError, match=rf"the training split\[100\] = {bad} is not a token id"):
        Trainer(tiny_model, char_tokenizer, data, splits[1], TrainConfig(device="cpu"), progress=False)
    assert tiny_model(idx.clamp(0, V - 1))[0].shape == (2, 5, V)  # in range: fine


def test_parameter_count_by_hand():
    V, T, d, L = 65, 64, 128, 4
    model = GPT(GPTConfig(vocab_size=V, context_length=T, d_model=d, num_heads=4, num_blocks=L))
    per_block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    expected = V * d + T * d + L * per_block + 2 * d  # output layer tied to the token embedding
    assert model.num_parameters() == expected
    assert model.num_parameters(include_embeddings=False) == expected - V * d - T * d
    table = dict(parameter_table(model))
    assert table["total"] == expected
    assert sum(v for k, v in table.items() if k != "total") == expected


def test_ffn_width_norm_eps_and_rotary_base_are_settings_whose_defaults_keep_the_model(tiny_config):
    """Another model's shapes load without patching modules; not set, nothing changes."""
    base = tiny_config.to_dict()
    default = GPT(GPTConfig(**base))
    assert default.blocks[0].ffwd.up.out_features == 4 * 32 and default.ln_f.eps == 1e-5
    swiglu = GPT(GPTConfig(**{**base, "mlp": "swiglu", "norm": "rms"}))
    assert swiglu.blocks[0].ffwd.gate.out_features == 8 * 32 // 3 and swiglu.ln_f.eps == 1e-6
    other = GPT(GPTConfig(**{**base, "mlp": "swiglu", "norm": "rms", "ffn_width": 48,
                             "norm_eps": 1e-5, "position": "rotary", "rotary_base": 500.0,
                             "qk_norm": True}))
    assert other.blocks[0].ffwd.up.weight.shape == (48, 32) and other.ln_f.eps == 1e-5
    attention = other.blocks[0].attn
    assert attention.qk_norm_eps == 1e-5 and attention.rotary_base == 500.0
    torch.testing.assert_close(attention._rotary_frequencies(torch.device("cpu"))[1],
                               torch.tensor(500.0 ** (-2 / 8)))
    assert other(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, tiny_config.vocab_size)


def test_output_layer_is_tied_to_embedding(tiny_model):
    assert tiny_model.lm_head.weight is tiny_model.token_embedding.weight


def test_kv_cache_forward_equals_full_forward(tiny_model):
    idx = torch.randint(tiny_model.config.vocab_size, (2, 16))
    caches = tiny_model.new_kv_caches()
    first, _ = tiny_model(idx[:, :10], kv_caches=caches)
    rest = [tiny_model(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(10, 16)]
    full, _ = tiny_model(idx)
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context_length=16"):
        tiny_model(idx[:, :1], kv_caches=caches)


def test_same_seed_same_numbers(tiny_config):
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = GPT(tiny_config)
        outs.append(model(torch.arange(16).view(1, 16) % tiny_config.vocab_size)[0])
    assert torch.equal(outs[0], outs[1])


def test_last_only_gives_the_last_position(tiny_model):
    idx = torch.randint(tiny_model.config.vocab_size, (2, 16))
    last, _ = tiny_model(idx, last_only=True)
    assert last.shape == (2, 1, tiny_model.config.vocab_size)
    torch.testing.assert_close(last, tiny_model(idx)[0][:, -1:])


def test_kv_cache_windows_are_checked(tiny_model):
    with pytest.raises(ValueError, match=r"window must be in \[1, context_length=16\], got 17"):
        tiny_model.new_kv_caches(17)
    with pytest.raises(ValueError, match=r"window must be in \[1, context_length=16\], got 0"):
        tiny_model.new_kv_caches(0)
    caches = tiny_model.new_kv_caches(4)
    tiny_model(torch.zeros(1, 3, dtype=torch.long), kv_caches=caches)
    with pytest.raises(ValueError, match=r"sequence length 5 is longer than context_length=4"):
        tiny_model(torch.zeros(1, 2, dtype=torch.long), kv_caches=caches)


def test_a_sliding_cache_takes_one_token_at_a_time_past_the_window(tiny_config):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**dict(tiny_config.to_dict(), position="rotary"))).eval()
    caches = model.new_kv_caches()
    model(torch.zeros(1, 16, dtype=torch.long), kv_caches=caches)
    assert model(torch.zeros(1, 1, dtype=torch.long), kv_caches=caches)[0].shape == (1, 1, tiny_config.vocab_size)
    assert len(caches[0]) == 16 and caches[0].seen == 17
    with pytest.raises(ValueError, match=r"sequence length 18 is longer than context_length=16"):
        model(torch.zeros(1, 2, dtype=torch.long), kv_caches=caches)
