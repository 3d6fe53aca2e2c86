"""The int8 runtime's kernels (``edgeqat._runtime``) against the plain-Python reference.

Every kernel of every kernel table (``_runtime.kernel_tables()``) runs on randomized small cases
with fixed seeds and on hand-picked edge cases (extreme inputs and weights, extreme zero points,
shifts across [-31, 30], a zero multiplier, ReLU / ReLU6 clamps, asymmetric padding, dilation,
groups, depth multipliers, 1x1 images, batch 3), and its output must equal the reference in
tests/python/int8_reference.py bit for bit. That reference is written from
docs/runtime-numerics.md with Python integers and exact fractions, not from the C++ code.
Bad arguments must raise ValueError naming the argument and its value.
"""

from __future__ import annotations

import math
import subprocess
import sys

import int8_reference as ref
import numpy as np
import pytest

from edgeqat import _runtime as rt

TABLES = rt.kernel_tables()
SEEDS = range(20)


def assert_same(actual: np.ndarray, expected: np.ndarray, context=None) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype == np.float32:  # compare bit patterns
        actual, expected = actual.view(np.int32), expected.view(np.int32)
    if not np.array_equal(actual, expected):
        bad = np.argwhere(actual != expected)
        first = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {actual.size} differ; first at {first}: got {actual[first]}, "
            f"expected {expected[first]}; case {context}"
        )


_EXPECTED: dict = {}  # the slow reference's results, shared by the tables


def _key(v):
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (list, tuple)):
        return tuple(_key(e) for e in v)
    return repr(v)


def run(name: str, table: str, *args, num_threads: int = 1, **kwargs) -> None:
    """The kernel `name` of `table` and the Python reference on the same arguments."""
    got = getattr(rt, name)(*args, impl=table, num_threads=num_threads, **kwargs)
    key = (name, _key(args), _key(sorted(kwargs.items())))
    if key not in _EXPECTED:
        _EXPECTED[key] = getattr(ref, name)(*args, **kwargs)
    assert_same(got, _EXPECTED[key], kwargs)


# ---- random data -------------------------------------------------------------------------------


def int8_data(rng, shape, kind="uniform", low=-128):
    if kind == "uniform":
        return rng.integers(low, 128, size=shape, dtype=np.int8)
    if kind == "min":
        return np.full(shape, low, dtype=np.int8)
    if kind == "max":
        return np.full(shape, 127, dtype=np.int8)
    assert kind == "extremes"
    return rng.choice(np.array([low, 127], dtype=np.int8), size=shape)


def weights(rng, shape, kind="uniform"):
    return int8_data(rng, shape, kind, low=-127)


def random_multiplier(rng):
    """Mostly a realistic conv multiplier, sometimes any valid (M0, shift), a zero or a tie
    maker (M0 a power of two)."""
    r = rng.random()
    if r < 0.75:
        return ref.quantize_multiplier(2.0 ** rng.uniform(-18, -6))
    if r < 0.85:
        return (int(rng.integers(0, 2**31)), int(rng.integers(-31, 31)))
    if r < 0.92:
        return (0, int(rng.integers(-31, 31)))
    return (2**30, int(rng.integers(-20, -8)))


def random_bias(rng, channels):
    r = rng.random()
    if r < 0.25:
        return None
    if r < 0.9:
        return rng.integers(-(2**16), 2**16, size=channels, dtype=np.int32)
    return rng.choice(np.array([-(2**31), 2**31 - 1, 0, -1], dtype=np.int32), size=channels)


def random_output_stage(rng):
    """Zero points and a clamp from activation_range (checked against the reference's)."""
    zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, size=2))
    activation = str(rng.choice(["none", "relu", "relu6"]))
    scale = 2.0 ** rng.uniform(-7, 0)
    act = rt.activation_range(activation, scale, zp_out)
    assert (act["act_min"], act["act_max"]) == ref.activation_range(activation, scale, zp_out)
    return {"input_zero_point": zp_in, "output_zero_point": zp_out, **act}


def random_geometry(rng, kh, kw, dilation_max=2, stride_max=3, pad_max=2):
    """stride, dilation, padding and an image size (<= 8) the dilated kernel fits in."""
    sh, sw = (int(v) for v in rng.integers(1, stride_max + 1, size=2))
    dh, dw = (int(v) for v in rng.integers(1, dilation_max + 1, size=2))
    top, left, bottom, right = (int(v) for v in rng.integers(0, pad_max + 1, size=4))
    h = max(int(rng.integers(1, 9)), (kh - 1) * dh + 1 - top - bottom)
    w = max(int(rng.integers(1, 9)), (kw - 1) * dw + 1 - left - right)
    return h, w, {"stride": (sh, sw), "dilation": (dh, dw), "padding": (top, left, bottom, right)}


# ---- quantize_multiplier and requantization -----------------------------------------------------


def _multiplier_reals():
    rng = np.random.default_rng(1234)
    reals = list(2.0 ** rng.uniform(-45, 30, size=3000))
    reals += list(rng.uniform(0, 1, size=500))
    for k in range(-45, 31):
        p = 2.0**k
        reals += [p, math.nextafter(p, 0), math.nextafter(p, math.inf), p * 1.5, p * 0.75]
    # q * 2^31 within half an ulp of rounding up to 2^31, and exact ties of q * 2^31
    reals += [(2**31 - 0.5) / 2**31, (2**31 - 0.25) / 2**31, (2**30 + 0.5) / 2**31]
    reals += [(2**31 - 0.5) * 2.0**-63, (2**31 - 0.5) * 2.0**-62, (2**31 - 0.5) * 2.0**-64]
    reals += [2.0**30 - 1, 2.0**30 - 2.0**-23, 2.0**30, 2.0**31, 1e300, 5e-324, 1e-310]
    return [r for r in reals if r > 0]


def test_quantize_multiplier_matches_reference():
    for real in _multiplier_reals():
        try:
            expected = ref.quantize_multiplier(real)
        except ValueError:
            with pytest.raises(ValueError, match="real_multiplier"):
                rt.quantize_multiplier(real)
            continue
        got = rt.quantize_multiplier(real)
        assert got == expected, (real, got, expected)
        m0, shift = got
        if m0:
            assert 2**30 <= m0 < 2**31 and rt.MIN_SHIFT <= shift <= rt.MAX_SHIFT
            # within 2^-31 relative of the real multiplier
            assert abs(ref.multiplier_value(got) - ref.Fraction(real)) <= ref.Fraction(
                real
            ) * ref.Fraction(1, 2**31)
            assert rt.quantized_multiplier_value(m0, shift) == float(ref.multiplier_value(got))


@pytest.mark.parametrize("real", [0.0, -0.5, math.nan, math.inf, -math.inf, 2.0**30, 1e300])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(ValueError, match=r"quantize_multiplier: real_multiplier must be"):
        rt.quantize_multiplier(real)


def _requant_inputs(rng):
    x = list(rng.integers(-(2**31), 2**31, size=300))
    x += list(rng.integers(-(2**12), 2**12, size=200))
    x += [-(2**31), 2**31 - 1, 0, 1, -1, 2, -2, 3, -3, 5, -5, 2**30, -(2**30)]
    return np.array(x, dtype=np.int32)


@pytest.mark.parametrize("shift", range(-31, 31))
def test_multiply_by_quantized_multiplier(shift):
    rng = np.random.default_rng(100 + shift)
    x = _requant_inputs(rng)
    for m0 in [0, 1, 2**30, 2**31 - 1, 3 * 2**29, int(rng.integers(2**30, 2**31))]:
        got = rt.multiply_by_quantized_multiplier(x, m0, shift)
        expected = np.array([ref.requant(v, (m0, shift)) for v in x.tolist()], dtype=np.int32)
        assert_same(got, expected, (m0, shift))
        zp = int(rng.integers(-128, 128))
        got = rt.requantize_output(x, m0, shift, output_zero_point=zp, act_min=-100, act_max=90)
        expected = np.array(
            [ref.requantize_output(v, (m0, shift), zp, -100, 90) for v in x.tolist()],
            dtype=np.int8,
        )
        assert_same(got, expected, (m0, shift, zp))


def test_requantization_ties_go_toward_plus_infinity():
    x = np.array([5, -5, 3, -3, 1, -1], dtype=np.int32)
    # M = 0.5 exactly: 2.5 -> 3, -2.5 -> -2, 1.5 -> 2, -1.5 -> -1, 0.5 -> 1, -0.5 -> 0
    got = rt.multiply_by_quantized_multiplier(x, 2**30, 0)
    assert got.tolist() == [3, -2, 2, -1, 1, 0]


# ---- load-time helpers -------------------------------------------------------------------------


def test_activation_range_matches_reference():
    rng = np.random.default_rng(7)
    scales = list(2.0 ** rng.uniform(-10, 3, size=200)) + [6 / 255, 6 / 2.5, 6 / 3.5, 1e-30, 1e30]
    for scale in scales:
        zp = int(rng.integers(-128, 128))
        for activation in ["none", "relu", "relu6"]:
            got = rt.activation_range(activation, scale, zp)
            expected = ref.activation_range(activation, scale, zp)
            assert (got["act_min"], got["act_max"]) == expected, (activation, scale, zp)
    # ties of 6 / scale round away from zero
    assert rt.activation_range("relu6", 6 / 2.5, -128) == {"act_min": -128, "act_max": -125}
    assert rt.activation_range("relu", 0.1, -128) == {"act_min": -128, "act_max": 127}
    assert rt.activation_range("relu6", 0.1, 100) == {"act_min": 100, "act_max": 127}


def test_make_channel_multipliers_matches_reference():
    rng = np.random.default_rng(8)
    for _ in range(50):
        s_in, s_out = 2.0 ** rng.uniform(-12, 0, size=2)
        ws = list(2.0 ** rng.uniform(-14, -2, size=int(rng.integers(1, 9))))
        got = rt.make_channel_multipliers(s_in, ws, s_out)
        assert got == ref.channel_multipliers(s_in, ws, s_out)
        conv = rt.make_conv_params(s_in, 3, ws, s_out, -5, act_min=-5, act_max=100)
        assert conv == {
            "input_zero_point": 3,
            "output_zero_point": -5,
            "act_min": -5,
            "act_max": 100,
            "multipliers": got,
        }
        assert rt.make_depthwise_conv_params(s_in, 3, ws, s_out, -5, -5, 100) == conv
        assert rt.make_fully_connected_params(s_in, 3, ws, s_out, -5, -5, 100) == conv


def test_make_add_params_matches_reference():
    rng = np.random.default_rng(9)
    cases = [tuple(2.0 ** rng.uniform(-10, 2, size=3)) for _ in range(100)]
    cases += [(1.0, 1.0, 1.0), (1.0, 2.0**-40, 0.5), (0.1, 0.1, 0.2), (2.0**-40, 1.0, 1.0)]
    for s1, s2, s_out in cases:
        zp1, zp2, zp_out = (int(v) for v in rng.integers(-128, 128, size=3))
        got = rt.make_add_params(s1, zp1, s2, zp2, s_out, zp_out, act_min=-3, act_max=120)
        expected = ref.add_params(s1, zp1, s2, zp2, s_out, zp_out)
        assert got == {**expected, "act_min": -3, "act_max": 120}, (s1, s2, s_out)


def test_pool_and_quantize_params():
    assert rt.make_pool_params((2, 3), stride=2, padding=(0, 1)) == {
        "filter_size": (2, 3),
        "stride": (2, 2),
        "padding": (0, 1, 0, 1),
        "act_min": -128,
        "act_max": 127,
    }
    assert rt.make_global_pool_params((2, 5, 7, 3))["filter_size"] == (5, 7)
    assert rt.make_quantize_params(0.1, -3) == {"scale": float(np.float32(0.1)), "zero_point": -3}


def test_window_output_size():
    for size, k, s, d, b, a in [(8, 3, 1, 1, 0, 0), (7, 3, 2, 2, 1, 2), (1, 3, 1, 1, 1, 1)]:
        assert rt.window_output_size(size, k, s, d, b, a) == ref.window_output_size(
            size, k, s, d, b, a
        )


# ---- conv2d ------------------------------------------------------------------------------------


def random_conv2d_case(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    in_per_group, out_per_group = (int(v) for v in rng.integers(1, 4, size=2))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    h, w, geometry = random_geometry(rng, kh, kw)
    n = int(rng.integers(1, 4))
    c, oc = groups * in_per_group, groups * out_per_group
    kind = str(rng.choice(["uniform"] * 5 + ["min", "max", "extremes"]))
    x = int8_data(rng, (n, h, w, c), kind)
    filt = weights(rng, (oc, kh, kw, in_per_group), "extremes" if rng.random() < 0.2 else "uniform")
    multipliers = [random_multiplier(rng) for _ in range(oc)]
    return (x, filt, random_bias(rng, oc), multipliers), {
        **geometry,
        "groups": groups,
        **random_output_stage(rng),
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("table", TABLES)
def test_conv2d_random(table, seed):
    args, kwargs = random_conv2d_case(seed)
    run("conv2d", table, *args, **kwargs)


class Edge:
    """A hand-picked conv / depthwise case: input shape (n, h, w, c); `out` is the number of
    output channels (conv) or the depth multiplier (depthwise); data kinds for the input and
    the weights; one multiplier for every channel; bias None, "random" or "extreme"."""

    def __init__(self, shape, out, kernel, zps, multiplier, x="uniform", w="uniform",
                 bias="random", **kwargs):  # fmt: skip
        self.shape, self.out, self.kernel, self.zps = shape, out, kernel, zps
        self.multiplier, self.x, self.w, self.bias, self.kwargs = multiplier, x, w, bias, kwargs

    def zero_points(self):
        return {"input_zero_point": self.zps[0], "output_zero_point": self.zps[1]}

    def make_bias(self, rng, channels):
        if self.bias == "random":
            return rng.integers(-5000, 5000, size=channels, dtype=np.int32)
        if self.bias == "extreme":
            return np.resize(np.array([2**31 - 1, -(2**31)], dtype=np.int32), channels)
        return None


def _conv_edge_cases():
    M = ref.quantize_multiplier
    return {
        "min_input_max_weight_zp127": Edge(
            (1, 4, 4, 4), 3, (3, 3), (127, -128), M(2**-12), x="min", w="max", bias=None, padding=1
        ),
        "max_input_min_weight_zp-128": Edge(
            (2, 3, 5, 2), 2, (2, 2), (-128, 127), M(2**-10), x="max", w="min", bias=None
        ),
        "extremes_saturate": Edge(
            (1, 5, 5, 8), 4, (3, 3), (-128, 0), M(0.9), x="extremes", w="extremes", bias=None
        ),
        "multiplier_zero": Edge((1, 4, 4, 3), 3, (3, 3), (5, -7), (0, 0)),
        "relu": Edge((1, 5, 5, 4), 4, (3, 3), (0, -20), M(2**-9), act_min=-20, act_max=127),
        "relu6": Edge(
            (1, 5, 5, 4),
            4,
            (3, 3),
            (0, -128),
            M(2**-9),
            **rt.activation_range("relu6", 0.05, -128),
        ),
        "asymmetric_padding": Edge(
            (1, 6, 5, 3), 2, (3, 3), (-3, 4), M(2**-9), padding=(0, 2, 1, 0), stride=(2, 1)
        ),
        "dilation_2": Edge((1, 7, 7, 2), 3, (3, 3), (10, 0), M(2**-8), dilation=2, padding=2),
        "groups_2": Edge(
            (2, 5, 4, 6), 4, (2, 3), (-50, 50), M(2**-9), groups=2, padding=(1, 1, 0, 1)
        ),
        "image_1x1_kernel_3x3": Edge((1, 1, 1, 4), 5, (3, 3), (1, -1), M(2**-7), padding=1),
        "image_1x1_kernel_1x1": Edge((3, 1, 1, 8), 8, (1, 1), (1, -1), M(2**-6), bias=None),
        "batch_3_stride_3": Edge((3, 8, 8, 3), 4, (2, 2), (-128, 127), M(2**-9), stride=3),
        "bias_saturates": Edge(
            (1, 3, 3, 2), 4, (3, 3), (0, 0), M(2**-30), bias="extreme", padding=1
        ),
        "shift_30": Edge((1, 3, 3, 2), 2, (1, 1), (0, 3), (2**31 - 1, 30), x="extremes"),
        "shift_-31": Edge((1, 3, 3, 2), 2, (1, 1), (0, -3), (2**31 - 1, -31), bias="extreme"),
        "ties_half": Edge((1, 4, 4, 2), 3, (1, 1), (0, 0), (2**30, -5), bias=None),
    }


@pytest.mark.parametrize("name", list(_conv_edge_cases()))
@pytest.mark.parametrize("table", TABLES)
def test_conv2d_edge_cases(table, name):
    case = _conv_edge_cases()[name]
    rng = np.random.default_rng(len(name))
    oc, c = case.out, case.shape[3]
    x = int8_data(rng, case.shape, case.x)
    filt = weights(rng, (oc, *case.kernel, c // case.kwargs.get("groups", 1)), case.w)
    kwargs = {**case.zero_points(), **case.kwargs}
    run("conv2d", table, x, filt, case.make_bias(rng, oc), [case.multiplier] * oc, **kwargs)


@pytest.mark.parametrize("table", TABLES)
def test_conv2d_multiplier_forms_agree(table):
    (x, filt, bias, ms), kwargs = random_conv2d_case(3)
    expected = ref.conv2d(x, filt, bias, ms, **kwargs)
    as_array = np.array(ms, dtype=np.int64)
    two_arrays = (as_array[:, 0].astype(np.int32), as_array[:, 1].astype(np.int32))
    for form in (ms, tuple(ms), as_array, as_array.astype(np.int32), two_arrays):
        assert_same(rt.conv2d(x, filt, bias, form, impl=table, **kwargs), expected)


@pytest.mark.parametrize("table", TABLES)
def test_conv2d_spreads_params_dicts(table):
    rng = np.random.default_rng(11)
    x = int8_data(rng, (1, 6, 6, 4))
    filt = weights(rng, (5, 3, 3, 4))
    act = rt.activation_range("relu6", 0.05, -100)
    conv = rt.make_conv_params(0.02, 3, [0.004] * 5, 0.05, -100, **act)
    got = rt.conv2d(x, filt, None, stride=2, padding=(0, 0, 1, 1), impl=table, **conv)
    expected = ref.conv2d(x, filt, None, stride=2, padding=(0, 0, 1, 1), **conv)
    assert_same(got, expected)


# ---- depthwise conv2d --------------------------------------------------------------------------


def random_depthwise_case(seed):
    rng = np.random.default_rng(1000 + seed)
    c = int(rng.integers(1, 6))
    m = int(rng.choice([1, 1, 2, 3]))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    h, w, geometry = random_geometry(rng, kh, kw)
    n = int(rng.integers(1, 4))
    kind = str(rng.choice(["uniform"] * 5 + ["min", "max", "extremes"]))
    x = int8_data(rng, (n, h, w, c), kind)
    filt = weights(rng, (1, kh, kw, c * m), "extremes" if rng.random() < 0.2 else "uniform")
    multipliers = [random_multiplier(rng) for _ in range(c * m)]
    return (x, filt, random_bias(rng, c * m), multipliers), {
        **geometry,
        "depth_multiplier": m,
        **random_output_stage(rng),
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("table", TABLES)
def test_depthwise_conv2d_random(table, seed):
    args, kwargs = random_depthwise_case(seed)
    run("depthwise_conv2d", table, *args, **kwargs)


def _depthwise_edge_cases():
    M = ref.quantize_multiplier
    return {
        "min_input_max_weight": Edge(
            (1, 4, 4, 3), 1, (3, 3), (127, -128), M(2**-8), x="min", w="max", bias=None, padding=1
        ),
        "max_input_min_weight": Edge(
            (1, 4, 4, 3), 2, (3, 3), (-128, 127), M(2**-8), x="max", w="min", bias=None, padding=1
        ),
        "depth_multiplier_2": Edge(
            (2, 5, 5, 4), 2, (3, 3), (7, -7), M(2**-7), padding=(1, 0, 1, 2)
        ),
        "dilation_2_stride_2": Edge(
            (1, 8, 7, 3), 1, (3, 3), (-20, 20), M(2**-7), dilation=2, stride=2, padding=2
        ),
        "relu6": Edge(
            (1, 5, 5, 4),
            1,
            (3, 3),
            (0, -128),
            M(2**-7),
            **rt.activation_range("relu6", 0.03, -128),
        ),
        "image_1x1": Edge((3, 1, 1, 5), 2, (3, 3), (0, 0), M(2**-5), padding=1),
        "multiplier_zero": Edge((1, 3, 3, 2), 1, (3, 3), (0, 9), (0, 0), padding=1),
        "shift_30": Edge(
            (1, 3, 3, 2), 1, (1, 1), (0, 0), (2**30, 30), x="extremes", w="extremes", bias=None
        ),
    }


@pytest.mark.parametrize("name", list(_depthwise_edge_cases()))
@pytest.mark.parametrize("table", TABLES)
def test_depthwise_conv2d_edge_cases(table, name):
    case = _depthwise_edge_cases()[name]
    rng = np.random.default_rng(len(name))
    m, c = case.out, case.shape[3]
    x = int8_data(rng, case.shape, case.x)
    filt = weights(rng, (1, *case.kernel, c * m), case.w)
    bias = case.make_bias(rng, c * m)
    kwargs = {**case.zero_points(), **case.kwargs, "depth_multiplier": m}
    run("depthwise_conv2d", table, x, filt, bias, [case.multiplier] * (c * m), **kwargs)


@pytest.mark.parametrize("table", TABLES)
def test_depthwise_equals_grouped_conv(table):
    rng = np.random.default_rng(12)
    c, m = 3, 2
    x = int8_data(rng, (2, 6, 5, c))
    filt = weights(rng, (1, 3, 3, c * m))
    bias = rng.integers(-999, 999, size=c * m, dtype=np.int32)
    ms = [random_multiplier(rng) for _ in range(c * m)]
    kw = dict(stride=(2, 1), padding=(1, 0, 1, 2), dilation=(1, 2), input_zero_point=-9)
    kw.update(output_zero_point=4)
    dw = rt.depthwise_conv2d(x, filt, bias, ms, depth_multiplier=m, impl=table, **kw)
    ohwi = np.ascontiguousarray(filt.transpose(3, 1, 2, 0))  # [c * m, kh, kw, 1]
    assert_same(dw, rt.conv2d(x, ohwi, bias, ms, groups=c, impl=table, **kw))


# ---- fully connected ---------------------------------------------------------------------------


def random_fully_connected_case(seed):
    rng = np.random.default_rng(2000 + seed)
    batch, k, out = int(rng.integers(0, 4)), int(rng.integers(1, 33)), int(rng.integers(1, 9))
    kind = str(rng.choice(["uniform"] * 5 + ["min", "max", "extremes"]))
    x = int8_data(rng, (batch, k), kind)
    filt = weights(rng, (out, k), "extremes" if rng.random() < 0.2 else "uniform")
    multipliers = [random_multiplier(rng) for _ in range(out)]
    return (x, filt, random_bias(rng, out), multipliers), random_output_stage(rng)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("table", TABLES)
def test_fully_connected_random(table, seed):
    args, kwargs = random_fully_connected_case(seed)
    run("fully_connected", table, *args, **kwargs)


@pytest.mark.parametrize("shift", range(-31, 31))
@pytest.mark.parametrize("table", TABLES)
def test_fully_connected_every_shift(table, shift):
    """Accumulators scaled to the shift (through the bias), so outputs are neither all 0 nor all
    saturated; large shifts saturate int32 before the clamp."""
    rng = np.random.default_rng(3000 + shift)
    batch, k, out = 3, 4, 8
    x = int8_data(rng, (batch, k))
    filt = weights(rng, (out, k))
    span = min(2**31 - 1, 2 ** max(8 - shift, 1))
    bias = rng.integers(-span, span, size=out, dtype=np.int64).astype(np.int32)
    ms = [(int(rng.integers(2**30, 2**31)), shift) for _ in range(out - 2)]
    ms += [(2**30, shift), (0, shift)]
    zp_out = int(rng.integers(-128, 128))
    run(
        "fully_connected",
        table,
        x,
        filt,
        bias,
        ms,
        input_zero_point=int(rng.integers(-128, 128)),
        output_zero_point=zp_out,
    )


@pytest.mark.parametrize(
    "xk, wk, zp_in, zp_out",
    [("min", "max", 127, -128), ("max", "min", -128, 127), ("extremes", "extremes", 0, 0)],
)
@pytest.mark.parametrize("table", TABLES)
def test_fully_connected_extremes(table, xk, wk, zp_in, zp_out):
    rng = np.random.default_rng(4)
    x = int8_data(rng, (3, 64), xk)
    filt = weights(rng, (5, 64), wk)
    ms = [ref.quantize_multiplier(2.0**-e) for e in (10, 14, 18, 22, 40)]
    bias = np.array([0, 2**31 - 1, -(2**31), 12345, -1], dtype=np.int32)
    run(
        "fully_connected",
        table,
        x,
        filt,
        bias,
        ms,
        input_zero_point=zp_in,
        output_zero_point=zp_out,
    )
    act = rt.activation_range("relu", 0.1, zp_out)
    zps = {"input_zero_point": zp_in, "output_zero_point": zp_out}
    run("fully_connected", table, x, filt, None, ms, **zps, **act)


@pytest.mark.parametrize("table", TABLES)
def test_fully_connected_bias_addition_saturates(table):
    """acc + bias saturates to int32 (documented), visible with |acc| ~ 2^24 and M = 2^-25:
    saturated (2^31 - 1) * 2^-25 -> 64, unsaturated (2^31 + 2^24) * 2^-25 -> 64.5 -> 65."""
    k = 600
    x = np.full((2, k), -128, dtype=np.int8)  # q - zp = -255
    filt = np.stack([np.full(k, -127, np.int8), np.full(k, 127, np.int8)])  # acc = +-19431000
    bias = np.array([2**31 - 1, -(2**31)], dtype=np.int32)
    ms = [(2**30, -24), (2**30, -24)]
    kwargs = {"input_zero_point": 127, "output_zero_point": 0}
    got = rt.fully_connected(x, filt, bias, ms, impl=table, **kwargs)
    assert got.tolist() == [[64, -64], [64, -64]]
    run("fully_connected", table, x, filt, bias, ms, **kwargs)


# ---- add ---------------------------------------------------------------------------------------


def random_add_case(seed):
    rng = np.random.default_rng(4000 + seed)
    shape = tuple(int(v) for v in rng.integers(1, 6, size=int(rng.integers(1, 5))))
    kinds = ["uniform"] * 5 + ["min", "max", "extremes"]
    a = int8_data(rng, shape, str(rng.choice(kinds)))
    b = int8_data(rng, shape, str(rng.choice(kinds)))
    if rng.random() < 0.7:  # from scales, through make_add_params
        s1, s2, s_out = 2.0 ** rng.uniform(-8, 1, size=3)
        zp1, zp2, zp_out = (int(v) for v in rng.integers(-128, 128, size=3))
        params = rt.make_add_params(s1, zp1, s2, zp2, s_out, zp_out)
        act = rt.activation_range(str(rng.choice(["none", "relu", "relu6"])), s_out, zp_out)
        params.update(act)
    else:  # any parameters the kernel accepts
        params = {
            "input1_zero_point": int(rng.integers(-128, 128)),
            "input2_zero_point": int(rng.integers(-128, 128)),
            "left_shift": int(rng.integers(0, 21)),
            "input1_multiplier": (int(rng.integers(0, 2**31)), int(rng.integers(-31, 1))),
            "input2_multiplier": (int(rng.integers(0, 2**31)), int(rng.integers(-31, 1))),
            "output_multiplier": (int(rng.integers(0, 2**31)), int(rng.integers(-31, 31))),
            "output_zero_point": int(rng.integers(-128, 128)),
        }
    return a, b, params


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("table", TABLES)
def test_add_random(table, seed):
    a, b, params = random_add_case(seed)
    run("add", table, a, b, **params)


@pytest.mark.parametrize(
    "scales, zps",
    [
        ((1.0, 1.0, 1.0), (0, 0, 0)),
        ((0.5, 0.25, 0.75), (-128, 127, -128)),
        ((0.5, 0.25, 0.75), (127, -128, 127)),
        ((1.0, 2.0**-40, 1.0), (3, -3, 0)),  # input 2's multiplier underflows to (0, 0)
        ((0.01, 0.02, 0.03), (-128, -128, -128)),
        ((0.1, 0.1, 0.05), (0, 0, 0)),  # saturates
    ],
)
@pytest.mark.parametrize("table", TABLES)
def test_add_edge_cases(table, scales, zps):
    (s1, s2, s_out), (zp1, zp2, zp_out) = scales, zps
    params = rt.make_add_params(s1, zp1, s2, zp2, s_out, zp_out)
    # every pair of values near both ends and near 0, and random pairs
    values = np.r_[-128:-112, -8:8, 112:128].astype(np.int8)
    rng = np.random.default_rng(13)
    a = np.r_[np.repeat(values, values.size), int8_data(rng, 1000)]
    b = np.r_[np.tile(values, values.size), int8_data(rng, 1000)]
    run("add", table, a, b, **params)
    for activation in ["relu", "relu6"]:
        act = rt.activation_range(activation, s_out, zp_out)
        run("add", table, a[::7].copy(), b[::7].copy(), **{**params, **act})


# ---- pooling -----------------------------------------------------------------------------------


def random_pool_case(seed):
    rng = np.random.default_rng(5000 + seed)
    fh, fw = (int(v) for v in rng.integers(1, 4, size=2))
    sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
    # padding < filter, and the last window must reach the image: retry until it does
    while True:
        top, bottom = (int(v) for v in rng.integers(0, fh, size=2))
        left, right = (int(v) for v in rng.integers(0, fw, size=2))
        h = max(int(rng.integers(1, 9)), fh - top - bottom)
        w = max(int(rng.integers(1, 9)), fw - left - right)
        oh = ref.window_output_size(h, fh, sh, 1, top, bottom)
        ow = ref.window_output_size(w, fw, sw, 1, left, right)
        if (oh - 1) * sh - top < h and (ow - 1) * sw - left < w:
            break
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    kind = str(rng.choice(["uniform"] * 5 + ["min", "max", "extremes"]))
    x = int8_data(rng, (n, h, w, c), kind)
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    if rng.random() < 0.5:
        lo, hi = -128, 127
    return x, {
        "filter_size": (fh, fw),
        "stride": (sh, sw),
        "padding": (top, left, bottom, right),
        "act_min": lo,
        "act_max": hi,
    }


@pytest.mark.parametrize("kernel", ["average_pool2d", "max_pool2d"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("table", TABLES)
def test_pool2d_random(table, seed, kernel):
    x, kwargs = random_pool_case(seed)
    run(kernel, table, x, **kwargs)


@pytest.mark.parametrize("kernel", ["average_pool2d", "max_pool2d"])
@pytest.mark.parametrize("table", TABLES)
def test_pool2d_edge_cases(table, kernel):
    rng = np.random.default_rng(6)
    # ties of the average: +-x.5 for a window of 2 (away from zero), padding not counted
    ties = np.array([[[[-3], [-2], [3], [2], [-1], [0], [1], [2]]]], dtype=np.int8)  # 1x1x8x1
    run(kernel, table, ties, filter_size=(1, 2), stride=(1, 2))
    run(kernel, table, ties, filter_size=(1, 3), stride=(1, 1), padding=(0, 1, 0, 1))
    for kind in ["min", "max", "extremes"]:
        x = int8_data(rng, (3, 5, 4, 2), kind)
        run(kernel, table, x, filter_size=3, stride=2, padding=(1, 2, 1, 0))
    one = int8_data(rng, (2, 1, 1, 3))
    run(kernel, table, one, filter_size=3, padding=1)  # 1x1 image, one tap per window
    x = int8_data(rng, (1, 8, 8, 4))
    run(kernel, table, x, **rt.make_global_pool_params(x.shape))
    run(kernel, table, x, filter_size=(2, 2), stride=2, act_min=-10, act_max=10)


# ---- quantize / dequantize ---------------------------------------------------------------------


def quantize_inputs(rng, scale):
    x = list(rng.normal(0, 100 * scale, size=300).astype(np.float32))
    x += [np.float32(k + 0.5) * np.float32(scale) for k in range(-140, 140)]  # ties (mostly)
    x += [np.float32(k) * np.float32(scale) for k in range(-140, 140)]
    x += [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, -1e-45, 1e-30]
    return np.array(x, dtype=np.float32)


@pytest.mark.parametrize(
    "scale, zero_point",
    [(1.0, 0), (0.5, -128), (0.25, 127), (2.0**-10, 3), (0.1, -7), (0.0235, 60), (3.7, -100),
     (1e-30, 0), (1e30, 5)],
)  # fmt: skip
@pytest.mark.parametrize("table", TABLES)
def test_quantize(table, scale, zero_point):
    rng = np.random.default_rng(int(zero_point) + 1000)
    x = quantize_inputs(rng, scale)
    run("quantize", table, x, scale=scale, zero_point=zero_point)
    run("quantize", table, x[:60].reshape(3, 4, 5), scale=scale, zero_point=zero_point)


@pytest.mark.parametrize(
    "scale, zero_point", [(1.0, 0), (0.5, -128), (0.1, 127), (0.0235, -3), (1e-30, 0), (3e38, 7)]
)
@pytest.mark.parametrize("table", TABLES)
def test_dequantize(table, scale, zero_point):
    q = np.arange(-128, 128, dtype=np.int8).reshape(4, 8, 8)
    run("dequantize", table, q, scale=scale, zero_point=zero_point)


@pytest.mark.parametrize("table", TABLES)
def test_quantize_dequantize_round_trip(table):
    q = np.arange(-128, 128, dtype=np.int8)
    x = rt.dequantize(q, scale=0.0235, zero_point=-3, impl=table)
    assert_same(rt.quantize(x, scale=0.0235, zero_point=-3, impl=table), q)


# ---- threads -----------------------------------------------------------------------------------

RANDOM_CASES = {
    "conv2d": random_conv2d_case,
    "depthwise_conv2d": random_depthwise_case,
    "fully_connected": random_fully_connected_case,
}


@pytest.mark.parametrize("num_threads", [2, 5])
@pytest.mark.parametrize("table", TABLES)
def test_results_do_not_depend_on_num_threads(table, num_threads):
    for seed in range(6):
        for name, make in RANDOM_CASES.items():
            args, kwargs = make(seed)
            run(name, table, *args, num_threads=num_threads, **kwargs)
        a, b, params = random_add_case(seed)
        run("add", table, a, b, num_threads=num_threads, **params)
        x, pool = random_pool_case(seed)
        run("average_pool2d", table, x, num_threads=num_threads, **pool)
        run("max_pool2d", table, x, num_threads=num_threads, **pool)


@pytest.mark.parametrize("table", TABLES)
def test_concurrent_calls_from_python_threads(table):
    """The kernels run with the GIL released, each call on its own KernelContext."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(21)
    x = int8_data(rng, (3, 16, 16, 8))
    filt = weights(rng, (8, 3, 3, 8))
    ms = [ref.quantize_multiplier(2.0**-12)] * 8
    kwargs = {"padding": 1, "input_zero_point": 3, "output_zero_point": -3}
    expected = rt.conv2d(x, filt, None, ms, impl="reference", **kwargs)

    def call(i):
        return rt.conv2d(x, filt, None, ms, impl=table, num_threads=1 + i % 3, **kwargs)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for got in pool.map(call, range(12)):
            assert_same(got, expected)


@pytest.mark.skipif(not hasattr(rt, "fast_isas"), reason="built without the fast kernels")
def test_bad_runtime_isa_environment(monkeypatch):
    monkeypatch.setenv("EDGEQAT_RUNTIME_ISA", "sse9")
    assert "fast" not in rt.kernel_tables() and "reference" in rt.kernel_tables()
    x, filt, _, ms = _conv_args()
    with pytest.raises(ValueError, match=r"EDGEQAT_RUNTIME_ISA must be one of .*sse9"):
        rt.conv2d(x, filt, None, ms, impl="fast", **ZP)
    monkeypatch.setenv("EDGEQAT_RUNTIME_ISA", "portable")
    assert rt.fast_active_isa() == "portable"
    run("conv2d", "fast", x, filt, None, ms, **ZP)


def test_module_loads_without_torch():
    """edgeqat._runtime links the runtime only: loading the extension alone imports no torch."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('edgeqat._runtime', {rt.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(m.quantize_multiplier(0.5))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1073741824, 0)"


# ---- errors ------------------------------------------------------------------------------------


def _conv_args():
    rng = np.random.default_rng(0)
    x = int8_data(rng, (1, 4, 4, 2))
    filt = weights(rng, (3, 3, 3, 2))
    return x, filt, None, [(2**30, -10)] * 3


ZP = {"input_zero_point": 0, "output_zero_point": 0}


def _error_cases():
    x, filt, _, ms = _conv_args()
    x4 = int8_data(np.random.default_rng(1), (1, 4, 4, 4))
    f_g3 = weights(np.random.default_rng(1), (3, 3, 3, 1))
    return {
        "groups_do_not_divide": (
            lambda: rt.conv2d(x, f_g3, None, ms, groups=3, **ZP),
            r"conv2d: groups \(3\) must divide input_shape.c \(2\)",
        ),
        "input_zero_point_200": (
            lambda: rt.conv2d(x, filt, None, ms, input_zero_point=200, output_zero_point=0),
            r"conv2d: input_zero_point must be in \[-128, 127\], got 200",
        ),
        "output_zero_point_-129": (
            lambda: rt.fully_connected(x[0, 0], filt[:, 0, 0].copy(), None, ms, input_zero_point=0,
                                       output_zero_point=-129),
            r"fully_connected: output_zero_point must be in \[-128, 127\], got -129",
        ),
        "input_float32": (
            lambda: rt.conv2d(x.astype(np.float32), filt, None, ms, **ZP),
            r"conv2d: input must be a C-contiguous numpy array of dtype int8 .*got an array of "
            r"dtype float32 and shape \(1, 4, 4, 2\)",
        ),
        "input_uint8": (
            lambda: rt.max_pool2d(x.view(np.uint8), filter_size=2),
            r"max_pool2d: input must be .* int8 .*dtype uint8 and shape \(1, 4, 4, 2\)",
        ),
        "input_not_contiguous": (
            lambda: rt.conv2d(x4[..., ::2], filt, None, ms, **ZP),
            r"conv2d: input must be a C-contiguous .*shape \(1, 4, 4, 2\) that is not C-contiguous",
        ),
        "input_3d": (
            lambda: rt.conv2d(x[0], filt, None, ms, **ZP),
            r"conv2d: input must be .* with shape \[n, h, w, c\].*shape \(4, 4, 2\)",
        ),
        "input_list": (
            lambda: rt.add([1, 2], np.zeros(2, np.int8), **rt.make_add_params(1, 0, 1, 0, 1, 0)),
            r"add: input1 must be a C-contiguous numpy array of dtype int8, got an object of "
            r"type list",
        ),
        "bias_int64": (
            lambda: rt.conv2d(x, filt, np.zeros(3, np.int64), ms, **ZP),
            r"conv2d: bias must be .* int32 .*dtype int64 and shape \(3,\)",
        ),
        "bias_wrong_length": (
            lambda: rt.conv2d(x, filt, np.zeros(2, np.int32), ms, **ZP),
            r"conv2d: bias must have one value per output channel \(3\), got shape \(2,\)",
        ),
        "multipliers_wrong_count": (
            lambda: rt.conv2d(x, filt, None, ms[:2], **ZP),
            r"conv2d: multipliers must hold one \(multiplier, shift\) per output channel \(3\), "
            r"got 2",
        ),
        "multiplier_shift_31": (
            lambda: rt.conv2d(x, filt, None, [(2**30, 31)] * 3, **ZP),
            r"conv2d: multipliers\[0\] must have multiplier >= 0 and shift in \[-31, 30\], "
            r"got \{1073741824, 31\}",
        ),
        "multiplier_negative": (
            lambda: rt.depthwise_conv2d(x, filt[:1, :, :, :2], None, [(2**30, 0), (-1, 0)], **ZP),
            r"depthwise_conv2d: multipliers\[1\] must have multiplier >= 0 .*got \{-1, 0\}",
        ),
        "multiplier_overflows_int32": (
            lambda: rt.conv2d(x, filt, None, [(2**31, 0)] * 3, **ZP),
            r"conv2d: multipliers\[0\].multiplier must fit in int32, got 2147483648",
        ),
        "stride_0": (
            lambda: rt.conv2d(x, filt, None, ms, stride=(1, 0), **ZP),
            r"conv2d: stride_w must be >= 1, got 0",
        ),
        "kernel_larger_than_image": (
            lambda: rt.conv2d(x, filt, None, ms, dilation=2, **ZP),
            r"conv2d: the dilated kernel along h .* is larger than the padded input",
        ),
        "negative_padding": (
            lambda: rt.conv2d(x, filt, None, ms, padding=(1, -1, 0, 0), **ZP),
            r"conv2d: padding along w must be >= 0, got -1 and 0",
        ),
        "depth_multiplier_mismatch": (
            lambda: rt.depthwise_conv2d(x, filt[:1], None, ms[:2], depth_multiplier=2, **ZP),
            r"depthwise_conv2d: filter_shape.c must be input_shape.c \* depth_multiplier = "
            r"2 \* 2 = 4, got 2",
        ),
        "act_range_inverted": (
            lambda: rt.conv2d(x, filt, None, ms, act_min=10, act_max=5, **ZP),
            r"conv2d: activation range must satisfy .* got \[10, 5\]",
        ),
        "fc_features_mismatch": (
            lambda: rt.fully_connected(x[0, 0], filt[:, 0, 0, :1].copy(), None, ms, **ZP),
            r"fully_connected: filter must have shape \[out_features, in_features\] with "
            r"in_features = 2",
        ),
        "add_shape_mismatch": (
            lambda: rt.add(x, x[0], **rt.make_add_params(1, 0, 1, 0, 1, 0)),
            r"add: input1 and input2 must have the same shape",
        ),
        "add_input_multiplier_above_1": (
            lambda: rt.add(x, x, **{**rt.make_add_params(1, 0, 1, 0, 1, 0),
                                    "input1_multiplier": (2**30, 1)}),
            r"add: input1_multiplier must be < 1 \(shift <= 0\), got \{1073741824, 1\}",
        ),
        "add_left_shift_21": (
            lambda: rt.add(x, x, **{**rt.make_add_params(1, 0, 1, 0, 1, 0), "left_shift": 21}),
            r"add: left_shift must be in \[0, 20\], got 21",
        ),
        "pool_window_in_padding": (
            lambda: rt.average_pool2d(x, filter_size=2, padding=(2, 0, 0, 0)),
            r"average_pool2d: padding.top \(2\) must be < filter_h \(2\)",
        ),
        "quantize_scale_zero": (
            lambda: rt.quantize(np.zeros(3, np.float32), scale=0.0, zero_point=0),
            r"quantize: scale must be finite and > 0, got 0",
        ),
        "quantize_float64": (
            lambda: rt.quantize(np.zeros(3), scale=1.0, zero_point=0),
            r"quantize: input must be a C-contiguous numpy array of dtype float32, got an array "
            r"of dtype float64 and shape \(3,\)",
        ),
        "dequantize_zero_point_200": (
            lambda: rt.dequantize(x, scale=1.0, zero_point=200),
            r"dequantize: zero_point must be in \[-128, 127\], got 200",
        ),
        "unknown_impl": (
            lambda: rt.conv2d(x, filt, None, ms, impl="nope", **ZP),
            r"unknown kernel table impl='nope'; known: 'reference'",
        ),
        "num_threads_0": (
            lambda: rt.conv2d(x, filt, None, ms, num_threads=0, **ZP),
            r"conv2d: num_threads must be >= 1, got 0",
        ),
        "make_add_params_negative_scale": (
            lambda: rt.make_add_params(1.0, 0, -0.5, 0, 1.0, 0),
            r"make_add_params: input2_scale must be finite and > 0, got -0.5",
        ),
        "make_channel_multipliers_bad_scale": (
            lambda: rt.make_channel_multipliers(1.0, [0.1, 0.0], 1.0),
            r"make_channel_multipliers: weight_scales\[1\] must be finite and > 0, got 0",
        ),
        "make_channel_multipliers_too_large": (
            lambda: rt.make_channel_multipliers(2.0**20, [2.0**20], 1.0),
            r"make_channel_multipliers: input_scale \* weight_scales\[0\] / output_scale "
            r"\(output channel 0\) = 1099511627776 is not a usable multiplier",
        ),
        "activation_unknown": (
            lambda: rt.activation_range("gelu", 0.1, 0),
            r"activation must be 'none', 'relu' or 'relu6', got 'gelu'",
        ),
        "activation_range_zero_point": (
            lambda: rt.activation_range("relu", 0.1, 128),
            r"activation_range: output_zero_point must be in \[-128, 127\], got 128",
        ),
        "requantize_shift_-32": (
            lambda: rt.multiply_by_quantized_multiplier(np.zeros(2, np.int32), 2**30, -32),
            r"multiplier.shift must be in \[-31, 30\], got -32",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_error_cases()))
def test_bad_arguments_raise_value_error(name):
    call, message = _error_cases()[name]
    with pytest.raises(ValueError, match=message) as info:
        call()
    # the runtime's std::invalid_argument arrives as ValueError with its C++ message; the
    # binding's own checks name the Python function
    assert str(info.value).startswith(("edgeqat::runtime::", "edgeqat._runtime."))


@pytest.mark.parametrize("table", TABLES)
def test_kernel_tables_and_error_on_every_table(table):
    assert TABLES[0] == "reference" and len(set(TABLES)) == len(TABLES)
    x, filt, _, ms = _conv_args()
    with pytest.raises(ValueError, match=r"conv2d: groups \(2\) must divide filter_shape.n"):
        rt.conv2d(x, filt[:, :, :, :1].copy(), None, ms, groups=2, impl=table, **ZP)


def test_empty_batch():
    x = np.zeros((0, 4, 4, 2), np.int8)
    _, filt, _, ms = _conv_args()
    assert rt.conv2d(x, filt, None, ms, **ZP).shape == (0, 2, 2, 3)
    assert rt.fully_connected(np.zeros((0, 5), np.int8), np.zeros((2, 5), np.int8), None,
                              [(2**30, 0)] * 2, **ZP).shape == (0, 2)  # fmt: skip
