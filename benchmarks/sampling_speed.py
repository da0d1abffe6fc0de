"""Sampling speed with and without the KV cache. Prints figures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/sampling_speed.py [--position learned|rotary|both]

The model has the "baby GPT" shape (4 blocks, 4 heads, d_model 128, 65 characters), with learned
positions (today's default) and, for comparison, rotary positions; its weights are random, which
changes nothing about speed. Three cases, 500 new tokens each:

- prompt of 256 tokens, context_length 1024: everything fits in the window, so with the cache each
  step computes one token, without it each step recomputes 256..755 tokens;
- prompt of 1 token, context_length 256: the window fills after 255 tokens. Past it the plain loop
  runs the model on the last 256 tokens every step; the cache, with learned positions, starts again
  from the last 128 tokens whenever it is full (one forward pass over 128 tokens every 129 steps),
  and with rotary positions it slides (one token per step, always);
- prompt of 1 token, context_length 64: nanoGPT's CPU sampling case, mostly past the window.

Each case runs `repeats` times per mode, interleaved; the medians are quoted. "exact" checks the
tokens where `minigpt.kvcache` claims the plain loop's tokens (while prompt + generated text fits
in context_length); "past the window" says how many later tokens happen to match the plain loop's
(they need not: see the docstring of `minigpt.kvcache`; with random weights the
next-token distributions are nearly flat, so the same random draws often pick the same token).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from minigpt import GPT, GPTConfig, generate

BABY = dict(vocab_size=65, d_model=128, num_heads=4, num_blocks=4, dropout=0.0)


def timed_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = generate(model, prompt, new_tokens, temperature=1.0, use_cache=use_cache,
                   generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start, out


def case(position: str, context_length: int, prompt_length: int, new_tokens: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(context_length=context_length, position=position, **BABY)).eval()
    prompt = torch.randint(BABY["vocab_size"], (1, prompt_length), generator=torch.Generator().manual_seed(1))
    timed_generate(model, prompt, 20, True), timed_generate(model, prompt, 20, False)  # warm-up
    times = {True: [], False: []}
    outputs = {}
    for _ in range(repeats):
        for use_cache in (True, False):
            seconds, outputs[use_cache] = timed_generate(model, prompt, new_tokens, use_cache)
            times[use_cache].append(seconds)
    cached, plain = statistics.median(times[True]), statistics.median(times[False])
    within = context_length + 1  # prompt and the tokens predicted while the text fits the window
    exact = torch.equal(outputs[True][:, :within], outputs[False][:, :within])
    past = outputs[True][:, within:] == outputs[False][:, within:]
    past_note = f", past the window {int(past.sum())}/{past.numel()} equal" if past.numel() else ""
    print(f"{position:>7}, context_length {context_length:>4}, prompt {prompt_length:>3}, "
          f"{new_tokens} new tokens: cache {new_tokens / cached:7,.0f} tokens/s, plain "
          f"{new_tokens / plain:7,.0f} tokens/s, speed-up {plain / cached:4.1f}x, "
          f"exact within the window: {exact}{past_note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--position", choices=("learned", "rotary", "both"), default="both")
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, medians of {args.repeats}")
    positions = ("learned", "rotary") if args.position == "both" else (args.position,)
    for position in positions:
        case(position, 1024, 256, args.new_tokens, args.repeats)
        case(position, 256, 1, args.new_tokens, args.repeats)
        case(position, 64, 1, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
