"""Sampling: run the model forwards one token at a time to write new text.

Each step turns the last position's logits into a choice of next token; the options
(`SampleConfig`) apply, in this order, frequency and presence penalties, temperature (0: always
the most likely token), top-k and top-p. The model sees the last `context_length` tokens. A KV
cache (`minigpt.kvcache`, which says what it keeps exact past the window) makes each step compute
only the new token; `use_cache=False` is the plain loop.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from minigpt.config import SampleConfig
from minigpt.data import check_whole_number
from minigpt.errors import MinigptError
from minigpt.kvcache import refill_length
from minigpt.model import check_token_ids
from minigpt.tokenizers import Tokenizer


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor, frequency_penalty: float,
                    presence_penalty: float) -> torch.Tensor:
    """Lower the logits of tokens already generated: by frequency * count, plus presence once.

    logits, counts: (B, V); counts[b, t] is how often token t was generated so far in row b.
    """
    return logits - frequency_penalty * counts - presence_penalty * (counts > 0).to(logits.dtype)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value kept too), the rest -inf."""
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the fewest most-likely tokens whose probabilities add up to at least p, the rest -inf.

    The most likely token is always kept, so p near 0 is greedy; p = 1 keeps every token.
    """
    if p >= 1:
        return logits  # float rounding of the cumulative sum must not drop the tail
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p  # already reached p without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of (B, V) logits; returns (B, 1) ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature  # before softmax: T < 1 sharpens, T > 1 flattens
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def generate_tokens(model: nn.Module, idx: torch.Tensor, options: SampleConfig,
                    context_length: int | None = None, generator: torch.Generator | None = None,
                    use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B, 1), `options.max_new_tokens` times (stop early by
    breaking out). The ids are checked here, at the call; the loop runs as tokens are asked for.

    The model sees at most the last `context_length` tokens (default: the model's own; a smaller
    one is allowed). `options.seed` seeds a generator on idx's device when none is given.
    """
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.size(1) == 0:
        raise MinigptError(f"idx must be (batch, time) with at least one token per row (the prompt "
                           f"cannot be empty), got {_found(idx)}")
    check_token_ids(idx, model.config.vocab_size, "idx")
    context_length = _checked_context_length(model, context_length)
    if generator is None and options.seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(options.seed)
    return _token_loop(model, idx, options, context_length, generator, use_cache)


def _checked_context_length(model: nn.Module, context_length: int | None) -> int:
    """The model's context_length if None; otherwise a whole number in [1, the model's]."""
    limit = model.config.context_length
    if context_length is None:
        return limit
    is_whole = isinstance(context_length, int) and not isinstance(context_length, bool)
    if not is_whole or not 1 <= context_length <= limit:
        raise MinigptError(f"context_length must be a whole number in [1, {limit}] (the model's "
                           f"context_length), got {context_length!r}")
    return context_length


class RecentTokens:
    """The latest tokens of each row, at least the last `context_length`, written in place.

    A buffer of 2 * context_length ids, (B, 2 * context_length), allocated once; when it is full
    the last context_length move to the front. (The whole text is never kept here: with a stop
    string, max_new_tokens may be far larger than what is generated.)
    """

    def __init__(self, idx: torch.Tensor, context_length: int):
        self.context_length = context_length
        self.ids = idx.new_empty(idx.size(0), 2 * context_length)
        self.length = min(idx.size(1), context_length)
        self.ids[:, :self.length] = idx[:, idx.size(1) - self.length:]

    def last(self, n: int) -> torch.Tensor:
        """The latest min(n, available) tokens, (B, <= n), a view."""
        return self.ids[:, max(0, self.length - n):self.length]

    def append(self, token: torch.Tensor) -> None:
        """Add (B, 1) new ids."""
        if self.length == self.ids.size(1):  # slots [C, 2C) -> [0, C): no overlap
            self.ids[:, :self.context_length] = self.ids[:, self.context_length:]
            self.length = self.context_length
        self.ids[:, self.length:self.length + 1] = token
        self.length += 1


@torch.no_grad()
def _token_loop(model: nn.Module, idx: torch.Tensor, options: SampleConfig, context_length: int,
                generator: torch.Generator | None, use_cache: bool) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    penalised = options.frequency_penalty or options.presence_penalty
    try:
        counts = torch.zeros(idx.size(0), model.config.vocab_size, device=idx.device)  # (B, V)
        recent = RecentTokens(idx, context_length)
        caches = model.new_kv_caches(context_length) if use_cache else None
        pending = recent.last(context_length)  # the tokens the caches have not seen yet
        for _ in range(options.max_new_tokens):
            if not use_cache:
                logits, _ = model(recent.last(context_length), last_only=True)
            else:
                if not caches[0].room_for(pending.size(1)):
                    # Full (learned positions only; rotary caches slide): start again from the
                    # latest tokens, reusing the buffers.
                    for cache in caches:
                        cache.reset()
                    pending = recent.last(refill_length(context_length))
                logits, _ = model(pending, kv_caches=caches, last_only=True)
            logits = logits[:, -1, :]  # (B, V): only the last position predicts the next token
            if penalised:
                logits = apply_penalties(logits, counts, options.frequency_penalty,
                                         options.presence_penalty)
            token = next_token(logits, options.temperature, options.top_k, options.top_p,
                               generator)  # (B, 1)
            counts.scatter_add_(1, token, torch.ones_like(token, dtype=counts.dtype))
            recent.append(token)
            pending = token
            yield token
    finally:
        model.train(was_training)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int,
             context_length: int | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, frequency_penalty: float = 0.0,
             presence_penalty: float = 0.0, generator: torch.Generator | None = None,
             use_cache: bool = True) -> torch.Tensor:
    """The prompt ids (B, T) followed by `max_new_tokens` new ones: (B, T + max_new_tokens).

    The options are `SampleConfig`'s, checked by it; context_length defaults to the model's.
    """
    options = SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, frequency_penalty=frequency_penalty,
                           presence_penalty=presence_penalty)
    new = list(generate_tokens(model, idx, options, context_length, generator, use_cache))
    return torch.cat([idx, *new], dim=1)


def sample_text(model: nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                stop: list[str] | None = None, seed: int | None = None,
                device: str | torch.device | None = None, use_cache: bool = True,
                **options) -> str:
    """Continue `prompt` with up to `max_new_tokens` tokens; returns only the new text.

    `options` are `SampleConfig`'s (temperature 1 unless given). Generation ends early at the first
    stop string, which is left out. The text is decoded as it grows, a few tokens at a time, so
    the time is linear in its length.
    """
    if stop is not None and (isinstance(stop, str) or not all(isinstance(s, str) for s in stop)):
        raise MinigptError(f"stop must be a list of strings (e.g. [{stop!r}] for one), got {stop!r}")
    if seed is not None:
        check_whole_number("seed", seed, low=0)
        if seed >= 2**64:  # what torch.Generator.manual_seed takes
            raise MinigptError(f"seed must be below 2**64, got {seed}")
    config = SampleConfig(**{"temperature": 1.0, **options, "max_new_tokens": max_new_tokens})
    ids = tokenizer.encode(prompt)
    if not ids:
        raise MinigptError("prompt must encode to at least one token; give a non-empty prompt")
    device = device or next(model.parameters()).device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    stops = [s for s in stop or [] if s]
    text = _IncrementalText(tokenizer)
    for token in generate_tokens(model, idx, config, None, generator, use_cache):
        searched = len(text.text)
        text.add(int(token))
        if stops and _first_stop(text.text, stops, max(0, searched - max(map(len, stops)))) is not None:
            break
    full = tokenizer.decode(text.ids)  # once: exactly what decoding every new token gives
    cut = _first_stop(full, stops)
    return full if cut is None else full[:cut]


class _IncrementalText:
    """The text of a growing list of ids, each step decoding only the last few tokens.

    A token's text can depend on the tokens before it (a character split over several byte
    tokens, a word-initial space), so each step decodes from the token before the last settled
    one, and keeps only what is new; an unfinished character (U+FFFD at the end) waits.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.ids, self.text = tokenizer, [], ""
        self.prefix = self.read = 0  # ids[prefix:read] decoded already, as context

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        now = self.tokenizer.decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.text += now[len(before):]
            self.prefix, self.read = self.read, len(self.ids)


def default_prompt(tokenizer: Tokenizer, text: str | None = None) -> str:
    """A new line (the start of a paragraph), or, when the vocabulary has none, the text's first
    character (or the vocabulary's first token)."""
    try:
        if tokenizer.encode("\n"):
            return "\n"
    except ValueError:
        pass
    return text[0] if text else tokenizer.decode([0])


def _found(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _first_stop(text: str, stop: list[str], start: int = 0) -> int | None:
    """Index where the earliest stop string starts in text[start:] (counted in text), or None."""
    hits = [i for i in (text.find(s, start) for s in stop if s) if i >= 0]
    return min(hits) if hits else None
