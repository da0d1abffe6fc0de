"""Sampling speed with and without the KV cache. Prints figures; asserts nothing.

    python benchmarks/sampling_speed.py

The model has the "baby GPT" shape (4 blocks, 4 heads, d_model 128, 65 characters); its weights
are random, which changes nothing about speed. Three cases, 500 new tokens each:

- prompt of 256 tokens, context_length 1024: everything fits in the window, so with the cache each
  step computes one token, without it each step recomputes 256..755 tokens;
- prompt of 1 token, context_length 256: the window fills after 255 tokens; from then on the cache
  is rebuilt from the cropped window every step (positions shift, so old keys are stale), which is
  what keeps its tokens identical to the plain loop's;
- prompt of 1 token, context_length 64: nanoGPT's CPU sampling case.

Each case runs `repeats` times per mode, interleaved; the medians are quoted, and the tokens of
both modes are checked to be identical.
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


def case(context_length: int, prompt_length: int, new_tokens: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(context_length=context_length, **BABY)).eval()
    prompt = torch.randint(BABY["vocab_size"], (1, prompt_length), generator=torch.Generator().manual_seed(1))
    timed_generate(model, prompt, 20, True), timed_generate(model, prompt, 20, False)  # warm-up
    times = {True: [], False: []}
    outputs = {}
    for _ in range(repeats):
        for use_cache in (True, False):
            seconds, outputs[use_cache] = timed_generate(model, prompt, new_tokens, use_cache)
            times[use_cache].append(seconds)
    cached, plain = statistics.median(times[True]), statistics.median(times[False])
    same = torch.equal(outputs[True], outputs[False])
    print(f"context_length {context_length:>4}, prompt {prompt_length:>3}, {new_tokens} new tokens: "
          f"cache {new_tokens / cached:7,.0f} tokens/s, plain {new_tokens / plain:7,.0f} tokens/s, "
          f"speed-up {plain / cached:4.1f}x, identical tokens: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, medians of {args.repeats}")
    case(1024, 256, args.new_tokens, args.repeats)
    case(256, 1, args.new_tokens, args.repeats)
    case(64, 1, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
