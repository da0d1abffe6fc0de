import pytest
import torch

from minigpt import generate, sample_text
from minigpt.config import SampleConfig
from minigpt.sampling import apply_penalties, generate_tokens, next_token, top_k_filter, top_p_filter

NEG = float("-inf")


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([[NEG, 5.0, NEG, 4.0, NEG]]))
    assert torch.equal(top_k_filter(logits, 99), logits)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.51) == [True, True, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-9) == [True, False, False, False]


def test_top_p_in_vocabulary_order():
    logits = torch.tensor([[0.1, 3.0, 0.2, 2.9]])
    assert torch.isfinite(top_p_filter(logits, 0.9))[0].tolist() == [False, True, False, True]


def test_penalties():
    logits = torch.zeros(1, 3)
    counts = torch.tensor([[0.0, 1.0, 3.0]])
    assert torch.equal(apply_penalties(logits, counts, 0.5, 1.0), torch.tensor([[0.0, -1.5, -2.5]]))


def test_temperature_zero_is_greedy_and_low_temperature_sharpens():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    assert next_token(logits, temperature=0).item() == 1
    g = torch.Generator().manual_seed(0)
    picks = [next_token(logits, temperature=0.05, generator=g).item() for _ in range(50)]
    assert picks == [1] * 50


@pytest.mark.parametrize("options, parameter", [
    (dict(temperature=-0.1), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(frequency_penalty=-1), "frequency_penalty"),
    (dict(presence_penalty=-1), "presence_penalty"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=True), "top_k"), (dict(frequency_penalty=float("inf")), "frequency_penalty"),
])
def test_bad_options_name_the_parameter(tiny_model, char_tokenizer, options, parameter):
    with pytest.raises(ValueError, match=parameter):
        generate(tiny_model, torch.zeros(1, 1, dtype=torch.long), 3, **options)
    with pytest.raises(ValueError, match=parameter):  # at the call, before any token is made
        sample_text(tiny_model, char_tokenizer, "A", 0, **options)


def test_empty_prompt_is_refused(tiny_model, char_tokenizer):
    with pytest.raises(ValueError, match="prompt"):
        generate(tiny_model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="prompt"):
        sample_text(tiny_model, char_tokenizer, "", 3)


SAMPLING = [dict(temperature=0), dict(temperature=1.0, top_k=10),
            dict(temperature=0.9, top_p=0.9, frequency_penalty=0.3, presence_penalty=0.2)]


def both_loops(model, prompt, new_tokens, **options):
    """(with the cache, without), same seed."""
    return [generate(model, prompt, new_tokens, generator=torch.Generator().manual_seed(1),
                     use_cache=use_cache, **options) for use_cache in (True, False)]


@pytest.mark.parametrize("options", SAMPLING)
def test_kv_cache_gives_the_plain_loops_tokens_within_the_window(tiny_model, options):
    """5-token prompt + 11 new tokens = context_length 16: every step fits in the window."""
    prompt = torch.randint(tiny_model.config.vocab_size, (3, 5), generator=torch.Generator().manual_seed(0))
    cached, plain = both_loops(tiny_model, prompt, 11, **options)
    assert cached.shape == (3, 16)
    assert torch.equal(cached, plain)


@torch.no_grad()
def plain_loop_with_context_lengths(model, prompt, lengths, temperature=1.0, top_k=None, top_p=None,
                                    frequency_penalty=0.0, presence_penalty=0.0):
    """The plain loop written out, but step i sees only the last lengths[i] tokens."""
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(prompt.size(0), model.config.vocab_size)
    seq = prompt
    for length in lengths:
        logits = model(seq[:, -length:])[0][:, -1]  # (B, V)
        logits = apply_penalties(logits, counts, frequency_penalty, presence_penalty)
        token = next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
        counts.scatter_add_(1, token, torch.ones_like(token, dtype=counts.dtype))
        seq = torch.cat([seq, token], dim=1)
    return seq


@pytest.mark.parametrize("options", SAMPLING)
def test_past_the_window_a_learned_position_cache_restarts_from_half_the_window(tiny_model, options):
    """Documented: the context grows from context_length // 2 to context_length, then starts again."""
    C = tiny_model.config.context_length  # 16
    prompt = torch.randint(tiny_model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    lengths = list(range(5, C + 1)) + 4 * list(range(C // 2, C + 1))  # 5..16, then 8..16 again and again
    expected = plain_loop_with_context_lengths(tiny_model, prompt, lengths[:40], **options)
    cached, plain = both_loops(tiny_model, prompt, 40, **options)
    assert torch.equal(cached, expected)
    assert torch.equal(cached[:, :C + 1], plain[:, :C + 1])  # within the window: the plain loop's


def test_a_prompt_longer_than_the_window_starts_from_its_last_context_length_tokens(tiny_model):
    C = tiny_model.config.context_length
    prompt = torch.randint(tiny_model.config.vocab_size, (1, 3 * C), generator=torch.Generator().manual_seed(2))
    lengths = [C] + list(range(C // 2, C + 1))
    expected = plain_loop_with_context_lengths(tiny_model, prompt, lengths[:6], temperature=0)
    cached, plain = both_loops(tiny_model, prompt, 6, temperature=0)
    assert torch.equal(cached, expected)
    assert torch.equal(cached[:, :3 * C + 1], plain[:, :3 * C + 1])


def test_a_smaller_context_length_crops_both_loops_alike(tiny_model):
    prompt = torch.randint(tiny_model.config.vocab_size, (2, 3), generator=torch.Generator().manual_seed(0))
    cached, plain = both_loops(tiny_model, prompt, 5, context_length=8, temperature=0.8)
    assert torch.equal(cached, plain)
    by_hand = plain_loop_with_context_lengths(tiny_model, prompt, [3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8],
                                              temperature=0)
    assert torch.equal(generate(tiny_model, prompt, 12, context_length=8, temperature=0, use_cache=False),
                       by_hand)


@pytest.mark.parametrize("bad", [0, -1, 17, 2.5, True, "8"])
def test_context_length_beyond_the_models_is_refused_by_name(tiny_model, bad):
    message = rf"context_length must be a whole number in \[1, 16\] \(the model's context_length\), got {bad!r}"
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.zeros(1, 1, dtype=torch.long), 3, context_length=bad)


def test_generate_takes_the_agreed_arguments_in_order(tiny_model):
    """The chapters and exercises rely on this order: (model, idx, max_new_tokens, context_length, ...)."""
    import inspect
    names = list(inspect.signature(generate).parameters)
    assert names == ["model", "idx", "max_new_tokens", "context_length", "temperature", "top_k", "top_p",
                     "frequency_penalty", "presence_penalty", "generator", "use_cache"]
    assert generate(tiny_model, torch.zeros(1, 2, dtype=torch.long), 3, 4, 0).shape == (1, 5)


def test_context_is_cropped_past_context_length(tiny_model):
    long_prompt = torch.zeros(1, 50, dtype=torch.long)  # 50 > context_length 16
    out = generate(tiny_model, long_prompt, 5, temperature=0)
    assert out.shape == (1, 55)


def test_generate_restores_training_mode(tiny_model):
    tiny_model.train()
    generate(tiny_model, torch.zeros(1, 1, dtype=torch.long), 2)
    assert tiny_model.training


def test_seed_reproduces_text(tiny_model, char_tokenizer):
    a = sample_text(tiny_model, char_tokenizer, "ROMEO:\n", 30, seed=5)
    b = sample_text(tiny_model, char_tokenizer, "ROMEO:\n", 30, seed=5)
    assert a == b and len(a) == 30


def test_stop_string_ends_generation(tiny_model, char_tokenizer):
    full = sample_text(tiny_model, char_tokenizer, "A", 60, seed=2, temperature=1.0)
    stop = full[10:12]
    cut = sample_text(tiny_model, char_tokenizer, "A", 60, seed=2, temperature=1.0, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_penalties_reduce_repetition(tiny_model, char_tokenizer):
    plain = sample_text(tiny_model, char_tokenizer, "A", 60, temperature=0)
    penalised = sample_text(tiny_model, char_tokenizer, "A", 60, temperature=0, frequency_penalty=2.0)
    assert len(set(penalised)) > len(set(plain))


@pytest.mark.parametrize("options, message", [
    (dict(frequency_penalty=1e300), r"frequency_penalty must be a finite number in \[0, 100\], got 1e\+300"),
    (dict(presence_penalty=float("inf")), r"presence_penalty must be a finite number in \[0, 100\]"),
    (dict(presence_penalty=True), r"presence_penalty must be a finite number"),
    (dict(temperature=1e300), r"temperature must be a finite number in \[0, 100\]"),
    (dict(temperature=1e-30), r"temperature must be 0 \(greedy\) or in \[0.01, 100\], got 1e-30"),
    (dict(temperature="0.5"), r"temperature must be a finite number"),
    (dict(top_p=float("nan")), r"top_p must be a finite number in \(0, 1\]"),
    (dict(top_k=2.5), r"top_k must be a whole number >= 1"),
])
def test_absurd_sampling_options_are_refused_by_name(tiny_model, options, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.zeros(1, 1, dtype=torch.long), 3, **options)


@pytest.mark.parametrize("bad, message", [(-1, r"max_new_tokens must be a whole number >= 0, got -1"),
                                          (2.5, r"max_new_tokens must be a whole number >= 0"),
                                          (True, r"max_new_tokens must be a whole number >= 0")])
def test_max_new_tokens_must_be_a_whole_number(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.zeros(1, 1, dtype=torch.long), bad)


def test_prompt_ids_out_of_range_are_refused_at_the_call(tiny_model):
    V = tiny_model.config.vocab_size
    with pytest.raises(ValueError, match=rf"idx\[0, 1\] = {V} is not a token id: idx must be in \[0, vocab_size={V}\)"):
        generate_tokens(tiny_model, torch.tensor([[0, V]]), SampleConfig(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"idx\[0, 0\] = -2 is not a token id"):
        generate(tiny_model, torch.tensor([[-2]]), 3)
    with pytest.raises(ValueError, match=r"idx must hold integer token ids"):
        generate(tiny_model, torch.tensor([[1.0]]), 3)
    with pytest.raises(ValueError, match=r"idx must be \(batch, time\).*got a list"):
        generate(tiny_model, [[1]], 3)


def test_sample_text_refuses_a_bare_stop_string_and_a_bad_seed(tiny_model, char_tokenizer):
    with pytest.raises(ValueError, match=r"stop must be a list of strings \(e.g. \['END'\] for one\)"):
        sample_text(tiny_model, char_tokenizer, "A", 3, stop="END")  # would stop at E, N or D
    for seed, message in ((True, "a whole number >= 0"), (-1, "a whole number >= 0"),
                          (2.5, "a whole number >= 0"), (2**64, "below 2\\*\\*64")):
        with pytest.raises(ValueError, match=rf"seed must be {message}, got {seed}"):
            sample_text(tiny_model, char_tokenizer, "A", 3, seed=seed)
    assert len(sample_text(tiny_model, char_tokenizer, "A", 3, seed=7, stop=["\x00"])) == 3


def test_a_huge_max_new_tokens_allocates_nothing_up_front(tiny_model):
    """With a stop string, max_new_tokens may be far more than what is generated: no buffer of that size."""
    for use_cache in (True, False):
        tokens = generate_tokens(tiny_model, torch.zeros(1, 1, dtype=torch.long),
                                 SampleConfig(max_new_tokens=10**12), use_cache=use_cache)
        assert [t.shape for t in (next(tokens), next(tokens))] == [(1, 1), (1, 1)]


@pytest.mark.parametrize("kind", ["char", "bpe", "cl100k"])
def test_sample_text_decodes_a_few_tokens_a_step_and_gives_the_whole_decode(kind, corpus):
    """Linear in the length: each step decodes a few tokens, not all of them (counted, not timed);
    the text (and where a stop string cuts it) is exactly that of decoding every new token at once,
    also where characters span several byte tokens."""
    from minigpt import GPT, GPTConfig
    from minigpt.tokenizers import train_tokenizer

    text = corpus[:4000] + "  café naïve 日本語 — “quotes” " * 20
    tokenizer = train_tokenizer(kind, text, 400)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, d_model=16,
                          num_heads=2, num_blocks=1))
    decoded = []
    real_decode = tokenizer.decode
    tokenizer.decode = lambda ids: decoded.append(len(ids)) or real_decode(ids)
    n = 200
    full = sample_text(model, tokenizer, "A", n, seed=1)
    assert sum(decoded) <= 10 * n  # a quadratic decode would sum to about n * n / 2 = 20,000
    tokenizer.decode = real_decode
    generate_ids = generate(model, torch.tensor([tokenizer.encode("A")]), n,
                            generator=torch.Generator().manual_seed(1))[0, 1:].tolist()
    assert full == tokenizer.decode(generate_ids)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    if stop:
        assert sample_text(model, tokenizer, "A", n, seed=1, stop=[stop]) == full[:full.index(stop)]
