"""How good is the model? Average loss on held-out text, and the same number in fairer units.

The loss is the mean negative log-probability (in nats) the model gives each next token. Its size
depends on what a token is: a character model and a cl100k model see different numbers of tokens
for the same text. Bits per character divides the total information by the number of characters
instead, so two tokenizers can be compared on the same text.

Token shards (`minigpt prepare`) hold ids, not text: `evaluate_shards` reads them through
`np.memmap` one batch of windows at a time, and reports bits per character only where the ids say
how many characters they stand for (the character tokenizer: one each).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minigpt.config import DataConfig
from minigpt.data import (check_whole_number, data_source, encode_corpus, get_batch, load_text,
                          train_val_split)
from minigpt.errors import MinigptError
from minigpt.shards import META, TokenShards


@torch.no_grad()
def estimate_loss(model: nn.Module, splits: dict[str, torch.Tensor], eval_iters: int,
                  batch_size: int, context_length: int, generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean loss over `eval_iters` random batches of each split, e.g. {'train': 1.92, 'val': 2.01}.

    Runs in eval mode (dropout off) without building a graph, then puts the model back in the mode
    it was in, so a training loop can call it in the middle of training.
    """
    check_whole_number("eval_iters", eval_iters)
    was_training = model.training
    model.eval()
    try:
        result = {}
        for name, data in splits.items():
            losses = torch.zeros(eval_iters)
            for i in range(eval_iters):
                x, y = get_batch(data, batch_size, context_length, generator=generator, device=device)
                _, loss = model(x, y)
                losses[i] = loss.item()
            result[name] = losses.mean().item()
        return result
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_split(model: nn.Module, data: torch.Tensor | np.ndarray, context_length: int,
                   batch_size: int = 64, device: str | torch.device = "cpu") -> float:
    """Mean loss (nats per token) over every target of `data`, not a sample of random windows.

    The ids are cut into windows of context_length that do not overlap, so each token from the
    second on is predicted exactly once; the last, shorter window holds what is left. A token is
    predicted from the tokens since its window began, so the first positions of each window see
    little context: the figure is a little higher than with a sliding window, and the same for
    every model. `batch_size` windows go through the model at once. `data` is a 1-D tensor of ids
    or a 1-D NumPy array of them (a memmap of token shards: only one batch of windows is read at a
    time). Eval mode, no graph; the model's mode is restored afterwards.
    """
    check_whole_number("context_length", context_length)
    check_whole_number("batch_size", batch_size)
    if len(data) < 2:
        raise MinigptError(f"data must hold at least 2 tokens (an input and its target), got "
                         f"{len(data)}")
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for x, y in _windows(data, context_length, batch_size):
            logits, _ = model(x.to(device))
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(),
                                     reduction="sum").item()
        return total / (len(data) - 1)
    finally:
        model.train(was_training)


def _windows(data: torch.Tensor | np.ndarray, context_length: int,
             batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) of `batch_size` non-overlapping windows at a time, then the shorter last one.

    Only the ids of the batch at hand are sliced out (and copied, for a NumPy array), so a corpus
    on disk is never read whole into memory."""
    num_targets = len(data) - 1
    full = num_targets // context_length
    for first in range(0, full, batch_size):
        rows = min(batch_size, full - first)
        ids = _as_ids(data[first * context_length:(first + rows) * context_length + 1])
        yield ids[:-1].view(rows, context_length), ids[1:].view(rows, context_length)
    if num_targets > full * context_length:  # the shorter last window
        ids = _as_ids(data[full * context_length:])
        yield ids[:-1].view(1, -1), ids[1:].view(1, -1)


def _as_ids(ids: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A slice of ids as a tensor: itself, or a NumPy slice (uint16/uint32) copied to int64."""
    return torch.from_numpy(ids.astype(np.int64)) if isinstance(ids, np.ndarray) else ids


def perplexity(loss: float) -> float:
    """exp(loss): the model is as unsure as a fair choice among this many tokens."""
    return math.exp(loss)


def bits_per_char(loss: float, num_tokens: int, num_chars: int) -> float:
    """Bits per character of a text whose `num_tokens` tokens cost `loss` nats each on average.

    total information = loss * num_tokens nats = loss * num_tokens / ln 2 bits, spread over
    num_chars characters.
    """
    check_whole_number("num_tokens", num_tokens)
    check_whole_number("num_chars", num_chars)
    return loss * num_tokens / (num_chars * math.log(2))


def bits_per_byte(loss: float, num_tokens: int, num_bytes: int) -> float:
    """Like `bits_per_char`, per UTF-8 byte: fair across languages whose characters differ in size."""
    check_whole_number("num_bytes", num_bytes)
    return bits_per_char(loss, num_tokens, num_bytes)


EVAL_LOGITS = 2**22  # logits per forward pass: 64 windows of 64 characters; fewer for big vocabularies


DATA_ALLOWED = ("a folder of token shards (made by `minigpt prepare` with the checkpoint's tokenizer), "
                "a UTF-8 text file, or 'shakespeare'")


def evaluate_data(model: nn.Module, tokenizer, saved: dict, data: str | None, split: str,
                  device: str | torch.device) -> list[str]:
    """`minigpt evaluate`'s report, as lines to print, on `data` (None: the data the training state
    `saved` names): a folder of token shards goes to `evaluate_shards`, a text to `evaluate_text`."""
    option = "--data" if data is not None else "the checkpoint's data"
    source = check_source(data if data is not None else saved.get("data"), option)
    if source != "shakespeare" and Path(source).is_dir():  # let through by check_source: token shards
        return evaluate_shards(model, tokenizer, source, split, device, option)
    return evaluate_text(model, tokenizer, saved, data, split, device)


def check_source(source: str | None, option: str) -> str:
    """'shakespeare', or the absolute path of a file or of a folder holding token shards (META).

    A run trained on shards stores the folder's absolute path, so a folder moved or deleted since
    is reported here, with what --data may name instead."""
    instead = f"give --data: {DATA_ALLOWED}"
    if source == "shakespeare":
        return source
    if not source:
        raise MinigptError(f"{option} is empty; {instead}")
    path = Path(source)
    if not path.exists():
        moved = " (moved or deleted since training?)" if option != "--data" else ""
        raise MinigptError(f"{option}: no such file or folder {source!r}{moved}; {instead}")
    if path.is_dir() and not (path / META).is_file():
        raise MinigptError(f"{option} {source!r} is a folder without {META}, so not token shards; "
                           f"{instead}")
    return str(path.resolve())


def evaluate_shards(model: nn.Module, tokenizer, folder: str, split: str, device: str | torch.device,
                    option: str = "--data") -> list[str]:
    """Loss, perplexity and bits per token of one split of a folder of token shards, read through
    `np.memmap` a batch of windows at a time (never the whole corpus in memory).

    The shards' own train/val split is used ('all': both, each in its own windows, so the first
    val token is not predicted). Bits per character need the number of characters the ids stand
    for, which the shards do not record: it is reported only for the character tokenizer (one
    character per token), and said to be missing otherwise."""
    try:
        shards = TokenShards.open(folder)
    except MinigptError as error:  # its messages begin "data '<folder>'"; name the option instead
        raise MinigptError(f"{option}{str(error).removeprefix('data')}") from None
    if shards.tokenizer.to_dict() != tokenizer.to_dict():
        raise MinigptError(f"{option} {folder!r}: its shards were made with another tokenizer "
                           f"({_describe(shards.tokenizer)}) than the checkpoint's "
                           f"({_describe(tokenizer)}); give --data: {DATA_ALLOWED}")
    names = ("train", "val") if split == "all" else (split,)
    context_length, vocab_size = model.config.context_length, model.config.vocab_size
    batch_size = max(1, EVAL_LOGITS // (context_length * vocab_size))
    total, predicted = 0.0, 0
    for name in names:
        ids = shards.splits[name]
        if len(ids) < 2:
            raise MinigptError(f"--split {split}: the {name} split of {folder!r} holds {len(ids)} "
                               f"token(s); it needs at least 2 (an input and its target)")
        total += evaluate_split(model, ids, context_length, batch_size, device) * (len(ids) - 1)
        predicted += len(ids) - 1
    loss = total / predicted
    where = f"{split} split" if split != "all" else "train and val splits (each in its own windows)"
    return [f"{where} of token shards {folder}: {predicted:,} tokens predicted, windows of "
            f"{context_length}",
            f"loss: {loss:.4f}",
            f"perplexity: {perplexity(loss):.3f}",
            f"bits per token: {loss / math.log(2):.4f}",
            f"bits per character: {_shard_bits_per_char(loss, predicted, tokenizer)}"]


def _shard_bits_per_char(loss: float, predicted: int, tokenizer) -> str:
    """The figure for the character tokenizer (one character per id); otherwise why there is none."""
    if tokenizer.kind == "char":
        return f"{bits_per_char(loss, predicted, predicted):.4f} (one character per token)"
    return (f"not reported: the shards hold {tokenizer.kind} token ids, not the text, and do not "
            f"record how many characters they stand for; evaluate on the text (--data FILE) for it")


def _describe(tokenizer) -> str:
    """'char, 65 ids': enough to see why two tokenizers differ."""
    return f"{tokenizer.kind}, {tokenizer.vocab_size:,} ids"


def evaluate_text(model: nn.Module, tokenizer, saved: dict, data: str | None, split: str,
                  device: str | torch.device) -> list[str]:
    """`minigpt evaluate`'s report, as lines to print: loss, perplexity, bits per character of one
    split ('val': the held-out end, 'train': the rest, 'all') of `data` (None: the text the
    training state `saved` names), cut with the checkpoint's val_fraction."""
    option = "--data" if data is not None else "the checkpoint's data (give --data to use another text)"
    source = data_source(data if data is not None else saved["data"], option)
    text = load_text(source, option)
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as error:
        raise MinigptError(f"{option} {source!r} cannot be encoded by the checkpoint's tokenizer: "
                           f"{error}") from None
    val_fraction = DataConfig(val_fraction=saved.get("val_fraction", 0.1)).val_fraction
    if split != "all":
        train_ids, val_ids = train_val_split(ids, val_fraction)
        ids = val_ids if split == "val" else train_ids
    if len(ids) < 2:
        raise MinigptError(f"--split {split} of {source!r} holds {len(ids)} token(s); it needs "
                           f"at least 2 (an input and its target)")
    context_length, vocab_size = model.config.context_length, model.config.vocab_size
    batch_size = max(1, EVAL_LOGITS // (context_length * vocab_size))
    loss = evaluate_split(model, ids, context_length, batch_size, device)
    num_chars = len(tokenizer.decode(ids[1:].tolist()))  # the characters predicted
    return [f"{split} split of {source}: {len(ids) - 1:,} tokens predicted, windows of "
            f"{context_length}",
            f"loss: {loss:.4f}",
            f"perplexity: {perplexity(loss):.3f}",
            f"bits per character: {bits_per_char(loss, len(ids) - 1, max(1, num_chars)):.4f}"]
