"""Grader for chapter 1: exercises/ex01_tokenization.py."""

import pytest

from _cases import SAMPLE_TEXT, SNAPSHOT_CASES, random_id_lists
from _grading import assert_equal_seq, assert_number, check, fail, load_snapshot

SNAPSHOT = load_snapshot("ex01_tokenization")
CASES = SNAPSHOT_CASES["ex01_tokenization"]


@pytest.mark.points(1)
def test_build_vocab_is_sorted_unique_characters(ex):
    for text in ["hello world", "zzz aaa\n!", SAMPLE_TEXT]:
        stoi, itos = ex.build_vocab(text)
        check(isinstance(stoi, dict) and isinstance(itos, dict),
              f"build_vocab should return two dicts (stoi, itos), got {type(stoi).__name__}, {type(itos).__name__}")
        chars = sorted(set(text))
        for i, ch in enumerate(chars):
            check(stoi.get(ch) == i, f"build_vocab({text!r}): stoi[{ch!r}] should be {i} "
                                     f"(distinct characters, sorted, the first gets 0), got {stoi.get(ch)!r}")
            check(itos.get(i) == ch, f"build_vocab({text!r}): itos[{i}] should be {ch!r}, got {itos.get(i)!r}")
        check(len(stoi) == len(chars) and len(itos) == len(chars),
              f"build_vocab({text!r}): expected {len(chars)} entries (one per distinct character), "
              f"got {len(stoi)} in stoi and {len(itos)} in itos")


@pytest.mark.points(1)
def test_encode_and_decode_use_the_given_vocabulary(ex):
    # A vocabulary that is deliberately not sorted: encode must use the one it is given.
    stoi = {"b": 0, "a": 1, " ": 2, "c": 3, "!": 4}
    itos = {i: ch for ch, i in stoi.items()}
    text = "abc cab!"
    assert_equal_seq(ex.encode(text, stoi), [stoi[ch] for ch in text], f"encode({text!r})")
    assert_equal_seq(ex.decode([3, 1, 0, 2, 4, 4], itos), "cab !!", "decode([3, 1, 0, 2, 4, 4])")
    assert_equal_seq(ex.encode("", stoi), [], "encode('')")
    stoi2 = {ch: i for i, ch in enumerate(sorted(set(SAMPLE_TEXT)))}
    itos2 = {i: ch for ch, i in stoi2.items()}
    assert_equal_seq(ex.decode(ex.encode(SAMPLE_TEXT, stoi2), itos2), SAMPLE_TEXT, "decode(encode(text))")


@pytest.mark.points(2)
def test_most_frequent_pair_counts_and_breaks_ties(ex):
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), "the pair (1, 2) occurs twice"),
        ([7, 7, 7, 1, 2, 1, 2], (7, 7), "overlapping pairs count: [7, 7, 7] holds (7, 7) twice, "
                                       "and on a tie the pair that occurs first wins"),
        ([5, 6, 7, 8, 7, 8, 5, 6], (5, 6), "tie between (5, 6) and (7, 8): the first to occur wins"),
        ([1, 2, 9, 9, 1, 2, 9, 9], (1, 2), "tie between (1, 2), (2, 9) and (9, 9): the first to occur wins"),
        ([3, 4], (3, 4), "a list of two ids has one pair"),
    ]
    for ids, expected, why in cases:
        got = ex.most_frequent_pair(list(ids))
        check(isinstance(got, tuple), f"most_frequent_pair should return a tuple, got {type(got).__name__}")
        check(got == expected, f"most_frequent_pair({ids}) should be {expected} ({why}), got {got}")
    for ids, expected in zip(random_id_lists(1), SNAPSHOT["pairs_of_random_lists"]):
        got = ex.most_frequent_pair(list(ids))
        check(list(got) == expected, f"most_frequent_pair({ids}) should be {tuple(expected)}, got {got}")


@pytest.mark.points(2)
def test_merge_replaces_every_occurrence_left_to_right(ex):
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]),
        ([7, 7, 7], (7, 7), 9, [9, 7]),
        ([7, 7, 7, 7], (7, 7), 9, [9, 9]),
        ([1, 3, 2, 1], (1, 2), 9, [1, 3, 2, 1]),
        ([4, 1, 2], (1, 2), 9, [4, 9]),
        ([1], (1, 2), 9, [1]),
    ]
    for ids, pair, new_id, expected in cases:
        original = list(ids)
        got = ex.merge(ids, pair, new_id)
        assert_equal_seq(got, expected, f"merge({original}, {pair}, {new_id})")
        check(ids == original, f"merge({original}, ...) changed its input list to {ids}: build a new list instead")
    for ids, expected in zip(random_id_lists(2), SNAPSHOT["merges_of_random_lists"]):
        assert_equal_seq(ex.merge(list(ids), (ids[1], ids[2]), 99), expected, f"merge({ids}, {(ids[1], ids[2])}, 99)")


@pytest.mark.points(1)
def test_tokens_per_char(ex):
    text = "the cat sat"
    assert_number(ex.tokens_per_char(list, text), 1.0, "tokens_per_char(one token per character)")
    assert_number(ex.tokens_per_char(str.split, text), 3 / 11, "tokens_per_char(one token per word, 'the cat sat')")
    assert_number(ex.tokens_per_char(lambda s: [0] * (2 * len(s)), "abc"), 2.0, "tokens_per_char(two tokens per character)")


@pytest.mark.points(1)
def test_six_bpe_rounds_match_the_reference(ex):
    got = CASES["bpe_rounds"](ex)
    expected = SNAPSHOT["bpe_rounds"]
    for round_, (g, e) in enumerate(zip(got["pairs"], expected["pairs"])):
        if g != e:
            fail(f"BPE on the sample text: merge round {round_} picked the pair {tuple(g)}, expected {tuple(e)}")
    assert_equal_seq(got["ids"], expected["ids"], "ids after six BPE rounds")
