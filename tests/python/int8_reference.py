"""Slow, obvious reference of the int8 runtime's arithmetic, in Python integers.

Written from docs/runtime-numerics.md and ../shared/reference/int8-numerics.md sections 3-4, not
from the C++ kernels. Integer values are Python ints (arbitrary precision, so nothing can wrap),
roundings are done on exact fractions, loops are the textbook ones. Array arguments are numpy
arrays; they are turned into nested lists of Python ints before any arithmetic. Only quantize /
dequantize use float32 (numpy scalars), as documented.

Multipliers are (M0, shift) pairs meaning M0 * 2**(shift - 31).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MIN_SHIFT, MAX_SHIFT = -31, 30
ADD_LEFT_SHIFT = 20


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def saturate_int32(v: int) -> int:
    return clamp(v, INT32_MIN, INT32_MAX)


def round_half_away(f: Fraction) -> int:
    """Nearest integer, ties away from zero."""
    magnitude = math.floor(abs(f) + Fraction(1, 2))
    return magnitude if f >= 0 else -magnitude


def round_half_up(f: Fraction) -> int:
    """Nearest integer, ties toward +infinity."""
    return math.floor(f + Fraction(1, 2))


# ---- fixed-point multipliers -----------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real ~= M0 * 2**(shift - 31), M0 in [2**30, 2**31)."""
    if not math.isfinite(real) or real <= 0:
        raise ValueError(f"real multiplier must be finite and > 0, got {real!r}")
    q, shift = math.frexp(real)  # real = q * 2**shift, q in [0.5, 1)
    m0 = round_half_away(Fraction(q) * 2**31)  # q * 2**31 is exact
    if m0 == 2**31:  # q rounded up to 1.0
        m0 //= 2
        shift += 1
    if shift < MIN_SHIFT:  # below 2**-32: not representable, acts as 0
        return (0, 0)
    if shift > MAX_SHIFT:  # M >= 2**30 is rejected
        raise ValueError(f"real multiplier must be < 2**30, got {real!r}")
    return (m0, shift)


def multiplier_value(m: tuple[int, int]) -> Fraction:
    m0, shift = m
    return Fraction(m0) * Fraction(2) ** (shift - 31)


def requant(x: int, m: tuple[int, int]) -> int:
    """x * M0 * 2**(shift - 31), rounded once to the nearest integer (ties toward +inf),
    saturated to int32: the documented single rounding."""
    return saturate_int32(round_half_up(x * multiplier_value(m)))


def requantize_output(acc: int, m, output_zero_point: int, act_min: int, act_max: int) -> int:
    return clamp(requant(acc, m) + output_zero_point, act_min, act_max)


# ---- load-time helpers -----------------------------------------------------------------------


def activation_range(activation: str, output_scale: float, output_zero_point: int):
    """TFLite's CalculateActivationRangeQuantized, as (act_min, act_max)."""
    if activation == "none":
        return INT8_MIN, INT8_MAX
    lo = max(INT8_MIN, output_zero_point)
    if activation == "relu":
        return lo, INT8_MAX
    assert activation == "relu6"
    six = round_half_away(Fraction(6.0 / output_scale))  # 6 / scale in double, like TFLite
    return lo, min(INT8_MAX, output_zero_point + six)


def channel_multipliers(input_scale: float, weight_scales, output_scale: float):
    return [quantize_multiplier(input_scale * w / output_scale) for w in weight_scales]


def add_params(s1: float, zp1: int, s2: float, zp2: int, s_out: float, zp_out: int):
    """TFLite's int8 add parameters as a dict (the keywords of _runtime.add)."""
    twice_max = 2.0 * max(s1, s2)
    return {
        "input1_zero_point": zp1,
        "input2_zero_point": zp2,
        "left_shift": ADD_LEFT_SHIFT,
        "input1_multiplier": quantize_multiplier(s1 / twice_max),
        "input2_multiplier": quantize_multiplier(s2 / twice_max),
        "output_multiplier": quantize_multiplier(twice_max / (2.0**ADD_LEFT_SHIFT * s_out)),
        "output_zero_point": zp_out,
    }


def window_output_size(size: int, kernel: int, stride: int, dilation: int, before: int, after):
    extent = (kernel - 1) * dilation + 1
    return (size + before + after - extent) // stride + 1


# ---- kernels ---------------------------------------------------------------------------------


def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _padding(p):
    if isinstance(p, int):
        return (p, p, p, p)
    if len(p) == 2:
        return (p[0], p[1], p[0], p[1])
    return tuple(p)


def _output_stage(acc, bias, oc, multipliers, zp_out, act_min, act_max):
    if bias is not None:
        acc = saturate_int32(acc + bias[oc])
    return requantize_output(acc, multipliers[oc], zp_out, act_min, act_max)


def conv2d(
    x,
    w,
    bias,
    multipliers,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    input_zero_point,
    output_zero_point,
    act_min=INT8_MIN,
    act_max=INT8_MAX,
):
    """NHWC input, OHWI filter [out, kh, kw, in / groups]; taps in the padding add nothing."""
    n, h, wd, c = x.shape
    oc_count, kh, kw, in_per_group = w.shape
    assert c == in_per_group * groups and oc_count % groups == 0
    sh, sw = _pairs(stride)
    dh, dw = _pairs(dilation)
    top, left, bottom, right = _padding(padding)
    oh = window_output_size(h, kh, sh, dh, top, bottom)
    ow = window_output_size(wd, kw, sw, dw, left, right)
    xl, wl = x.tolist(), w.tolist()
    bl = None if bias is None else bias.tolist()
    out_per_group = oc_count // groups
    y = np.zeros((n, oh, ow, oc_count), dtype=np.int8)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(oc_count):
                    g = oc // out_per_group
                    acc = 0
                    for ky in range(kh):
                        iy = oy * sh - top + ky * dh
                        if not 0 <= iy < h:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - left + kx * dw
                            if not 0 <= ix < wd:
                                continue
                            for i in range(in_per_group):
                                q = xl[b][iy][ix][g * in_per_group + i]
                                acc += wl[oc][ky][kx][i] * (q - input_zero_point)
                    y[b, oy, ox, oc] = _output_stage(
                        acc, bl, oc, multipliers, output_zero_point, act_min, act_max
                    )
    return y


def depthwise_conv2d(
    x,
    w,
    bias,
    multipliers,
    *,
    stride=1,
    padding=0,
    dilation=1,
    depth_multiplier=1,
    input_zero_point,
    output_zero_point,
    act_min=INT8_MIN,
    act_max=INT8_MAX,
):
    """Filter [1, kh, kw, c * depth_multiplier]; output channel oc reads input channel
    oc // depth_multiplier."""
    n, h, wd, c = x.shape
    one, kh, kw, oc_count = w.shape
    assert one == 1 and oc_count == c * depth_multiplier
    sh, sw = _pairs(stride)
    dh, dw = _pairs(dilation)
    top, left, bottom, right = _padding(padding)
    oh = window_output_size(h, kh, sh, dh, top, bottom)
    ow = window_output_size(wd, kw, sw, dw, left, right)
    xl, wl = x.tolist(), w.tolist()
    bl = None if bias is None else bias.tolist()
    y = np.zeros((n, oh, ow, oc_count), dtype=np.int8)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(oc_count):
                    ic = oc // depth_multiplier
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy = oy * sh - top + ky * dh
                            ix = ox * sw - left + kx * dw
                            if 0 <= iy < h and 0 <= ix < wd:
                                acc += wl[0][ky][kx][oc] * (xl[b][iy][ix][ic] - input_zero_point)
                    y[b, oy, ox, oc] = _output_stage(
                        acc, bl, oc, multipliers, output_zero_point, act_min, act_max
                    )
    return y


def fully_connected(
    x,
    w,
    bias,
    multipliers,
    *,
    input_zero_point,
    output_zero_point,
    act_min=INT8_MIN,
    act_max=INT8_MAX,
):
    """input [batch, in], filter [out, in]."""
    batch, k = x.shape
    out, k2 = w.shape
    assert k == k2
    xl, wl = x.tolist(), w.tolist()
    bl = None if bias is None else bias.tolist()
    y = np.zeros((batch, out), dtype=np.int8)
    for b in range(batch):
        for o in range(out):
            acc = sum(wl[o][i] * (xl[b][i] - input_zero_point) for i in range(k))
            y[b, o] = _output_stage(acc, bl, o, multipliers, output_zero_point, act_min, act_max)
    return y


def add(
    x1,
    x2,
    *,
    input1_zero_point,
    input2_zero_point,
    input1_multiplier,
    input2_multiplier,
    output_multiplier,
    output_zero_point,
    left_shift=ADD_LEFT_SHIFT,
    act_min=INT8_MIN,
    act_max=INT8_MAX,
):
    """TFLite's scheme: shift both inputs left, rescale each, add, rescale to the output."""
    assert x1.shape == x2.shape
    out = []
    for q1, q2 in zip(x1.ravel().tolist(), x2.ravel().tolist()):
        a1 = (q1 - input1_zero_point) * 2**left_shift
        a2 = (q2 - input2_zero_point) * 2**left_shift
        total = requant(a1, input1_multiplier) + requant(a2, input2_multiplier)
        out.append(clamp(requant(total, output_multiplier) + output_zero_point, act_min, act_max))
    return np.array(out, dtype=np.int8).reshape(x1.shape)


def _pool(x, filter_size, stride, padding, act_min, act_max, reduce):
    n, h, wd, c = x.shape
    fh, fw = _pairs(filter_size)
    sh, sw = _pairs(stride)
    top, left, bottom, right = _padding(padding)
    oh = window_output_size(h, fh, sh, 1, top, bottom)
    ow = window_output_size(wd, fw, sw, 1, left, right)
    xl = x.tolist()
    y = np.zeros((n, oh, ow, c), dtype=np.int8)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    taps = [
                        xl[b][iy][ix][ch]
                        for iy in range(oy * sh - top, oy * sh - top + fh)
                        for ix in range(ox * sw - left, ox * sw - left + fw)
                        if 0 <= iy < h and 0 <= ix < wd
                    ]
                    assert taps, "a window entirely in the padding"
                    y[b, oy, ox, ch] = clamp(reduce(taps), act_min, act_max)
    return y


def average_pool2d(x, *, filter_size, stride=1, padding=0, act_min=INT8_MIN, act_max=INT8_MAX):
    """Mean of the raw q of the taps inside the image, rounded half away from zero."""
    return _pool(
        x,
        filter_size,
        stride,
        padding,
        act_min,
        act_max,
        lambda taps: round_half_away(Fraction(sum(taps), len(taps))),
    )


def max_pool2d(x, *, filter_size, stride=1, padding=0, act_min=INT8_MIN, act_max=INT8_MAX):
    return _pool(x, filter_size, stride, padding, act_min, act_max, max)


def quantize(x, *, scale, zero_point):
    """clamp(round_half_to_even(float32(x) / float32(scale)) + zp): one float32 division;
    NaN -> zp, +-inf saturate."""
    s = np.float32(scale)
    out = []
    for v in x.ravel().tolist():
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            r = float(np.float32(v) / s)  # float32 division, exactly widened to a Python float
        if math.isnan(r):
            q = zero_point
        elif math.isinf(r):
            q = INT8_MAX if r > 0 else INT8_MIN
        else:
            q = clamp(round(r) + zero_point, INT8_MIN, INT8_MAX)  # round(): half to even, exact
        out.append(q)
    return np.array(out, dtype=np.int8).reshape(x.shape)


def dequantize(q, *, scale, zero_point):
    """float32(q - zp) * float32(scale), one float32 multiplication."""
    s = np.float32(scale)
    with np.errstate(over="ignore"):
        out = [np.float32(v - zero_point) * s for v in q.ravel().tolist()]
    return np.array(out, dtype=np.float32).reshape(q.shape)
