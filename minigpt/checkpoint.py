"""Checkpoints: everything needed to use a trained model again, or to carry on training it.

A checkpoint holds the model's weights, its `GPTConfig`, its tokenizer, and, for resuming, the
optimizer's state and the training state (step, random-number generators, history). It is saved
atomically: written to a temporary file beside the target and renamed over it, so a crash or a
kill mid-save leaves the previous checkpoint intact. It is loaded with `torch.load(weights_only=
True)`, which rebuilds tensors and plain containers only and refuses a file that tries to run code.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
_UMASK = os.umask(0o022)  # read once, at import: new files get 0o666 minus this
os.umask(_UMASK)

# A save writes `.<name>.<8 random characters>.tmp` beside its target (tempfile.mkstemp's names).
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or from another format/vocabulary."""


@dataclass
class Checkpoint:
    """What `load_checkpoint` gives back."""

    model: GPT
    config: GPTConfig
    tokenizer: Tokenizer
    optimizer_state: dict[str, Any] | None = None
    train_state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: GPT, tokenizer: Tokenizer,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write model + config + tokenizer (+ optimizer and training state) to `path`, atomically."""
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_state": train_state or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes the file private; a checkpoint is a normal file
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)  # atomic on POSIX and Windows: readers see old or new, never half
        _fsync_folder(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted saves (a kill mid-save) left in `folder`.

    Only plain files named the way `save_checkpoint` names its temporary files are removed, and only
    directly in `folder`. Call it at the start of a run, while no other process saves there (a temp
    file of a save in progress would be taken away from it). Returns the paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw contents of a checkpoint file, checked for safety, completeness and format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no such file {str(path)!r}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no index
        raise CheckpointError(f"checkpoint: {str(path)!r} is corrupt or truncated (not a complete "
                              f"torch.save archive)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False; pass on only what it found in the file.
        found = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        reason = found[0] if found else "unsupported content"
        raise CheckpointError(
            f"checkpoint: {str(path)!r} was refused: it holds objects other than tensors and plain "
            f"data, and loading it could run code ({reason})") from None
    except Exception as error:  # a damaged file fails in many ways inside the unpickler
        raise CheckpointError(f"checkpoint: {str(path)!r} is corrupt or truncated and cannot be "
                              f"read ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint: {str(path)!r} is not a minigpt checkpoint "
                              f"(no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: {str(path)!r} has format_version="
                              f"{payload['format_version']!r}; this minigpt reads format_version="
                              f"{FORMAT_VERSION}")
    missing = {"config", "tokenizer", "model"} - set(payload)
    if missing:
        raise CheckpointError(f"checkpoint: {str(path)!r} lacks {sorted(missing)}")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model (on `device`, in eval mode), its config and its tokenizer from a checkpoint."""
    payload = read_checkpoint(path)
    try:
        config = GPTConfig.from_dict(payload["config"])
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"checkpoint: {str(path)!r} has an invalid config or tokenizer: "
                              f"{error}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"checkpoint: {str(path)!r} has a tokenizer of {tokenizer.vocab_size} "
                              f"tokens but a model for vocab_size={config.vocab_size}")
    model = GPT(config)
    load_model_state(model, payload["model"], source=str(path))
    model.to(device).eval()
    return Checkpoint(model, config, tokenizer, payload.get("optimizer"),
                      payload.get("train_state") or {})


def load_model_state(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy weights into `model`, explaining a mismatch (another vocabulary or shape) in words."""
    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint: {source!r} does not fit this model: {name} has shape "
                f"{tuple(tensor.shape)} in the file but {tuple(own[name].shape)} here (another "
                f"vocabulary or model size?)")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"checkpoint: {source!r} does not fit this model: missing "
                              f"{result.missing_keys}, unexpected {result.unexpected_keys}")
