"""Sampling: run the model forwards one token at a time to write new text.

Each step turns the last position's logits into a choice of next token. The knobs, applied in this
order: frequency and presence penalties (discourage repeating what was already generated),
temperature (sharpen or flatten; 0 means always take the most likely token), top-k (keep the k
most likely), top-p (keep the smallest set whose probability adds up to p). The context is cropped
to the last `context_length` tokens (the model's, or fewer).

A KV cache keeps the keys and values of earlier tokens so each step only computes the new one;
`use_cache=False` is the plain loop, which runs the model on the whole cropped context every step.
While the text fits in the window (prompt + new tokens <= context_length) both give the same tokens
(the tests prove it, greedy and seeded sampling, for every model option). Past the window the
plain loop shows the model the last context_length tokens at every step, which a cache cannot do
cheaply, so the cache does something cheaper and different, depending on the model's positions:

- learned positions (a key depends on its absolute position, so a moving window invalidates every
  key): when the cache is full it starts again from the last context_length // 2 tokens (one
  forward pass over them), then grows one token per step until full again. Each token past the
  window is thus predicted from the last L tokens, L going context_length // 2, ..., context_length
  and round again, where the plain loop always uses context_length: exactly the tokens of a plain
  loop that crops its context that way (tested), at the cost of one short forward pass every
  (context_length + 1) // 2 + 1 steps instead of a full one per step.
- rotary positions (scores depend only on the distance between two positions): the cache slides,
  the oldest token dropping out of view as each new one arrives, and never starts again. In the
  first block this is exactly the plain loop's attention (same keys, same distances). From the
  second block on, the cached keys and values of the older tokens were computed when those tokens
  could still see up to context_length - 1 tokens before them, which the plain loop's window has
  already cut off: it equals running the text (from the prompt's last context_length tokens on)
  through the model with each query limited to the last context_length tokens (a sliding-window
  mask, as in Mistral; tested), not the plain loop. A one-block model gives exactly the plain
  loop's tokens (tested). Positions keep counting up; the float32 angles lose about 1e-7 of a
  radian per position of precision, far below what changes a token for texts of this course's size.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from minigpt.config import SampleConfig
from minigpt.data import check_whole_number
from minigpt.model import check_token_ids
from minigpt.tokenizers import Tokenizer


def check_sampling_options(temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None, frequency_penalty: float = 0.0,
                           presence_penalty: float = 0.0) -> None:
    """Refuse options outside their allowed ranges, naming the option.

    The ranges are `SampleConfig`'s (the same ones the `minigpt sample` command checks):
    temperature 0 (greedy) or in [0.01, 100], top_k a whole number >= 1, top_p in (0, 1],
    penalties in [0, 100]; every number finite, and True or False is not a number.
    """
    SampleConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                 frequency_penalty=frequency_penalty, presence_penalty=presence_penalty)


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


def generate_tokens(model: nn.Module, idx: torch.Tensor, max_new_tokens: int,
                    context_length: int | None = None, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                    generator: torch.Generator | None = None,
                    use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B, 1), `max_new_tokens` times (stop early by breaking out).

    The model sees at most the last `context_length` tokens (default: the model's own; a smaller
    one is allowed). With `use_cache`, each step feeds only the new token; what that changes past
    the window is in this module's docstring.
    """
    check_sampling_options(temperature, top_k, top_p, frequency_penalty, presence_penalty)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (batch, time) with at least one token per row (the prompt "
                         f"cannot be empty), got {_found(idx)}")
    check_token_ids(idx, model.config.vocab_size, "idx")
    check_whole_number("max_new_tokens", max_new_tokens, low=0)
    context_length = _checked_context_length(model, context_length)
    # Checked above, at the call; the loop below runs lazily, as the caller asks for tokens.
    return _token_loop(model, idx, max_new_tokens, context_length, temperature, top_k, top_p,
                       frequency_penalty, presence_penalty, generator, use_cache)


def _checked_context_length(model: nn.Module, context_length: int | None) -> int:
    """The model's context_length if None; otherwise a whole number in [1, the model's]."""
    limit = model.config.context_length
    if context_length is None:
        return limit
    is_whole = isinstance(context_length, int) and not isinstance(context_length, bool)
    if not is_whole or not 1 <= context_length <= limit:
        raise ValueError(f"context_length must be a whole number in [1, {limit}] (the model's "
                         f"context_length), got {context_length!r}")
    return context_length


def refill_length(context_length: int) -> int:
    """How many of the latest tokens a full KV cache with learned positions starts again from."""
    return max(1, context_length // 2)


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
def _token_loop(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_length: int,
                temperature: float, top_k: int | None, top_p: float | None,
                frequency_penalty: float, presence_penalty: float,
                generator: torch.Generator | None, use_cache: bool) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        counts = torch.zeros(idx.size(0), model.config.vocab_size, device=idx.device)  # (B, V)
        recent = RecentTokens(idx, context_length)
        caches = model.new_kv_caches(context_length) if use_cache else None
        pending = recent.last(context_length)  # the tokens the caches have not seen yet
        for _ in range(max_new_tokens):
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
            if frequency_penalty or presence_penalty:
                logits = apply_penalties(logits, counts, frequency_penalty, presence_penalty)
            token = next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
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

    The options are `generate_tokens`'s; context_length defaults to the model's.
    """
    new = list(generate_tokens(model, idx, max_new_tokens, context_length, temperature, top_k,
                               top_p, frequency_penalty, presence_penalty, generator, use_cache))
    return torch.cat([idx, *new], dim=1)


def sample_text(model: nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                stop: list[str] | None = None, seed: int | None = None,
                device: str | torch.device | None = None, **options) -> str:
    """Continue `prompt` with up to `max_new_tokens` tokens; returns only the new text.

    Generation ends early at the first stop string, which is left out of the result.
    """
    if stop is not None and (isinstance(stop, str) or not all(isinstance(s, str) for s in stop)):
        raise ValueError(f"stop must be a list of strings (e.g. [{stop!r}] for one), got {stop!r}")
    if seed is not None:
        check_whole_number("seed", seed, low=0)
        if seed >= 2**64:  # what torch.Generator.manual_seed takes
            raise ValueError(f"seed must be below 2**64, got {seed}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("prompt must encode to at least one token; give a non-empty prompt")
    device = device or next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    new_ids: list[int] = []
    text = ""
    for token in generate_tokens(model, idx, max_new_tokens, generator=generator, **options):
        new_ids.append(int(token))
        text = tokenizer.decode(new_ids)
        cut = _first_stop(text, stop or [])
        if cut is not None:
            return text[:cut]
    return text


def _found(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Index where the earliest stop string starts in text, or None."""
    hits = [text.find(s) for s in stop if s and s in text]
    return min(hits) if hits else None
