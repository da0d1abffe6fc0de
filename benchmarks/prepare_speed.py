"""Tokens per second and peak memory of `minigpt prepare`, beside nanoGPT's prepare.py approach.

nanoGPT's `data/*/prepare.py` reads the whole text, encodes it with tiktoken in one call, makes one
NumPy array of the ids and writes it with `tofile`. `minigpt prepare` streams the text a piece at a
time. Both run here on the same generated corpus (the built-in Shakespeare repeated, written to a
temporary folder and deleted afterwards; nothing is committed), with the same tokenizer (tiktoken's
cl100k_base, the one that ships offline), each in a fresh process whose peak resident memory is read
from the kernel (ru_maxrss of the child); the time is the work's alone (reading, encoding, writing),
not the start-up. `minigpt.shards` imports torch (its batch reader returns tensors), which alone
takes about 250 MiB: compare the peaks as the corpus grows, where only nanoGPT's keeps growing.
Prints figures; asserts nothing.

    python benchmarks/prepare_speed.py              # a corpus of 10 copies (~10 MB)
    python benchmarks/prepare_speed.py --copies 50  # ~50 MB
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = r"""
import sys, time
from minigpt.shards import prepare
from minigpt.tokenizers import TiktokenTokenizer
enc = TiktokenTokenizer()
start = time.perf_counter()
meta = prepare(sys.argv[1], sys.argv[2], enc, progress=False)
print(sum(meta["tokens"].values()), time.perf_counter() - start)
"""

NANOGPT_STYLE = r"""
import sys, time, numpy as np
from minigpt.tokenizers import TiktokenTokenizer
enc = TiktokenTokenizer()
start = time.perf_counter()
text = open(sys.argv[1], encoding="utf-8").read()           # the whole corpus in memory
n = len(text)
train_ids = enc.encode(text[: int(n * 0.9)])                 # one call each, as prepare.py does
val_ids = enc.encode(text[int(n * 0.9):])
np.array(train_ids, dtype=np.uint32).tofile(sys.argv[2] + "/train.bin")   # cl100k needs uint32
np.array(val_ids, dtype=np.uint32).tofile(sys.argv[2] + "/val.bin")
print(len(train_ids) + len(val_ids), time.perf_counter() - start)
"""


PEAK = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True, "
        "check=True); sys.stdout.write(done.stdout); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MiB of the command (read by a launcher of its own), and its stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    *out, peak_kib = done.stdout.splitlines()  # ru_maxrss: KiB on Linux
    return seconds, int(peak_kib) / 1024, "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="copies of the built-in corpus [default: 10]")
    args = parser.parse_args()
    from minigpt.data import shakespeare
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        folder = Path(tmp)
        corpus = folder / "corpus.txt"
        text = shakespeare()
        with open(corpus, "w", encoding="utf-8") as handle:
            for _ in range(args.copies):
                handle.write(text)
        size = corpus.stat().st_size
        print(f"corpus: {args.copies} copies of the built-in text, {size / 2**20:.1f} MiB")
        for name, script in (("minigpt prepare (streaming)   ", OURS), ("nanoGPT prepare.py (in memory)", NANOGPT_STYLE)):
            (folder / name[:4]).mkdir()
            _, peak, out = measure([sys.executable, "-c", script, str(corpus), str(folder / name[:4])])
            tokens, seconds = out.split()[-2:]
            tokens, seconds = int(tokens), float(seconds)
            print(f"{name}: {tokens / seconds:>10,.0f} tokens/s ({seconds:5.1f} s of work), peak {peak:5.0f} MiB "
                  f"(the process, imports included), {tokens:,} tokens")


if __name__ == "__main__":
    main()
