"""torch.ops.edgeqat.observe_min_max_ against a NumPy reference written here.

The reference follows the semantics documented in csrc/ops/observe.cpp:
  - an entry with running_min > running_max has observed nothing: the batch sets it;
  - accumulate: running min / max;
  - averaging_constant 1.0 "keeps the last batch";
  - otherwise new = old + c * (batch - old), each step rounded in the state dtype.
State comparisons are bit-exact. Also: errors (message and untouched state), autograd
(version counters, inputs and state that require grad), opcheck and torch.compile.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
import torch
from helpers import assert_bitwise_equal
from torch._inductor.utils import fresh_cache

import edgeqat  # noqa: F401  (registers torch.ops.edgeqat)

op = torch.ops.edgeqat.observe_min_max_
INF = float("inf")

# --------------------------------------------------------------------------------------------
# NumPy reference


def _x_numpy(x: torch.Tensor) -> np.ndarray:
    """x as NumPy, exactly: float64 stays, float32 / half / bfloat16 become float32."""
    x = x.detach()
    return x.double().numpy() if x.dtype == torch.float64 else x.float().numpy()


def ref_observe(running_min, running_max, x, axis, c=1.0, accumulate=False):
    """New (running_min, running_max): tensors of the state dtype, computed in NumPy."""
    lo = running_min.detach().numpy().copy()
    hi = running_max.detach().numpy().copy()
    xn = _x_numpy(x)
    if xn.size == 0:
        return torch.from_numpy(lo), torch.from_numpy(hi)
    if axis is None:
        batch_lo, batch_hi = np.min(xn), np.max(xn)
    else:
        per_channel = np.moveaxis(xn, axis, 0).reshape(xn.shape[axis], -1)
        batch_lo, batch_hi = per_channel.min(axis=1), per_channel.max(axis=1)
    t = lo.dtype.type
    batch_lo = np.asarray(batch_lo).astype(lo.dtype)
    batch_hi = np.asarray(batch_hi).astype(hi.dtype)
    fresh = lo > hi
    if not accumulate and c == 1.0:
        fresh = np.ones_like(fresh)  # the last batch, exactly
    if accumulate:
        new_lo, new_hi = np.minimum(lo, batch_lo), np.maximum(hi, batch_hi)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf in the fresh entries, discarded below
            new_lo = lo + (batch_lo - lo) * t(c)
            new_hi = hi + (batch_hi - hi) * t(c)
    out_lo = np.where(fresh, batch_lo, new_lo).astype(lo.dtype)
    out_hi = np.where(fresh, batch_hi, new_hi).astype(hi.dtype)
    return torch.from_numpy(out_lo.reshape(lo.shape)), torch.from_numpy(out_hi.reshape(hi.shape))


def unobserved(shape=(), dtype=torch.float32):
    return torch.full(shape, INF, dtype=dtype), torch.full(shape, -INF, dtype=dtype)


def random_batch(gen, shape, axis=None, dtype=torch.float32):
    """Random data whose channels along axis have distinct offsets and scales."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if axis is not None:
        bshape = [1] * len(shape)
        bshape[axis] = shape[axis]
        ch = torch.arange(shape[axis], dtype=torch.float64).reshape(bshape)
        x = x * (1 + ch) + 3 * ch - 2
    return x.to(dtype)


def observe_and_compare(running_min, running_max, batches, axis, c, accumulate):
    for i, x in enumerate(batches):
        want_lo, want_hi = ref_observe(running_min, running_max, x, axis, c, accumulate)
        op(running_min, running_max, x, axis, c, accumulate)
        try:
            assert_bitwise_equal(running_min, want_lo)
            assert_bitwise_equal(running_max, want_hi)
        except AssertionError as err:
            raise AssertionError(f"batch {i}, c={c}, accumulate={accumulate}: {err}") from err


def test_reference_on_hand_computed_values():
    lo, hi = ref_observe(*unobserved(), torch.tensor([1.0, -2.0, 3.0]), None)
    assert (lo.item(), hi.item()) == (-2.0, 3.0)
    lo, hi = ref_observe(
        torch.tensor(-2.0), torch.tensor(3.0), torch.tensor([2.0, 7.0]), None, 0.25
    )
    assert (lo.item(), hi.item()) == (-1.0, 4.0)
    lo, hi = ref_observe(
        torch.tensor([0.0, INF]), torch.tensor([1.0, -INF]), torch.tensor([[2.0, -3.0]]), 1, 0.5
    )
    np.testing.assert_array_equal(lo, [1.0, -3.0])
    np.testing.assert_array_equal(hi, [1.5, -3.0])
    lo, hi = ref_observe(
        torch.tensor(-1.0), torch.tensor(1.0), torch.tensor([0.5, 4.0]), None, 1, True
    )
    assert (lo.item(), hi.item()) == (-1.0, 4.0)


# --------------------------------------------------------------------------------------------
# Hand-computed behaviour


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_averaging_constant_one_keeps_last_batch(state_dtype, axis):
    x = torch.tensor([[-0.1, 3.7], [3.7, -0.1]], dtype=state_dtype)
    shape = () if axis is None else (2,)
    lo = torch.full(shape, -1000.0, dtype=state_dtype)
    hi = torch.full(shape, 1000.0, dtype=state_dtype)
    op(lo, hi, x, axis, 1.0)
    assert_bitwise_equal(lo, torch.full(shape, -0.1, dtype=state_dtype))
    assert_bitwise_equal(hi, torch.full(shape, 3.7, dtype=state_dtype))


def test_averaging_constant_one_keeps_last_batch_up_to_rounding():
    gen = torch.Generator().manual_seed(12)
    for axis in (None, 1):
        shape = () if axis is None else (5,)
        lo, hi = unobserved(shape)
        for _ in range(5):
            x = random_batch(gen, (3, 5), axis) * 10
            op(lo, hi, x, axis, 1.0)
            want_lo, want_hi = ref_observe(*unobserved(shape), x, axis)
            torch.testing.assert_close(lo, want_lo, rtol=0, atol=1e-5)
            torch.testing.assert_close(hi, want_hi, rtol=0, atol=1e-5)


def test_first_batch_then_ema_then_last_value():
    lo, hi = unobserved()
    op(lo, hi, torch.tensor([1.0, -2.0, 3.0]), None, 0.25)
    assert (lo.item(), hi.item()) == (-2.0, 3.0)
    op(lo, hi, torch.tensor([2.0, 7.0]), None, 0.25)  # -2 + (2 + 2) / 4, 3 + (7 - 3) / 4
    assert (lo.item(), hi.item()) == (-1.0, 4.0)
    op(lo, hi, torch.tensor([0.5, 0.75]), None)  # default averaging_constant 1.0: last batch
    assert (lo.item(), hi.item()) == (0.5, 0.75)


def test_accumulate_keeps_running_min_max():
    lo, hi = unobserved()
    for batch in ([0.0, 1.0], [-3.0, 0.5], [0.25, 2.0], [-1.0, 1.0]):
        op(lo, hi, torch.tensor(batch), None, 0.5, True)
    assert (lo.item(), hi.item()) == (-3.0, 2.0)


def test_per_channel_hand_computed():
    lo, hi = unobserved((3,))
    x = torch.tensor([[1.0, -4.0, 2.0], [7.0, 0.0, -1.0]])
    op(lo, hi, x, 1)
    assert lo.tolist() == [1.0, -4.0, -1.0]
    assert hi.tolist() == [7.0, 0.0, 2.0]
    op(lo, hi, torch.zeros(2, 3), -1, 0.5)
    assert lo.tolist() == [0.5, -2.0, -0.5]
    assert hi.tolist() == [3.5, 0.0, 1.0]


# --------------------------------------------------------------------------------------------
# Reference sweeps

SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 3, 4, 5)]
SHAPE_AXES = [(s, None) for s in SHAPES] + [(s, a) for s in SHAPES for a in range(-len(s), len(s))]
# (averaging_constant, accumulate); (1.0, False): see test_averaging_constant_one_keeps_last_batch
UPDATES = [(0.001, False), (0.3, False), (0.75, False), (1.0, True), (0.5, True)]


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """x in several memory layouts, same values and shape."""
    out = {"contiguous": x}
    if x.dim() >= 2:
        out["transposed"] = x.transpose(0, -1).contiguous().transpose(0, -1)
    # every other element of a twice-as-long last dim
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    out["strided"] = wide[..., ::2]
    if x.dim() == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    return out


@pytest.mark.parametrize(("shape", "axis"), SHAPE_AXES, ids=str)
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float64])
def test_reference_sweep(shape, axis, state_dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, axis)).encode()))
    batches = [random_batch(gen, shape, axis) for _ in range(4)]
    state_shape = () if axis is None else (shape[axis],)
    for layout in _layouts(batches[0]):
        laid_out = [_layouts(b)[layout] for b in batches]
        for b, original in zip(laid_out, batches):
            assert torch.equal(b, original)
            assert b.is_contiguous() == (layout == "contiguous"), layout
        for c, accumulate in UPDATES:
            lo, hi = unobserved(state_shape, state_dtype)
            observe_and_compare(lo, hi, laid_out, axis, c, accumulate)


@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("axis", [None, 1, -3])
def test_input_dtypes(x_dtype, state_dtype, axis):
    gen = torch.Generator().manual_seed(3)
    batches = [random_batch(gen, (3, 4, 5), axis, x_dtype) * 7 for _ in range(3)]
    state_shape = () if axis is None else ((3, 4, 5)[axis],)
    for c, accumulate in UPDATES:
        lo, hi = unobserved(state_shape, state_dtype)
        observe_and_compare(lo, hi, batches, axis, c, accumulate)


def test_float64_input_rounds_to_float32_state():
    lo, hi = unobserved()
    x = torch.tensor([0.1, -1 / 3], dtype=torch.float64)
    op(lo, hi, x, None)
    assert lo.dtype == torch.float32
    assert lo.item() == float(np.float32(-1 / 3))
    assert hi.item() == float(np.float32(0.1))


def test_ema_is_computed_in_the_state_dtype():
    """float32 state: the float64 EMA would differ in the last bits."""
    lo32, hi32 = torch.tensor(0.1), torch.tensor(0.7)
    lo64, hi64 = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    x = torch.tensor([-0.3, 1.3], dtype=torch.float64)
    op(lo32, hi32, x, None, 0.001)
    op(lo64, hi64, x, None, 0.001)
    f = np.float32
    assert lo32.item() == float(f(0.1) + (f(-0.3) - f(0.1)) * f(0.001))
    assert lo64.item() == 0.1 + (-0.3 - 0.1) * 0.001
    assert hi64.item() == 0.7 + (1.3 - 0.7) * 0.001
    assert lo32.item() != float(np.float32(lo64.item())) or hi32.item() != float(
        np.float32(hi64.item())
    )


def test_mixed_state_dtypes():
    lo = torch.tensor(INF, dtype=torch.float64)
    hi = torch.tensor(-INF, dtype=torch.float32)
    x = torch.tensor([0.1, 0.3], dtype=torch.float64)
    op(lo, hi, x, None)
    assert lo.dtype == torch.float64 and lo.item() == 0.1
    assert hi.dtype == torch.float32 and hi.item() == float(np.float32(0.3))


def test_zero_dim_x_per_tensor():
    lo, hi = unobserved()
    op(lo, hi, torch.tensor(2.5), None)
    assert (lo.item(), hi.item()) == (2.5, 2.5)


def test_non_contiguous_state():
    base_lo = torch.full((3, 2), INF)
    base_hi = torch.full((2, 3), -INF)
    lo, hi = base_lo[:, 0], base_hi[1]
    x = torch.arange(12.0).reshape(3, 4)
    op(lo, hi, x, 0)
    assert base_lo.tolist() == [[0.0, INF], [4.0, INF], [8.0, INF]]
    assert base_hi.tolist() == [[-INF] * 3, [3.0, 7.0, 11.0]]


@pytest.mark.parametrize(("c", "accumulate"), UPDATES)
def test_partially_observed_channels(c, accumulate):
    """Unobserved channels (+inf / -inf) take the batch range; the others update."""
    lo = torch.tensor([-1.0, INF, 0.0, INF, 2.0])
    hi = torch.tensor([1.0, -INF, 2.0, -INF, 2.0])
    gen = torch.Generator().manual_seed(7)
    x = random_batch(gen, (4, 5, 3), 1)
    want_lo, want_hi = ref_observe(lo, hi, x, 1, c, accumulate)
    op(lo, hi, x, 1, c, accumulate)
    assert_bitwise_equal(lo, want_lo)
    assert_bitwise_equal(hi, want_hi)
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    batch_lo, batch_hi = torch.aminmax(x.transpose(0, 1).reshape(5, -1), dim=1)
    assert lo[1] == batch_lo[1] and hi[1] == batch_hi[1]
    assert lo[3] == batch_lo[3] and hi[3] == batch_hi[3]


@pytest.mark.parametrize(
    ("shape", "axis", "state_shape"),
    [
        ((0,), None, ()),
        ((0, 3), None, ()),
        ((0, 3), 1, (3,)),
        ((2, 0, 4), 0, (2,)),
        ((0,), 0, (0,)),
    ],
)
def test_empty_x_is_a_no_op(shape, axis, state_shape):
    for lo, hi in [
        unobserved(state_shape),
        (torch.full(state_shape, -1.0), torch.ones(state_shape)),
    ]:
        lo0, hi0 = lo.clone(), hi.clone()
        op(lo, hi, torch.empty(shape), axis, 0.5)
        op(lo, hi, torch.empty(shape), axis, 1.0, True)
        assert_bitwise_equal(lo, lo0)
        assert_bitwise_equal(hi, hi0)


@pytest.mark.parametrize("axis", [0, -1])
def test_per_channel_1d_x(axis):
    """Every element of a 1-D x is its own channel (fake_quant_with_min_max_vars_per_channel
    accepts 1-D x, so a per-channel quantizer of a 1-D tensor must be able to observe it)."""
    x = torch.tensor([1.0, -2.0, 3.0])
    lo, hi = unobserved((3,))
    op(lo, hi, x, axis)
    assert_bitwise_equal(lo, x)
    assert_bitwise_equal(hi, x)


def test_meta_tensors_check_shapes_only():
    lo, hi = unobserved((4,))
    lo, hi = lo.to("meta"), hi.to("meta")
    op(lo, hi, torch.empty(3, 4, device="meta"), 1, 0.5)
    with pytest.raises(RuntimeError, match=re.escape("x.size(0) = 3, got shape [4]")):
        op(lo, hi, torch.empty(3, 4, device="meta"), 0, 0.5)


# --------------------------------------------------------------------------------------------
# Errors: RuntimeError naming the argument and the value, state untouched


def _assert_fails_untouched(lo, hi, x, axis, c, accumulate, message):
    lo0, hi0 = lo.clone(), hi.clone()
    with pytest.raises(RuntimeError, match=re.escape(message)):
        op(lo, hi, x, axis, c, accumulate)
    assert_bitwise_equal(lo, lo0)
    assert_bitwise_equal(hi, hi0)


@pytest.mark.parametrize(
    ("c", "shown"),
    [(0.0, "0"), (-0.25, "-0.25"), (1.5, "1.5"), (INF, "inf"), (float("nan"), "nan")],
)
@pytest.mark.parametrize("accumulate", [False, True])
def test_error_averaging_constant(c, shown, accumulate):
    for lo, hi, axis in [
        (torch.tensor(-1.0), torch.tensor(1.0), None),
        (*unobserved((3,)), 1),
    ]:
        _assert_fails_untouched(
            lo,
            hi,
            torch.randn(2, 3),
            axis,
            c,
            accumulate,
            f"edgeqat::observe_min_max_: averaging_constant must be in (0, 1], got {shown}",
        )


@pytest.mark.parametrize(
    ("lo_shape", "hi_shape", "x_shape", "axis", "message"),
    [
        ((4,), (4,), (3, 4), 0, "running_min must be 1-D of length x.size(0) = 3, got shape [4]"),
        ((), (), (3, 4), -1, "running_min must be 1-D of length x.size(1) = 4, got shape []"),
        (
            (4,),
            (2, 2),
            (3, 4),
            1,
            "running_max must be 1-D of length x.size(1) = 4, got shape [2, 2]",
        ),
        ((4,), (4,), (3, 4), None, "running_min must be a 0-dim tensor, got shape [4]"),
        ((), (1,), (3, 4), None, "running_max must be a 0-dim tensor, got shape [1]"),
        ((1,), (1,), (1,), None, "running_min must be a 0-dim tensor, got shape [1]"),
    ],
)
def test_error_state_shape(lo_shape, hi_shape, x_shape, axis, message):
    lo, hi = torch.full(lo_shape, -1.0), torch.full(hi_shape, 1.0)
    _assert_fails_untouched(lo, hi, torch.randn(x_shape), axis, 0.5, False, message)
    # also when x is empty: the arguments are checked before the early exit
    if axis is None:
        _assert_fails_untouched(lo, hi, torch.empty(0), axis, 0.5, False, message)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_error_integer_state(dtype):
    lo, hi = torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)
    _assert_fails_untouched(
        lo,
        hi,
        torch.randn(3),
        None,
        1.0,
        False,
        "running_min must be a floating-point tensor, got dtype",
    )
    _assert_fails_untouched(
        torch.tensor(0.0),
        hi,
        torch.randn(3),
        None,
        1.0,
        False,
        "running_max must be a floating-point tensor, got dtype",
    )


@pytest.mark.parametrize(
    ("x_shape", "axis", "message"),
    [
        ((3, 3), 2, "axis 2 is out of range for x with 2 dimension(s)"),
        ((3, 3), -3, "axis -3 is out of range for x with 2 dimension(s)"),
        ((), 0, "axis 0 is out of range for x with 0 dimension(s)"),
        ((3,), 1, "axis 1 is out of range for x with 1 dimension(s)"),
    ],
)
def test_error_axis_out_of_range(x_shape, axis, message):
    lo, hi = unobserved((3,))
    _assert_fails_untouched(lo, hi, torch.randn(x_shape), axis, 1.0, False, message)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(torch.int32, "Int"), (torch.int64, "Long"), (torch.uint8, "Byte"), (torch.bool, "Bool")],
)
def test_error_integer_x(dtype, name):
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    x = torch.ones(4, dtype=dtype)
    _assert_fails_untouched(
        lo, hi, x, None, 1.0, False, f"x must be a floating-point tensor, got dtype {name}"
    )


def test_error_complex_x():
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    _assert_fails_untouched(
        lo,
        hi,
        torch.ones(4, dtype=torch.complex64),
        None,
        1.0,
        False,
        "x must be a floating-point tensor, got dtype ComplexFloat",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("accumulate", [False, True])
def test_error_non_finite_x(dtype, accumulate):
    nan = float("nan")
    cases = [
        # (x, axis, NaN count, inf count)
        ([[-5.0, 1.0], [5.0, nan]], 1, 1, 0),  # channel 0 fine, channel 1 NaN
        ([[-INF, 1.0], [5.0, INF]], 1, 0, 2),
        ([[nan, INF], [0.0, -INF]], None, 1, 2),
        ([[0.0, 1.0], [nan, nan]], 0, 2, 0),
    ]
    for values, axis, n_nan, n_inf in cases:
        for lo, hi in [
            (torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])),
            unobserved((2,)),
        ]:
            if axis is None:
                lo, hi = lo[0].clone(), hi[0].clone()
            _assert_fails_untouched(
                lo,
                hi,
                torch.tensor(values, dtype=dtype),
                axis,
                0.5,
                accumulate,
                f"edgeqat::observe_min_max_: x contains {n_nan} NaN and {n_inf} infinite value(s)",
            )


def test_error_float64_x_overflowing_float32_state():
    """Finite in float64, infinite in the float32 state: refused, state untouched."""
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    lo0, hi0 = lo.clone(), hi.clone()
    with pytest.raises(RuntimeError, match="observe_min_max_"):
        op(lo, hi, torch.tensor([1e300, 0.0], dtype=torch.float64), None)
    assert_bitwise_equal(lo, lo0)
    assert_bitwise_equal(hi, hi0)


def test_error_float64_x_overflowing_float32_state_message():
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    with pytest.raises(RuntimeError) as info:
        op(lo, hi, torch.tensor([1e300, 0.0], dtype=torch.float64), None)
    assert "0 NaN and 0 infinite" not in str(info.value)
    assert "overflows the state dtype Float" in str(info.value)


def test_error_device_mismatch():
    lo, hi = torch.tensor(-1.0, device="meta"), torch.tensor(1.0, device="meta")
    with pytest.raises(RuntimeError, match=re.escape("running_min is on meta but x is on cpu")):
        op(lo, hi, torch.randn(3), None)


# --------------------------------------------------------------------------------------------
# Autograd


@pytest.mark.parametrize("grad_mode", ["enabled", "no_grad", "inference_mode"])
def test_version_counter_increments(grad_mode):
    lo, hi = unobserved((3,))
    ctx = {
        "enabled": torch.enable_grad,
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
    }[grad_mode]
    for i in range(3):
        v_lo, v_hi = lo._version, hi._version
        with ctx():
            op(lo, hi, torch.randn(2, 3), 1, 0.5, i == 2)
        assert lo._version > v_lo
        assert hi._version > v_hi


def test_saved_state_modified_in_place_is_detected_by_autograd():
    """The version bump is what lets autograd catch a use of stale state."""
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    w = torch.tensor(2.0, requires_grad=True)
    y = w * hi  # saves hi for the backward of w
    op(lo, hi, torch.tensor([3.0]), None)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_x_requiring_grad_builds_no_graph():
    x = torch.randn(4, 3, requires_grad=True)
    y = x * 2  # non-leaf with a graph
    lo, hi = unobserved((3,))
    out = op(lo, hi, y, 1, 1.0)
    assert out is None
    assert not lo.requires_grad and not hi.requires_grad
    assert lo.grad_fn is None and hi.grad_fn is None
    assert_bitwise_equal(lo, y.detach().amin(0))
    assert_bitwise_equal(hi, y.detach().amax(0))
    y.sum().backward()  # x's graph is intact
    assert torch.equal(x.grad, torch.full((4, 3), 2.0))


@pytest.mark.parametrize("which", ["min", "max", "both"])
def test_state_requiring_grad_raises_under_grad_mode(which):
    lo = torch.tensor(-1.0, requires_grad=which in ("min", "both"))
    hi = torch.tensor(1.0, requires_grad=which in ("max", "both"))
    with pytest.raises(
        RuntimeError,
        match="running_min and running_max are observer state and must not require grad",
    ):
        op(lo, hi, torch.tensor([5.0]), None)
    assert lo.item() == -1.0 and hi.item() == 1.0
    with torch.no_grad():
        op(lo, hi, torch.tensor([5.0]), None)
    assert lo.item() == 5.0 and hi.item() == 5.0


def test_state_parameter_under_no_grad():
    """nn.Parameter state updated under torch.no_grad (how learned ranges are initialised)."""
    lo = torch.nn.Parameter(torch.tensor(INF))
    hi = torch.nn.Parameter(torch.tensor(-INF))
    with torch.no_grad():
        op(lo, hi, torch.tensor([-2.0, 3.0]), None)
    assert (lo.item(), hi.item()) == (-2.0, 3.0)
    assert lo.requires_grad and lo.grad_fn is None


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile


def _opcheck_cases():
    gen = torch.Generator().manual_seed(0)
    x4 = random_batch(gen, (2, 3, 4, 5), 1)
    return {
        "per_tensor_first": (*unobserved(), torch.randn(3, 4, generator=gen), None, 1.0, False),
        "per_tensor_ema": (
            torch.tensor(-1.0),
            torch.tensor(1.0),
            torch.randn(5, generator=gen),
            None,
            0.001,
            False,
        ),
        "per_channel_ema_f64_state": (
            *unobserved((4,), torch.float64),
            torch.randn(3, 4, generator=gen),
            1,
            0.25,
            False,
        ),
        "per_channel_accumulate_neg_axis": (
            torch.full((4,), -1.0),
            torch.full((4,), 1.0),
            torch.randn(2, 3, 4, generator=gen),
            -1,
            1.0,
            True,
        ),
        "channels_last": (
            *unobserved((3,)),
            x4.contiguous(memory_format=torch.channels_last),
            1,
            0.5,
            False,
        ),
        "partial_half": (
            torch.tensor([-1.0, INF, 0.0]),
            torch.tensor([1.0, -INF, 0.5]),
            torch.randn(3, 6, generator=gen).half(),
            0,
            0.5,
            False,
        ),
        "empty": (*unobserved((3,)), torch.empty(0, 3), 1, 0.5, False),
    }


OPCHECK_CASES = _opcheck_cases()


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_opcheck(name, x_requires_grad):
    lo, hi, x, *rest = OPCHECK_CASES[name]
    x = x.clone().requires_grad_(x_requires_grad)
    torch.library.opcheck(op.default, (lo.clone(), hi.clone(), x, *rest))


@pytest.fixture
def fresh_compile_cache(tmp_path):
    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


# torch 2.13 deprecates TorchScript and still uses script_method inside torch.compile.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("shape", "axis", "c", "accumulate", "state_dtype"),
    [
        ((8, 6), None, 0.001, False, torch.float32),
        ((2, 3, 4, 5), 1, 0.25, False, torch.float32),
        ((4, 6), -1, 1.0, True, torch.float64),
    ],
)
def test_compile_matches_eager(fresh_compile_cache, shape, axis, c, accumulate, state_dtype):
    def step(lo, hi, x):
        y = x * 2 + 1  # generated code before and after the op
        op(lo, hi, y, axis, c, accumulate)
        return y - 1, hi * 0.5

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    state_shape = () if axis is None else (shape[axis],)
    lo_e, hi_e = unobserved(state_shape, state_dtype)
    lo_c, hi_c = unobserved(state_shape, state_dtype)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = random_batch(gen, shape, axis)
        out_e = step(lo_e, hi_e, x)
        out_c = compiled(lo_c, hi_c, x)
        assert_bitwise_equal(lo_c, lo_e)
        assert_bitwise_equal(hi_c, hi_e)
        for got, expected in zip(out_c, out_e):
            assert_bitwise_equal(got, expected)
    # and the reference agrees with both
    want_lo, want_hi = ref_observe(lo_e, hi_e, x * 2 + 1, axis, c, accumulate)
    compiled(lo_c, hi_c, x)
    assert_bitwise_equal(lo_c, want_lo)
    assert_bitwise_equal(hi_c, want_hi)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_errors_like_eager(fresh_compile_cache):
    """The non-finite check survives compilation (it runs on real data, not traced away)."""

    def step(lo, hi, x):
        op(lo, hi, x, None, 0.5, False)

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    compiled(lo, hi, torch.tensor([0.0, 3.0]))
    assert (lo.item(), hi.item()) == (-0.5, 2.0)
    with pytest.raises(RuntimeError, match="x contains 1 NaN"):
        compiled(lo, hi, torch.tensor([0.0, float("nan")]))
    assert (lo.item(), hi.item()) == (-0.5, 2.0)


def test_overflow_is_checked_in_each_side_dtype():
    # observed_min in float64, observed_max in float16: 1e5 fits the first, not the second.
    lo = torch.tensor(float("inf"), dtype=torch.float64)
    hi = torch.tensor(float("-inf"), dtype=torch.float16)
    with pytest.raises(RuntimeError) as info:
        op(lo, hi, torch.tensor([0.0, 1e5]), None)
    message = str(info.value)
    assert "the batch range [0, 100000] overflows the state dtypes" in message
    assert "running_min Double, running_max Half" in message
    assert float(lo) == float("inf") and float(hi) == float("-inf")  # untouched
