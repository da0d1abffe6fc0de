"""Grader for chapter 1: exercises/ex01_tokenization.py.

The texts mix upper and lower case, accents, Chinese and whitespace at the
edges, and the ids go past 9 (so ``11`` and ``1, 1`` differ), because a
tokenizer must work on any text, not only on lower-case ASCII.
"""

import pytest

from _grader.cases import SAMPLE_TEXT, random_id_lists
from _grader.grading import assert_equal_seq, assert_number, check, fail

TEXTS = ["hello world", "zzz aaa\n!", "Hello World", "  Café, naïve — 中文！ \t\n", SAMPLE_TEXT]


def probe_tokens_per_char(m, tokenizer: str, text: str):
    """Runs in the worker: tokens_per_char with one of a few known tokenizers."""
    encoders = {"characters": list, "words": str.split, "two per character": lambda s: [0] * (2 * len(s))}
    return m.tokens_per_char(encoders[tokenizer], text)


@pytest.mark.points(1)
def test_build_vocab_is_sorted_unique_characters(ex):
    for text in TEXTS:
        stoi, itos = ex.build_vocab(text)
        check(isinstance(stoi, dict) and isinstance(itos, dict),
              f"build_vocab should return two dicts (stoi, itos), got {type(stoi).__name__}, {type(itos).__name__}")
        chars = sorted(set(text))
        for i, ch in enumerate(chars):
            check(stoi.get(ch) == i, f"build_vocab({text!r}): stoi[{ch!r}] should be {i} (distinct characters, "
                                     f"sorted, the first gets 0; keep the case and every character), "
                                     f"got {stoi.get(ch)!r}")
            check(itos.get(i) == ch, f"build_vocab({text!r}): itos[{i}] should be {ch!r}, got {itos.get(i)!r}")
        check(len(stoi) == len(chars) and len(itos) == len(chars),
              f"build_vocab({text!r}): expected {len(chars)} entries (one per distinct character), "
              f"got {len(stoi)} in stoi and {len(itos)} in itos")


@pytest.mark.points(1)
def test_encode_and_decode_use_the_given_vocabulary(ex):
    # A vocabulary that is deliberately not sorted: encode must use the one it is given.
    stoi = {"b": 0, "a": 1, " ": 2, "c": 3, "!": 4, "\n": 5, "é": 6, "中": 7, "B": 8}
    itos = {i: ch for ch, i in stoi.items()}
    for text in ["abc cab!", " Bé中 \n", ""]:
        assert_equal_seq(ex.encode(text, stoi), [stoi[ch] for ch in text], f"encode({text!r}, stoi)")
    for ids in ([3, 1, 0, 2, 4, 4], [2, 8, 6, 7, 2, 5], [5, 5, 2]):
        expected = "".join(itos[i] for i in ids)
        assert_equal_seq(ex.decode(ids, itos), expected,
                         f"decode({ids}, itos) (every character kept, spaces and newlines at the edges included)")
    stoi2 = {ch: i for i, ch in enumerate(sorted(set(TEXTS[3])))}
    itos2 = {i: ch for ch, i in stoi2.items()}
    ids = ex.encode(TEXTS[3], stoi2)
    assert_equal_seq(ex.decode(ids, itos2), TEXTS[3], f"decode(encode({TEXTS[3]!r}))")


@pytest.mark.points(2)
def test_most_frequent_pair_counts_and_breaks_ties(ex):
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), "the pair (1, 2) occurs twice"),
        ([7, 7, 7, 1, 2, 1, 2], (7, 7), "overlapping pairs count: [7, 7, 7] holds (7, 7) twice, "
                                       "and on a tie the pair that occurs first wins"),
        ([5, 6, 7, 8, 7, 8, 5, 6], (5, 6), "tie between (5, 6) and (7, 8): the first to occur wins"),
        ([1, 2, 9, 9, 1, 2, 9, 9], (1, 2), "tie between (1, 2), (2, 9) and (9, 9): the first to occur wins"),
        ([3, 4], (3, 4), "a list of two ids has one pair"),
        ([11, 2, 1, 12, 11, 2], (11, 2), "ids are numbers, not digits: (11, 2) occurs twice, (1, 12) once"),
    ]
    for ids, expected, why in cases:
        got = ex.most_frequent_pair(list(ids))
        check(isinstance(got, tuple), f"most_frequent_pair({ids}) should return a tuple, got {type(got).__name__}")
        check(got == expected, f"most_frequent_pair({ids}) should be {expected} ({why}), got {got}")
    got_all, expected_all = ex.case("pairs_of_random_lists")
    for ids, got, expected in zip(random_id_lists(ex.case_seed("pairs_of_random_lists")), got_all, expected_all):
        check(list(got) == expected, f"most_frequent_pair({ids}) should be {tuple(expected)}, got {tuple(got)}")


@pytest.mark.points(3)
def test_merge_replaces_every_occurrence_left_to_right(ex):
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]),
        ([7, 7, 7], (7, 7), 9, [9, 7]),
        ([7, 7, 7, 7], (7, 7), 9, [9, 9]),
        ([1, 3, 2, 1], (1, 2), 9, [1, 3, 2, 1]),
        ([4, 1, 2], (1, 2), 9, [4, 9]),
        ([1], (1, 2), 9, [1]),
        ([11, 2], (1, 2), 9, [11, 2]),
        ([1, 21, 2, 1, 2], (1, 2), 30, [1, 21, 2, 30]),
        ([12, 12, 1, 2], (12, 1), 5, [12, 5, 2]),
    ]
    for ids, pair, new_id, expected in cases:
        got = ex.merge(list(ids), pair, new_id)  # the call fails if it changes its input list
        assert_equal_seq(got, expected, f"merge({ids}, {pair}, {new_id}) (ids are whole numbers, compare them "
                                        f"as numbers)")
    got_all, expected_all = ex.case("merges_of_random_lists")
    for ids, got, expected in zip(random_id_lists(ex.case_seed("merges_of_random_lists")), got_all, expected_all):
        assert_equal_seq(got, expected, f"merge({ids}, {(ids[1], ids[2])}, 99)")


@pytest.mark.points(1)
def test_tokens_per_char(ex):
    for tokenizer, text, expected in [
        ("characters", "the cat sat", 1.0),
        ("words", "the cat sat", 3 / 11),
        ("two per character", "abc", 2.0),
        ("characters", "héllo 中文", 1.0),
        ("words", "Café 中文 naïve", 3 / len("Café 中文 naïve")),
    ]:
        got = ex.probe(probe_tokens_per_char, tokenizer, text,
                       describe=f"tokens_per_char(<one token per {tokenizer.removesuffix('s')}>, {text!r})")
        assert_number(got, expected, f"tokens_per_char(one token per {tokenizer.removesuffix('s')}, {text!r}) "
                                     f"(tokens / characters, len(text) counts characters, not UTF-8 bytes)")


@pytest.mark.points(2)
def test_six_bpe_rounds_match_the_reference(ex):
    got, expected = ex.case("bpe_rounds")
    for round_, (g, e) in enumerate(zip(got["pairs"], expected["pairs"])):
        if list(g) != e:
            fail(f"BPE on the sample text: merge round {round_} picked the pair {tuple(g)}, expected {tuple(e)}")
    assert_equal_seq(list(got["ids"]), expected["ids"], "ids after six BPE rounds")
