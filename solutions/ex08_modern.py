"""Chapter 8 — A faster GPT: the modern pieces, by hand.

Four pieces that the speedrun recipe (`minigpt train --preset speedrun`) swaps into the GPT of
chapter 4: rotary position embeddings, RMS normalisation, the SwiGLU feed-forward, and the
Newton–Schulz orthogonalisation at the heart of the Muon optimizer. Each is a plain function of
tensors, so it can be checked on its own. Write them with plain tensor operations: the point is
to see the arithmetic (do not call F.rms_norm, nn.RMSNorm or torch's Muon helpers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotary_angles(head_size: int, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """The rotation angle of every (position, pair of features): float32, (T, head_size // 2).

    Pair i turns at frequency ``base ** (-2i / head_size)`` radians per position, so the first
    pairs spin fast (fine position) and the last ones slowly (coarse position). The angle at
    position m is ``m * frequency``.

    Args:
        head_size: the features per head; must be even (rotary turns pairs), else ValueError
            naming head_size.
        positions: (T,) integer positions (they need not start at 0: a KV cache offsets them).
        base: the base of the geometric frequency ladder.
    """
    if head_size % 2:
        raise ValueError(f"head_size must be even for rotary embeddings (they turn pairs), got {head_size}")
    frequencies = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (D/2,)
    return positions.to(torch.float32)[:, None] * frequencies[None, :]  # (T, D/2)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys by their positions: same shape and dtype as ``x``, (..., T, head_size).

    The features are split into two halves, ``x1 = x[..., :D/2]`` and ``x2 = x[..., D/2:]``;
    feature i of the first half and feature i of the second form a pair that is turned by the
    angle ``rotary_angles(D, positions, base)[t, i]``:
    ``(x1 * cos - x2 * sin, x1 * sin + x2 * cos)``, concatenated back in that order.
    ``x`` itself is not changed.

    Why: after rotating q at position m and k at position n, their dot product depends only on
    m - n, so attention sees relative positions, and no position table is learned.
    """
    head_size = x.shape[-1]
    angles = rotary_angles(head_size, positions, base)  # (T, D/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : head_size // 2], x[..., head_size // 2 :]  # (..., T, D/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., T, D)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Scale each vector of the last dimension to root-mean-square 1, then by ``weight``.

    ``x / sqrt(mean(x ** 2) + eps) * weight``, the mean over the last dimension, eps inside the
    square root. Unlike LayerNorm nothing is subtracted (no mean, no bias): cheaper, and just as
    good in practice.

    Args:
        x: (..., d). Returns (..., d).
        weight: (d,) gains, or None for no gains (the QK-norm of the speedrun recipe).
        eps: added to the mean square inside the square root, so a zero vector stays finite.
    """
    out = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return out if weight is None else out * weight


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward: ``(silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T``.

    Weights are stored as ``nn.Linear`` stores them, (out_features, in_features):
    w_gate and w_up are (hidden, d), w_down is (d, hidden). The gate branch, passed through
    SiLU, scales the up branch element by element.

    Args:
        x: (..., d). Returns (..., d).
    """
    gate = F.silu(x @ w_gate.T)  # (..., hidden)
    up = x @ w_up.T  # (..., hidden)
    return (gate * up) @ w_down.T  # (..., d)


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``G``: Muon's update.

    Muon replaces a weight matrix's update by its "orthogonalised" form, U V^T from G = U S V^T,
    so every direction moves by about the same amount. Newton–Schulz gets there with matrix
    products only. Steps, in float32 (the result is float32, G's shape; G is not changed):
    1. if G is tall (rows > columns), work on its transpose (and transpose back at the end),
       so that A below is the smaller of the two square products;
    2. X = G / (||G||_F + eps) (the Frobenius norm), so every singular value is at most 1;
    3. ``steps`` times: A = X @ X.T, then X = a * X + (b * A + c * A @ A) @ X,
       with (a, b, c) = (3.4445, -4.7750, 2.0315).
    The result's singular values land roughly between 0.7 and 1.2, not exactly 1: close enough.

    Args:
        G: (m, n) matrix (a gradient or a momentum buffer); anything else is a ValueError.
        steps: number of iterations, >= 1.
    """
    if G.dim() != 2:
        raise ValueError(f"G must be a 2-D matrix, got shape {tuple(G.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.float32)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T  # (n, m): now wide
    X = X / (X.norm() + eps)
    for _ in range(steps):
        A = X @ X.T  # (rows, rows): the short side
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X
