import math
import re

import pytest
import torch

from minigpt.data import (encode_corpus, get_batch, load_text, play_to_text, shakespeare,
                          train_val_split)


def test_shakespeare_is_deterministic_plain_speeches():
    text = shakespeare()
    assert 950_000 <= len(text) <= 1_000_000
    assert text == shakespeare.__wrapped__()  # rebuilt from the files, not only the cache
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    assert not set("*_#[]\\") & set(text)  # no Markdown left
    speeches = text.strip().split("\n\n")
    assert all(s.split("\n")[0].endswith(":") for s in speeches)
    assert len(shakespeare(0)) > 4_000_000


def test_play_to_text_drops_stage_directions():
    markdown = ("# Play\n\n## ACT I\n\n_Enter A and_  \n_B_\n\n**A**  \n_\\[Aside]_  \nHello,  \n"
                "world.\n\n_Exit_\n\n**B**  \nBye.\n")
    assert play_to_text(markdown) == "A:\nHello,\nworld.\n\nB:\nBye.\n"


def test_load_text_reads_utf8_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("héllo wörld\n", encoding="utf-8")
    assert load_text(path) == "héllo wörld\n"
    assert load_text("shakespeare") == shakespeare()


def test_load_text_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_text(tmp_path / "nope.txt")


def test_load_text_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(path)


def test_load_text_empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_text(path)


def test_encode_corpus_empty(char_tokenizer):
    with pytest.raises(ValueError, match="corpus is empty"):
        encode_corpus("", char_tokenizer)


def test_split_is_first_ninety_percent():
    data = torch.arange(100)
    train, val = train_val_split(data)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(data, 1.5)


def test_get_batch_shapes_shift_and_window():
    data = torch.arange(1000)
    x, y = get_batch(data, batch_size=8, context_length=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.long))  # contiguous windows


def test_get_batch_reaches_every_start_and_stays_in_bounds():
    data = torch.arange(20)
    x, y = get_batch(data, batch_size=2000, context_length=5, generator=torch.Generator().manual_seed(1))
    starts = set(x[:, 0].tolist())
    assert starts == set(range(15))  # 0 .. len - context_length - 1: all reachable
    assert y.max().item() == 19  # the last token is used as a target, never overrun


def test_get_batch_same_seed_same_batch():
    data = torch.arange(500)
    a = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(7))
    b = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_get_batch_too_short_corpus():
    with pytest.raises(ValueError, match=r"at least context_length \+ 1 = 9"):
        get_batch(torch.arange(8), 2, 8)


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("batch_size", -3), ("batch_size", True),
                                         ("batch_size", 2.0), ("context_length", False),
                                         ("context_length", "8")])
def test_get_batch_refuses_sizes_that_are_not_whole_numbers(splits, name, value):
    sizes = {"batch_size": 4, "context_length": 8, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be a whole number >= 1, got {value!r}"):
        get_batch(splits[0], **sizes)


def test_get_batch_refuses_data_that_is_not_token_ids(splits):
    for bad, found in [(splits[0].float(), "dtype torch.float32"), (splits[0][None], "shape (1, "),
                       (splits[0].tolist(), "a list"), (splits[0] > 3, "dtype torch.bool")]:
        with pytest.raises(ValueError, match=r"data must be a 1-D tensor of integer token ids"):
            get_batch(bad, 4, 8)
        with pytest.raises(ValueError, match=re.escape(found)):
            get_batch(bad, 4, 8)
    x, y = get_batch(splits[0].int(), 4, 8)  # int32 ids are ids too
    assert x.shape == y.shape == (4, 8)


def test_evaluation_counts_are_whole_numbers(tiny_model, splits):
    from minigpt.evaluate import bits_per_byte, bits_per_char, estimate_loss

    with pytest.raises(ValueError, match=r"eval_iters must be a whole number >= 1, got True"):
        estimate_loss(tiny_model, {"val": splits[1]}, True, 4, 8)
    with pytest.raises(ValueError, match=r"num_chars must be a whole number >= 1, got 0"):
        bits_per_char(1.0, 10, 0)
    with pytest.raises(ValueError, match=r"num_bytes must be a whole number >= 1, got 2.5"):
        bits_per_byte(1.0, 10, 2.5)
    assert bits_per_char(math.log(2), 10, 5) == pytest.approx(2.0, rel=1e-12)
