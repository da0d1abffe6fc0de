"""Peak memory of `minigpt prepare` and of `minigpt train --data SHARDS` on a corpus larger than it.

Token shards exist so that a corpus need not fit in memory: `minigpt prepare` streams the text a
piece at a time, and `minigpt train --data FOLDER` maps the shards with `np.memmap`, so only the
windows a batch draws are ever read. This checks both claims on a corpus several times larger than
what the training process holds: the built-in Shakespeare repeated (each copy behind a line of its
own, so no two copies are byte for byte the same), written to a temporary folder with a corpus a
tenth its size beside it, and deleted afterwards (nothing is committed). Each command runs in a
fresh process; its peak resident memory is the kernel's (`os.wait4` returns the child's rusage,
ru_maxrss), split by sampling /proc into the process's own memory (anon) and mapped file pages,
among them the shard pages the batches touched. Those grow with the number of windows drawn (the
kernel maps a whole block of the file around each page fault: some hundreds of KiB per window on
Linux 6.18 with ext4), never past the shards' size, and the kernel can drop them whenever it needs
the memory; the process's own memory should not depend on the corpus.
The character tokenizer keeps prepare fast (uint16 ids: the shards take two bytes per character).
tokens/s is over the whole command (start-up and the pass that collects the characters included).
Prints figures; asserts nothing. About 4 minutes on an idle 2-core machine at the default size
(twice that when other work shares the cores).

    python benchmarks/shards_memory.py                # 800 MiB of text, 1.6 GB of shards
    python benchmarks/shards_memory.py --mib 100      # a quick look
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_corpus(path: Path, mib: float) -> int:
    """Copies of the built-in text, each after a line '== copy N ==', to about `mib` MiB; returns the bytes."""
    from minigpt.data import shakespeare

    text, size, copy, target = shakespeare(), 0, 0, int(mib * 2**20)
    with open(path, "w", encoding="utf-8") as handle:
        while size < target:
            piece = f"== copy {copy} ==\n{text}"
            last = size + len(piece) >= target
            if last:  # cut at the line end before the target (the text is nearly all ASCII)
                piece = piece[:piece.rfind("\n", 0, target - size) + 1]
            handle.write(piece)
            size += len(piece.encode("utf-8"))
            copy += 1
            if last:
                break
    return size


def run_measured(args: list[str], log: Path, shards: Path) -> tuple[float, dict[str, float], str]:
    """Run `python -m minigpt ARGS` in a fresh process: (wall seconds, peak MiB, its stdout).

    The peaks: 'rss', the kernel's ru_maxrss of this child alone (`os.wait4` hands back its own
    usage); 'anon', the largest RssAnon (the process's own memory: tensors, Python objects),
    'file', the largest RssFile (pages of mapped files: shared libraries and the shards), and
    'shards', the most pages of the `shards` folder's files mapped at once (pages a batch touched,
    which the kernel may drop at will, unlike anon), all seen in /proc every 50 ms. stdout and
    stderr go to a file, so there is no pipe to drain."""
    start = time.perf_counter()
    peaks = {"anon": 0.0, "file": 0.0, "shards": 0.0}
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "minigpt", *args], stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            for key, value in proc_memory(child.pid, shards).items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.05)
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    seconds = time.perf_counter() - start
    output = log.read_text()
    if child.returncode != 0:
        raise SystemExit(f"minigpt {' '.join(args)} failed ({child.returncode}):\n{output}")
    return seconds, {"rss": usage.ru_maxrss / 1024, **peaks}, output  # ru_maxrss: KiB on Linux


def proc_memory(pid: int, shards: Path) -> dict[str, float]:
    """RssAnon, RssFile, and the resident pages of files under `shards`, of a live process, in MiB
    ({} once it has gone). /proc/PID/smaps lists each mapping (a header line naming the file) with
    its Rss a few lines below."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        smaps = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon", "RssFile")))
    memory = {key[3:].lower(): int(value.split()[0]) / 1024 for key, value in fields.items()}  # kB
    inside, mapped = False, 0
    for line in smaps:
        if not line[:1].isupper():  # a header: 'start-end perms offset dev inode [path]'
            inside = line.rstrip().endswith(".bin") and str(shards) in line
        elif inside and line.startswith("Rss:"):
            mapped += int(line.split()[1])
    return {**memory, "shards": mapped / 1024}


def shard_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.bin")) / 2**20


def measure(folder: Path, name: str, mib: float, max_iters: int) -> dict:
    """Write a corpus of `mib` MiB, prepare it, train on it; the figures of each step."""
    corpus, shards = folder / f"{name}.txt", folder / f"{name}-shards"
    text_bytes = write_corpus(corpus, mib)
    seconds, prepare_peak, out = run_measured(
        ["prepare", str(corpus), "--out", str(shards), "--tokenizer", "char", "--no-progress"], folder / "log",
        shards)
    counts = re.search(r"([\d,]+) train and ([\d,]+) val tokens", out).groups()
    tokens = sum(int(count.replace(",", "")) for count in counts)
    corpus.unlink()  # the shards are what training reads
    _, train_peak, out = run_measured(
        ["train", "--data", str(shards), "--out", str(folder / f"{name}-run"), "--max-iters", str(max_iters),
         "--eval-interval", str(max_iters), "--eval-iters", "2", "--sample-tokens", "0", "--no-progress",
         "--device", "cpu"], folder / "log", shards)
    done = next(line for line in out.splitlines() if line.startswith(("done at", "interrupted at")))
    return {"text": text_bytes / 2**20, "shards": shard_mib(shards), "tokens": tokens, "prepare_s": seconds,
            "prepare": prepare_peak, "train": train_peak, "done": done.split(";")[0]}


def peaks(peak: dict[str, float]) -> str:
    return (f"peak {peak['rss']:4.0f} MiB (anon {peak['anon']:4.0f}, file {peak['file']:4.0f} of which shards "
            f"{peak['shards']:4.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=800, help="size of the large corpus's text in MiB; the "
                        "small one is a tenth [default: 800]")
    parser.add_argument("--max-iters", type=int, default=20, help="training steps of each run [default: 20]")
    args = parser.parse_args()
    rows, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shards-memory-") as tmp:
        for name, mib in (("tenth", args.mib / 10), ("large", args.mib)):
            rows[name] = row = measure(Path(tmp), name, mib, args.max_iters)
            print(f"{name}: text {row['text']:.1f} MiB -> shards {row['shards']:.1f} MiB on disk, "
                  f"{row['tokens']:,} tokens\n"
                  f"  minigpt prepare: {row['tokens'] / row['prepare_s']:>10,.0f} tokens/s "
                  f"({row['prepare_s']:5.1f} s), {peaks(row['prepare'])}\n"
                  f"  minigpt train:   {row['done']:>28}, {peaks(row['train'])}", flush=True)
    large, tenth = rows["large"], rows["tenth"]
    print(f"the large corpus's shards are {large['shards'] / large['train']['rss']:.1f}x the training "
          f"process's peak (its text {large['text'] / large['train']['rss']:.1f}x)")
    for step in ("prepare", "train"):
        change = {key: large[step][key] - tenth[step][key] for key in ("rss", "anon", "file", "shards")}
        print(f"{step} peak, large corpus against a tenth its size: {change['rss']:+.0f} MiB "
              f"(anon {change['anon']:+.0f}, file {change['file']:+.0f}, shards {change['shards']:+.0f})")
    print(f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
