"""Slow, obvious NumPy twin of TensorFlow's FakeQuantWithMinMaxVars.

Written from the formulas of /work/shared/reference/int8-numerics.md section 1 (and the
degenerate-range rule of edgeqat), one scalar range at a time, with every intermediate kept in
the compute dtype (np.float32, or np.float64 for float64 inputs). Nothing here imports edgeqat
or torch: the tests compare the ops against these functions.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np


class Nudged(NamedTuple):
    """A nudged range. ``zero_index`` is the grid index of real 0.0 (``zp - qmin``)."""

    nudged_min: np.floating
    nudged_max: np.floating
    scale: np.floating
    zero_index: np.floating
    degenerate: bool


def quant_bounds(num_bits: int, narrow_range: bool) -> tuple[int, int]:
    return (1 if narrow_range else 0), 2**num_bits - 1


def nudge(mn: float, mx: float, num_bits: int, narrow_range: bool, dtype=np.float32) -> Nudged:
    """TF's Nudge: every step is one operation of ``dtype``."""
    t = np.dtype(dtype).type
    qmin_i, qmax_i = quant_bounds(num_bits, narrow_range)
    qmin, qmax = t(qmin_i), t(qmax_i)
    mn, mx = t(mn), t(mx)  # min and max are cast to the compute dtype first
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        scale = (mx - mn) / (qmax - qmin)
        if not scale > t(0):
            # min == max (or a width whose scale underflows): everything maps to 0.0.
            return Nudged(t(0), t(0), t(0), t(0), True)
        zp_from_min = qmin - mn / scale
        if zp_from_min < qmin:
            zp = qmin
        elif zp_from_min > qmax:
            zp = qmax
        else:
            # std::round: ties away from zero; zp_from_min >= qmin >= 0 here.
            fl = np.floor(zp_from_min)
            zp = fl + (t(1) if zp_from_min - fl >= t(0.5) else t(0))
        nudged_min = (qmin - zp) * scale
        nudged_max = (qmax - zp) * scale
    for v in (scale, zp_from_min, zp, nudged_min, nudged_max):
        assert type(v) is t, type(v)  # no silent promotion to float64
    return Nudged(nudged_min, nudged_max, scale, zp - qmin, False)


def _forward_1range(x: np.ndarray, r: Nudged) -> np.ndarray:
    t = x.dtype.type
    if r.degenerate:
        return np.where(np.isnan(x), x, t(0)).astype(x.dtype)
    with np.errstate(invalid="ignore"):
        clamped = np.minimum(np.maximum(x, r.nudged_min), r.nudged_max)  # NaN propagates
        q = np.floor((clamped - r.nudged_min) / r.scale + t(0.5))  # true division, ties up
        y = (q - r.zero_index) * r.scale
    assert y.dtype == x.dtype
    return np.asarray(y)  # 0-dim inputs give NumPy scalars


def _masks_1range(x: np.ndarray, r: Nudged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, below, above) boolean masks; NaN is in none of them."""
    with np.errstate(invalid="ignore"):
        below = x < r.nudged_min
        above = x > r.nudged_max
    inside = ~below & ~above & ~np.isnan(x)
    return inside, below, above


def mask_codes_1range(x: np.ndarray, r: Nudged) -> np.ndarray:
    inside, below, above = _masks_1range(x, r)
    codes = np.full(x.shape, 3, dtype=np.uint8)
    codes[inside] = 0
    codes[below] = 1
    codes[above] = 2
    return codes


def _as_compute(x: np.ndarray) -> np.ndarray:
    """float64 stays float64; float32 (and float16 upcast by the caller) is float32."""
    x = np.asarray(x)
    return x if x.dtype == np.float64 else x.astype(np.float32)


def _grad_sum(values: np.ndarray, out_dtype) -> np.floating:
    # Exact sum (math.fsum) of the float64 values, rounded once to out_dtype (the dtype of
    # the range value the gradient belongs to).
    return np.dtype(out_dtype).type(math.fsum(values.astype(np.float64).ravel().tolist()))


class Result(NamedTuple):
    y: np.ndarray
    mask: np.ndarray  # uint8 codes: 0 inside, 1 below, 2 above, 3 NaN
    grad_x: np.ndarray | None
    grad_min: np.ndarray | None
    grad_max: np.ndarray | None


def fake_quant(
    x,
    mn,
    mx,
    num_bits=8,
    narrow_range=False,
    grad=None,
    min_dtype=np.float32,
    max_dtype=np.float32,
):
    """Per-tensor forward, mask codes and (if ``grad`` is given) the three gradients.

    grad_min is in ``min_dtype`` and grad_max in ``max_dtype``: each range gradient keeps the
    dtype of its own range value."""
    x = _as_compute(x)
    r = nudge(float(mn), float(mx), num_bits, narrow_range, x.dtype)
    y = _forward_1range(x, r)
    mask = mask_codes_1range(x, r)
    if grad is None:
        return Result(y, mask, None, None, None)
    grad = np.asarray(grad)
    zero = np.zeros((), dtype=grad.dtype)
    grad_x = np.where(mask == 0, grad, zero)
    grad_min = np.asarray(_grad_sum(grad[mask == 1], min_dtype))
    grad_max = np.asarray(_grad_sum(grad[mask == 2], max_dtype))
    return Result(y, mask, grad_x, grad_min, grad_max)


def fake_quant_per_channel(
    x,
    mins,
    maxs,
    axis,
    num_bits=8,
    narrow_range=False,
    grad=None,
    min_dtype=np.float32,
    max_dtype=np.float32,
):
    """Per-channel twin: channel c of ``axis`` uses [mins[c], maxs[c]]; sums over other axes."""
    x = _as_compute(x)
    axis = axis % x.ndim
    channels = x.shape[axis]
    assert len(mins) == len(maxs) == channels
    y = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.uint8)
    grad_x = None if grad is None else np.empty_like(np.asarray(grad))
    grad_min = np.zeros(channels, dtype=min_dtype)
    grad_max = np.zeros(channels, dtype=max_dtype)
    for c in range(channels):
        index = (slice(None),) * axis + (c,)
        r = nudge(float(mins[c]), float(maxs[c]), num_bits, narrow_range, x.dtype)
        y[index] = _forward_1range(x[index], r)
        m = mask_codes_1range(x[index], r)
        mask[index] = m
        if grad is not None:
            g = np.asarray(grad)[index]
            grad_x[index] = np.where(m == 0, g, np.zeros((), dtype=g.dtype))
            grad_min[c] = _grad_sum(g[m == 1], min_dtype)
            grad_max[c] = _grad_sum(g[m == 2], max_dtype)
    if grad is None:
        return Result(y, mask, None, None, None)
    return Result(y, mask, grad_x, grad_min, grad_max)


# -- the int8 model's int32 bias -------------------------------------------------------------

INT32_MAX = 2**31 - 1


def grid_scale(mn: float, mx: float, num_bits: int, narrow_range: bool) -> np.float32:
    """The scale the int8 model stores for a range: the nudged float32 scale, 1.0 for a
    degenerate (one-point) range."""
    r = nudge(mn, mx, num_bits, narrow_range)
    return np.float32(1.0) if r.degenerate else np.float32(r.scale)


def int32_bias(
    bias, in_range, w_mins, w_maxs, in_grid=(8, False), w_grid=(8, True)
) -> tuple[list[int], list[float]]:
    """The int8 model's int32 bias, per output channel: ``(q, s)`` with
    ``s = float64(s_in) * float64(s_w[c])`` and ``q = round(float32(b) / s)`` (the quotient in
    float64, rounded half away from zero, exactly, with rationals), clamped to
    ``[-(2**31 - 1), 2**31 - 1]``. ``w_mins`` / ``w_maxs``: one range per channel, or one for
    all; ``*_grid``: ``(num_bits, narrow_range)``. The simulated bias is ``float32(q * s)``."""
    s_in = float(grid_scale(*in_range, *in_grid))
    qs, scales = [], []
    for c, b in enumerate(np.asarray(bias, dtype=np.float32).reshape(-1)):
        r = c if len(w_mins) > 1 else 0
        s = s_in * float(grid_scale(float(w_mins[r]), float(w_maxs[r]), *w_grid))
        v = Fraction(float(b) / s)
        q = math.floor(abs(v) + Fraction(1, 2)) * (1 if v >= 0 else -1)
        qs.append(max(-INT32_MAX, min(INT32_MAX, q)))
        scales.append(s)
    return qs, scales


def simulated_bias(bias, in_range, w_mins, w_maxs, in_grid=(8, False), w_grid=(8, True)):
    """``float32(q * s)`` of :func:`int32_bias`, as an np.float32 array."""
    qs, scales = int32_bias(bias, in_range, w_mins, w_maxs, in_grid, w_grid)
    return np.array([q * s for q, s in zip(qs, scales)], dtype=np.float64).astype(np.float32)
