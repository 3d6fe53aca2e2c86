"""Shared test helpers: bit-exact comparison and random test data.

The data generators use reference.nudge (the NumPy twin, not the code under test) to place
inputs on the grid, on grid midpoints and on the nudged bounds, where a wrong rounding or a
wrong comparison shows up.
"""

from __future__ import annotations

import math

import numpy as np
import reference
import torch

_INT_VIEW = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# Kinds of range; the per-tensor and per-channel random tests draw from all of them.
RANGE_KINDS = [
    "contains_zero",
    "symmetric",
    "positive",  # 0 < min < max: nudged to [0, max - min]
    "negative",  # min < max < 0: nudged to [min - max, 0]
    "zero_min",
    "zero_max",
    "tiny",  # very small widths around 0
    "tiny_offset",  # very small width far from 0
    "zp_tie",  # min / scale is exactly k + 0.5: the zero point rounds half away from zero
    "huge",
    "degenerate",  # min == max
]


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor | np.ndarray) -> None:
    """Same dtype, shape, NaN positions and bit pattern of every other element."""
    if isinstance(expected, np.ndarray):
        expected = torch.from_numpy(np.ascontiguousarray(expected))
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a = actual.detach().contiguous()
    e = expected.detach().contiguous()
    if not a.is_floating_point():
        assert torch.equal(a, e), _first_mismatch(a, e, a != e)
        return
    a_nan, e_nan = torch.isnan(a), torch.isnan(e)
    assert torch.equal(a_nan, e_nan), _first_mismatch(a, e, a_nan != e_nan)
    differs = (a.view(_INT_VIEW[a.dtype]) != e.view(_INT_VIEW[e.dtype])) & ~a_nan
    assert not differs.any(), _first_mismatch(a, e, differs)


def _first_mismatch(a: torch.Tensor, e: torch.Tensor, differs: torch.Tensor) -> str:
    idx = tuple(int(i) for i in differs.nonzero()[0]) if a.dim() else ()
    count = int(differs.sum())
    return (
        f"{count} of {a.numel()} elements differ; first at {idx}: "
        f"got {a[idx].item()!r}, expected {e[idx].item()!r}"
    )


_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def numpy_dtype(dtype: torch.dtype):
    """The NumPy twin of a torch float dtype; float64 for bfloat16, which NumPy lacks (round
    the float64 result to bfloat16 with torch)."""
    return _NUMPY_DTYPE.get(dtype, np.float64)


def compute_numpy(x: torch.Tensor) -> np.ndarray:
    """x in its compute dtype as NumPy: float64 stays, everything else becomes float32."""
    x = x.detach()
    return x.double().numpy() if x.dtype == torch.float64 else x.float().numpy()


def sample_range(rng: np.random.Generator, kind: str, levels: int = 255) -> tuple[float, float]:
    """A (min, max) pair of float32-representable numbers of the given kind; ``levels`` is
    qmax - qmin of the grid (used by "zp_tie")."""
    u, v = rng.uniform(0.05, 1.0, size=2)
    e1, e2 = rng.integers(-3, 4, size=2)
    if kind == "contains_zero":
        lo, hi = -u * 10.0**e1, v * 10.0**e2
    elif kind == "symmetric":
        lo, hi = -u * 10.0**e1, u * 10.0**e1
    elif kind == "positive":
        lo = u * 10.0**e1
        hi = lo + v * 10.0**e2
    elif kind == "negative":
        hi = -u * 10.0**e1
        lo = hi - v * 10.0**e2
    elif kind == "zero_min":
        lo, hi = 0.0, v * 10.0**e2
    elif kind == "zero_max":
        lo, hi = -u * 10.0**e1, 0.0
    elif kind == "tiny":
        e = rng.integers(-36, -6)
        lo, hi = -u * 10.0**e, v * 10.0**e
    elif kind == "tiny_offset":
        center = rng.uniform(-100, 100)
        lo = center
        hi = center + max(abs(center), 1.0) * v * 10.0 ** rng.integers(-5, -2)
    elif kind == "zp_tie":
        scale = 2.0 ** rng.integers(-12, 4)  # a power of two: every step below is exact
        k = rng.integers(0, levels)
        lo = -(k + 0.5) * scale
        hi = lo + levels * scale
    elif kind == "huge":
        lo, hi = -u * 10.0 ** rng.integers(20, 38), v * 10.0 ** rng.integers(20, 38)
        lo, hi = lo / 2, hi / 2  # keep max - min finite in float32
    elif kind == "degenerate":
        lo = hi = float(rng.choice([0.0, -u * 10.0**e1, v * 10.0**e2]))
    else:
        raise ValueError(kind)
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    assert lo <= hi
    return lo, hi


def sample_x(
    rng: np.random.Generator,
    n: int,
    lo: float,
    hi: float,
    num_bits: int,
    narrow_range: bool,
    dtype=np.float32,
) -> np.ndarray:
    """n values around [lo, hi]: random, on the grid, on grid midpoints (ties), on and next to
    the nudged bounds, zeros (both signs), ±inf."""
    t = np.dtype(dtype).type
    r = reference.nudge(lo, hi, num_bits, narrow_range, dtype)
    specials = [0.0, -0.0, lo, hi, np.inf, -np.inf]
    if r.degenerate:
        width = max(abs(lo), 1.0)
        others = rng.uniform(-width, width, size=n)
    else:
        nm, nx, scale = float(r.nudged_min), float(r.nudged_max), float(r.scale)
        k = rng.integers(0, round((nx - nm) / scale) + 1, size=n)
        width = nx - nm
        others = np.concatenate(
            [
                rng.uniform(nm - 0.25 * width, nx + 0.25 * width, size=n),
                nm + k * scale,  # grid points
                nm + (k + 0.5) * scale,  # midpoints: exact or nearest ties
            ]
        )
        for b in (r.nudged_min, r.nudged_max):
            specials += [b, np.nextafter(b, t(-np.inf)), np.nextafter(b, t(np.inf))]
    with np.errstate(over="ignore"):
        specials = np.array(specials, dtype=np.float64).astype(dtype)
        others = others.astype(dtype)
    if n <= len(specials):
        return rng.choice(specials, size=n)
    values = np.concatenate([specials, rng.choice(others, size=n - len(specials))])
    return rng.permutation(values)


def random_grad(rng: np.random.Generator, shape, dtype: torch.dtype) -> torch.Tensor:
    """Random dyadic values, exact in every float dtype and in any order of summation, so
    the double-accumulated range gradients can be compared bit for bit."""
    values = rng.integers(-128, 129, size=shape) / 16.0
    return torch.from_numpy(np.asarray(values, dtype=np.float64)).to(dtype)


def per_tensor_case(rng, shape, kind, num_bits, narrow_range, np_dtype=np.float32):
    """(x, min, max): a random range of the given kind and x sampled around it."""
    lo, hi = sample_range(rng, kind, 2**num_bits - 1 - int(narrow_range))
    n = math.prod(shape)
    x = sample_x(rng, n, lo, hi, num_bits, narrow_range, np_dtype).reshape(shape)
    return torch.from_numpy(x), torch.tensor(lo), torch.tensor(hi)


def per_channel_case(rng, shape, axis, num_bits, narrow_range, np_dtype=np.float32):
    """x whose every slice along axis is sampled around that channel's random range."""
    axis %= len(shape)
    channels = shape[axis]
    levels = 2**num_bits - 1 - int(narrow_range)
    ranges = [sample_range(rng, str(rng.choice(RANGE_KINDS)), levels) for _ in range(channels)]
    rest = tuple(s for d, s in enumerate(shape) if d != axis)
    slices = [
        sample_x(rng, math.prod(rest), lo, hi, num_bits, narrow_range, np_dtype).reshape(rest)
        for lo, hi in ranges
    ]
    x = np.stack(slices) if channels else np.zeros((0, *rest), np_dtype)
    x = np.ascontiguousarray(np.moveaxis(x, 0, axis))
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float32)
    hi = torch.tensor([r[1] for r in ranges], dtype=torch.float32)
    return torch.from_numpy(x), lo, hi


class _StraightThrough(torch.autograd.Function):
    """``value`` forward, the gradient unchanged to ``b`` backward."""

    @staticmethod
    def forward(ctx, b: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def int8_bias(b, in_range, w_range, in_grid=(8, False), w_grid=(8, True)) -> torch.Tensor:
    """The reference of a linked layer's bias: ``b`` as the int8 model adds it
    (reference.simulated_bias: ``round(b / (s_in * s_w[c])) * s_in * s_w[c]``), with the
    gradient straight through to ``b``. ``in_range``: the input quantizer's ``(lo, hi)``;
    ``w_range``: the weight quantizer's (per channel or per tensor), as used in the forward."""
    lo, hi = (float(t.detach()) for t in in_range)
    w_lo, w_hi = (t.detach().reshape(-1).to(torch.float32).numpy() for t in w_range)
    value = reference.simulated_bias(
        b.detach().to(torch.float32).numpy(), (lo, hi), w_lo, w_hi, in_grid, w_grid
    )
    return _StraightThrough.apply(b, torch.from_numpy(value).to(b.dtype))
