"""The fake-quant ops against the NumPy reference (reference.py).

Forward outputs are compared bit for bit, the gradients exactly (the incoming gradients are
random dyadic numbers, so every order of summation gives the same double sum). Each case goes
through the public Python functions with autograd, the no-grad path and _fake_quant_cachemask.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import reference
import torch
from helpers import (
    FLOAT_DTYPES,
    RANGE_KINDS,
    assert_bitwise_equal,
    compute_numpy,
    numpy_dtype,
    per_channel_case,
    per_tensor_case,
    random_grad,
    sample_range,
    sample_x,
)
from torch.utils._python_dispatch import TorchDispatchMode

import edgeqat

ops = torch.ops.edgeqat

SHAPES = [(257,), (16, 33), (3, 5, 7), (2, 3, 4, 5)]
NUM_BITS = [8, 8, 8, 2, 3, 4, 7, 12, 16]


# --------------------------------------------------------------------------------------------
# The checker every numeric test goes through


def quantize(x, lo, hi, axis=None, num_bits=8, narrow_range=False):
    """The public op: per tensor when axis is None, else per channel along axis."""
    if axis is None:
        return edgeqat.fake_quant(x, lo, hi, num_bits, narrow_range)
    return edgeqat.fake_quant_per_channel(x, lo, hi, axis, num_bits, narrow_range)


def check_against_reference(x, lo, hi, axis=None, num_bits=8, narrow_range=False, seed=0):
    """Runs the op on (x, lo, hi) with autograd and compares everything with the reference.

    x keeps its dtype and memory layout; lo and hi are range tensors (0-dim, or 1-D with
    ``axis``). Returns the output and the three gradients.
    """
    rng = np.random.default_rng(seed)
    x = x.detach().requires_grad_(True)
    lo = lo.detach().clone().requires_grad_(True)
    hi = hi.detach().clone().requires_grad_(True)
    grad = random_grad(rng, tuple(x.shape), x.dtype)

    def run(*args):
        return quantize(*args, axis=axis, num_bits=num_bits, narrow_range=narrow_range)

    y = run(x, lo, hi)
    assert y.requires_grad
    y.backward(grad)

    xn, gn = compute_numpy(x), grad.double().numpy()
    # Each range gradient in its own range value's dtype (NumPy has no bfloat16: float64,
    # then one rounding, as the op's double sums).
    dtypes = {"min_dtype": numpy_dtype(lo.dtype), "max_dtype": numpy_dtype(hi.dtype)}
    if axis is None:
        ref = reference.fake_quant(
            xn, lo.item(), hi.item(), num_bits, narrow_range, grad=gn, **dtypes
        )
    else:
        ref = reference.fake_quant_per_channel(
            xn, lo.tolist(), hi.tolist(), axis, num_bits, narrow_range, gn, **dtypes
        )
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_bitwise_equal(y, torch.from_numpy(ref.y).to(x.dtype))
    assert_bitwise_equal(x.grad, torch.from_numpy(ref.grad_x).to(x.dtype))
    assert_bitwise_equal(lo.grad, torch.from_numpy(np.asarray(ref.grad_min)).to(lo.dtype))
    assert_bitwise_equal(hi.grad, torch.from_numpy(np.asarray(ref.grad_max)).to(hi.dtype))

    # The inference path (no mask) and the internal op give the same output.
    with torch.no_grad():
        assert_bitwise_equal(run(x, lo, hi), y)
    out, mask = ops._fake_quant_cachemask(
        x.detach(), lo.detach(), hi.detach(), axis, num_bits, narrow_range
    )
    assert_bitwise_equal(out, y)
    assert_bitwise_equal(mask, torch.from_numpy(ref.mask))
    # The internal backward op returns each range gradient in its own dtype. (Autograd casts
    # every gradient to its input's dtype, which would hide a sum first rounded to another
    # dtype: see test_range_gradients_keep_their_own_precision.)
    grads = ops._fake_quant_backward(grad, mask, axis, lo.dtype, hi.dtype)
    for got, expected in zip(grads, (x.grad, lo.grad, hi.grad)):
        assert_bitwise_equal(got, expected)
    return y.detach(), x.grad, lo.grad, hi.grad


# --------------------------------------------------------------------------------------------
# Random cases


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", RANGE_KINDS)
def test_per_tensor_random(kind, seed):
    rng = np.random.default_rng([seed, RANGE_KINDS.index(kind)])
    num_bits = int(rng.choice(NUM_BITS))
    narrow = bool(rng.integers(2))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    x, lo, hi = per_tensor_case(rng, shape, kind, num_bits, narrow)
    check_against_reference(x, lo, hi, num_bits=num_bits, narrow_range=narrow, seed=seed)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kind", RANGE_KINDS)
def test_per_tensor_random_float64(kind, seed):
    """float64 x with float64 ranges that are not float32 numbers: all in double."""
    rng = np.random.default_rng([seed, RANGE_KINDS.index(kind), 64])
    num_bits = int(rng.choice(NUM_BITS))
    narrow = bool(rng.integers(2))
    lo, hi = sample_range(rng, kind, 2**num_bits - 1 - narrow)
    if lo != hi and kind != "zp_tie":
        lo, hi = sorted([lo * (1 + rng.uniform(-1e-9, 1e-9)), hi * (1 + rng.uniform(-1e-9, 1e-9))])
    x = sample_x(rng, 600, lo, hi, num_bits, narrow, np.float64).reshape(20, 30)
    check_against_reference(
        torch.from_numpy(x),
        torch.tensor(lo, dtype=torch.float64),
        torch.tensor(hi, dtype=torch.float64),
        num_bits=num_bits,
        narrow_range=narrow,
        seed=seed,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
def test_per_tensor_random_half(dtype, seed):
    """float16/bfloat16: computed in float32 from x.float(), rounded once to the dtype.

    1500 elements cross the kernel's 512-element float32 staging blocks."""
    rng = np.random.default_rng([seed, 16])
    kind = RANGE_KINDS[int(rng.integers(len(RANGE_KINDS) - 2))]  # no "huge"/"degenerate"
    num_bits = int(rng.choice(NUM_BITS))
    x, lo, hi = per_tensor_case(rng, (1500,), kind, num_bits, False)
    check_against_reference(x.to(dtype), lo, hi, num_bits=num_bits, seed=seed)


@pytest.mark.parametrize(
    ("x_dtype", "min_dtype", "max_dtype"),
    [
        (torch.float32, torch.float64, torch.float64),
        (torch.float64, torch.float32, torch.float32),
        (torch.float16, torch.float16, torch.float16),
        (torch.bfloat16, torch.float64, torch.float64),
        (torch.float16, torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.float16, torch.float64),
        (torch.float32, torch.float64, torch.float16),
        (torch.float64, torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.float32, torch.bfloat16),
    ],
)
def test_mixed_dtypes(x_dtype, min_dtype, max_dtype):
    """min/max are cast to the compute dtype before nudging; each gradient keeps its dtype."""
    rng = np.random.default_rng(7)
    lo, hi = -0.7303, 1.2917  # not float32 numbers: the float64 range must be rounded first
    x = torch.from_numpy(sample_x(rng, 700, lo, hi, 8, False, np.float64)).to(x_dtype)
    check_against_reference(x, torch.tensor(lo, dtype=min_dtype), torch.tensor(hi, dtype=max_dtype))
    pc_lo = torch.tensor([lo, -3.1, 0.2], dtype=min_dtype)
    pc_hi = torch.tensor([hi, -0.4, 5.3], dtype=max_dtype)
    xs = torch.stack([x[:200], x[200:400] * 3, x[400:600] * 4], dim=1)
    check_against_reference(xs, pc_lo, pc_hi, axis=1)


PC_SHAPES = [(6,), (5, 7), (4, 3, 6), (3, 4, 5, 6)]
PC_AXES = [(shape, axis) for shape in PC_SHAPES for axis in range(len(shape))] + [
    ((4, 3, 6), -1),
    ((3, 4, 5, 6), -3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "axis"), PC_AXES)
def test_per_channel_random_every_axis(shape, axis, dtype):
    rng = np.random.default_rng([len(shape), axis % len(shape), dtype.itemsize])
    num_bits = int(rng.choice(NUM_BITS))
    narrow = bool(rng.integers(2))
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x, lo, hi = per_channel_case(rng, shape, axis, num_bits, narrow, np_dtype)
    check_against_reference(
        x, lo.to(dtype), hi.to(dtype), axis=axis, num_bits=num_bits, narrow_range=narrow
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((8, 300), 1), ((8, 300), 0), ((6, 5, 40), 1), ((20, 3, 2, 2), 1), ((5, 4000), 1)],
)
def test_per_channel_random_half(shape, axis, dtype):
    rng = np.random.default_rng([shape[0], axis, 16])
    x, lo, hi = per_channel_case(rng, shape, axis, 8, False)
    finite = torch.isfinite(x) & (x.abs() < 6e4)  # stay inside float16's range
    x = torch.where(finite, x, torch.zeros(()))
    check_against_reference(x.to(dtype), lo, hi, axis=axis)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((64, 10), -1),  # last axis: the channel changes every element
        ((40, 30, 2), 1),  # short runs of 2
        ((2, 3, 70), 1),  # runs of 70
        ((4, 5000), 1),  # more channels than fit in a row of positions
        ((20, 3000), 1),  # big enough for several parallel tasks
        ((20, 3000), 0),
        ((1, 9), 0),  # one channel
        ((9, 1), 0),  # inner size 1, outer 1
    ],
)
def test_per_channel_kernel_loop_shapes(shape, axis):
    """Shapes that take each of the CPU kernel's loops (runs / positions, serial / parallel)."""
    rng = np.random.default_rng([shape[0], shape[1], axis % len(shape)])
    x, lo, hi = per_channel_case(rng, shape, axis, 8, False)
    check_against_reference(x, lo, hi, axis=axis)


# --------------------------------------------------------------------------------------------
# Memory layouts


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def _transposed(x):
    return x.transpose(0, 3).contiguous().transpose(0, 3)


def _permuted(x):
    return x.permute(2, 0, 3, 1).contiguous().permute(1, 3, 0, 2)


def _sliced(x):
    big = torch.full((x.shape[0], 2 * x.shape[1], x.shape[2], 2 * x.shape[3] + 1), 1e6)
    view = big[:, ::2, :, 1::2]
    view.copy_(x)
    return view


def _offset(x):
    flat = torch.full((x.numel() + 3,), 1e6)
    flat[3:] = x.reshape(-1)
    return flat[3:].view(x.shape)


LAYOUTS = {
    "channels_last": _channels_last,
    "transposed": _transposed,
    "permuted": _permuted,
    "sliced": _sliced,
    "offset": _offset,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("axis", [None, 0, 1, 2, 3])
def test_layouts_match_contiguous(layout, axis):
    rng = np.random.default_rng([axis or 9, len(layout)])
    shape = (3, 4, 5, 6)
    if axis is None:
        x, lo, hi = per_tensor_case(rng, shape, "contains_zero", 8, False)
    else:
        x, lo, hi = per_channel_case(rng, shape, axis, 8, False)
    expected = check_against_reference(x, lo, hi, axis=axis)
    xv = LAYOUTS[layout](x)
    assert torch.equal(xv, x)
    assert layout == "offset" or xv.stride() != x.stride()
    got = check_against_reference(xv, lo, hi, axis=axis)
    for g, e in zip(got, expected):
        assert_bitwise_equal(g, e)
    # Dense inputs keep their layout; the others get empty_like's (as the Meta kernels).
    y = quantize(xv, lo, hi, axis)
    assert y.stride() == torch.empty_like(xv).stride()
    if layout != "sliced":
        assert y.stride() == xv.stride()


def test_expanded_input():
    """Overlapping memory (expand) is read correctly; per channel along the expanded axis."""
    rng = np.random.default_rng(3)
    x, lo, hi = per_channel_case(rng, (3, 1, 5, 6), 0, 8, False)
    xe = x.expand(3, 4, 5, 6)
    check_against_reference(xe, lo, hi, axis=0)
    check_against_reference(xe, torch.tensor(-2.0), torch.tensor(3.0))
    pc_lo, pc_hi = torch.linspace(-3, -0.5, 4), torch.linspace(0.5, 4, 4)
    check_against_reference(xe, pc_lo, pc_hi, axis=1)


# --------------------------------------------------------------------------------------------
# Hand-picked values (expected outputs written by hand)


def _fq(values, lo, hi, **kwargs):
    x = torch.tensor(values, dtype=kwargs.pop("dtype", torch.float32))
    return edgeqat.fake_quant(x, torch.tensor(lo), torch.tensor(hi), **kwargs)


def test_minus_one_one_is_nudged_in_float32():
    # In exact arithmetic the zero point would be 128; in float32 min/scale is -127.49999.
    y = _fq([-5.0, 5.0, 0.0], -1.0, 1.0)
    assert y[0].item() == pytest.approx(-0.9960785, abs=1e-7)
    assert y[1].item() == pytest.approx(1.0039216, abs=1e-7)
    scale = np.float32(2) / np.float32(255)
    assert y[0].item() == np.float32(-127) * scale
    assert y[1].item() == np.float32(128) * scale
    assert y[2].item() == 0.0
    # float64 x nudges in double, where min/scale is exactly -127.5 and rounds to 128.
    y64 = _fq([-5.0, 5.0], -1.0, 1.0, dtype=torch.float64)
    assert y64.tolist() == [-128 * (2 / 255), 127 * (2 / 255)]


def test_zero_point_rounds_half_away_from_zero():
    # scale 1, zero_point_from_min = 126.5: std::round gives 127 (half-to-even would give 126).
    assert _fq([-1000.0, 1000.0], -126.5, 128.5).tolist() == [-127.0, 128.0]
    # zero_point_from_min = 127.5 -> 128.
    assert _fq([-1000.0, 1000.0], -127.5, 127.5).tolist() == [-128.0, 127.0]


def test_ties_round_up():
    # [-31.75, 32] on 8 bits: scale 0.25 exactly, zero point 127; every x is a midpoint.
    k = np.arange(255)
    x = -31.75 + (k + 0.5) * 0.25
    expected = -31.75 + (k + 1) * 0.25  # ties up, also for negative x (-0.125 -> 0.0)
    y = _fq(x.tolist(), -31.75, 32.0)
    assert y.tolist() == expected.tolist()
    assert _fq([-0.125, 0.125, -0.375], -31.75, 32.0).tolist() == [0.0, 0.25, -0.25]
    # Unit scale: x = n + 0.5 -> n + 1 everywhere.
    n = np.arange(-127, 128)
    assert _fq((n + 0.5).tolist(), -127.0, 128.0).tolist() == (n + 1).tolist()


def test_two_bits():
    x = [-1.0, 0.0, 0.49, 0.5, 1.5, 2.5, 2.51, 3.0, 3.5, 100.0]
    assert _fq(x, 0.0, 3.0, num_bits=2).tolist() == [0, 0, 0, 1, 2, 3, 3, 3, 3, 3]
    # Narrow 2 bits: grid {1, 2, 3}, scale 1, zero point 2 -> {-1, 0, 1}.
    y = _fq([-3.0, -0.6, -0.5, 0.4, 0.5, 3.0], -1.0, 1.0, num_bits=2, narrow_range=True)
    assert y.tolist() == [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]


def test_sixteen_bits():
    y = _fq([-0.5, 1000.5, 65534.5, 70000.0, 12345.25], 0.0, 65535.0, num_bits=16)
    assert y.tolist() == [0.0, 1001.0, 65535.0, 65535.0, 12345.0]
    # Narrow: grid [1, 65535], scale 1, zero point 2 -> [-1, 65533].
    y = _fq([-5.0, -1.0, 7.5, 1e6], -1.0, 65533.0, num_bits=16, narrow_range=True)
    assert y.tolist() == [-1.0, -1.0, 8.0, 65533.0]


def test_narrow_range_symmetric():
    # [-127, 127] narrow: scale 1, zero point 128, the grid is symmetric.
    y = _fq([-200.0, -126.5, -0.5, 0.5, 126.4, 200.0], -127.0, 127.0, narrow_range=True)
    assert y.tolist() == [-127.0, -126.0, 0.0, 1.0, 126.0, 127.0]
    # The same range on the full grid has 256 levels: scale 254/255.
    x = torch.linspace(-130, 130, 5001)
    assert len(torch.unique(edgeqat.fake_quant(x, -127.0, 127.0, narrow_range=True))) == 255
    assert len(torch.unique(edgeqat.fake_quant(x, -127.0, 127.0))) == 256


@pytest.mark.parametrize(
    ("lo", "hi", "nudged"),
    [(2.0, 5.0, (0.0, 3.0)), (-5.0, -2.0, (-3.0, 0.0)), (0.5, 128.0, (0.0, 127.5))],
)
def test_range_not_containing_zero_is_shifted(lo, hi, nudged):
    x = torch.tensor([-1000.0, 0.0, 1.0, -1.0, 1000.0], requires_grad=True)
    y = edgeqat.fake_quant(x, torch.tensor(lo), torch.tensor(hi))
    assert y[0].item() == pytest.approx(nudged[0], abs=1e-5)
    assert y[4].item() == pytest.approx(nudged[1], abs=1e-5)
    assert y[1].item() == 0.0
    # x = +-1 lies outside [min, max] but inside the nudged range: it passes gradient.
    inside_one = nudged[0] <= 1.0 <= nudged[1]
    y.backward(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]))
    assert x.grad.tolist() == [0.0, 2.0, 4.0 * inside_one, 8.0 * (not inside_one), 0.0]


def test_values_on_nudged_bounds_are_inside():
    rng = np.random.default_rng(11)
    for kind in RANGE_KINDS[:-1]:
        lo, hi = sample_range(rng, kind)
        r = reference.nudge(lo, hi, 8, False)
        below = np.nextafter(r.nudged_min, np.float32(-np.inf))
        above = np.nextafter(r.nudged_max, np.float32(np.inf))
        x = torch.tensor([r.nudged_min, r.nudged_max, below, above], requires_grad=True)
        lo_t = torch.tensor(lo, requires_grad=True)
        hi_t = torch.tensor(hi, requires_grad=True)
        y = edgeqat.fake_quant(x, lo_t, hi_t)
        assert y.tolist() == [r.nudged_min, r.nudged_max, r.nudged_min, r.nudged_max], kind
        y.backward(torch.tensor([1.0, 2.0, 4.0, 8.0]))
        assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0], kind
        assert (lo_t.grad.item(), hi_t.grad.item()) == (4.0, 8.0), kind
        _, mask = ops._fake_quant_cachemask(
            x.detach(), lo_t.detach(), hi_t.detach(), None, 8, False
        )
        assert mask.tolist() == [0, 0, 1, 2], kind


def test_zero_maps_to_exactly_zero():
    rng = np.random.default_rng(5)
    for kind in RANGE_KINDS:
        for _ in range(20):
            lo, hi = sample_range(rng, kind)
            for dtype in (torch.float32, torch.float64):
                for narrow in (False, True):
                    x = torch.tensor([0.0, -0.0], dtype=dtype)
                    y = edgeqat.fake_quant(
                        x, torch.tensor(lo), torch.tensor(hi), narrow_range=narrow
                    )
                    assert y.tolist() == [0.0, 0.0], (kind, lo, hi, dtype, narrow)
                    assert not torch.signbit(y).any(), (kind, lo, hi)


def test_infinities_and_nan():
    x = torch.tensor([-math.inf, math.inf, math.nan, 0.5, math.nan], requires_grad=True)
    lo = torch.tensor(-1.0, requires_grad=True)
    hi = torch.tensor(1.0, requires_grad=True)
    y = edgeqat.fake_quant(x, lo, hi)
    r = reference.nudge(-1.0, 1.0, 8, False)
    assert y[0].item() == r.nudged_min and y[1].item() == r.nudged_max
    assert torch.isnan(y[2]) and torch.isnan(y[4])
    y.backward(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]))
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 8.0, 0.0]  # NaN: no gradient anywhere
    assert (lo.grad.item(), hi.grad.item()) == (1.0, 2.0)
    _, mask = ops._fake_quant_cachemask(x.detach(), lo.detach(), hi.detach(), None, 8, False)
    assert mask.tolist() == [1, 2, 3, 0, 3]


# --------------------------------------------------------------------------------------------
# Degenerate ranges and empty tensors


@pytest.mark.parametrize("value", [0.0, 0.7, -3.0, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_degenerate_range(value, dtype):
    """min == max: all outputs 0.0 (no NaN), mask taken against [0, 0]."""
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-3, 5.0, math.nan], dtype=dtype, requires_grad=True)
    lo = torch.tensor(value, requires_grad=True)
    hi = torch.tensor(value, requires_grad=True)
    y = edgeqat.fake_quant(x, lo, hi)
    assert y[:5].tolist() == [0.0] * 5 and torch.isnan(y[5])
    y.backward(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], dtype=dtype))
    assert x.grad.tolist() == [0.0, 2.0, 4.0, 0.0, 0.0, 0.0]
    assert (lo.grad.item(), hi.grad.item()) == (1.0, 24.0)
    check_against_reference(x, lo, hi)


def test_degenerate_channels_next_to_normal_ones():
    x = torch.tensor([[-2.0, 0.0, 3.0], [-2.0, 0.0, 3.0], [-2.0, 0.0, 3.0]])
    lo, hi = torch.tensor([1.5, -4.0, 0.0]), torch.tensor([1.5, 4.0, 0.0])
    y = edgeqat.fake_quant_per_channel(x, lo, hi, axis=0)
    assert y[0].tolist() == [0.0, 0.0, 0.0] and y[2].tolist() == [0.0, 0.0, 0.0]
    assert y[1].tolist() != [0.0, 0.0, 0.0]
    check_against_reference(x, lo, hi, axis=0)


def test_scale_underflow_is_degenerate_only_in_float32():
    # max - min = 1e-44 is a float32 subnormal; divided by 255 it underflows to 0 in float32.
    lo, hi = torch.tensor(0.0), torch.tensor(1e-44)
    x = torch.tensor([-1e-44, 5e-45, 2e-44])
    assert edgeqat.fake_quant(x, lo, hi).tolist() == [0.0, 0.0, 0.0]
    y64 = edgeqat.fake_quant(x.double(), lo, hi)
    assert y64[2].item() == hi.item() and y64[0].item() == 0.0
    check_against_reference(x, lo, hi)
    check_against_reference(x.double(), lo, hi)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((0,), None), ((2, 0, 3), None), ((0,), 0), ((0, 4), 1), ((3, 0), 0), ((2, 0, 3), -1)],
)
def test_empty(shape, axis):
    x = torch.empty(shape)
    if axis is None:
        lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    else:
        c = shape[axis]
        lo, hi = -torch.arange(1.0, c + 1), torch.arange(1.0, c + 1)
    y, gx, gmin, gmax = check_against_reference(x, lo, hi, axis=axis)
    assert y.shape == shape and gx.shape == shape
    assert gmin.shape == lo.shape and not gmin.any() and not gmax.any()


def test_zero_dim_input():
    check_against_reference(torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(1.0))
    check_against_reference(torch.tensor(7.0), torch.tensor(-1.0), torch.tensor(1.0))


# --------------------------------------------------------------------------------------------
# Errors: the message names the public op, the argument and its value
#
# The range checks run on min and max as the kernels use them: rounded to the compute dtype
# (float32 for float32/float16/bfloat16 x, float64 for float64 x). Values are printed with
# every digit the compute dtype needs (9 significant digits for float32, 17 for float64).

X = torch.linspace(-2, 2, 6)
X2 = torch.linspace(-2, 2, 6).reshape(2, 3)
NAN, INF = math.nan, math.inf
F64 = torch.float64
META = torch.device("meta")
PER_TENSOR = "edgeqat::fake_quant_with_min_max_vars"
PER_CHANNEL = "edgeqat::fake_quant_with_min_max_vars_per_channel"


def _prep(args, requires_grad):
    """With requires_grad, floating tensors become leaves that require grad: the call then
    takes the autograd path (through _fake_quant_cachemask)."""
    return [
        a.detach().requires_grad_(True)
        if requires_grad and isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    ]


def _pc(x=X2, lo=(0.0, -1.0, -2.0), hi=(1.0, 1.0, 1.0), axis=1, **kw):
    def call(rg):
        return edgeqat.fake_quant_per_channel(*_prep([x, lo, hi], rg), axis, **kw)

    call.op = PER_CHANNEL
    return call


def _pt(x=X, lo=-1.0, hi=1.0, **kw):
    def call(rg):
        return edgeqat.fake_quant(*_prep([x, lo, hi], rg), **kw)

    call.op = PER_TENSOR
    return call


def _op(x=X, lo=None, hi=None):
    lo = torch.tensor(-1.0) if lo is None else lo
    hi = torch.tensor(1.0) if hi is None else hi

    def call(rg):
        return ops.fake_quant_with_min_max_vars(*_prep([x, lo, hi], rg))

    call.op = PER_TENSOR
    return call


def _f64(*values):
    return torch.tensor(values[0] if len(values) == 1 else values, dtype=F64)


_BELOW_0_1 = float(np.nextafter(np.float32(0.1), np.float32(0)))  # 0.099999994 in float32

ERROR_CASES = {
    "num_bits_1": (
        _pt(num_bits=1),
        "num_bits must be in [2, 16], got 1",
    ),
    "num_bits_17": (_pt(num_bits=17), "num_bits must be in [2, 16], got 17"),
    "num_bits_neg": (_pt(num_bits=-8), "num_bits must be in [2, 16], got -8"),
    "num_bits_pc": (
        _pc(num_bits=0),
        "num_bits must be in [2, 16], got 0",
    ),
    "min_nan": (_pt(lo=NAN), "min must be finite in Float, got nan"),
    "min_-inf": (_pt(lo=-INF), "min must be finite in Float, got -inf"),
    "max_inf": (_pt(hi=INF), "max must be finite in Float, got inf"),
    "max_nan_f64": (
        _pt(X.double(), _f64(0.0), _f64(NAN)),
        "max must be finite in Double, got nan",
    ),
    "pc_min_nan": (_pc(lo=(0.0, NAN, 0.0)), "min[1] must be finite in Float, got nan"),
    "pc_max_inf": (_pc(hi=(1.0, 1.0, INF)), "max[2] must be finite in Float, got inf"),
    # Finite in float64, infinite once rounded to the float32 compute dtype.
    "min_f64_inf_in_f32": (
        _pt(lo=_f64(-1e39), hi=_f64(1.0)),
        "min must be finite in Float, got -inf",
    ),
    "max_f64_inf_in_f32_half": (
        _pt(X.half(), _f64(-1.0), _f64(1e39)),
        "max must be finite in Float, got inf",
    ),
    "pc_max_number_inf_in_f32": (
        _pc(hi=[1e39, 1.0, 1.0]),
        "max[0] must be finite in Float, got inf",
    ),
    "inverted": (_pt(lo=2.0, hi=1.0), "min = 2 is greater than max = 1"),
    "inverted_neg": (_pt(lo=-0.5, hi=-0.75), "min = -0.5 is greater than max = -0.75"),
    "pc_inverted": (
        _pc(lo=(0.0, 3.0, 0.0), hi=(1.0, -3.0, 1.0)),
        "min[1] = 3 is greater than max[1] = -3",
    ),
    # Adjacent values print differently: all 9 (float32) or 17 (float64) digits.
    "inverted_f32_digits": (
        _pt(lo=torch.tensor(1.0000001), hi=torch.tensor(1.0)),
        "min = 1.00000012 is greater than max = 1",
    ),
    "inverted_bf16_digits": (
        _pt(X.bfloat16(), torch.tensor(1.0000001), torch.tensor(1.0)),
        "min = 1.00000012 is greater than max = 1",
    ),
    "inverted_f64_digits": (
        _pt(X.double(), _f64(1 + 2**-52), _f64(1.0)),
        "min = 1.0000000000000002 is greater than max = 1",
    ),
    "pc_inverted_f32_digits": (
        _pc(hi=(1.0, _BELOW_0_1, 1.0), lo=(0.0, 0.1, 0.0)),
        "min[1] = 0.100000001 is greater than max[1] = 0.099999994",
    ),
    "pc_inverted_f64_digits": (
        _pc(X2.double(), _f64(0.0, 0.1, 0.0), _f64(1.0, _BELOW_0_1, 1.0)),
        "min[1] = 0.10000000000000001 is greater than max[1] = 0.099999994039535522",
    ),
    "too_wide": (
        _pt(X.double(), _f64(-1.7e308), _f64(1.7e308)),
        "the range [-1.6999999999999999e+308, 1.6999999999999999e+308] is too wide: "
        "max - min overflows Double",
    ),
    "pc_too_wide": (
        _pc(X2.double(), _f64(0.0, -1e308, 0.0), _f64(1.0, 1e308, 1.0)),
        "the range [-1e+308, 1e+308][1] is too wide: max - min overflows Double",
    ),
    # max - min is finite in float64 but overflows the float32 the kernels nudge in.
    "too_wide_f32": (
        _pt(lo=torch.tensor(-3e38), hi=torch.tensor(3e38)),
        "the range [-3.00000001e+38, 3.00000001e+38] is too wide: max - min overflows Float",
    ),
    "too_wide_f32_numbers": (
        _pt(lo=-2e38, hi=2e38),
        "the range [-1.99999994e+38, 1.99999994e+38] is too wide: max - min overflows Float",
    ),
    "too_wide_f64_range_half_x": (
        _pt(X.half(), _f64(-2e38), _f64(2e38)),
        "the range [-1.99999994e+38, 1.99999994e+38] is too wide: max - min overflows Float",
    ),
    "pc_too_wide_f32_bf16_x": (
        _pc(X2.bfloat16(), (0.0, 0.0, -3e38), (1.0, 1.0, 3e38)),
        "the range [-3.00000001e+38, 3.00000001e+38][2] is too wide: max - min overflows Float",
    ),
    "min_shape": (_op(lo=torch.zeros(1)), "min must be a 0-dim tensor, got shape [1]"),
    "max_shape": (_op(hi=torch.ones(2, 1)), "max must be a 0-dim tensor, got shape [2, 1]"),
    "pc_min_len": (
        _pc(lo=torch.zeros(2)),
        "min must be 1-D of length x.size(1) = 3, got shape [2]",
    ),
    "pc_max_2d": (
        _pc(hi=torch.ones(3, 1)),
        "max must be 1-D of length x.size(1) = 3, got shape [3, 1]",
    ),
    "pc_min_0d": (
        _pc(lo=torch.tensor(0.0), axis=0),
        "min must be 1-D of length x.size(0) = 2, got shape []",
    ),
    "pc_axis_high": (
        _pc(axis=2),
        "axis 2 is out of range for x with 2 dimension(s) (shape [2, 3])",
    ),
    "pc_axis_low": (_pc(axis=-3), "axis -3 is out of range for x with 2 dimension(s)"),
    "pc_axis_0dim": (
        _pc(torch.tensor(1.0), [0.0], [1.0], axis=0),
        "axis 0 is out of range for x with 0 dimension(s)",
    ),
    "x_long": (
        _pt(torch.arange(4)),
        "x must be a floating-point tensor (float32, float64, float16 or bfloat16), got dtype Long",
    ),
    "x_uint8": (
        _pc(torch.zeros(2, 3, dtype=torch.uint8)),
        "x must be a floating-point tensor (float32, float64, float16 or bfloat16), got dtype Byte",
    ),
    "x_bool": (_pt(torch.ones(3, dtype=torch.bool)), "got dtype Bool"),
    "x_complex": (_pt(torch.ones(3, dtype=torch.complex64)), "got dtype ComplexFloat"),
    "min_long": (_op(lo=torch.tensor(0)), "min must be a floating-point tensor, got dtype Long"),
    "max_bool": (_op(hi=torch.tensor(True)), "max must be a floating-point tensor, got dtype Bool"),
    "min_meta": (_op(lo=torch.tensor(0.0, device=META)), "min is on meta but x is on cpu"),
    "max_meta": (_op(hi=torch.tensor(1.0, device=META)), "max is on meta but x is on cpu"),
    "pc_max_meta": (_pc(hi=torch.ones(3, device=META)), "max is on meta but x is on cpu"),
    "x_meta": (_op(x=X.to(META)), "min is on cpu but x is on meta"),
}


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors(case, requires_grad):
    """Both paths (the public op; _fake_quant_cachemask under autograd) give the same message,
    which starts with the public op's name."""
    fn, message = ERROR_CASES[case]
    with pytest.raises(RuntimeError, match=f"^{re.escape(fn.op)}: .*{re.escape(message)}"):
        fn(requires_grad)


@pytest.mark.parametrize("axis", [None, 1])
def test_internal_op_errors_name_the_public_op(axis):
    """_fake_quant_cachemask reports errors under the public op it implements, called
    directly, through autograd and on the Meta device."""
    op = PER_TENSOR if axis is None else PER_CHANNEL
    shape = () if axis is None else (3,)
    lo, hi = torch.full(shape, 2.0), torch.full(shape, 1.0)
    at = "" if axis is None else "[0]"
    inverted = f"min{at} = 2 is greater than max{at} = 1"
    with pytest.raises(RuntimeError, match=f"^{re.escape(f'{op}: {inverted}')}"):
        ops._fake_quant_cachemask(X2, lo, hi, axis, 8, False)
    with pytest.raises(RuntimeError, match=f"^{re.escape(f'{op}: {inverted}')}"):
        ops._fake_quant_cachemask(X2.detach().requires_grad_(True), lo, hi, axis, 8, False)
    meta = [t.to(META) for t in (X2, lo, hi)]
    with pytest.raises(RuntimeError, match=f"^{re.escape(op)}: num_bits must be in"):
        ops._fake_quant_cachemask(*meta, axis, 1, False)
    with pytest.raises(RuntimeError, match=f"^{re.escape(op)}: num_bits must be in"):
        ops._fake_quant_cachemask(X2, -hi, hi, axis, 17, False)


def test_errors_name_the_public_op_on_both_paths():
    for requires_grad in (False, True):
        x, x2 = (t.detach().requires_grad_(requires_grad) for t in (X, X2))
        with pytest.raises(RuntimeError, match=f"^{PER_TENSOR}: num_bits"):
            edgeqat.fake_quant(x, -1.0, 1.0, num_bits=1)
        with pytest.raises(RuntimeError, match=f"^{PER_CHANNEL}: axis 5"):
            edgeqat.fake_quant_per_channel(x2, [0.0] * 3, [1.0] * 3, axis=5)
        with pytest.raises(RuntimeError, match=f"^{PER_TENSOR}: min = 2"):
            edgeqat.fake_quant(x, 2.0, 1.0)
        with pytest.raises(RuntimeError, match=re.escape(f"{PER_CHANNEL}: min[2] = 2")):
            edgeqat.fake_quant_per_channel(x2, [0.0, 0.0, 2.0], [1.0] * 3, axis=1)


def test_errors_with_empty_input():
    with pytest.raises(RuntimeError, match=re.escape("min = 1 is greater than max = 0")):
        edgeqat.fake_quant(torch.empty(0), 1.0, 0.0)
    with pytest.raises(RuntimeError, match=re.escape("max[0] must be finite in Float, got nan")):
        edgeqat.fake_quant_per_channel(torch.empty(2, 0), [0.0, 0.0], [NAN, 1.0], axis=0)
    with pytest.raises(RuntimeError, match=re.escape("max - min overflows Float")):
        edgeqat.fake_quant(torch.empty(0, 3), -3e38, 3e38)


def _backward_args(grad=None, mask=None, axis=None, min_dtype=torch.float32, max_dtype=None):
    grad = torch.zeros(2, 3) if grad is None else grad
    mask = torch.zeros(2, 3, dtype=torch.uint8) if mask is None else mask
    return grad, mask, axis, min_dtype, min_dtype if max_dtype is None else max_dtype


BACKWARD_ERRORS = {
    "grad_long": (
        _backward_args(grad=torch.zeros(2, 3, dtype=torch.long)),
        "grad must be floating point, got dtype Long",
    ),
    "mask_float": (
        _backward_args(mask=torch.zeros(2, 3)),
        "mask must be uint8, got dtype Float",
    ),
    "shapes": (
        _backward_args(mask=torch.zeros(3, 2, dtype=torch.uint8)),
        "grad has shape [2, 3] but mask has shape [3, 2]",
    ),
    "min_dtype": (
        _backward_args(min_dtype=torch.int64, max_dtype=torch.float32),
        "min_dtype must be a floating dtype, got Long",
    ),
    "max_dtype": (
        _backward_args(max_dtype=torch.bool),
        "max_dtype must be a floating dtype, got Bool",
    ),
    "max_dtype_complex": (
        _backward_args(min_dtype=torch.float64, max_dtype=torch.complex64),
        "max_dtype must be a floating dtype, got ComplexFloat",
    ),
    "axis": (
        _backward_args(axis=2),
        "axis 2 is out of range for a mask with 2 dimension(s)",
    ),
    "axis_negative": (
        _backward_args(axis=-3),
        "axis -3 is out of range for a mask with 2 dimension(s)",
    ),
    "device": (
        _backward_args(grad=torch.zeros(2, 3, device=META)),
        "grad is on meta but mask is on cpu",
    ),
}


@pytest.mark.parametrize("case", list(BACKWARD_ERRORS))
def test_backward_op_errors(case):
    args, message = BACKWARD_ERRORS[case]
    with pytest.raises(RuntimeError, match="edgeqat::_fake_quant_backward: " + re.escape(message)):
        ops._fake_quant_backward(*args)


def test_python_wrapper_rejects_non_numbers():
    with pytest.raises(TypeError, match="min must be a tensor or a number"):
        edgeqat.fake_quant(X, "low", 1.0)
    with pytest.raises(TypeError, match="max must be a tensor or a number"):
        edgeqat.fake_quant_per_channel(X2, [0.0, 0.0, 0.0], [1.0, None, "x"], axis=1)


# --------------------------------------------------------------------------------------------
# The internal ops, called directly


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_cachemask_codes(axis):
    r = reference.nudge(-1.0, 1.0, 8, False)
    below = float(np.nextafter(r.nudged_min, np.float32(-np.inf)))
    above = float(np.nextafter(r.nudged_max, np.float32(np.inf)))
    row = [-INF, below, float(r.nudged_min), 0.0, float(r.nudged_max), above, INF, NAN]
    codes = [1, 1, 0, 0, 0, 2, 2, 3]
    x = torch.tensor([row, row])
    if axis is None:
        lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    else:
        n = x.shape[axis]
        lo, hi = torch.full((n,), -1.0), torch.full((n,), 1.0)
    out, mask = ops._fake_quant_cachemask(x, lo, hi, axis, 8, False)
    assert mask.dtype == torch.uint8 and mask.shape == x.shape
    assert mask.tolist() == [codes, codes]
    assert not mask.requires_grad
    # The output is the public op's output.
    public = (
        ops.fake_quant_with_min_max_vars(x, lo, hi)
        if axis is None
        else ops.fake_quant_with_min_max_vars_per_channel(x, lo, hi, axis)
    )
    assert_bitwise_equal(out, public)


def test_cachemask_output_differentiates_like_public_op():
    x = torch.tensor([-3.0, 0.2, 3.0], requires_grad=True)
    lo = torch.tensor(-1.0, requires_grad=True)
    hi = torch.tensor(1.0, requires_grad=True)
    out, mask = ops._fake_quant_cachemask(x, lo, hi, None, 8, False)
    assert out.requires_grad and not mask.requires_grad
    out.backward(torch.tensor([1.0, 2.0, 4.0]))
    assert x.grad.tolist() == [0.0, 2.0, 0.0]
    assert (lo.grad.item(), hi.grad.item()) == (1.0, 4.0)


def _backward_expected(grad, mask, axis, min_dtype, max_dtype=None):
    """(grad_x, grad_min, grad_max): the range sums in float64, rounded once to their dtypes."""
    max_dtype = min_dtype if max_dtype is None else max_dtype
    g = grad.double().numpy()
    m = mask.numpy()
    dims = tuple(d for d in range(m.ndim) if axis is None or d != axis % m.ndim)
    below = np.where(m == 1, g, 0.0).sum(axis=dims)
    above = np.where(m == 2, g, 0.0).sum(axis=dims)
    grad_x = torch.where(mask == 0, grad, torch.zeros((), dtype=grad.dtype))
    return (
        grad_x,
        torch.from_numpy(np.asarray(below)).to(min_dtype),
        torch.from_numpy(np.asarray(above)).to(max_dtype),
    )


RANGE_DTYPE_PAIRS = [
    (torch.float32, torch.float32),
    (torch.float64, torch.float64),
    (torch.float16, torch.float16),
    (torch.float16, torch.float64),
    (torch.float64, torch.bfloat16),
    (torch.bfloat16, torch.float32),
]


@pytest.mark.parametrize(
    ("min_dtype", "max_dtype"), RANGE_DTYPE_PAIRS, ids=lambda d: str(d).replace("torch.", "")
)
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7, 9), None), ((7, 9), 0), ((7, 9), 1), ((7, 9), -1), ((4, 3, 5, 6), 1), ((300, 130), 1)],
)
def test_backward_op(shape, axis, grad_dtype, min_dtype, max_dtype):
    """grad_min is returned in min_dtype and grad_max in max_dtype (the dtypes of min and max),
    each rounded once from the double sum."""
    rng = np.random.default_rng([len(shape), shape[-1]])
    mask = torch.from_numpy(rng.integers(0, 4, size=shape).astype(np.uint8))
    grad = random_grad(rng, shape, grad_dtype)
    got = ops._fake_quant_backward(grad, mask, axis, min_dtype, max_dtype)
    expected = _backward_expected(grad, mask, axis, min_dtype, max_dtype)
    channels = () if axis is None else (shape[axis],)
    assert got[1].shape == channels and got[2].shape == channels
    for g, e in zip(got, expected):
        assert_bitwise_equal(g, e)


@pytest.mark.parametrize("axis", [None, 1, 3])
def test_backward_op_layouts(axis):
    """grad and mask in different memory layouts: channels-last, transposed, expanded."""
    rng = np.random.default_rng(2)
    shape = (3, 4, 5, 6)
    mask = torch.from_numpy(rng.integers(0, 4, size=shape).astype(np.uint8))
    grad = random_grad(rng, shape, torch.float32)
    cl = torch.channels_last
    variants = [
        (mask.contiguous(memory_format=cl), grad),
        (mask, grad.contiguous(memory_format=cl)),
        (mask.contiguous(memory_format=cl), grad.contiguous(memory_format=cl)),
        (mask, grad.transpose(1, 2).contiguous().transpose(1, 2)),
        (mask.transpose(0, 3).contiguous().transpose(0, 3), grad[:, :, :, ::1]),
        (mask, random_grad(rng, (1, 4, 1, 6), torch.float32).expand(shape)),
        (mask[:, :, :, :1].expand(shape), grad),
        (mask, torch.stack([grad, grad], dim=-1)[..., 1]),
    ]
    for m, g in variants:
        expected = _backward_expected(g, m, axis, torch.float32)
        got = ops._fake_quant_backward(g, m, axis, torch.float32, torch.float32)
        for a, e in zip(got, expected):
            assert_bitwise_equal(a, e)


def test_backward_of_broadcast_gradient():
    """y.sum().backward() hands the backward an expanded (stride 0) gradient."""
    x = torch.tensor([[-3.0, 0.5], [0.25, 9.0]], requires_grad=True)
    lo = torch.tensor([-1.0, -2.0], requires_grad=True)
    hi = torch.tensor([1.0, 2.0], requires_grad=True)
    edgeqat.fake_quant_per_channel(x, lo, hi, axis=1).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert lo.grad.tolist() == [1.0, 0.0] and hi.grad.tolist() == [0.0, 1.0]


# --------------------------------------------------------------------------------------------
# Autograd details


def test_inference_mode_matches_grad_mode():
    rng = np.random.default_rng(8)
    x, lo, hi = per_channel_case(rng, (5, 6, 7), 1, 8, False)
    expected = edgeqat.fake_quant_per_channel(x.requires_grad_(True), lo, hi, 1)
    with torch.inference_mode():
        got = edgeqat.fake_quant_per_channel(x, lo, hi, 1)
    assert_bitwise_equal(got, expected)


def test_gradients_only_where_requested():
    x = torch.tensor([-3.0, 0.2, 3.0])
    lo = torch.tensor(-1.0, requires_grad=True)
    hi = torch.tensor(1.0)
    edgeqat.fake_quant(x, lo, hi).backward(torch.tensor([2.0, 4.0, 8.0]))
    assert lo.grad.item() == 2.0 and x.grad is None and hi.grad is None
    x.requires_grad_(True)
    lo.grad = None
    edgeqat.fake_quant(x, lo.detach(), hi).backward(torch.tensor([2.0, 4.0, 8.0]))
    assert x.grad.tolist() == [0.0, 4.0, 0.0]


@pytest.mark.parametrize("axis", [None, 0, 2, -1, -2, -3])
def test_double_backward_routes_through_masks(axis):
    """The backward is linear in the incoming gradient g: d(grad_x, grad_min, grad_max)/dg
    applied to (u, v, w) is u on inside elements, v below, w above (v, w along axis).
    Negative axes included: the grad-of-grad reshapes v and w along the normalised axis."""
    rng = np.random.default_rng([3, 0 if axis is None else axis + 4])
    shape = (4, 5, 6)
    if axis is None:
        x, lo, hi = per_tensor_case(rng, shape, "contains_zero", 8, False)
    else:
        x, lo, hi = per_channel_case(rng, shape, axis, 8, False)
    x.requires_grad_(True)
    lo.requires_grad_(True)
    hi.requires_grad_(True)
    g = random_grad(rng, shape, torch.float32).requires_grad_(True)
    y = quantize(x, lo, hi, axis)
    gx, glo, ghi = torch.autograd.grad(y, (x, lo, hi), g, create_graph=True)
    assert gx.requires_grad and glo.requires_grad and ghi.requires_grad
    u = random_grad(rng, gx.shape, torch.float32)
    v = random_grad(rng, glo.shape, torch.float32)
    w = random_grad(rng, ghi.shape, torch.float32)
    (gg,) = torch.autograd.grad((gx, glo, ghi), g, (u, v, w))

    _, mask = ops._fake_quant_cachemask(x.detach(), lo.detach(), hi.detach(), axis, 8, False)
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = -1
    zero = torch.zeros(())
    expected = (
        torch.where(mask == 0, u, zero)
        + torch.where(mask == 1, v.reshape(bshape), zero)
        + torch.where(mask == 2, w.reshape(bshape), zero)
    )
    assert {0, 1, 2} <= set(mask.unique().tolist())  # every branch is exercised
    assert_bitwise_equal(gg, expected)


@pytest.mark.parametrize("axis", [-1, 1])
def test_double_backward_negative_axis(axis):
    """Hand-written: with axis=-1 the saved axis must be normalised before the grad-of-grad
    reshapes along it (it used to write out of bounds and abort the process)."""
    x = torch.tensor([[-5.0, 0.0, 5.0], [0.5, 5.0, -5.0]], requires_grad=True)
    lo = torch.full((3,), -1.0, requires_grad=True)
    hi = torch.full((3,), 1.0, requires_grad=True)
    y = edgeqat.fake_quant_per_channel(x, lo, hi, axis=axis)
    g = torch.ones(2, 3, requires_grad=True)
    gx, glo, ghi = torch.autograd.grad(y, (x, lo, hi), g, create_graph=True)
    assert gx.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert glo.tolist() == [1.0, 0.0, 1.0] and ghi.tolist() == [0.0, 1.0, 1.0]
    # v and w differ per channel, so a reshape along the wrong axis cannot pass.
    uvw = (torch.ones(2, 3), torch.tensor([2.0, 8.0, 32.0]), torch.tensor([4.0, 16.0, 64.0]))
    (gg,) = torch.autograd.grad((gx, glo, ghi), g, uvw)
    # Inside -> u = 1, below -> v[c], above -> w[c].
    assert gg.tolist() == [[2.0, 1.0, 64.0], [1.0, 16.0, 32.0]]


def test_double_backward_through_backward_op_negative_axis():
    """The backward op called directly with axis=-1 and a grad that requires grad."""
    rng = np.random.default_rng(12)
    mask = torch.from_numpy(rng.integers(0, 4, size=(3, 4, 5)).astype(np.uint8))
    grad = random_grad(rng, (3, 4, 5), torch.float32).requires_grad_(True)
    results = {}
    for axis in (-1, 2):
        outs = ops._fake_quant_backward(grad, mask, axis, torch.float64, torch.float16)
        assert [o.dtype for o in outs] == [torch.float32, torch.float64, torch.float16]
        expected = _backward_expected(grad.detach(), mask, axis, torch.float64, torch.float16)
        for o, e in zip(outs, expected):
            assert_bitwise_equal(o, e)
        u = random_grad(np.random.default_rng(1), (3, 4, 5), torch.float32)
        v = random_grad(np.random.default_rng(2), (5,), torch.float64)
        w = random_grad(np.random.default_rng(3), (5,), torch.float16)
        (results[axis],) = torch.autograd.grad(outs, grad, (u, v, w))
    zero = torch.zeros(())
    expected = (
        torch.where(mask == 0, u, zero)
        + torch.where(mask == 1, v.float(), zero)
        + torch.where(mask == 2, w.float(), zero)
    )
    assert_bitwise_equal(results[-1], expected)
    assert_bitwise_equal(results[2], expected)


@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("which", ["x", "min", "all"])
def test_saves_only_a_uint8_mask(axis, which):
    x = torch.randn(6, 7, 3)
    range_shape = () if axis is None else (7,)
    lo, hi = torch.full(range_shape, -1.0), torch.full(range_shape, 1.0)
    for name, t in (("x", x), ("min", lo), ("max", hi)):
        t.requires_grad_(which in (name, "all"))
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = quantize(x, lo, hi, axis)
    assert len(saved) == 1, [(s.dtype, s.shape) for s in saved]
    assert saved[0].dtype == torch.uint8 and saved[0].shape == x.shape
    y.backward(torch.ones_like(y))


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((300_000,), None), ((200, 1500), 1), ((200, 1500), 0), ((30, 5000), 1), ((2, 70, 2000), 1)],
)
def test_results_do_not_depend_on_thread_count(restore_threads, shape, axis):
    rng = np.random.default_rng(1)
    if axis is None:
        x, lo, hi = per_tensor_case(rng, shape, "contains_zero", 8, False)
    else:
        x, lo, hi = per_channel_case(rng, shape, axis, 8, False)
    # Arbitrary float32 gradients: the range sums depend on the order of summation.
    grad = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    results = []
    for threads in (1, 2, 4):
        torch.set_num_threads(threads)
        xr, lor, hir = (t.clone().requires_grad_(True) for t in (x, lo, hi))
        y = quantize(xr, lor, hir, axis)
        y.backward(grad)
        results.append((y.detach(), xr.grad, lor.grad, hir.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_bitwise_equal(b, a)
    # The double sums agree with exact summation to float32 precision.
    ref_axis = None if axis is None else axis
    _, mask = ops._fake_quant_cachemask(x, lo, hi, ref_axis, 8, False)
    expected = _backward_expected(grad, mask, axis, torch.float64)
    torch.testing.assert_close(results[0][2].double(), expected[1], rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(results[0][3].double(), expected[2], rtol=1e-6, atol=1e-3)


# --------------------------------------------------------------------------------------------
# Python entry points


def test_python_numbers_and_sequences():
    rng = np.random.default_rng(4)
    x, lo, hi = per_channel_case(rng, (5, 3), 1, 8, False)
    by_list = edgeqat.fake_quant_per_channel(x, lo.tolist(), hi.tolist(), axis=1)
    by_tuple = edgeqat.fake_quant_per_channel(x, tuple(lo.tolist()), tuple(hi.tolist()), 1)
    by_tensor = edgeqat.fake_quant_per_channel(x, lo, hi, 1)
    assert_bitwise_equal(by_list, by_tensor)
    assert_bitwise_equal(by_tuple, by_tensor)
    assert_bitwise_equal(
        edgeqat.fake_quant(x, -0.75, 1.5),
        edgeqat.fake_quant(x, torch.tensor(-0.75), torch.tensor(1.5)),
    )


def test_python_numbers_keep_float64_precision():
    """Numbers become float64 ranges for float64 x, so they are not rounded to float32."""
    x = torch.tensor([0.3, 0.55, -0.05, 0.69999], dtype=F64)
    lo, hi = _f64(-0.1), _f64(0.7)
    expected = edgeqat.fake_quant(x, lo, hi)
    assert_bitwise_equal(edgeqat.fake_quant(x, -0.1, 0.7), expected)
    rounded = edgeqat.fake_quant(x, lo.float(), hi.float())
    assert not torch.equal(rounded, expected)  # the float32 range would give another result
    x2 = torch.stack([x, x * 2], dim=1)
    assert_bitwise_equal(
        edgeqat.fake_quant_per_channel(x2, [-0.1, -0.3], [0.7, 1.3], axis=1),
        edgeqat.fake_quant_per_channel(x2, _f64(-0.1, -0.3), _f64(0.7, 1.3), axis=1),
    )


class _RecordRangeDtypes(TorchDispatchMode):
    """Records the dtypes of the min and max an edgeqat op receives."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "edgeqat" and func.__name__ != "_fake_quant_backward":
            self.seen.append((args[1].dtype, args[2].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_python_numbers_become_compute_dtype_tensors(dtype, requires_grad):
    """float64 for float64 x, float32 for float32, float16 and bfloat16 x."""
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.linspace(-2, 2, 12, dtype=dtype).reshape(4, 3).requires_grad_(requires_grad)
    with _RecordRangeDtypes() as rec:
        edgeqat.fake_quant(x, -1, 1.5)
        edgeqat.fake_quant_per_channel(x, [-1.0, -0.5, 0.0], (1, 2.0, 3.0), axis=1)
    assert rec.seen == [(expected, expected)] * 2
    # A tensor range is passed through as it is.
    with _RecordRangeDtypes() as rec:
        edgeqat.fake_quant(x, torch.tensor(-1.0, dtype=torch.float16), 2.0)
    assert rec.seen == [(torch.float16, expected)]


# --------------------------------------------------------------------------------------------
# The range is checked as the kernels use it: rounded to the compute dtype


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("lo", "hi", "range_dtype", "message"),
    [
        (
            -3e38,
            3e38,
            torch.float32,
            "the range [-3.00000001e+38, 3.00000001e+38] is too wide: max - min overflows Float",
        ),
        (
            -2e38,
            2e38,
            torch.float64,
            "the range [-1.99999994e+38, 1.99999994e+38] is too wide: max - min overflows Float",
        ),
        (-1e39, 1.0, torch.float64, "min must be finite in Float, got -inf"),
        (0.0, 3.5e38, torch.float64, "max must be finite in Float, got inf"),
    ],
)
def test_range_overflowing_float32_is_rejected(
    lo, hi, range_dtype, message, x_dtype, requires_grad
):
    """Ranges valid in float64 but not in the float32 the kernels nudge in are an error
    (they used to give NaN outputs), per tensor and per channel."""
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=x_dtype).requires_grad_(requires_grad)
    lo_t, hi_t = torch.tensor(lo, dtype=range_dtype), torch.tensor(hi, dtype=range_dtype)
    with pytest.raises(RuntimeError, match=f"^{PER_TENSOR}: {re.escape(message)}$"):
        edgeqat.fake_quant(x, lo_t, hi_t)
    x2 = torch.stack([x, x]).detach().requires_grad_(requires_grad)
    pc_lo = torch.stack([torch.tensor(-1.0, dtype=range_dtype), lo_t])
    pc_hi = torch.stack([torch.tensor(1.0, dtype=range_dtype), hi_t])
    if message.startswith("the range"):
        pc_message = message.replace(" is too wide", "[1] is too wide")
    else:
        pc_message = message[:3] + "[1]" + message[3:]  # min[1] / max[1]
    with pytest.raises(RuntimeError, match=f"^{PER_CHANNEL}: {re.escape(pc_message)}$"):
        edgeqat.fake_quant_per_channel(x2, pc_lo, pc_hi, axis=0)


@pytest.mark.parametrize(
    ("lo", "hi"), [(-3e38, 3e38), (-1e39, 1.0), (-8e307, 8e307), (-2e38, 2e38)]
)
def test_float64_input_takes_ranges_beyond_float32(lo, hi):
    """float64 x computes in float64: the same ranges are valid, the outputs finite."""
    x = torch.tensor([-1e40, -1.0, 0.0, 1e30, 1e38, 1e300], dtype=F64)
    y = check_against_reference(x, _f64(lo), _f64(hi))[0]
    assert torch.isfinite(y).all(), y.tolist()
    assert y[2].item() == 0.0
    x2 = torch.stack([x, -x], dim=1)
    y2 = check_against_reference(x2, _f64(-1.0, lo), _f64(1.0, hi), axis=1)[0]
    assert torch.isfinite(y2).all(), y2.tolist()


def test_range_is_compared_after_rounding_to_the_compute_dtype():
    # 1 + 2**-52 > 1 in float64, but both are 1.0 in float32: a valid (degenerate) range there.
    lo, hi = _f64(1 + 2**-52), _f64(1.0)
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert edgeqat.fake_quant(x, lo, hi).tolist() == [0.0, 0.0, 0.0]
    assert edgeqat.fake_quant(x.half(), lo, hi).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match=re.escape("min = 1.0000000000000002 is greater")):
        edgeqat.fake_quant(x.double(), lo, hi)
    # The same with Python numbers, which are float32 for float32 x.
    assert edgeqat.fake_quant(x, 0.1, 0.1 - 1e-9).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="is greater than max"):
        edgeqat.fake_quant(x.double(), 0.1, 0.1 - 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_error_message_values_round_trip(dtype):
    """min and max one ulp apart print differently, and the printed text reads back as the
    exact value of the compute dtype."""
    np_dtype = np.float64 if dtype == F64 else np.float32
    rng = np.random.default_rng(13)
    magnitudes = 10.0 ** rng.uniform(-30, 30, size=40)
    values = (magnitudes * rng.choice([-1, 1], size=40)).astype(np_dtype)
    for v in values:
        above = np.nextafter(v, np_dtype(np.inf))
        x = torch.zeros(2, dtype=dtype)
        with pytest.raises(RuntimeError) as info:
            edgeqat.fake_quant(x, torch.tensor(above, dtype=dtype), torch.tensor(v, dtype=dtype))
        match = re.search(r"min = (\S+) is greater than max = (\S+)$", str(info.value))
        assert match, str(info.value)
        printed_min, printed_max = match.groups()
        assert printed_min != printed_max, str(info.value)
        assert np_dtype(float(printed_min)) == above, (printed_min, above)
        assert np_dtype(float(printed_max)) == v, (printed_max, v)


# --------------------------------------------------------------------------------------------
# Each range gradient in its own range value's dtype


@pytest.mark.parametrize(
    ("lo_dtype", "hi_dtype"),
    [
        (torch.float16, torch.float64),
        (torch.bfloat16, torch.float64),
        (torch.float64, torch.float16),
        (torch.float64, torch.bfloat16),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
    ],
    ids=str,
)
@pytest.mark.parametrize("axis", [None, 0])
def test_range_gradients_keep_their_own_precision(lo_dtype, hi_dtype, axis):
    """grad_min is rounded once to min's dtype, grad_max once to max's: a float16 or bfloat16
    min must not round or overflow the gradient of a float64 max (nor the other way round)."""
    n_below, n_above = 1001, 70_001  # 1001 rounds to 1000 in bfloat16, 70001 overflows float16
    x = torch.cat([torch.full((n_below,), -5.0), torch.full((n_above,), 5.0)])
    if axis is not None:
        x = torch.stack([x, -x])  # channel 1: 70001 below, 1001 above
    shape = () if axis is None else (2,)
    lo = torch.full(shape, -1.0, dtype=lo_dtype, requires_grad=True)
    hi = torch.full(shape, 1.0, dtype=hi_dtype, requires_grad=True)
    quantize(x, lo, hi, axis).sum().backward()

    def rounded(n, dtype):
        return torch.tensor(float(n), dtype=F64).to(dtype)

    expected_lo = torch.stack([rounded(n_below, lo_dtype), rounded(n_above, lo_dtype)])
    expected_hi = torch.stack([rounded(n_above, hi_dtype), rounded(n_below, hi_dtype)])
    if axis is None:
        expected_lo, expected_hi = expected_lo[0], expected_hi[0]
    assert_bitwise_equal(lo.grad, expected_lo)
    assert_bitwise_equal(hi.grad, expected_hi)
    # Every float64 gradient is exact.
    for g in (lo.grad, hi.grad):
        if g.dtype == F64:
            assert set(g.reshape(-1).tolist()) <= {float(n_below), float(n_above)}
