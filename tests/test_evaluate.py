import math

import pytest
import torch

from minigpt import bits_per_byte, bits_per_char, perplexity
from minigpt.evaluate import evaluate_split


def test_perplexity_of_uniform_guess_is_vocab_size():
    assert perplexity(math.log(65)) == pytest.approx(65)


def test_bits_per_char_compares_tokenizers_fairly():
    # Same text (100 chars), same total information (100 * ln 2 nats = 100 bits), two tokenizations.
    assert bits_per_char(math.log(2), num_tokens=100, num_chars=100) == pytest.approx(1.0)
    assert bits_per_char(4 * math.log(2), num_tokens=25, num_chars=100) == pytest.approx(1.0)
    assert bits_per_byte(math.log(2), 10, 20) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_chars"):
        bits_per_char(1.0, 10, 0)


def _brute_force_loss(model, data, context_length):
    """Each target alone: the window it belongs to, from its start up to the target."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(data)):
            start = (t - 1) // context_length * context_length
            logits, _ = model(data[start:t].view(1, -1))
            total -= torch.log_softmax(logits[0, -1].double(), dim=-1)[data[t]].item()
    return total / (len(data) - 1)


@pytest.mark.parametrize("length", [50, 49, 17, 2])  # a short last window; none; one window; one target
def test_evaluate_split_is_the_mean_over_every_target(tiny_model, splits, length):
    data = splits[1][:length]
    expected = _brute_force_loss(tiny_model, data, 16)
    for batch_size in (1, 2, 64):
        assert evaluate_split(tiny_model, data, 16, batch_size) == pytest.approx(expected, rel=1e-5)


def test_evaluate_split_restores_the_mode_and_refuses_bad_input(tiny_model, splits):
    tiny_model.train()
    evaluate_split(tiny_model, splits[1][:40], 16)
    assert tiny_model.training and all(p.grad is None for p in tiny_model.parameters())
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_split(tiny_model, splits[1], 16, 0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        evaluate_split(tiny_model, splits[1][:1], 16)
