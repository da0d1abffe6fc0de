"""Grader for chapter 8: exercises/ex08_modern.py.

Values are compared with the committed snapshots of ``solutions/`` (``_grader/cases.py``) within the
stated tolerances; the properties (norms kept, scores that depend only on m - n, an offset that is
a slice of the whole, scale invariance, singular values near 1) are computed here, in the grader's
process, from what the learner's functions return.
"""

import pytest
import torch
import torch.nn.functional as F

from _grader.grading import SNAPSHOT_ATOL, SNAPSHOT_RTOL, assert_close, assert_tensor, check, fail

NS_ATOL = 1e-4  # Newton–Schulz: five rounds of float32 products, in any equivalent order


def randn(seed, *shape, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def probe_error(m, name, args, kwargs):
    """Runs in the worker: the exception a call raises (class names and message), or None."""
    try:
        getattr(m, name)(*args, **kwargs)
    except NotImplementedError:
        raise  # the stub: reported as "not implemented yet", not as a wrong answer
    except Exception as exc:  # the learner's exception, described as data
        return {"mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
    return None


def probe_products(m, G):
    """Runs in the worker: newton_schulz(G) and the shape of every matrix product it computed."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Products(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ in ("mm", "addmm", "bmm", "matmul", "baddbmm"):
                self.shapes.append(list(out.shape))
            return out

    mode = Products()
    with mode:
        out = m.newton_schulz(G)
    return {"out": out, "shapes": mode.shapes}


def snapshot_close(got, expected, name, atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL):
    assert_close(got, torch.as_tensor(expected), name, atol=atol, rtol=rtol)


# --------------------------------------------------------------------------- rotary embeddings

@pytest.mark.points(1)
def test_rotary_angles(ex):
    got, expected = ex.case("rotary_outputs")
    angles = ex.rotary_angles(8, torch.arange(5))
    assert_tensor(angles, "rotary_angles(8, positions (5,))", shape=(5, 4), dtype=torch.float32)
    check(bool((angles[0] == 0).all()), "rotary_angles: position 0 turns nothing (every angle 0)")
    assert_close(angles[1], torch.tensor([1.0, 0.1, 0.01, 0.001]),
                 "rotary_angles(8, ...) at position 1 (frequencies 10000 ** (-2i / 8) for i = 0..3)")
    snapshot_close(got["angles"], expected["angles"], "rotary_angles(8, positions 0..4) (position * frequency)")


@pytest.mark.points(2)
def test_apply_rotary_values(ex):
    got, expected = ex.case("rotary_outputs")
    hint = ("(pairs (x[i], x[i + D/2]), turned: (x1 * cos - x2 * sin, x1 * sin + x2 * cos), first half then "
            "second)")
    snapshot_close(got["from_zero"], expected["from_zero"], "apply_rotary(x (2, 3, 5, 8), positions 0..4) " + hint)
    snapshot_close(got["offset"], expected["offset"], "apply_rotary(x (2, 3, 5, 8), positions 7..11) " + hint)
    snapshot_close(got["base_100"], expected["base_100"], "apply_rotary(x (5, 8), positions [0, 3, 1, 9, 2], "
                                                          "base=100.0)")
    # An input the snapshot does not hold (memorised values do not help), turned here.
    x, positions = randn(5, 3, 6, 12), torch.tensor([4, 0, 2, 7, 1, 5])
    angles = positions[:, None].float() * 10000.0 ** (-torch.arange(0, 12, 2).float() / 12)
    x1, x2, cos, sin = x[..., :6], x[..., 6:], angles.cos(), angles.sin()
    assert_close(ex.apply_rotary(x, positions), torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1),
                 "apply_rotary(x (3, 6, 12), positions [4, 0, 2, 7, 1, 5]) " + hint)


@pytest.mark.points(2)
def test_apply_rotary_keeps_norms_and_sees_relative_positions(ex):
    x = randn(1, 2, 6, 16)
    positions = torch.arange(6)
    out = ex.apply_rotary(x, positions)  # the call fails if it changes x in place
    assert_tensor(out, "apply_rotary(x (2, 6, 16), positions 0..5)", shape=(2, 6, 16), dtype=torch.float32)
    assert_close(out.norm(dim=-1), x.norm(dim=-1), "the length of each rotated vector (a rotation keeps lengths)")
    # One query and one key, put at every position: their score may depend only on m - n.
    q, k = randn(2, 16), randn(3, 16)
    turned_q = ex.apply_rotary(q.expand(8, 16).contiguous(), torch.arange(8))  # (8, 16)
    turned_k = ex.apply_rotary(k.expand(8, 16).contiguous(), torch.arange(8))
    scores = turned_q @ turned_k.T  # (8, 8): query position m, key position n
    for shift in (1, 3):
        assert_close(scores[shift:, shift:], scores[:-shift, :-shift],
                     f"q . k after rotation with both positions moved by {shift} (the score may depend only on "
                     f"m - n)", atol=1e-4)
    check(not torch.allclose(scores[0, 0], scores[3, 0], atol=1e-3),
          "q . k after rotation is the same at m - n = 0 and m - n = 3: the positions change nothing")


@pytest.mark.points(1)
def test_apply_rotary_offset_positions_are_a_slice(ex):
    x = randn(4, 2, 10, 8)
    whole = ex.apply_rotary(x, torch.arange(10))
    tail = ex.apply_rotary(x[:, 6:].contiguous(), torch.arange(6, 10))
    assert_close(tail, whole[:, 6:], "apply_rotary(x[:, 6:], positions 6..9) against apply_rotary(x, 0..9)[:, 6:] "
                                     "(a token is turned by its own position, however it arrives: the KV cache "
                                     "passes positions that do not start at 0)")
    double = ex.apply_rotary(x.double(), torch.arange(10))
    assert_tensor(double, "apply_rotary(x float64, ...)", dtype=torch.float64)


@pytest.mark.points(1)
def test_odd_head_size_is_refused(ex):
    for name, args in [("rotary_angles", [7, torch.arange(3)]), ("apply_rotary", [randn(5, 3, 7), torch.arange(3)])]:
        error = ex.probe(probe_error, name, args, {}, describe=f"{name} with head_size 7")
        if error is None:
            fail(f"{name} with head_size 7 should raise ValueError (rotary turns pairs: head_size must be even), "
                 f"but it returned")
        check("ValueError" in error["mro"], f"{name} with head_size 7 should raise ValueError, got "
                                            f"{error['mro'][0]}: {error['message']}")
        check("head_size" in error["message"], f"{name} with head_size 7: the ValueError's message should name "
                                               f"head_size, got {error['message']!r}")


# --------------------------------------------------------------------------- RMS norm

@pytest.mark.points(2)
def test_rms_norm_matches_pytorch(ex):
    x = randn(6, 3, 5, 12)
    weight = randn(7, 12)
    assert_close(ex.rms_norm(x), F.rms_norm(x, (12,), eps=1e-6), "rms_norm(x) (x / sqrt(mean(x ** 2) + eps))")
    assert_close(ex.rms_norm(x, weight), F.rms_norm(x, (12,), weight, eps=1e-6), "rms_norm(x, weight)")
    small = x * 1e-3  # mean square ~1e-6, as large as eps: where eps is added matters
    assert_close(ex.rms_norm(small, weight), F.rms_norm(small, (12,), weight, eps=1e-6),
                 "rms_norm(x * 0.001, weight) (eps goes inside the square root, added to the mean square)")
    assert_close(ex.rms_norm(x, None, 0.5), F.rms_norm(x, (12,), eps=0.5), "rms_norm(x, None, eps=0.5)")
    got, expected = ex.case("rms_norm_outputs")
    for key in ("plain", "weight", "small_eps_01"):
        snapshot_close(got[key], expected[key], f"rms_norm on the seeded case {key!r}")


@pytest.mark.points(1)
def test_rms_norm_properties(ex):
    x = randn(8, 4, 10)
    assert_close(ex.rms_norm(x * 1000.0), ex.rms_norm(x), "rms_norm(1000 * x) against rms_norm(x) (the scale of "
                                                          "a vector does not matter)", atol=1e-4)
    constant = torch.full((2, 4), 3.0)
    assert_close(ex.rms_norm(constant), torch.ones(2, 4), "rms_norm of a constant vector [3, 3, 3, 3] "
                                                          "(nothing is subtracted: it becomes all ones, not zeros "
                                                          "as LayerNorm would make it)", atol=1e-4)
    zero = ex.rms_norm(torch.zeros(3, 5))
    assert_close(zero, torch.zeros(3, 5), "rms_norm of a zero vector (eps keeps it finite: zeros)")


# --------------------------------------------------------------------------- SwiGLU

@pytest.mark.points(2)
def test_swiglu(ex):
    got, expected = ex.case("swiglu_outputs")
    assert_tensor(got["out"], "swiglu(x (2, 5, 8), gate and up (12, 8), down (8, 12))", shape=(2, 5, 8))
    snapshot_close(got["out"], expected["out"], "swiglu(x, w_gate, w_up, w_down) "
                                                "((silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T)")
    x = randn(9, 3, 4)
    w = randn(10, 6, 4)
    # An input the snapshot does not hold (memorised values do not help), computed here.
    w_up, w_down = randn(12, 6, 4), randn(11, 4, 6)
    assert_close(ex.swiglu(x, w, w_up, w_down), (F.silu(x @ w.T) * (x @ w_up.T)) @ w_down.T,
                 "swiglu(x (3, 4), gate and up (6, 4), down (4, 6)) ((silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T)")
    out = ex.swiglu(x, w, torch.zeros(6, 4), randn(11, 4, 6))
    assert_close(out, torch.zeros(3, 4), "swiglu with w_up = 0 (the up branch is multiplied in: the output is 0)")
    one_row = ex.swiglu(x[0], w, randn(12, 6, 4), randn(11, 4, 6))
    assert_tensor(one_row, "swiglu(x (4,), ...)", shape=(4,))


# --------------------------------------------------------------------------- Newton–Schulz

def spread_matrix(rows, cols, seed):
    """A (rows, cols) matrix whose singular values spread over a factor of 20, like a real gradient's."""
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, k, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, k, generator=g))
    return (u * torch.logspace(0, -1.3, k)) @ v.T * 5.0


@pytest.mark.points(2)
def test_newton_schulz_orthogonalises(ex):
    for rows, cols in [(16, 32), (48, 16)]:
        G = spread_matrix(rows, cols, seed=rows)
        out = ex.newton_schulz(G)  # the call fails if it changes G in place
        name = f"newton_schulz(G ({rows}, {cols}))"
        assert_tensor(out, name, shape=(rows, cols))
        check(bool(torch.isfinite(out).all()), f"{name} holds NaN or infinite values: divide G by its Frobenius "
                                               f"norm first, so that every singular value is at most 1")
        out64 = ex.newton_schulz(G.double())
        check(isinstance(out64, torch.Tensor) and out64.dtype == torch.float32,
              f"newton_schulz(a float64 G ({rows}, {cols})) should return float32 (the docstring: the steps run in "
              f"float32 and the result is float32), got {getattr(out64, 'dtype', type(out64).__name__)}")
        singular = torch.linalg.svdvals(out.float())
        low, high = singular.min().item(), singular.max().item()
        check(0.6 <= low and high <= 1.3,
              f"{name}: the singular values should all land in about [0.6, 1.3] (G's spread over a factor of 20), "
              f"got {low:.3f} .. {high:.3f} (the quintic step a * X + (b * A + c * A @ A) @ X with "
              f"(a, b, c) = (3.4445, -4.7750, 2.0315), 5 times, after dividing by the Frobenius norm)")
    got, expected = ex.case("newton_schulz_outputs")
    for key in ("wide", "tall", "three_steps"):
        snapshot_close(got[key], expected[key], f"newton_schulz on the seeded case {key!r} (the quintic step, "
                                                f"{'steps=3' if key == 'three_steps' else 'steps=5 by default'}, on "
                                                f"G / (||G||_F + eps), the short side)", atol=NS_ATOL)


@pytest.mark.points(1)
def test_newton_schulz_works_on_the_short_side(ex):
    G = randn(13, 40, 8)
    result = ex.probe(probe_products, G, describe="newton_schulz(G (40, 8))")
    assert_tensor(result["out"], "newton_schulz(G (40, 8))", shape=(40, 8))
    big = [shape for shape in result["shapes"] if shape == [40, 40]]
    check(not big, "newton_schulz(G (40, 8)) computed a 40 x 40 product: for a tall G, work on its transpose "
                   "(8, 40), so that A = X @ X.T is 8 x 8, and transpose the result back")
    check(result["shapes"] != [], "newton_schulz(G (40, 8)) computed no matrix product at all")
