"""The KV cache: the keys and values of tokens already seen, so sampling one more token only
computes that token's query, key and value (what nanochat keeps in its engine; used by sampling).

While the text fits in the model's window (prompt + new tokens <= context_length) sampling with
the cache gives the plain loop's tokens exactly (tested, greedy and seeded, for every model
option). Past the window the plain loop shows the model the last context_length tokens at every
step, which a cache cannot do cheaply, so the cache does something cheaper and different:

- learned positions (a key depends on its absolute position, so a moving window invalidates every
  key): a full cache starts again from the last context_length // 2 tokens (`refill_length`), then
  grows one token per step until full again. That is exactly a plain loop whose context goes
  context_length // 2, ..., context_length and round again (tested).
- rotary positions (scores depend only on the distance between two positions): the cache slides,
  the oldest token dropping out of view as each new one arrives. The first block then sees what
  the plain loop sees; later blocks hold keys computed when older tokens could still look further
  back, which equals sliding-window attention over the whole text (as in Mistral; tested), and a
  one-block model gives the plain loop's tokens exactly (tested).
"""

from __future__ import annotations

import torch

from minigpt.errors import MinigptError


def refill_length(context_length: int) -> int:
    """How many of the latest tokens a full KV cache with learned positions starts again from."""
    return max(1, context_length // 2)


class KVCache:
    """The keys and values one attention layer has computed so far, written in place.

    The buffers, (B, num_heads, capacity, head_size) each, are allocated at the first `append`;
    slot s holds the s-th cached token, oldest first, and `length` slots are filled. A query looks
    at the last `window` of them at most. `seen` counts every token ever appended: the position of
    the next one. Without `slide` the cache refuses tokens past its window; with `slide` (rotary
    positions) it has room for 2 * window tokens, and when full the last window - 1 move to the
    front: one copy every window + 1 tokens instead of one per token.
    """

    def __init__(self, window: int, slide: bool = False) -> None:
        self.window, self.slide = window, slide
        self.capacity = 2 * window if slide else window
        self.k: torch.Tensor | None = None  # (B, num_heads, capacity, head_size) once allocated
        self.v: torch.Tensor | None = None
        self.length = 0
        self.seen = 0

    def __len__(self) -> int:
        """How many cached tokens the next query can look at (at most `window`)."""
        return min(self.length, self.window)

    def reset(self) -> None:
        """Forget every token (the buffers stay, to be written again)."""
        self.length = self.seen = 0

    def room_for(self, T: int) -> bool:
        """Whether T new tokens can be appended with every query still seeing all it should."""
        return len(self) + T <= self.window or (self.slide and T == 1)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens' keys and values (B, num_heads, T, head_size) into the buffers.

        Returns the keys and values the new queries look at, (B, num_heads, <= window, head_size),
        as views of the buffers (no copy).
        """
        T = k.size(2)
        if not self.room_for(T):
            raise MinigptError(f"the KV cache holds {len(self)} tokens; {T} more would exceed its "
                               f"window of {self.window} (context_length)")
        if self.k is None:
            B, H, _, D = k.shape
            self.k, self.v = k.new_empty(B, H, self.capacity, D), v.new_empty(B, H, self.capacity, D)
        elif k.shape[:2] != self.k.shape[:2]:
            raise MinigptError(f"the KV cache holds batch size {self.k.size(0)}, got a batch of "
                               f"{k.size(0)}: start new caches (model.new_kv_caches()) for another "
                               f"batch")
        if self.length + T > self.capacity:  # sliding and full: keep the newest window - 1
            keep = self.window - 1  # slots [window + 1, 2 * window) -> [0, window - 1): no overlap
            self.k[:, :, :keep] = self.k[:, :, self.length - keep:self.length]
            self.v[:, :, :keep] = self.v[:, :, self.length - keep:self.length]
            self.length = keep
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        self.seen += T
        first = max(0, self.length - self.window)
        return self.k[:, :, first:self.length], self.v[:, :, first:self.length]
