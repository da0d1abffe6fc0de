import math

import pytest

from minigpt import bits_per_byte, bits_per_char, perplexity


def test_perplexity_of_uniform_guess_is_vocab_size():
    assert perplexity(math.log(65)) == pytest.approx(65)


def test_bits_per_char_compares_tokenizers_fairly():
    # Same text (100 chars), same total information (100 * ln 2 nats = 100 bits), two tokenizations.
    assert bits_per_char(math.log(2), num_tokens=100, num_chars=100) == pytest.approx(1.0)
    assert bits_per_char(4 * math.log(2), num_tokens=25, num_chars=100) == pytest.approx(1.0)
    assert bits_per_byte(math.log(2), 10, 20) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_chars"):
        bits_per_char(1.0, 10, 0)
