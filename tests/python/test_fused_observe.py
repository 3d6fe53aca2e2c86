"""torch.ops.edgeqat.observe_fake_quant_: the observer step and the fake quant in one op.

Its definition is the unfused sequence written here with the ops it replaces (each tested
against its own NumPy reference in test_observe.py / test_fake_quant.py):

    observe_min_max_(observed_min, observed_max, x, axis, averaging_constant, accumulate)
    lo, hi = min(observed_min, 0), max(observed_max, 0)      # [-b, b] when symmetric
    fake_quant_with_min_max_vars[_per_channel](x, lo, hi, ...)

With clamp_min / clamp_max (a fused ReLU / ReLU6), the first line observes
``x.clamp(clamp_min, clamp_max)`` instead and x itself is still fake-quantized.

Every comparison is bit for bit: the state, the output (and its strides), x's gradient. Also:
the composite (ATen-op) kernel that other devices run, against the fused CPU kernel; errors;
autograd (no gradient to the state, double backward); opcheck; torch.compile.
"""

from __future__ import annotations

import re

import pytest
import torch
from helpers import assert_bitwise_equal
from torch._inductor.utils import fresh_cache

import edgeqat
from edgeqat import FakeQuantizer, QConfig, QuantSpec

ops = torch.ops.edgeqat
op = ops.observe_fake_quant_
INF = float("inf")


def unfused(
    lo,
    hi,
    x,
    axis,
    c=1.0,
    accumulate=False,
    symmetric=False,
    num_bits=8,
    narrow=False,
    clamp_min=None,
    clamp_max=None,
):
    """The three ops observe_fake_quant_ fuses, as FakeQuantizer ran them before."""
    observed = x.detach()
    if clamp_min is not None or clamp_max is not None:
        observed = observed.clamp(clamp_min, clamp_max)
    ops.observe_min_max_(lo, hi, observed, axis, c, accumulate)
    qlo, qhi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if symmetric:
        bound = torch.maximum(-qlo, qhi)
        qlo, qhi = -bound, bound
    if axis is None:
        return ops.fake_quant_with_min_max_vars(x, qlo, qhi, num_bits, narrow)
    return ops.fake_quant_with_min_max_vars_per_channel(x, qlo, qhi, axis, num_bits, narrow)


def unobserved(shape=(), dtype=torch.float32):
    return torch.full(shape, INF, dtype=dtype), torch.full(shape, -INF, dtype=dtype)


def layouts(x):
    out = {"contiguous": x}
    if x.dim() >= 2:
        out["transposed"] = x.transpose(0, -1).contiguous().transpose(0, -1)
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    out["strided"] = wide[..., ::2]  # not dense: the kernel copies it first
    if x.dim() == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    return out


def data(gen, shape, i, dtype=torch.float32):
    """Batches that move: the EMA, the running range and the last value all differ."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + i) + 0.5 * i - 0.3
    return x.to(dtype)


def check_steps(
    shape,
    axis,
    dtype,
    state_dtype,
    c,
    accumulate,
    symmetric,
    num_bits,
    narrow,
    layout="contiguous",
    n=4,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    state_shape = () if axis is None else (shape[axis],)
    ref = list(unobserved(state_shape, state_dtype))
    got = list(unobserved(state_shape, state_dtype))
    for i in range(n):
        x = layouts(data(gen, shape, i, dtype))[layout]
        want = unfused(*ref, x, axis, c, accumulate, symmetric, num_bits, narrow)
        y = op(*got, x, axis, c, accumulate, symmetric, num_bits, narrow)
        assert_bitwise_equal(got[0], ref[0])
        assert_bitwise_equal(got[1], ref[1])
        assert_bitwise_equal(y, want)
        assert y.stride() == want.stride()
    return y


# --------------------------------------------------------------------------------------------
# Bit for bit against the unfused ops

UPDATES = [(1.0, False), (0.001, False), (0.3, False), (1.0, True)]  # last, ema, ema, running
SHAPE_AXES = [
    ((7,), None),
    ((3, 5), None),
    ((2, 3, 4, 5), None),
    ((7,), 0),
    ((3, 5), 0),
    ((3, 5), -1),
    ((2, 3, 4, 5), 1),
    ((2, 3, 4, 5), 3),
    ((64, 8, 3, 3), 0),  # a conv weight per output channel
]


@pytest.mark.parametrize(("shape", "axis"), SHAPE_AXES, ids=str)
@pytest.mark.parametrize(("c", "accumulate"), UPDATES, ids=str)
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_unfused(shape, axis, c, accumulate, symmetric):
    for layout in layouts(torch.zeros(shape)):
        check_steps(
            shape,
            axis,
            torch.float32,
            torch.float32,
            c,
            accumulate,
            symmetric,
            8,
            symmetric,
            layout,
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize(("c", "accumulate"), UPDATES, ids=str)
def test_dtypes_match_unfused(dtype, state_dtype, axis, c, accumulate):
    check_steps((3, 4, 5), axis, dtype, state_dtype, c, accumulate, axis is not None, 8, False)


@pytest.mark.parametrize(("num_bits", "narrow"), [(2, False), (4, True), (8, True), (16, False)])
def test_grids_match_unfused(num_bits, narrow):
    for axis in (None, 0):
        check_steps(
            (6, 50), axis, torch.float32, torch.float32, 0.1, False, False, num_bits, narrow
        )


def test_large_per_tensor_and_channels_last_per_channel():
    """Sizes that split into many parallel pieces (the reduction is exact in any order)."""
    check_steps(
        (8, 16, 30, 30), None, torch.float32, torch.float32, 0.01, False, False, 8, False, n=2
    )
    check_steps(
        (8, 16, 30, 30),
        1,
        torch.float32,
        torch.float32,
        1.0,
        False,
        True,
        8,
        True,
        "channels_last",
        n=2,
    )


def test_mixed_state_dtypes_match_unfused():
    gen = torch.Generator().manual_seed(5)
    for c, accumulate in UPDATES:
        ref = [torch.tensor(INF, dtype=torch.float64), torch.tensor(-INF, dtype=torch.float32)]
        got = [t.clone() for t in ref]
        for i in range(3):
            x = data(gen, (5, 7), i, torch.float64)
            want = unfused(*ref, x, None, c, accumulate, True)
            y = op(*got, x, None, c, accumulate, True)
            assert_bitwise_equal(got[0], ref[0])
            assert_bitwise_equal(got[1], ref[1])
            assert_bitwise_equal(y, want)


def test_partially_observed_channels():
    ref = [torch.tensor([-1.0, INF, 0.0]), torch.tensor([1.0, -INF, 2.0])]
    got = [t.clone() for t in ref]
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    assert_bitwise_equal(op(*got, x, 0, 0.5), unfused(*ref, x, 0, 0.5))
    assert_bitwise_equal(got[0], ref[0])
    assert_bitwise_equal(got[1], ref[1])
    assert torch.isfinite(got[0]).all()


@pytest.mark.parametrize(("shape", "axis"), [((0,), None), ((0, 3), 1), ((2, 0, 4), 0)])
def test_empty_x(shape, axis):
    state_shape = () if axis is None else (shape[axis],)
    for lo, hi in [
        unobserved(state_shape),
        (torch.full(state_shape, -1.0), torch.ones(state_shape)),
    ]:
        lo0, hi0 = lo.clone(), hi.clone()
        y = op(lo, hi, torch.empty(shape), axis, 0.5)
        assert y.shape == shape
        assert_bitwise_equal(lo, lo0)
        assert_bitwise_equal(hi, hi0)


def test_zero_dim_x_and_hand_computed_values():
    lo, hi = unobserved()
    y = op(lo, hi, torch.tensor(2.5), None, 0.5)
    assert (lo.item(), hi.item()) == (2.5, 2.5)
    assert y.item() == 2.5  # range [0, 2.5]: 2.5 is the top of the grid
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    x = torch.tensor([-3.0, 0.0, 2.0])
    y = op(lo, hi, x, None, 0.5)  # EMA: [-2, 1.5]
    assert (lo.item(), hi.item()) == (-2.0, 1.5)
    assert y[1].item() == 0.0
    assert y[0].item() == pytest.approx(-2.0, abs=3.5 / 255) and y[2].item() == pytest.approx(
        1.5, abs=3.5 / 255
    )


# --------------------------------------------------------------------------------------------
# The composite kernel (other devices) against the fused CPU kernel


@pytest.mark.parametrize(("shape", "axis"), SHAPE_AXES, ids=str)
@pytest.mark.parametrize("with_mask", [False, True])
def test_composite_kernel_matches_fused(shape, axis, with_mask):
    target = ops._observe_fake_quant_cachemask_ if with_mask else op
    composite = torch._C.DispatchKey.CompositeExplicitAutograd
    gen = torch.Generator().manual_seed(3)
    state_shape = () if axis is None else (shape[axis],)
    fused, comp = list(unobserved(state_shape)), list(unobserved(state_shape))
    for i in range(3):
        x = layouts(data(gen, shape, i))["transposed" if len(shape) > 1 else "contiguous"]
        args = (x, axis, 0.25, False, True, 8, True)
        want = target.default._op_dk(composite, *comp, *args)
        got = target(*fused, *args)
        for g, w in zip(got if with_mask else [got], want if with_mask else [want]):
            assert_bitwise_equal(g, w)
            assert g.stride() == w.stride()
        assert_bitwise_equal(fused[0], comp[0])
        assert_bitwise_equal(fused[1], comp[1])


def test_meta_shapes_and_strides_match_cpu():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    lo, hi = unobserved((3,))
    y, mask = ops._observe_fake_quant_cachemask_(lo, hi, x, 1, 1.0, False, True, 8, True)
    lo_m, hi_m = (t.to("meta") for t in unobserved((3,)))
    y_m, mask_m = ops._observe_fake_quant_cachemask_(
        lo_m, hi_m, x.to("meta"), 1, 1.0, False, True, 8, True
    )
    assert [(t.shape, t.stride(), t.dtype) for t in (y, mask)] == [
        (t.shape, t.stride(), t.dtype) for t in (y_m, mask_m)
    ]
    with pytest.raises(RuntimeError, match=re.escape("x.size(1) = 3, got shape [4]")):
        op(*(t.to("meta") for t in unobserved((4,))), x.to("meta"), 1)


# --------------------------------------------------------------------------------------------
# Autograd


@pytest.mark.parametrize(("shape", "axis"), [((4, 5), None), ((4, 5), 1), ((2, 3, 4, 5), -1)])
def test_gradient_is_the_fake_quant_ste_for_x_only(shape, axis):
    gen = torch.Generator().manual_seed(4)
    state_shape = () if axis is None else (shape[axis],)
    lo, hi = torch.full(state_shape, -0.5), torch.full(state_shape, 0.5)
    x = torch.randn(shape, generator=gen).mul(2).requires_grad_()
    g = torch.randn(shape, generator=gen)
    y = op(lo, hi, x, axis, 0.01, False, False, 8, False)
    (y * g).sum().backward()
    # the same output and mask as the fake-quant op with the updated range as constants
    x_ref = x.detach().clone().requires_grad_()
    qlo, qhi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if axis is None:
        y_ref = ops.fake_quant_with_min_max_vars(x_ref, qlo, qhi, 8, False)
    else:
        y_ref = ops.fake_quant_with_min_max_vars_per_channel(x_ref, qlo, qhi, axis, 8, False)
    (y_ref * g).sum().backward()
    assert_bitwise_equal(y, y_ref)
    assert_bitwise_equal(x.grad, x_ref.grad)
    assert (x.grad == 0).any() and (x.grad != 0).any()  # both sides of the mask occur
    assert lo.grad is None and not lo.requires_grad


def test_double_backward():
    """grad_x is linear in the incoming gradient (through the saved mask): its derivative with
    respect to that gradient is the mask, as for the fake-quant op."""
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    x = torch.tensor([-3.0, -0.5, 0.25, 2.0], requires_grad=True)
    y = op(lo, hi, x, None, 0.5)  # EMA range [-2, 1.5]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    assert gx.tolist() == [0.0, 2.0, 3.0, 0.0]
    (gg,) = torch.autograd.grad((gx * torch.tensor([5.0, 6.0, 7.0, 8.0])).sum(), g)
    assert gg.tolist() == [0.0, 6.0, 7.0, 0.0]


def test_versions_bump_and_no_grad():
    lo, hi = unobserved()
    v_lo, v_hi = lo._version, hi._version
    with torch.no_grad():
        op(lo, hi, torch.randn(3, requires_grad=True), None)
    assert lo._version > v_lo and hi._version > v_hi
    v_lo = lo._version
    y = op(lo, hi, torch.randn(3, requires_grad=True), None)
    assert lo._version > v_lo and y.requires_grad


def test_state_requiring_grad_is_an_error():
    lo = torch.tensor(-1.0, requires_grad=True)
    with pytest.raises(RuntimeError, match="observed_min and observed_max are observer state"):
        op(lo, torch.tensor(1.0), torch.randn(3), None)
    with torch.no_grad():  # how learned ranges are initialised: allowed
        op(lo, torch.tensor(1.0), torch.randn(3), None)


# --------------------------------------------------------------------------------------------
# Errors: RuntimeError naming the argument and the value, state untouched


def _fails_untouched(lo, hi, x, args, message):
    lo0, hi0 = lo.clone(), hi.clone()
    with pytest.raises(RuntimeError, match=re.escape(message)):
        op(lo, hi, x, *args)
    assert_bitwise_equal(lo, lo0)
    assert_bitwise_equal(hi, hi0)


@pytest.mark.parametrize(
    ("state_shape", "x", "args", "message"),
    [
        ((), torch.randn(3), (None, 0.0), "averaging_constant must be in (0, 1], got 0"),
        ((), torch.randn(3), (None, 1.5), "averaging_constant must be in (0, 1], got 1.5"),
        ((), torch.randn(3), (None, 1.0, False, False, 1), "num_bits must be in [2, 16], got 1"),
        ((), torch.randn(3), (None, 1.0, False, False, 17), "num_bits must be in [2, 16], got 17"),
        ((3,), torch.randn(3), (2,), "axis 2 is out of range for x with 1 dimension(s)"),
        ((4,), torch.randn(3, 4), (0,), "observed_min must be 1-D of length x.size(0) = 3"),
        ((4,), torch.randn(3, 4), (None,), "observed_min must be a 0-dim tensor, got shape [4]"),
        ((), torch.randint(0, 3, (3,)), (None,), "x must be a floating-point tensor, got dtype"),
        ((), torch.tensor([0.0, float("nan"), INF]), (None,), "x contains 1 NaN and 1 infinite"),
        (
            (),
            torch.tensor([1e39], dtype=torch.float64),
            (None,),
            "the batch range [1e+39, 1e+39] overflows the state dtype Float",
        ),
        (
            (),
            torch.randn(3),
            (None, 1.0, False, False, 8, False, 1.0, 0.5),
            "clamp_min must not exceed clamp_max, got clamp_min=1 and clamp_max=0.5",
        ),
        (
            (),
            torch.randn(3),
            (None, 1.0, False, False, 8, False, float("nan")),
            "clamp_min must be finite or None, got nan",
        ),
        (
            (),
            torch.randn(3),
            (None, 1.0, False, False, 8, False, None, INF),
            "clamp_max must be finite or None, got inf",
        ),
        (
            (),
            torch.tensor([-INF, 1.0, INF]),
            (None, 1.0, False, False, 8, False, 0.0),
            "x contains 0 NaN and 1 infinite value(s)",  # counted in clamp(x): -inf -> 0
        ),
    ],
)
def test_errors(state_shape, x, args, message):
    for lo, hi in [
        unobserved(state_shape),
        (torch.full(state_shape, -1.0), torch.ones(state_shape)),
    ]:
        _fails_untouched(lo, hi, x, args, "edgeqat::observe_fake_quant_: " + message)


def test_integer_state_is_an_error():
    with pytest.raises(RuntimeError, match="observed_max must be a floating-point tensor"):
        op(torch.tensor(0.0), torch.tensor(1), torch.randn(3), None)


# --------------------------------------------------------------------------------------------
# Clamp bounds: the observer sees clamp(x, clamp_min, clamp_max), x is fake-quantized

CLAMPS = [(0.0, None), (0.0, 6.0), (None, 0.75), (-0.5, 0.5), (1.0, 1.0)]


@pytest.mark.parametrize(("shape", "axis"), SHAPE_AXES, ids=str)
@pytest.mark.parametrize(("c", "accumulate"), UPDATES, ids=str)
@pytest.mark.parametrize(("clamp_min", "clamp_max"), CLAMPS, ids=str)
def test_clamp_bounds_match_unfused(shape, axis, c, accumulate, clamp_min, clamp_max):
    gen = torch.Generator().manual_seed(5)
    state_shape = () if axis is None else (shape[axis],)
    ref, got = list(unobserved(state_shape)), list(unobserved(state_shape))
    for i in range(4):
        x = layouts(data(gen, shape, i) * 4)["transposed" if len(shape) > 1 else "contiguous"]
        xr, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
        args = (axis, c, accumulate, False, 8, False)
        want = unfused(*ref, xr, *args, clamp_min, clamp_max)
        y = op(*got, xg, *args, clamp_min, clamp_max)
        assert_bitwise_equal(got[0], ref[0])
        assert_bitwise_equal(got[1], ref[1])
        assert_bitwise_equal(y, want)
        g = torch.randn(shape, generator=gen)
        (want * g).sum().backward()
        (y * g).sum().backward()
        assert_bitwise_equal(xg.grad, xr.grad)
    if clamp_min is not None:
        assert (got[0] >= clamp_min).all()
    if clamp_max is not None:
        assert (got[1] <= clamp_max).all()


@pytest.mark.parametrize(("shape", "axis"), [((2, 3, 4, 5), None), ((2, 3, 4, 5), 1)], ids=str)
@pytest.mark.parametrize(("clamp_min", "clamp_max"), CLAMPS, ids=str)
@pytest.mark.parametrize("with_mask", [False, True])
def test_clamp_bounds_composite_kernel_matches_fused(shape, axis, clamp_min, clamp_max, with_mask):
    target = ops._observe_fake_quant_cachemask_ if with_mask else op
    composite = torch._C.DispatchKey.CompositeExplicitAutograd
    gen = torch.Generator().manual_seed(6)
    state_shape = () if axis is None else (shape[axis],)
    fused, comp = list(unobserved(state_shape)), list(unobserved(state_shape))
    for i in range(3):
        x = data(gen, shape, i) * 3
        args = (x, axis, 0.25, False, False, 8, False, clamp_min, clamp_max)
        want = target.default._op_dk(composite, *comp, *args)
        got = target(*fused, *args)
        for g, w in zip(got if with_mask else [got], want if with_mask else [want]):
            assert_bitwise_equal(g, w)
        assert_bitwise_equal(fused[0], comp[0])
        assert_bitwise_equal(fused[1], comp[1])


def test_clamp_bounds_relu6_is_fq_of_relu6():
    """What ActQuant relies on: with the range observed on relu6(x) (asymmetric), the fake
    quant of x equals the fake quant of relu6(x)."""
    gen = torch.Generator().manual_seed(7)
    lo, hi = unobserved()
    for i in range(5):
        x = data(gen, (4, 8, 5, 5), i) * 5
        y = op(lo, hi, x, None, 0.01, False, False, 8, False, 0.0, 6.0)
        assert lo.item() >= 0.0 and hi.item() <= 6.0
        want = ops.fake_quant_with_min_max_vars(x.clamp(0, 6), lo.clamp(max=0), hi, 8, False)
        assert_bitwise_equal(y, want)


def test_clamp_bounds_keep_infinities_the_clamp_removes():
    """x's infinities clamped away are not an error (the observer sees clamp(x)); the state is
    the clamped range."""
    lo, hi = unobserved()
    x = torch.tensor([-INF, -1.0, 2.0, 7.0, INF])
    op(lo, hi, x, None, 1.0, False, False, 8, False, 0.0, 6.0)
    assert (lo.item(), hi.item()) == (0.0, 6.0)


# --------------------------------------------------------------------------------------------
# FakeQuantizer uses it


@pytest.mark.parametrize(
    "spec",
    [QuantSpec(), QuantSpec(range_source="running", symmetric=True), QConfig().weight],
    ids=["ema", "running_symmetric", "weight"],
)
def test_fake_quantizer_observe_step_is_the_unfused_sequence(spec):
    channels = 6 if spec.per_channel else None
    q = FakeQuantizer(spec, channels=channels).train()
    lo, hi = unobserved((6,) if spec.per_channel else ())
    gen = torch.Generator().manual_seed(9)
    axis = spec.axis if spec.per_channel else None
    for i in range(4):
        x = data(gen, (6, 4, 3, 3), i).requires_grad_()
        want = unfused(
            lo,
            hi,
            x,
            axis,
            spec.averaging_constant,
            spec.range_source == "running",
            spec.symmetric,
            spec.num_bits,
            spec.narrow_range,
        )
        y = q(x)
        assert_bitwise_equal(y, want)
        assert_bitwise_equal(q.observed_min, lo)
        assert_bitwise_equal(q.observed_max, hi)
        y.sum().backward()
        assert not (x.grad == 0).all()


def test_cpp_api_is_registered():
    """The C++ API (edgeqat::observe_fake_quant_) calls the op by this schema."""
    schema = str(op.default._schema)
    assert schema == (
        "edgeqat::observe_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, "
        "Tensor x, int? axis, float averaging_constant=1., bool accumulate=False, "
        "bool symmetric=False, int num_bits=8, bool narrow_range=False, "
        "float? clamp_min=None, float? clamp_max=None) -> Tensor"
    )
    assert edgeqat  # the package registered it


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile


def _opcheck_cases():
    gen = torch.Generator().manual_seed(0)
    x4 = torch.randn(2, 3, 4, 5, generator=gen)
    return {
        "per_tensor_first": (
            *unobserved(),
            torch.randn(3, 4, generator=gen),
            None,
            1.0,
            False,
            False,
            8,
            False,
        ),
        "per_tensor_ema": (
            torch.tensor(-1.0),
            torch.tensor(1.0),
            torch.randn(5, generator=gen),
            None,
            0.001,
            False,
            False,
            8,
            False,
        ),
        "per_channel_symmetric": (
            *unobserved((4,)),
            torch.randn(3, 4, generator=gen),
            1,
            1.0,
            False,
            True,
            8,
            True,
        ),
        "channels_last_running_f64_state": (
            *unobserved((3,), torch.float64),
            x4.contiguous(memory_format=torch.channels_last),
            1,
            1.0,
            True,
            False,
            4,
            False,
        ),
        "half_x": (
            *unobserved(),
            torch.randn(6, generator=gen).half(),
            None,
            0.5,
            False,
            False,
            8,
            False,
        ),
        "empty": (*unobserved((3,)), torch.empty(0, 3), 1, 0.5, False, False, 8, False),
        "relu6_clamp": (
            *unobserved(),
            torch.randn(2, 3, 4, generator=gen) * 8,
            None,
            0.5,
            False,
            False,
            8,
            False,
            0.0,
            6.0,
        ),
        "per_channel_relu_clamp": (
            *unobserved((3,)),
            x4,
            1,
            1.0,
            True,
            False,
            8,
            False,
            0.0,
            None,
        ),
    }


OPCHECK_CASES = _opcheck_cases()


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
@pytest.mark.parametrize("target", ["observe_fake_quant_", "_observe_fake_quant_cachemask_"])
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_opcheck(name, target, x_requires_grad):
    lo, hi, x, *rest = OPCHECK_CASES[name]
    x = x.clone().requires_grad_(x_requires_grad)
    torch.library.opcheck(getattr(ops, target).default, (lo.clone(), hi.clone(), x, *rest))


@pytest.fixture
def fresh_compile_cache(tmp_path):
    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("shape", "axis", "c", "accumulate", "symmetric", "clamp_min", "clamp_max"),
    [
        ((8, 6), None, 0.001, False, False, None, None),
        ((2, 3, 4, 5), 1, 1.0, False, True, None, None),
        ((4, 6), -1, 1.0, True, False, None, None),
        ((2, 3, 4, 5), None, 0.01, False, False, 0.0, 6.0),
        ((8, 6), None, 1.0, False, False, 0.0, None),
    ],
)
def test_compile_matches_eager(
    fresh_compile_cache, shape, axis, c, accumulate, symmetric, clamp_min, clamp_max
):
    def step(lo, hi, x):
        y = op(
            lo, hi, x * 2 + 1, axis, c, accumulate, symmetric, 8, symmetric, clamp_min, clamp_max
        )
        return y * 0.5, hi * 0.5

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    state_shape = () if axis is None else (shape[axis],)
    eager_state, compiled_state = list(unobserved(state_shape)), list(unobserved(state_shape))
    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        x = data(gen, shape, i)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_e = step(*eager_state, xe)
        out_c = compiled(*compiled_state, xc)
        for got, expected in zip(out_c, out_e):
            assert_bitwise_equal(got, expected)
        assert_bitwise_equal(compiled_state[0], eager_state[0])
        assert_bitwise_equal(compiled_state[1], eager_state[1])
        g = torch.randn(shape, generator=gen)
        (out_e[0] * g).sum().backward()
        (out_c[0] * g).sum().backward()
        assert_bitwise_equal(xc.grad, xe.grad)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_errors_like_eager(fresh_compile_cache):
    compiled = torch.compile(lambda lo, hi, x: op(lo, hi, x, None, 0.5), fullgraph=True)
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    compiled(lo, hi, torch.tensor([0.0, 3.0]))
    assert (lo.item(), hi.item()) == (-0.5, 2.0)
    with pytest.raises(RuntimeError, match="x contains 1 NaN"):
        compiled(lo, hi, torch.tensor([0.0, float("nan")]))
    assert (lo.item(), hi.item()) == (-0.5, 2.0)


def test_overflow_is_checked_in_each_side_dtype():
    """A float16 observed_max cannot hold 1e5: an error, the state untouched (observe_min_max_
    raises too)."""
    lo = torch.tensor(INF, dtype=torch.float64)
    hi = torch.tensor(-INF, dtype=torch.float16)
    _fails_untouched(
        lo,
        hi,
        torch.tensor([0.0, 1e5]),
        (None,),
        "edgeqat::observe_fake_quant_: the batch range [0, 100000] overflows the state dtype Half",
    )
