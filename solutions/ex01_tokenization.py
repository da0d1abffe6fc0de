"""Chapter 1 exercises: characters to ids, and the first steps of byte-pair encoding.

A tokenizer turns text into a list of integers (token ids) and back. The
simplest one gives every distinct character its own id. Byte-pair encoding
(BPE) then shortens the list by repeatedly replacing the most frequent pair
of neighbouring ids with one new id.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable


def build_vocab(text: str) -> tuple[dict[str, int], dict[int, str]]:
    """Build a character-level vocabulary from ``text``.

    The vocabulary is the sorted list of distinct characters in ``text``:
    the smallest character (by ``sorted``) gets id 0, the next id 1, and so on.

    Args:
        text: any string (not empty).

    Returns:
        ``(stoi, itos)``: ``stoi`` maps each character to its id, ``itos``
        maps each id back to its character (``itos[stoi[c]] == c``).
    """
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    return stoi, itos


def encode(text: str, stoi: dict[str, int]) -> list[int]:
    """Turn ``text`` into a list of ids, one per character.

    Args:
        text: a string of length n whose characters are all in ``stoi``.
        stoi: character -> id, as returned by ``build_vocab``.

    Returns:
        A list of n ints.
    """
    return [stoi[ch] for ch in text]


def decode(ids: list[int], itos: dict[int, str]) -> str:
    """Turn a list of ids back into text (the inverse of ``encode``).

    Args:
        ids: a list of n ints, each a key of ``itos``.
        itos: id -> character, as returned by ``build_vocab``.

    Returns:
        A string of length n.
    """
    return "".join(itos[i] for i in ids)


def most_frequent_pair(ids: list[int]) -> tuple[int, int]:
    """Find the pair of neighbouring ids that occurs most often in ``ids``.

    Every adjacent pair ``(ids[i], ids[i + 1])`` is counted, overlapping ones
    included: ``[7, 7, 7]`` holds the pair ``(7, 7)`` twice.

    Tie rule: when several pairs share the highest count, return the one whose
    first occurrence comes earliest in ``ids``.

    Args:
        ids: a list of at least 2 ints.

    Returns:
        The pair as a tuple of two ints.
    """
    counts = Counter(zip(ids, ids[1:]))
    # Counter keeps first-insertion order and max() returns the first maximum,
    # so ties go to the pair that occurs first.
    return max(counts, key=counts.__getitem__)


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``.

    Scan from left to right; when ``ids[i], ids[i + 1]`` equals ``pair``,
    write ``new_id`` and jump over both. So ``merge([7, 7, 7], (7, 7), 9)``
    gives ``[9, 7]``. The input list is not modified.

    Args:
        ids: a list of n ints.
        pair: the two ids to merge.
        new_id: the id that replaces them.

    Returns:
        A new list of at most n ints.
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def tokens_per_char(encode_fn: Callable[[str], list[int]], text: str) -> float:
    """How many tokens ``encode_fn`` spends per character of ``text``.

    A character tokenizer gives exactly 1.0; a tokenizer that merges common
    pieces gives less. Lower means shorter sequences for the same text.

    Args:
        encode_fn: a function str -> list of ids.
        text: a non-empty string.

    Returns:
        ``len(encode_fn(text)) / len(text)`` as a float.
    """
    return len(encode_fn(text)) / len(text)
