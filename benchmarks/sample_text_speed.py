"""`sample_text`'s time against its length, with and without a stop string. Prints figures.

    python benchmarks/sample_text_speed.py [--lengths 500 1000 2000] [--tokenizer char|bpe]

A text's time should grow in proportion to its length (each step decodes a few tokens, not all
of them): the last column, milliseconds per token, stays flat when it does, and grows with the
length when decoding is quadratic. The stop string is one that never occurs, so every length is
generated in full; the model is a small untrained one (the decoding, not the model, is measured).
"""

from __future__ import annotations

import argparse
import time

import torch

from minigpt import GPT, GPTConfig, sample_text, shakespeare
from minigpt.tokenizers import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = shakespeare(200_000)
    tokenizer = train_tokenizer(args.tokenizer, text, 512)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, d_model=32,
                          num_heads=2, num_blocks=1)).eval()
    print(f"tokenizer {args.tokenizer}, model of {model.num_parameters():,} parameters, best of "
          f"{args.repeats}")
    print(f"{'tokens':>7} {'stop':>5} {'seconds':>8} {'ms/token':>9}")
    for n in args.lengths:
        for stop in (None, ["\x00never\x00"]):
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                sample_text(model, tokenizer, "\n", n, stop=stop, seed=1, temperature=1.0)
                best = min(best, time.perf_counter() - start)
            print(f"{n:>7} {'yes' if stop else 'no':>5} {best:>8.3f} {1000 * best / n:>9.3f}")


if __name__ == "__main__":
    main()
