"""Checkpoints: everything needed to use a trained model again, or to carry on training it.

A checkpoint holds the model's weights, its `GPTConfig`, its tokenizer, and, for resuming, the
optimizer's state and the training state, which this module keeps as plain data and tensors (what
it means is its owner's business: `minigpt.trainer.TrainState`).

Saving refuses NaN or infinite numbers and is atomic: the file is written beside the target under
a temporary name (`TEMP_NAME`) and renamed over it, so a kill mid-save leaves the previous
checkpoint intact. Loading trusts nothing: every zip entry must match its checksum,
`torch.load(weights_only=True)` rebuilds tensors and plain containers only (a file that would run
code is refused), and every field is checked for type and shape (on the meta device) before use;
a bad file is one `CheckpointError` naming what is wrong. Older formats are upgraded in memory.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from minigpt import __version__
from minigpt.config import GPTConfig
from minigpt.errors import MinigptError
from minigpt.model import GPT
from minigpt.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 2  # 2 added "written_by"; see _UPGRADES for how older files are read

# A save writes `.<name>.<8 random characters>.tmp` beside its target.
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


class CheckpointError(MinigptError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or from another format/vocabulary."""


class NonFiniteError(CheckpointError):
    """NaN or infinity in the weights or optimizer moments (`kind`), first in `tensor`: not saved."""

    def __init__(self, kind: str, tensor: str, path: Path):
        self.kind, self.tensor = kind, tensor
        super().__init__(f"save_checkpoint: {tensor} holds NaN or infinite values (training "
                         f"diverged: try a lower learning rate); nothing was written to {str(path)!r}")


@dataclass
class Checkpoint:
    """What `load_checkpoint` gives back."""

    model: GPT
    config: GPTConfig
    tokenizer: Tokenizer
    optimizer_state: dict[str, Any] | None = None
    train_state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was read from, for messages


# -- saving -------------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: GPT, tokenizer: Tokenizer,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write model + config + tokenizer (+ optimizer and training state) to `path`, atomically.

    NaN or infinite numbers are a `NonFiniteError` (the one scan of a save), a training state
    that is not plain data and tensors a CheckpointError: nothing is written, nothing is lost.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"save_checkpoint: {str(path)!r} is a folder; give the path of a file "
                              f"in it, e.g. {str(path / 'ckpt.pt')!r}")
    if path.parent.exists() and not path.parent.is_dir():
        raise CheckpointError(f"save_checkpoint: {str(path.parent)!r} is a file, not a folder to save in")
    first_bad = next(non_finite_tensors(model, optimizer), None)
    if first_bad is not None:
        raise NonFiniteError(*first_bad, path)
    try:
        _check_data(train_state or {}, "train_state")
    except _BadField as error:
        raise CheckpointError(f"save_checkpoint: {error}") from None
    payload = {
        "format_version": FORMAT_VERSION,
        "written_by": f"minigpt {__version__}",
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_state": train_state or {},
    }
    _write_atomically(path, payload)
    return path


def non_finite_tensors(model: GPT, optimizer: torch.optim.Optimizer | None) -> Iterator[tuple[str, str]]:
    """(kind, name) of each weight ('weights') or optimizer moment ('optimizer state') not finite."""
    for name, tensor in model.state_dict().items():
        if not _all_finite(tensor):
            yield "weights", f"model weight {name!r}"
    names = {id(param): name for name, param in model.named_parameters()}
    for param, state in (optimizer.state.items() if optimizer is not None else ()):
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and not _all_finite(value):
                yield "optimizer state", f"optimizer state {key!r} of {names.get(id(param), 'a parameter')!r}"


def _all_finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename it over `path`. The file is made
    with mode 0o666, trimmed by the umask as any new file is (a checkpoint is not a private file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = _create_temp_file(path)
    except OSError as error:
        raise CheckpointError(f"save_checkpoint: cannot write in {str(path.parent)!r} "
                              f"({error.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)  # atomic on POSIX and Windows: readers see old or new, never half
        _fsync_folder(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _create_temp_file(path: Path) -> tuple[int, str]:
    """Open a new file named like `TEMP_NAME` beside `path`; (its descriptor, its name)."""
    name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")  # O_EXCL: never another's
    return os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666), name


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened or synced."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- loading ------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's contents, checked and upgraded (optimizer None, train_state {}: unsaved)."""
    return _read(Path(path))[0]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model (on `device`, in eval mode), its config and its tokenizer from a checkpoint."""
    payload, config, tokenizer = _read(Path(path))
    model = GPT(config)
    model.load_state_dict(payload["model"])  # checked by _read: the same names and shapes
    model.to(device).eval()
    return Checkpoint(model, config, tokenizer, payload["optimizer"], payload["train_state"], Path(path))


def _read(path: Path) -> tuple[dict[str, Any], GPTConfig, Tokenizer]:
    source = str(path)
    if path.exists() and not path.is_file():  # a folder; a device or a pipe would hang
        what = "a folder, not a checkpoint file" if path.is_dir() else "not a regular file"
        raise CheckpointError(f"checkpoint: {source!r} is {what}")
    try:
        with path.open("rb") as f:  # one open file: the checks and the load see the same bytes
            payload = _unpickle(f, source)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: no such file {source!r} (minigpt train writes "
                              f"checkpoints such as out/ckpt.pt)") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint: {source!r} cannot be read ({error.strerror})") from None
    payload = _upgrade(payload, source)
    try:
        config, tokenizer = _check_payload(payload)
    except _BadField as error:
        raise CheckpointError(f"checkpoint: {source!r} cannot be used: {error}") from None
    return payload, config, tokenizer


def _unpickle(f: BinaryIO, source: str) -> Any:
    """torch.save writes a zip archive: each entry must match its CRC checksum, then only tensors
    and plain data are rebuilt (weights_only)."""
    if f.read(4) != b"PK\x03\x04":  # how every zip archive starts
        raise CheckpointError(f"checkpoint: {source!r} is not a minigpt checkpoint (not a torch.save "
                              f"archive; minigpt train writes checkpoints such as out/ckpt.pt)")
    try:
        with zipfile.ZipFile(f) as archive:
            damaged = archive.testzip()  # reads every entry, comparing it with its checksum
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise CheckpointError(f"checkpoint: {source!r} is corrupt or truncated (not a complete "
                              f"torch.save archive)") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint: {source!r} is corrupt: the data of {damaged!r} does not "
                              f"match its checksum (the file was damaged or changed after it was saved)")
    f.seek(0)
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # pass on only what torch found, not its advice
        found = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        raise CheckpointError(f"checkpoint: {source!r} was refused: it holds objects other than "
                              f"tensors and plain data, and loading it could run code "
                              f"({found[0] if found else 'unsupported content'})") from None
    except Exception as error:  # a damaged file fails in many ways inside the unpickler
        raise CheckpointError(f"checkpoint: {source!r} is corrupt or truncated and cannot be "
                              f"read ({type(error).__name__}: {error})") from None


# -- formats ------------------------------------------------------------------------------------

# format_version -> how to lift a payload one version. Format 2 names the minigpt that wrote the
# file; format 1 files all came from 0.1.0.
_UPGRADES = {1: lambda payload: {**payload, "format_version": 2, "written_by": "minigpt 0.1.0 (format 1)"}}


def _upgrade(payload: Any, source: str) -> dict[str, Any]:
    """Lift an older format to the current one, one version at a time (in memory only)."""
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint: {source!r} is not a minigpt checkpoint (no format_version)")
    found = payload["format_version"]
    if not (_is_whole_number(found) and 1 <= found <= FORMAT_VERSION):
        newer = _is_whole_number(found) and found > FORMAT_VERSION
        by = payload.get("written_by")
        raise CheckpointError(f"checkpoint: {source!r} has format_version={_short(found)}"
                              + (f" (written by {by[:60]})" if isinstance(by, str) else "")
                              + f"; this minigpt reads format_version=1 to {FORMAT_VERSION}"
                              + ("; a newer minigpt wrote it: upgrade minigpt to read it" if newer else ""))
    while payload["format_version"] < FORMAT_VERSION:
        payload = _UPGRADES[payload["format_version"]](payload)
    return payload


# -- field checks -------------------------------------------------------------------------------

class _BadField(Exception):
    """A field of a checkpoint that is missing or of the wrong type; the message names it."""


def _check_payload(payload: dict[str, Any]) -> tuple[GPTConfig, Tokenizer]:
    """Check every field of an (upgraded) payload; the config and tokenizer it describes."""
    if missing := sorted({"written_by", "config", "tokenizer", "model"} - set(payload)):
        raise _BadField(f"it lacks {missing}")
    payload.setdefault("optimizer", None)
    payload.setdefault("train_state", {})
    _require(isinstance(payload["written_by"], str), "written_by", "a string",
             payload["written_by"])
    try:
        config = GPTConfig.from_dict(payload["config"])
        payload["config"] = config.to_dict()  # options added since the file was written: defaults
    except (ValueError, TypeError) as error:
        raise _BadField(f"config: {error}") from None
    try:
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
    except (ValueError, TypeError) as error:
        raise _BadField(f"tokenizer: {error}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise _BadField(f"it has a tokenizer of {tokenizer.vocab_size} tokens but a model for "
                        f"vocab_size={config.vocab_size}")
    _check_model_state(payload["model"], config)
    if payload["optimizer"] is not None:
        _check_optimizer_state(payload["optimizer"])
    train_state = payload["train_state"]  # its meaning is its owner's: minigpt.trainer.TrainState
    _require(isinstance(train_state, dict) and all(isinstance(k, str) for k in train_state),
             "train_state", "a dict with string keys", train_state)
    _check_data(train_state, "train_state")
    return config, tokenizer


def _require(ok: bool, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise _BadField(f"{name} must be {allowed}, got {_short(value)}")


def _short(value: Any) -> str:
    """A value as an error message shows it: a tensor by dtype and shape, anything else cut short."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tensor(value: Any) -> bool:  # in memory: not sparse, not a data-less 'meta' tensor
    return isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type == "cpu"


def _check_model_state(state: Any, config: GPTConfig) -> None:
    """The weights: the names and shapes the config implies (found on the meta device, without
    allocating memory), floating point, finite."""
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    _require(isinstance(state, dict) and all(isinstance(k, str) for k in state), "model",
             "a dict of named tensors", state)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise _BadField(f"its model weights do not match: missing {missing}, unexpected {unexpected}")
    for name, tensor in state.items():
        _require(_is_tensor(tensor) and tensor.is_floating_point(), f"model[{name!r}]",
                 "a tensor of floating-point numbers", tensor)
        if tensor.shape != expected[name].shape:
            raise _BadField(f"{name} has shape {tuple(tensor.shape)} in the file but "
                            f"{tuple(expected[name].shape)} in the model its config describes "
                            f"(another vocabulary or model size?)")
    _check_data(state, "model", strings=False)


def _check_optimizer_state(state: Any) -> None:
    """What `Optimizer.state_dict()` gives: parameter index -> dict, and groups of indices."""
    _require(isinstance(state, dict) and set(state) == {"state", "param_groups"}, "optimizer",
             "None or a dict of 'state' and 'param_groups'", state)
    per_parameter, groups = state["state"], state["param_groups"]
    _require(isinstance(per_parameter, dict) and all(
        _is_whole_number(k) and isinstance(v, dict) for k, v in per_parameter.items()),
        "optimizer['state']", "a dict of parameter index -> dict", per_parameter)
    _require(isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("params"), list)
        and all(map(_is_whole_number, g["params"])) for g in groups),
        "optimizer['param_groups']", "a list of dicts, each with a list of parameter indices "
        "under 'params'", groups)
    _check_data(state, "optimizer", strings=False)


def _check_data(value: Any, name: str, strings: bool = True) -> None:
    """Plain data and finite tensors in memory all the way down; the first bad item is named."""
    if isinstance(value, (dict, list, tuple)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _require(isinstance(key, (str, int)), name, "a dict with string or whole-number keys",
                     value)
            _check_data(item, f"{name}[{key!r}]", strings)
        return
    ok = _is_tensor(value) or value is None or isinstance(value, (bool, int, float)) or (
        strings and isinstance(value, str))
    _require(ok, name, "a number, " + "a string, " * strings + "True/False, None or a tensor", value)
    if _is_tensor(value) and not _all_finite(value):
        raise _BadField(f"{name} holds NaN or infinite values")
