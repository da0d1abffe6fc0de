"""Assertion helpers for the graders: failures read in the learner's terms.

Every helper raises :class:`GradeFailure` with one or two plain sentences
(expected shape vs got, the first position where values differ, which
property broke). ``plugin.py`` prints that message without a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"

# Snapshots hold float32 results computed on one machine; another machine (or
# another thread count) may differ in the last bits. Compare within these.
SNAPSHOT_RTOL = 1e-4
SNAPSHOT_ATOL = 1e-5


class GradeFailure(AssertionError):
    """A wrong answer. The message is shown to the learner as it is."""


def fail(message: str) -> None:
    raise GradeFailure(message)


def check(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise GradeFailure(message)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _index(flat_index: int, shape: Sequence[int]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def assert_tensor(got: Any, name: str, shape: Sequence[int] | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """``got`` must be a tensor, with ``shape`` and ``dtype`` when given."""
    if not isinstance(got, torch.Tensor):
        fail(f"{name}: expected a torch.Tensor, got {type(got).__name__}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        fail(f"{name}: expected shape {tuple(shape)}, got {tuple(got.shape)}")
    if dtype is not None and got.dtype != dtype:
        fail(f"{name}: expected dtype {dtype}, got {got.dtype}")


def assert_close(got: Any, expected: Any, name: str, atol: float = 1e-5,
                 rtol: float = 1e-4, check_dtype: bool = True) -> None:
    """Compare a tensor (or a number) with the expected one, within a tolerance.

    Reports a type, shape or dtype mismatch first, then the first position
    where the values differ, with both values and how many positions differ.
    """
    if not isinstance(expected, torch.Tensor):
        assert_number(got, expected, name, atol=atol, rtol=rtol)
        return
    assert_tensor(got, name, shape=expected.shape, dtype=expected.dtype if check_dtype else None)
    got_d, exp_d = got.detach().to(torch.float64), expected.detach().to(torch.float64)
    bad = ~torch.isclose(got_d, exp_d, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        first = int(bad.flatten().nonzero()[0])
        where = _index(first, expected.shape)
        tolerance = f"; tolerance atol={atol}, rtol={rtol}" if expected.is_floating_point() else ""
        g, e = got_d.flatten()[first].item(), exp_d.flatten()[first].item()
        if not expected.is_floating_point():
            g, e = int(g), int(e)
        fail(f"{name}: values differ at index {list(where)}: got {_fmt(g)}, expected {_fmt(e)} "
             f"({int(bad.sum())} of {bad.numel()} values differ{tolerance})")


def assert_number(got: Any, expected: float, name: str, atol: float = 1e-6,
                  rtol: float = 1e-6) -> None:
    """``got`` must be a plain Python number close to ``expected``."""
    if isinstance(got, torch.Tensor):
        fail(f"{name}: expected a Python number, got a tensor (use .item() to turn a one-element tensor into a float)")
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{name}: expected a number, got {type(got).__name__} ({got!r})")
    if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        g, e = _fmt(float(got)), _fmt(float(expected))
        if g == e:  # equal to 6 digits: show them all, and the likely cause
            fail(f"{name}: got {float(got)!r}, expected {float(expected)!r}: they differ after the 6th digit "
                 f"(tolerance atol={atol}, rtol={rtol}); was it computed in float32 (a torch tensor)? "
                 f"compute with Python floats and the math module")
        fail(f"{name}: got {g}, expected {e} (tolerance atol={atol}, rtol={rtol})")


def assert_equal_seq(got: Any, expected: Sequence, name: str) -> None:
    """Compare two sequences (lists, tuples, strings) and name the first difference."""
    if type(got) is not type(expected):
        fail(f"{name}: expected a {type(expected).__name__}, got {type(got).__name__}")
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            fail(f"{name}: first difference at position {i}: got {g!r}, expected {e!r}")
    if len(got) != len(expected):
        fail(f"{name}: expected length {len(expected)}, got {len(got)}")


def assert_param_names(params: dict[str, Sequence[int]], expected: dict[str, tuple[int, ...]], name: str) -> None:
    """The module's parameters (name -> shape, as a probe reports them) must have exactly these names and shapes."""
    got = {n: tuple(shape) for n, shape in params.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing:
        fail(f"{name}: missing parameter(s) {missing[:4]} (check the attribute names in the docstring)")
    if extra:
        fail(f"{name}: unexpected parameter(s) {extra[:4]} (only the layers named in the docstring hold "
             f"parameters: a bias where there should be none? a mask stored as a parameter instead of a buffer?)")
    for n, shape in expected.items():
        if got[n] != shape:
            fail(f"{name}: parameter {n} should have shape {shape}, got {got[n]}")


def fill_parameters(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Overwrite every parameter with seeded random values, in name order.

    This makes a learner's model and the reference hold the same numbers no
    matter in which order their layers were created.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def seeded_weights(shapes: dict[str, Sequence[int]], seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """The values ``fill_parameters(module, seed, scale)`` gives parameters of these names and shapes.

    The grader computes them in its own process, so its expected outputs never
    depend on anything the learner's process sends back but the names.
    """
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(tuple(shapes[name]), generator=g) * scale for name in sorted(shapes)}


def check_device_ready(result: dict, name: str) -> None:
    """Fail when a module did not follow ``.to(device)`` (see ``_cases.probe_on_another_device``)."""
    if result["mixed"] or result["error"]:
        where = f" (in {', '.join(sorted(set(result['mixed'])))})" if result["mixed"] else ""
        fail(f"{name} does not follow .to(device): after moving it to another device, an operation mixed "
             f"tensors of two devices{where}{': ' + result['error'] if result['error'] else ''}. Keep tensors "
             f"such as the mask in buffers (self.register_buffer) and create new ones with device=x.device")


def check_buffers(info: dict, name: str) -> None:
    """Fail when a module keeps a tensor as a plain attribute (it would not follow .to(device))."""
    if info["plain_tensors"]:
        fail(f"{name} keeps the tensor(s) {info['plain_tensors'][:3]} as plain attributes: register them "
             f"with self.register_buffer(...) so that .to(device) moves them with the model")


def to_jsonable(value: Any) -> Any:
    """Tensors become nested lists; tuples become lists; the rest stays."""
    if isinstance(value, torch.Tensor):
        return value.detach().tolist()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value
