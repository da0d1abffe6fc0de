"""How the grader and its worker talk: length-prefixed frames of plain data.

The worker (``worker.py``) runs the learner's code; the pytest process
(``client.py``) holds the assertions. Between them travel only frames of
plain data: ``None``, bools, ints, floats, strings, lists, tuples, dicts and
tensors, written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses to build any other object.
So nothing the learner's code returns can run code in the pytest process.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import torch

HEADER = struct.Struct("!Q")
MAX_FRAME = 256 * 1024 * 1024  # a frame larger than this is a broken or hostile worker
PLAIN = (type(None), bool, int, float, str)


class ProtocolError(Exception):
    """A frame that is not well-formed plain data."""


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` turned into plain data: tensors detached onto the CPU, other objects described.

    An object that is not plain data (a NumPy number, a generator, a custom
    class) becomes ``{"__object__": type name, "repr": short repr}``, so the
    grader can say what came back instead of failing to read it.
    """
    if depth > 20:
        return {"__object__": type(value).__name__, "repr": "(nested too deeply)"}
    if type(value) in PLAIN:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone().as_subclass(torch.Tensor)
    if type(value) in (list, tuple):
        return type(value)(plain(v, depth + 1) for v in value)
    if type(value) is dict and all(type(k) in PLAIN for k in value):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, torch.Size):
        return tuple(value)
    try:
        text = repr(value)[:200]
    except Exception:  # a hostile __repr__
        text = "?"
    return {"__object__": type(value).__name__, "repr": text}


def dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # anything but plain data is refused
        raise ProtocolError(f"the worker sent something that is not plain data ({type(exc).__name__})") from None


def write_frame(fd: int, value: Any) -> None:
    data = dumps(value)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exactly(fd: int, size: int) -> bytes:
    """Blocking read of ``size`` bytes (used by the worker); EOF raises EOFError."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    (size,) = HEADER.unpack(read_exactly(fd, HEADER.size))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is too large")
    return loads(read_exactly(fd, size))
