"""Checkpoints: everything needed to use a trained model again, or to carry on training it.

A checkpoint holds the model's weights, its `GPTConfig`, its tokenizer, and, for resuming, the
optimizer's state and the training state (step, random-number generators, history).

Saving refuses NaN or infinite numbers (a diverged run must not replace a good checkpoint) and is
atomic: the file is written beside the target under a temporary name and renamed over it, so a
crash or a kill mid-save leaves the previous checkpoint intact (`remove_stale_temp_files` clears
the temporary files such a kill leaves behind).

Loading trusts nothing in the file: every entry of the zip archive must match its checksum (a
damaged or altered file is refused), `torch.load(weights_only=True)` rebuilds tensors and plain
containers only (a file that tries to run code is refused), and every field is checked for its
type and shape before it is used, so a bad file is one `CheckpointError` naming what is wrong.
Files of an older format are upgraded in memory as they are read.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import torch

from minigpt.config import GPTConfig, TrainConfig
from minigpt.model import GPT
from minigpt.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 2  # 2 added "written_by"; see _UPGRADES for how older files are read
_UMASK = os.umask(0o022)  # read once, at import: new files get 0o666 minus this
os.umask(_UMASK)

# A save writes `.<name>.<8 random characters>.tmp` beside its target (tempfile.mkstemp's names).
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))


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


# -- saving -------------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: GPT, tokenizer: Tokenizer,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write model + config + tokenizer (+ optimizer and training state) to `path`, atomically.

    NaN or infinite weights (or optimizer moments) are a ValueError naming the tensor, and so is a
    training state that `load_checkpoint` would refuse: nothing is written then, and a checkpoint
    already at `path` is kept.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"save_checkpoint: {str(path)!r} is a folder; give the path of a file "
                         f"in it, e.g. {str(path / 'ckpt.pt')!r}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"save_checkpoint: {str(path.parent)!r} is a file, not a folder to save in")
    first_bad = next(non_finite_tensors(model, optimizer), None)
    if first_bad is not None:
        raise ValueError(f"save_checkpoint: {first_bad[1]} holds NaN or infinite values (training "
                         f"diverged: try a lower learning rate); nothing was written to "
                         f"{str(path)!r}")
    try:
        _check_train_state(train_state or {})
    except _BadField as error:
        raise ValueError(f"save_checkpoint: {error}") from None
    payload = {
        "format_version": FORMAT_VERSION,
        "written_by": f"minigpt {_package_version()}",
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_state": train_state or {},
    }
    _write_atomically(path, payload)
    return path


def non_finite_tensors(model: GPT, optimizer: torch.optim.Optimizer | None
                       ) -> Iterator[tuple[str, str]]:
    """(kind, name) of each weight ('weights') or optimizer moment ('optimizer state') that holds
    NaN or infinity; the trainer and `save_checkpoint` both refuse to save such a model."""
    for name, tensor in model.state_dict().items():
        if not _all_finite(tensor):
            yield "weights", f"model weight {name!r}"
    if optimizer is None:
        return
    names = {id(param): name for name, param in model.named_parameters()}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and not _all_finite(value):
                yield ("optimizer state",
                       f"optimizer state {key!r} of {names.get(id(param), 'a parameter')!r}")


def _all_finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


@lru_cache(maxsize=1)
def _package_version() -> str:
    try:
        return version("minigpt-course")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown)"


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename it over `path`."""
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


def remove_stale_temp_files(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files that interrupted saves (a kill mid-save) left in `folder`.

    Only plain files named the way `save_checkpoint` names its temporary files are removed, and only
    directly in `folder`; with `names` (e.g. ckpt.pt, best.pt), only those of saves to these names,
    so a folder shared with other files loses nothing that merely looks alike. Call it at the start
    of a run, while no other process saves there (a temp file of a save in progress would be taken
    away from it). Returns the paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    targets = None if names is None else set(names)
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.fullmatch(entry.name)
        ours = match is not None and (targets is None or match["target"] in targets)
        if ours and entry.is_file() and not entry.is_symlink():
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


# -- loading ------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file: safe, intact, upgraded to this format, checked field by field.

    The dict has every key of the current format: format_version, written_by, config, tokenizer,
    model, optimizer (None if none was saved) and train_state ({} if none was saved).
    """
    return _read(Path(path))[0]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model (on `device`, in eval mode), its config and its tokenizer from a checkpoint."""
    payload, config, tokenizer = _read(Path(path))
    model = GPT(config)
    model.load_state_dict(payload["model"])  # checked by _read: the same names and shapes
    model.to(device).eval()
    return Checkpoint(model, config, tokenizer, payload["optimizer"], payload["train_state"])


def load_model_state(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy weights into `model`, explaining a mismatch (another vocabulary or shape) in words."""
    try:
        _check_model_state(state, model.state_dict(), "here")
    except _BadField as error:
        raise CheckpointError(f"checkpoint: {source!r} does not fit this model: {error}") from None
    model.load_state_dict(state)


def _read(path: Path) -> tuple[dict[str, Any], GPTConfig, Tokenizer]:
    source = str(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint: {source!r} is a folder, not a checkpoint file")
    if path.exists() and not path.is_file():  # a device or a pipe would hang or never end
        raise CheckpointError(f"checkpoint: {source!r} is not a regular file")
    try:
        with path.open("rb") as f:  # one open file: the checks and the load see the same bytes
            _check_archive(f, source)
            f.seek(0)
            payload = _unpickle(f, source)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: no such file {source!r}") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint: {source!r} cannot be read ({error.strerror})") from None
    payload = _upgrade(payload, source)
    try:
        config, tokenizer = _check_payload(payload)
    except _BadField as error:
        raise CheckpointError(f"checkpoint: {source!r} cannot be used: {error}") from None
    return payload, config, tokenizer


def _check_archive(f: BinaryIO, source: str) -> None:
    """torch.save writes a zip archive; every entry must be there and match its CRC checksum."""
    try:
        with zipfile.ZipFile(f) as archive:
            damaged = archive.testzip()  # reads every entry, comparing it with its checksum
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise CheckpointError(f"checkpoint: {source!r} is corrupt or truncated (not a complete "
                              f"torch.save archive)") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint: {source!r} is corrupt: the data of {damaged!r} does "
                              f"not match its checksum (the file was damaged or changed after "
                              f"it was saved)")


def _unpickle(f: BinaryIO, source: str) -> Any:
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False; pass on only what it found in the file.
        found = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        reason = found[0] if found else "unsupported content"
        raise CheckpointError(
            f"checkpoint: {source!r} was refused: it holds objects other than tensors and plain "
            f"data, and loading it could run code ({reason})") from None
    except Exception as error:  # a damaged file fails in many ways inside the unpickler
        raise CheckpointError(f"checkpoint: {source!r} is corrupt or truncated and cannot be "
                              f"read ({type(error).__name__}: {error})") from None


# -- formats ------------------------------------------------------------------------------------

def _format_1_to_2(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 2 names the minigpt that wrote the file; format 1 files all came from 0.1.0."""
    return {**payload, "format_version": 2, "written_by": "minigpt 0.1.0 (format 1)"}


_UPGRADES = {1: _format_1_to_2}  # format_version -> the function that lifts it one version


def _upgrade(payload: Any, source: str) -> dict[str, Any]:
    """Lift an older format to the current one, one version at a time (in memory only)."""
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint: {source!r} is not a minigpt checkpoint "
                              f"(no format_version)")
    found = payload["format_version"]
    if not (_is_whole_number(found) and 1 <= found <= FORMAT_VERSION):
        newer = _is_whole_number(found) and found > FORMAT_VERSION
        written_by = payload.get("written_by")
        raise CheckpointError(
            f"checkpoint: {source!r} has format_version={_short(found)}"
            + (f" (written by {written_by[:60]})" if isinstance(written_by, str) else "")
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
    missing = sorted({"written_by", "config", "tokenizer", "model"} - set(payload))
    if missing:
        raise _BadField(f"it lacks {missing}")
    payload.setdefault("optimizer", None)
    payload.setdefault("train_state", {})
    _require(isinstance(payload["written_by"], str), "written_by", "a string",
             payload["written_by"])
    try:
        config = GPTConfig.from_dict(payload["config"])
    except (ValueError, TypeError) as error:
        raise _BadField(f"config: {error}") from None
    payload["config"] = config.to_dict()  # options added since the file was written: their defaults
    try:
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
    except (ValueError, TypeError) as error:
        raise _BadField(f"tokenizer: {error}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise _BadField(f"it has a tokenizer of {tokenizer.vocab_size} tokens but a model for "
                        f"vocab_size={config.vocab_size}")
    with torch.device("meta"):  # the shapes the config implies, without allocating any memory
        expected = GPT(config).state_dict()
    _check_model_state(payload["model"], expected, "in the model its config describes")
    _check_optimizer_state(payload["optimizer"])
    _check_train_state(payload["train_state"])
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _is_tensor(value: Any) -> bool:
    """A real tensor of numbers in memory (not sparse, not a data-less 'meta' tensor)."""
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided
            and value.device.type == "cpu")


def _check_model_state(state: Any, expected: dict[str, torch.Tensor], where: str) -> None:
    """The weights: the names and shapes `expected` has, floating point, finite."""
    _require(isinstance(state, dict) and all(isinstance(k, str) for k in state), "model",
             "a dict of named tensors", state)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise _BadField(f"its model weights do not match: missing {missing}, unexpected "
                        f"{unexpected}")
    for name, tensor in state.items():
        _require(_is_tensor(tensor) and tensor.is_floating_point(), f"model[{name!r}]",
                 "a tensor of floating-point numbers", tensor)
        if tensor.shape != expected[name].shape:
            raise _BadField(f"{name} has shape {tuple(tensor.shape)} in the file but "
                            f"{tuple(expected[name].shape)} {where} (another vocabulary or model "
                            f"size?)")
        if not _all_finite(tensor):
            raise _BadField(f"model[{name!r}] holds NaN or infinite values")


def _check_optimizer_state(state: Any) -> None:
    """None, or what `Optimizer.state_dict()` gives: per-parameter tensors and numbers, groups."""
    if state is None:
        return
    _require(isinstance(state, dict) and set(state) == {"state", "param_groups"}, "optimizer",
             "None or a dict of 'state' and 'param_groups'", state)
    per_parameter, groups = state["state"], state["param_groups"]
    _require(isinstance(per_parameter, dict) and all(
        _is_whole_number(k) and isinstance(v, dict) for k, v in per_parameter.items()),
        "optimizer['state']", "a dict of parameter index -> dict", per_parameter)
    for index, values in per_parameter.items():
        for key, value in values.items():
            name = f"optimizer['state'][{index}][{key!r}]"
            _require(isinstance(key, str) and (value is None or _is_number(value)
                                               or _is_tensor(value)), name,
                     "a number, a tensor or None", value)
            if _is_tensor(value) and not _all_finite(value):
                raise _BadField(f"{name} holds NaN or infinite values")
    _require(isinstance(groups, list) and all(isinstance(g, dict) for g in groups),
             "optimizer['param_groups']", "a list of dicts", groups)
    for i, group in enumerate(groups):
        for key, value in group.items():
            name = f"optimizer['param_groups'][{i}][{key!r}]"
            if key == "params":
                _require(isinstance(value, list) and all(map(_is_whole_number, value)), name,
                         "a list of parameter indices", value)
            else:
                _require(isinstance(key, str) and (value is None or isinstance(value, (
                    bool, int, float)) or _is_tensor(value) or (isinstance(value, (tuple, list))
                    and all(map(_is_number, value)))), name,
                    "a number, True/False, None, a tensor or a tuple of numbers", value)


def _is_rng_state(value: Any) -> bool:
    """A state that a CPU random-number generator accepts (a uint8 tensor of the right size)."""
    if not (_is_tensor(value) and value.dtype == torch.uint8):
        return False
    try:
        torch.Generator().set_state(value)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def _is_history(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(entry, dict) and {"step", "val"} <= set(entry) and all(
            isinstance(k, str) and _is_number(v) for k, v in entry.items()) for entry in value)


def _is_train_config(value: Any) -> bool:
    known = {f.name for f in fields(TrainConfig)}
    return isinstance(value, dict) and all(k in known and _is_plain(v) for k, v in value.items())


# What the trainer stores in train_state, and the checks its values must pass. Other keys (data
# that a caller adds with its run) are kept as they are.
_TRAIN_STATE = {
    "step": ("a whole number >= 0", lambda v: _is_whole_number(v) and v >= 0),
    "history": ("a list of evaluations, dicts of numbers with 'step' and 'val'", _is_history),
    "train_losses": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
    "batch_rng": ("a random-number generator state", _is_rng_state),
    "torch_rng": ("a random-number generator state", _is_rng_state),
    "cuda_rng": ("a list of uint8 tensors", lambda v: isinstance(v, list) and all(
        _is_tensor(t) and t.dtype == torch.uint8 for t in v)),
    "train_config": ("a dict of TrainConfig fields and plain values", _is_train_config),
    "data": ("a string (where the text came from)", lambda v: isinstance(v, str)),
    "val_fraction": ("a number", _is_number),
}


def _check_train_state(state: Any) -> None:
    _require(isinstance(state, dict) and all(isinstance(k, str) for k in state), "train_state",
             "a dict with string keys", state)
    for key, (allowed, ok) in _TRAIN_STATE.items():
        if key in state:
            _require(ok(state[key]), f"train_state[{key!r}]", allowed, state[key])
