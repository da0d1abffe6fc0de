"""Token shards: a corpus tokenized once into files on disk, read back through `np.memmap`.

`data.py` keeps the whole corpus in memory as one tensor of ids, which is fine for Shakespeare and
wrong for a corpus larger than the machine's memory. `prepare` streams text (one file, or every
file of a folder) through a tokenizer, a piece at a time, and appends the ids to two flat binary
files, `train.bin` and `val.bin`, as `uint16` when the vocabulary has at most 65,536 ids (half the
bytes of `uint32`, a quarter of what the model's int64 would take). A small `meta.json` beside them
names the tokenizer, the dtype, how many tokens each split holds and a SHA-256 of each file.

`TokenShards` opens such a folder without reading it: `np.memmap` maps each file into the address
space and the operating system pages in only the windows a batch touches. `get_batch` draws its
windows exactly as `data.get_batch` does (same random starts for the same generator), so a run on
shards and a run on the same ids held in memory see the same batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from minigpt.data import check_whole_number, get_batch
from minigpt.errors import MinigptError
from minigpt.tokenizers import CharTokenizer, TiktokenTokenizer, Tokenizer, tokenizer_from_dict, train_tokenizer

FORMAT = "minigpt-token-shards"
VERSION = 1
META = "meta.json"
SPLITS = ("train", "val")
CHUNK_CHARS = 1 << 20  # text tokenized at a time: bounds prepare's memory, whatever the corpus size
BPE_SAMPLE_CHARS = 10_000_000  # a BPE vocabulary is trained on the corpus's first 10 M characters


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65,536 ids, else uint32."""
    check_whole_number("vocab_size", vocab_size)
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def text_files(source: str | Path) -> list[Path]:
    """The files `prepare` reads: `source` itself, or every visible file under the folder, sorted by path."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MinigptError(f"source {str(source)!r} is neither a file nor a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise MinigptError(f"source folder {str(source)!r} holds no files (hidden ones are skipped)")
    return files


def read_pieces(files: list[Path], chunk_chars: int = CHUNK_CHARS,
                cut_at: int | None = None) -> Iterator[tuple[str, int]]:
    """Each file's text in pieces of about `chunk_chars` characters, cut after a newline.

    Yields (piece, bytes read so far in total) for the progress bar and the train/val cut. A piece
    ends at a line end, so a word is never cut in two between pieces (a line longer than
    `chunk_chars` is one piece), and no piece spans two files. A piece also ends at the first line
    end at or past byte `cut_at`, so the train/val cut falls between pieces.
    """
    done = 0
    for file in files:
        try:
            with open(file, encoding="utf-8", newline="") as handle:
                piece: list[str] = []
                size = 0
                for line in handle:
                    piece.append(line)
                    size += len(line)
                    nbytes = len(line.encode("utf-8"))
                    crossed = cut_at is not None and done < cut_at <= done + nbytes
                    done += nbytes
                    if size >= chunk_chars or crossed:
                        yield "".join(piece), done
                        piece, size = [], 0
                if piece:
                    yield "".join(piece), done
        except UnicodeDecodeError as error:
            raise MinigptError(f"source file {str(file)!r} is not UTF-8 text (byte {error.start} of a "
                               f"piece cannot be decoded); save it as UTF-8 first") from None
        except OSError as error:
            raise MinigptError(f"source file {str(file)!r} cannot be read ({error.strerror})") from None


def tokenizer_for(source: str | Path, kind: str, vocab_size: int = 512) -> Tokenizer:
    """A tokenizer of `kind` for the corpus at `source`, built without holding the corpus in memory.

    'char': one streaming pass collects every distinct character. 'bpe': SentencePiece trained on
    the first BPE_SAMPLE_CHARS characters (the usual practice: a sample is enough for the merges).
    'cl100k': fixed, nothing to learn.
    """
    files = text_files(source)
    if kind == "char":
        chars: set[str] = set()
        for piece, _ in read_pieces(files):
            chars.update(piece)
        return CharTokenizer(sorted(chars)) if chars else CharTokenizer.train("")
    if kind == "bpe":
        sample, size = [], 0
        for piece, _ in read_pieces(files):
            sample.append(piece)
            size += len(piece)
            if size >= BPE_SAMPLE_CHARS:
                break
        return train_tokenizer("bpe", "".join(sample), vocab_size)
    if kind == "cl100k":
        return TiktokenTokenizer()
    return train_tokenizer(kind, "x")  # refuses the kind by name


class _SplitWriter:
    """Appends ids to `<split>.bin.tmp` and hashes them as they go; `close` renames it into place."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype):
        self.final = folder / f"{split}.bin"
        self.temp = folder / f"{split}.bin.tmp"
        self.handle = open(self.temp, "wb")
        self.sha = hashlib.sha256()
        self.dtype = dtype
        self.count = 0

    def write(self, ids: list[int]) -> None:
        block = np.asarray(ids, dtype=self.dtype).tobytes()  # (n,) ids as little/native-endian bytes
        self.handle.write(block)
        self.sha.update(block)
        self.count += len(ids)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.final)


def prepare(source: str | Path, out_dir: str | Path, tokenizer: Tokenizer, val_fraction: float = 0.1,
            chunk_chars: int = CHUNK_CHARS, progress: bool | None = None) -> dict[str, Any]:
    """Tokenize `source` (a text file or a folder of them) into `out_dir`/train.bin, val.bin, meta.json.

    The first (1 - val_fraction) of the bytes, cut at a line end, go to train, the rest to val, as
    `train_val_split` cuts an in-memory corpus. Memory stays at one piece of `chunk_chars`
    characters and its ids. Files are written under temporary names and renamed when complete;
    meta.json comes last, so a folder with a meta.json is always whole. Returns the meta dict.
    """
    if not isinstance(tokenizer, Tokenizer):
        raise MinigptError(f"tokenizer must be a minigpt tokenizer (encode, decode, vocab_size), "
                           f"got {type(tokenizer).__name__}")
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise MinigptError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    check_whole_number("chunk_chars", chunk_chars)
    files = text_files(source)
    folder = Path(out_dir)
    if (folder / META).exists():
        raise MinigptError(f"out_dir {str(out_dir)!r} already holds token shards ({META}); "
                           f"choose another folder or delete it first")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MinigptError(f"out_dir {str(out_dir)!r} is a file; give a folder") from None
    except OSError as error:
        raise MinigptError(f"out_dir {str(out_dir)!r} cannot be made ({error.strerror})") from None
    dtype = token_dtype(tokenizer.vocab_size)
    total_bytes = sum(f.stat().st_size for f in files)
    val_from = int(total_bytes * (1 - val_fraction))  # the first byte that belongs to val
    writers = {split: _SplitWriter(folder, split, dtype) for split in SPLITS}
    show = (os.isatty(2) if progress is None else progress)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", disable=not show) as bar:
        before = 0
        for piece, done in read_pieces(files, chunk_chars, cut_at=val_from):
            split = "train" if before < val_from else "val"  # a piece goes where its first byte falls
            writers[split].write(tokenizer.encode(piece))
            bar.update(done - before)
            before = done
    for writer in writers.values():
        writer.close()
    meta = {"format": FORMAT, "version": VERSION, "tokenizer": tokenizer.to_dict(), "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "tokens": {s: w.count for s, w in writers.items()},
            "sha256": {s: w.sha.hexdigest() for s, w in writers.items()},
            "files": len(files), "bytes": total_bytes}
    if meta["tokens"]["train"] == 0 or meta["tokens"]["val"] == 0:
        empty = "train" if meta["tokens"]["train"] == 0 else "val"
        raise MinigptError(f"the {empty} split came out empty: the source has {total_bytes} bytes in "
                           f"{len(files)} file(s); use more text (or more lines) or another val_fraction")
    temp = folder / (META + ".tmp")
    temp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(temp, folder / META)
    return meta


@dataclass
class TokenShards:
    """A prepared folder, opened: the tokenizer, and each split's ids as a read-only `np.memmap`."""

    folder: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    splits: dict[str, np.memmap]

    @classmethod
    def open(cls, folder: str | Path, verify: bool = False) -> "TokenShards":
        """Read meta.json and map train.bin and val.bin (nothing is read yet).

        Each file's size must match meta.json's count; `verify=True` also reads the files once to
        compare their SHA-256 (a whole pass over the data: for a check, not every run)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MinigptError(f"data {str(folder)!r} holds no {META}: make it with `minigpt prepare`") from None
        except (OSError, ValueError) as error:
            raise MinigptError(f"data {str(folder)!r}: {META} cannot be read ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise MinigptError(f"data {str(folder)!r}: {META} is not a minigpt token-shard description "
                               f"(format {FORMAT!r}, version {VERSION})")
        dtype = np.dtype(meta["dtype"])
        splits = {}
        for split in SPLITS:
            path = folder / f"{split}.bin"
            count = int(meta["tokens"][split])
            size = path.stat().st_size if path.exists() else None
            if size != count * dtype.itemsize:
                raise MinigptError(f"data {str(folder)!r}: {split}.bin should hold {count} {dtype.name} ids "
                                   f"({count * dtype.itemsize} bytes) but has {size} bytes; prepare it again")
            if verify and file_sha256(path) != meta["sha256"][split]:
                raise MinigptError(f"data {str(folder)!r}: {split}.bin does not match its checksum in {META}; "
                                   f"prepare it again")
            splits[split] = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
        return cls(folder, meta, tokenizer_from_dict(meta["tokenizer"]), splits)

    def get_batch(self, split: str, batch_size: int, context_length: int,
                  generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` random windows of a split: x and y (batch_size, context_length), int64.

        The same draws as `data.get_batch` on the same ids, so shards and memory are interchangeable."""
        if split not in self.splits:
            raise MinigptError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return memmap_batch(self.splits[split], batch_size, context_length, generator, device)


def memmap_batch(tokens: np.ndarray, batch_size: int, context_length: int,
                 generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of a 1-D array of ids (a memmap: only the rows drawn are read), as `get_batch` draws them."""
    if not (isinstance(tokens, np.ndarray) and tokens.ndim == 1):
        raise MinigptError(f"tokens must be a 1-D NumPy array of ids, got {type(tokens).__name__}")
    return get_batch(tokens, batch_size, context_length, generator, device)


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in blocks of 4 MiB."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            sha.update(chunk)
    return sha.hexdigest()
