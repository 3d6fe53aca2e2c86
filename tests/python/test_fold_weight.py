"""torch.ops.edgeqat.fold_weight_fake_quant_: ConvBn2d's weight path in one op.

Its definition is the unfused sequence ConvBn2d ran before, written here with the ops it
replaces (each tested against its own reference elsewhere):

    Wf = weight * factor.reshape(-1, 1, 1, 1)
    observe_min_max_(observed_min, observed_max, Wf, 0 or None, averaging_constant, accumulate)
    lo, hi = min(observed_min, 0), max(observed_max, 0)        # [-b, b] when symmetric
    Wq = fake_quant_with_min_max_vars[_per_channel](Wf, lo, hi, 0, num_bits, narrow_range)
    output = Wq, or (unfold) torch.where(factor == 0, weight, Wq / safe_factor)

Bit for bit: the output (and its strides), the observed state, the gradient to the weight.
The gradient to the factor is a per-channel sum of the same float terms autograd makes; the
fused CPU kernel adds them in double and rounds once, autograd adds them in float in its own
order. Tolerance (check_factor_grad): the op within 1 float ulp of the exact sum of the terms,
autograd within 1e-6 of the sum of their magnitudes. The composite (ATen-op) kernel calls
at::sum as autograd does: bit for bit there too.

Also: layouts and dtypes, gamma = 0 channels, the first observation and EMA / running
updates, errors, no double backward, opcheck, torch.compile, and ConvBn2d using the op
(against its unfused path, ConvBn2d._fused_weight_path = False).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_bitwise_equal
from torch._inductor.utils import fresh_cache
from torch.utils._python_dispatch import TorchDispatchMode

import edgeqat
from edgeqat import ConvBn2d, Mode, QConfig, QuantSpec

ops = torch.ops.edgeqat
op = ops.fold_weight_fake_quant_
nudged_op = ops._fold_weight_fake_quant_nudged_
backward_op = ops._fold_weight_fake_quant_backward
COMPOSITE = torch._C.DispatchKey.CompositeExplicitAutograd
INF = float("inf")


# --------------------------------------------------------------------------------------------
# The reference: the unfused ops


def unfused(lo, hi, w, f, observe, c=1.0, acc=False, sym=False, bits=8, narrow=False, unfold=False):
    """ConvBn2d's weight path before the op: W * f, FakeQuantizer's step, the un-fold."""
    channels = (-1,) + (1,) * (w.dim() - 1)
    axis = 0 if lo.dim() else None
    wf = w * f.reshape(channels)
    if observe:
        ops.observe_min_max_(lo, hi, wf.detach(), axis, c, acc)
    qlo, qhi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if sym:
        bound = torch.maximum(-qlo, qhi)
        qlo, qhi = -bound, bound
    if axis is None:
        wq = ops.fake_quant_with_min_max_vars(wf, qlo, qhi, bits, narrow)
    else:
        wq = ops.fake_quant_with_min_max_vars_per_channel(wf, qlo, qhi, 0, bits, narrow)
    if not unfold:
        return wq
    zero = (f == 0).reshape(channels)
    safe = torch.where(zero, torch.ones((), dtype=f.dtype), f.reshape(channels))
    return torch.where(zero, w, wq / safe)


def quant_range(lo, hi, sym):
    qlo, qhi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if sym:
        bound = torch.maximum(-qlo, qhi)
        return -bound, bound
    return qlo, qhi


def factor_terms(g, w, f, out, inside, unfold):
    """The float terms autograd sums into grad_factor, per element (weight-shaped, [C, -1])."""
    channels = (-1,) + (1,) * (w.dim() - 1)
    fr = f.reshape(channels)
    zero = fr == 0
    if not unfold:
        return (torch.where(inside, g, 0.0) * w).reshape(len(f), -1), None
    safe = torch.where(zero, torch.ones((), dtype=f.dtype), fr)
    gd = torch.where(zero, 0.0, g)
    t = torch.where(inside, gd / safe, 0.0)
    a = t * w
    b = torch.where(zero, 0.0, -gd * (out / safe))
    return a.reshape(len(f), -1), b.reshape(len(f), -1)


def fused_kernel_runs(w):
    """Whether the CPU kernel is the fused one (else the composite): float / double with each
    output channel one contiguous block, and the gradient in the weight's layout."""
    dense = torch.empty_like(w).stride() == w.stride()  # empty_like keeps dense strides only
    blocks = dense and (w.shape[0] <= 1 or w.stride(0) * w.shape[0] == w.numel())
    return blocks and w.dtype in (torch.float32, torch.float64)


def check_factor_grad(got, ref, g, w, f, out, inside, unfold, fused=True):
    """got: the op's grad_factor; ref: autograd's through the unfused ops. The terms are those
    autograd makes (float); exact: their sum in float64, magnitude: the sum of their |.|."""
    a, b = factor_terms(g, w, f, out, inside, unfold)
    terms = a if b is None else torch.cat([a, b], 1)
    exact = terms.double().sum(1)
    magnitude = terms.double().abs().sum(1)
    eps = torch.finfo(w.dtype).eps
    # Autograd (and the composite kernel, which calls at::sum as autograd does): float sums in
    # its order, within 1e-6 of the terms' magnitude (float32; seen below 1e-7).
    autograd_tol = (1e-6 if w.dtype == torch.float32 else 1e-14) * magnitude + 1e-30
    assert ((ref.double() - exact).abs() <= autograd_tol).all(), (ref, exact)
    if not fused:
        assert ((got.double() - exact).abs() <= autograd_tol).all(), (got, exact)
        return
    # The fused kernel: the exact sum of the same terms rounded once (an ulp: eps * |sum|, with
    # room for the double accumulation).
    assert ((got.double() - exact).abs() <= eps * exact.abs() + 1e-12 * magnitude).all(), (
        got,
        exact,
    )


def unobserved(shape, dtype=torch.float32):
    return torch.full(shape, INF, dtype=dtype), torch.full(shape, -INF, dtype=dtype)


def random_weight_and_factor(gen, shape, zero_channels=(), dtype=torch.float32, scale=1.0):
    w = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    gamma = torch.randn(shape[0], generator=gen, dtype=torch.float64)
    var = torch.rand(shape[0], generator=gen, dtype=torch.float64) + 0.5
    f = (gamma / torch.sqrt(var)).to(dtype)
    f[list(zero_channels)] = 0.0
    return w, f


def leaves(*ts):
    return [t.detach().clone().requires_grad_() for t in ts]


# --------------------------------------------------------------------------------------------
# Bit for bit against the unfused ops

UPDATES = [(1.0, False), (0.25, False), (1.0, True)]  # last, EMA, running


def run_steps(
    shape,
    per_channel,
    sym,
    narrow,
    observe,
    unfold,
    c,
    acc,
    zero_channels=(),
    layout=None,
    dtype=torch.float32,
    bits=8,
    steps=3,
    seed=0,
):
    """Steps of the op and of the unfused ops from the same state; checks everything."""
    gen = torch.Generator().manual_seed(seed)
    state_shape = (shape[0],) if per_channel else ()
    if observe:
        ref_state = list(unobserved(state_shape, dtype))  # the first step observes from scratch
    else:
        ref_state = [
            torch.full(state_shape, -1.5, dtype=dtype),
            torch.full(state_shape, 2.0, dtype=dtype),
        ]
    state = [t.clone() for t in ref_state]
    args = (observe, c, acc, sym, bits, narrow, unfold)
    for step in range(steps):
        w0, f0 = random_weight_and_factor(gen, shape, zero_channels, dtype, scale=1 + step)
        if layout is not None:
            w0 = layout(w0)
        w_ref, f_ref = leaves(w0, f0)
        w, f = leaves(w0, f0)
        w_ref = _same_strides(w_ref, w0)
        w = _same_strides(w, w0)
        want = unfused(*ref_state, w_ref, f_ref, observe, c, acc, sym, bits, narrow, unfold)
        got = op(*state, w, f, *args)
        assert_bitwise_equal(got, want)
        assert got.stride() == want.stride()
        # The state: bit for bit except the sign of a zero (a gamma = 0 channel's min / max
        # of +0 and -0 depends on the order of the reduction; both nudge the same).
        for s, r in zip(state, ref_state):
            assert torch.equal(s, r)
            nonzero = r != 0
            assert_bitwise_equal(s[nonzero], r[nonzero])
        g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        if layout is not None:
            g = layout(g)  # as conv's backward gives it: in the weight's layout
        want.backward(g)
        got.backward(g)
        assert_bitwise_equal(w.grad, w_ref.grad)
        if dtype in (torch.float32, torch.float64):
            qlo, qhi = quant_range(*ref_state, sym)
            axis = 0 if per_channel else None
            wf = w0 * f0.reshape((-1,) + (1,) * (w0.dim() - 1))
            _, mask = ops._fake_quant_cachemask(wf, qlo, qhi, axis, bits, narrow)
            fused = fused_kernel_runs(w0) and g.stride() == w0.stride()
            out = got.detach()
            check_factor_grad(f.grad, f_ref.grad, g, w0, f0, out, mask == 0, unfold, fused)
        else:
            torch.testing.assert_close(f.grad, f_ref.grad, rtol=1e-2, atol=1e-2)
        if unfold:
            for ch in zero_channels:
                assert_bitwise_equal(got[ch], w0[ch])
                assert_bitwise_equal(w.grad[ch], g[ch])
                assert f.grad[ch] == 0
    return state


def _same_strides(t, like):
    """A leaf with t's values and like's strides."""
    if t.stride() == like.stride():
        return t
    copy_ = torch.empty_strided(like.shape, like.stride(), dtype=like.dtype)
    with torch.no_grad():
        copy_.copy_(t)
    return copy_.requires_grad_()


@pytest.mark.parametrize(("c", "acc"), UPDATES, ids=["last", "ema", "running"])
@pytest.mark.parametrize("unfold", [False, True], ids=["folded", "unfold"])
@pytest.mark.parametrize("observe", [True, False], ids=["observe", "frozen"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize(("sym", "narrow"), [(True, True), (False, False), (True, False)])
def test_matches_unfused(per_channel, sym, narrow, observe, unfold, c, acc):
    run_steps((8, 3, 3, 3), per_channel, sym, narrow, observe, unfold, c, acc, zero_channels=(1, 6))


@pytest.mark.parametrize(
    "shape", [(16, 64, 3, 3), (5, 1, 3, 3), (7, 4), (3,), (4, 2, 1, 1), (1, 5, 3, 3)], ids=str
)
@pytest.mark.parametrize("unfold", [False, True])
def test_shapes(shape, unfold):
    """Large channels (many parallel tasks), depthwise, linear, 1-D, 1x1, one channel."""
    run_steps(shape, True, True, True, True, unfold, 1.0, False, zero_channels=(0,))
    run_steps(shape, False, False, False, True, unfold, 0.1, False)


LAYOUTS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "permuted": lambda t: t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
    "not_dense": lambda t: torch.cat([t, t], 1)[:, ::2],
    "channels_inner": lambda t: t.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("unfold", [False, True])
def test_layouts(layout, unfold):
    """Channel blocks contiguous (channels-last, permuted inner dims): the fused kernel;
    channels not outermost or not dense: the composite. Same results and strides either way."""
    run_steps((6, 4, 3, 3), True, True, True, True, unfold, 1.0, False, (2,), LAYOUTS[layout])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    """float64 runs the fused kernel in double; half / bfloat16 the composite."""
    for per_channel in (True, False):
        for unfold in (False, True):
            run_steps(
                (6, 4, 3, 3), per_channel, True, True, True, unfold, 0.5, False, (3,), dtype=dtype
            )


def test_state_in_another_dtype_runs_the_composite():
    gen = torch.Generator().manual_seed(4)
    w, f = random_weight_and_factor(gen, (4, 2, 3, 3))
    ref = list(unobserved((4,), torch.float64))
    got = [t.clone() for t in ref]
    want = unfused(*ref, w, f, True, 0.5, False, True, 8, True, True)
    assert_bitwise_equal(op(*got, w, f, True, 0.5, False, True, 8, True, True), want)
    assert_bitwise_equal(got[0], ref[0])
    assert_bitwise_equal(got[1], ref[1])


@pytest.mark.parametrize(("bits", "narrow"), [(2, False), (4, True), (16, False)])
def test_grids(bits, narrow):
    run_steps((6, 4, 3, 3), True, False, narrow, True, True, 1.0, False, bits=bits)


def test_partially_observed_and_empty():
    ref = [torch.tensor([-1.0, INF, 0.5]), torch.tensor([1.0, -INF, 2.0])]
    got = [t.clone() for t in ref]
    gen = torch.Generator().manual_seed(2)
    w, f = random_weight_and_factor(gen, (3, 2, 2))
    assert_bitwise_equal(op(*got, w, f, True, 0.5), unfused(*ref, w, f, True, 0.5))
    assert_bitwise_equal(got[0], ref[0])
    assert_bitwise_equal(got[1], ref[1])
    # An empty weight observes nothing.
    for shape in [(3, 0, 3), (0, 2)]:
        lo, hi = torch.full((shape[0],), -1.0), torch.full((shape[0],), 1.0)
        y = op(
            lo,
            hi,
            torch.empty(shape),
            torch.ones(shape[0]),
            True,
            0.5,
            False,
            False,
            8,
            False,
            True,
        )
        assert y.shape == shape and (lo == -1).all() and (hi == 1).all()


def test_unobserved_state_without_observing_quantizes_to_zero():
    """As the unfused ops: a state never observed gives the range [0, 0] (ConvBn2d refuses it
    before, with FakeQuantizer's message)."""
    w, f = random_weight_and_factor(torch.Generator().manual_seed(1), (3, 2, 2), (1,))
    y = op(*unobserved((3,)), w, f, False, 1.0, False, True, 8, True, False)
    assert_bitwise_equal(y, unfused(*unobserved((3,)), w, f, False, sym=True, narrow=True))
    assert (y == 0).all()


# --------------------------------------------------------------------------------------------
# The composite kernel against the fused CPU kernel, and against autograd's own sums


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("unfold", [False, True])
@pytest.mark.parametrize("observe", [True, False])
def test_composite_kernel_matches_fused(per_channel, unfold, observe):
    gen = torch.Generator().manual_seed(5)
    shape = (6, 5, 3, 3)
    state_shape = (6,) if per_channel else ()
    fused_state = [torch.full(state_shape, -0.5), torch.full(state_shape, 0.25)]
    comp_state = [t.clone() for t in fused_state]
    ref_state = [t.clone() for t in fused_state]
    for _ in range(2):
        w, f = random_weight_and_factor(gen, shape, (4,))
        args = (w, f, observe, 0.3, False, True, 8, True, unfold)
        out, lo, hi = nudged_op(*fused_state, *args)
        c_out, c_lo, c_hi = nudged_op.default._op_dk(COMPOSITE, *comp_state, *args)
        assert_bitwise_equal(out, c_out)
        assert out.stride() == c_out.stride()
        # The nudged range (the fake-quant kernels': [0, 0] when degenerate), +0 and -0 alike.
        assert torch.equal(lo, c_lo) and torch.equal(hi, c_hi)
        assert lo.shape == state_shape and lo.dtype == torch.float32
        for a, b in zip(fused_state, comp_state):
            assert torch.equal(a, b)
        # Backward: grad_weight bit for bit; the composite's grad_factor is autograd's sums.
        g = torch.randn(shape, generator=gen)
        saved = out if unfold else None
        gw, gf = backward_op(g, w, f, lo, hi, saved, unfold)
        c_gw, c_gf = backward_op.default._op_dk(COMPOSITE, g, w, f, c_lo, c_hi, saved, unfold)
        assert_bitwise_equal(gw, c_gw)
        torch.testing.assert_close(gf, c_gf, rtol=1e-5, atol=1e-5 * float(c_gf.abs().max()))
        w_ref, f_ref = leaves(w, f)
        want = unfused(*ref_state, w_ref, f_ref, observe, 0.3, False, True, 8, True, unfold)
        want.backward(g)
        assert_bitwise_equal(c_gw, w_ref.grad)
        nonzero = f != 0
        assert_bitwise_equal(c_gf[nonzero], f_ref.grad[nonzero])
        if unfold:  # gamma = 0 channels get exactly 0 (the float weight does not depend on f)
            assert (c_gf[~nonzero] == 0).all() and (gf[~nonzero] == 0).all()
        else:
            assert_bitwise_equal(c_gf, f_ref.grad)


def test_meta_shapes_and_strides_match_cpu():
    f = torch.rand(4) + 0.5
    for w in (torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last),
              torch.randn(4, 5, dtype=torch.float64)):  # fmt: skip
        f = f.to(w.dtype)
        for unfold, state_shape in ((False, (4,)), (True, ()), (True, (4,))):
            state = unobserved(state_shape, w.dtype)
            outs = nudged_op(*state, w, f, True, 1.0, False, True, 8, True, unfold)
            meta = [t.to("meta") for t in (*unobserved(state_shape, w.dtype), w, f)]
            outs_m = nudged_op(*meta, True, 1.0, False, True, 8, True, unfold)
            assert [(t.shape, t.stride(), t.dtype) for t in outs] == [
                (t.shape, t.stride(), t.dtype) for t in outs_m
            ]
            out, lo, hi = outs
            g = torch.randn_like(w)
            saved = out if unfold else None
            gw, gf = backward_op(g, w, f, lo, hi, saved, unfold)
            gw_m, gf_m = backward_op(
                *(t.to("meta") for t in (g, w, f, lo, hi)),
                None if saved is None else saved.to("meta"),
                unfold,
            )
            assert (gw.shape, gw.stride()) == (gw_m.shape, gw_m.stride())
            assert (gf.shape, gf.stride()) == (gf_m.shape, gf_m.stride())


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def test_the_cpu_kernel_is_fused():
    """The plain CPU call runs no ATen elementwise op (the composite would run mul / where)."""
    w, f = random_weight_and_factor(torch.Generator().manual_seed(0), (4, 2, 3, 3))
    state = unobserved((4,))
    with _RecordOps() as rec:
        op(*state, w, f, True, 1.0, False, True, 8, True, True)
    assert rec.seen == {op.default}


# --------------------------------------------------------------------------------------------
# Autograd


def test_no_gradient_to_the_state_and_versions():
    lo, hi = unobserved((4,))
    w, f = leaves(*random_weight_and_factor(torch.Generator().manual_seed(0), (4, 3)))
    v = lo._version
    y = op(lo, hi, w, f, True, 1.0, False, True, 8, True, True)
    assert lo._version > v and not lo.requires_grad
    y.sum().backward()
    assert w.grad is not None and f.grad is not None and lo.grad is None
    v = lo._version
    op(lo, hi, w, f, False, 1.0, False, True, 8, True, True)  # not observing: not written
    assert lo._version == v
    # Only the factor requires grad (a frozen weight): its gradient alone.
    f2 = f.detach().clone().requires_grad_()
    op(lo, hi, w.detach(), f2, False).sum().backward()
    assert f2.grad is not None


def test_state_requiring_grad_is_an_error():
    lo = torch.full((4,), -1.0, requires_grad=True)
    w, f = torch.randn(4, 3), torch.rand(4) + 0.5
    with pytest.raises(RuntimeError, match="observed_min and observed_max are observer state"):
        op(lo, torch.ones(4), w, f, True)
    with torch.no_grad():
        op(lo, torch.ones(4), w, f, True)


def test_double_backward_is_an_error():
    w, f = leaves(torch.randn(4, 3), torch.rand(4) + 0.5)
    y = op(*unobserved((4,)), w, f, True, 1.0, False, True, 8, True, True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(y.sum(), w, create_graph=True)


# --------------------------------------------------------------------------------------------
# Errors: RuntimeError naming the argument and the value, state untouched

_W = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
_F = torch.rand(4, generator=torch.Generator().manual_seed(1)) + 0.5


@pytest.mark.parametrize(
    ("state", "w", "f", "args", "message"),
    [
        ((4,), _W, torch.rand(3), (True,),
         "factor must be 1-D of length weight.size(0) = 4 (one fold factor per output channel), "
         "got shape [3]"),
        ((4,), _W, _F.double(), (True,), "factor must have weight's dtype Float, got dtype Double"),
        ((4,), _W, _F, (True, 0.0), "averaging_constant must be in (0, 1], got 0"),
        ((4,), _W, _F, (True, 1.0, False, False, 1), "num_bits must be in [2, 16], got 1"),
        ((3,), _W, _F, (True,),
         "observed_min must be 0-dim (per tensor) or 1-D of length weight.size(0) = 4 (per "
         "output channel), got shape [3]"),
        ((), torch.tensor(1.0), torch.ones(1), (True,), "weight must have at least 1 dimension"),
        ((4,), torch.randint(0, 3, (4, 2)), _F, (True,),
         "weight must be a floating-point tensor, got dtype Long"),
        ((4,), _W.index_put((torch.tensor(1), torch.tensor(0), torch.tensor(0), torch.tensor(0)),
                            torch.tensor(float("nan"))), _F, (True,),
         "weight * factor contains 1 NaN and 0 infinite value(s); the observed range would be "
         "lost"),
        ((), _W * 10, torch.full((4,), 1e38), (True,), "weight * factor contains 0 NaN and 51 "
         "infinite value(s)"),
    ],
)  # fmt: skip
def test_errors(state, w, f, args, message):
    lo, hi = torch.full(state, -1.0), torch.full(state, 1.0)
    lo0, hi0 = lo.clone(), hi.clone()
    with pytest.raises(
        RuntimeError, match=re.escape("edgeqat::fold_weight_fake_quant_: " + message)
    ):
        op(lo, hi, w, f, *args)
    assert_bitwise_equal(lo, lo0)
    assert_bitwise_equal(hi, hi0)


@pytest.mark.parametrize("observe", [True, False])
def test_non_finite_state_is_an_error(observe):
    lo, hi = torch.tensor([-1.0, -INF, -1.0]), torch.tensor([1.0, 1.0, float("nan")])
    lo0, hi0 = lo.clone(), hi.clone()
    w, f = torch.randn(3, 4), torch.rand(3) + 0.5
    message = "observed_min[1] = -inf and observed_max[1] = 1 give the quantization range [-inf, 1]"
    if observe:  # the EMA of -inf: -inf + (batch + inf) * c is NaN
        with pytest.raises(RuntimeError, match=re.escape("observed_min[1] = nan and observed_max")):
            op(lo, hi, w, f, True, 0.5)
    else:
        with pytest.raises(RuntimeError, match=re.escape(message)):
            op(lo, hi, w, f, False)
    assert_bitwise_equal(lo, lo0)
    assert_bitwise_equal(hi, hi0)


def test_cpp_api_schema():
    assert str(op.default._schema) == (
        "edgeqat::fold_weight_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, "
        "Tensor weight, Tensor factor, bool observe, float averaging_constant=1., "
        "bool accumulate=False, bool symmetric=False, int num_bits=8, bool narrow_range=False, "
        "bool unfold=False) -> Tensor"
    )


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile


def _opcheck_cases():
    gen = torch.Generator().manual_seed(0)
    w, f = random_weight_and_factor(gen, (4, 3, 3, 3), (2,))
    cl = w.contiguous(memory_format=torch.channels_last)
    return {
        "per_channel_first_unfold": (*unobserved((4,)), w, f, True, 1.0, False, True, 8, True,
                                     True),
        "per_channel_frozen": (torch.full((4,), -1.0), torch.full((4,), 1.5), w, f, False, 1.0,
                               False, True, 8, True, False),
        "per_tensor_ema": (torch.tensor(-1.0), torch.tensor(2.0), w, f, True, 0.01, False, False,
                           8, False, True),
        "channels_last_running": (*unobserved((4,)), cl, f, True, 1.0, True, True, 4, False,
                                  True),
        "linear_f64": (*unobserved((5,), torch.float64), torch.randn(5, 3, dtype=torch.float64),
                       torch.rand(5, dtype=torch.float64) + 0.5, True, 1.0, False, True, 8, True,
                       True),
        "half": (*unobserved((4,)), w.half(), f.half(), True, 1.0, False, True, 8, True, True),
    }  # fmt: skip


OPCHECK_CASES = _opcheck_cases()


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
@pytest.mark.parametrize("target", ["fold_weight_fake_quant_", "_fold_weight_fake_quant_nudged_"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
def test_opcheck(name, target, requires_grad):
    lo, hi, w, f, *rest = OPCHECK_CASES[name]
    w, f = (t.detach().clone().requires_grad_(requires_grad) for t in (w, f))
    torch.library.opcheck(getattr(ops, target).default, (lo.clone(), hi.clone(), w, f, *rest))


@pytest.mark.parametrize("unfold", [False, True])
def test_opcheck_backward(unfold):
    w, f = random_weight_and_factor(torch.Generator().manual_seed(1), (4, 3, 3, 3), (1,))
    out, lo, hi = nudged_op(*unobserved((4,)), w, f, True, 1.0, False, True, 8, True, unfold)
    torch.library.opcheck(
        backward_op.default, (torch.randn_like(w), w, f, lo, hi, out if unfold else None, unfold)
    )


@pytest.fixture
def fresh_compile_cache(tmp_path):
    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("per_channel", "unfold"), [(True, True), (False, False)])
def test_compile_matches_eager(fresh_compile_cache, per_channel, unfold):
    """The op inside a compiled graph (generated kernels before and after it; scaling by
    powers of two is exact): outputs, state and both gradients bit for bit with eager."""

    def step(lo, hi, w, f, x):
        wq = op(lo, hi, w * 2.0, f, True, 0.5, False, True, 8, True, unfold)
        return F.conv2d(x, wq * 0.5, padding=1)

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    gen = torch.Generator().manual_seed(2)
    state_shape = (6,) if per_channel else ()
    eager_state, compiled_state = list(unobserved(state_shape)), list(unobserved(state_shape))
    for _ in range(3):
        w, f = random_weight_and_factor(gen, (6, 3, 3, 3), (4,))
        x = torch.randn(2, 3, 5, 5, generator=gen)
        we, fe = leaves(w, f)
        wc, fc = leaves(w, f)
        y_e = step(*eager_state, we, fe, x)
        y_c = compiled(*compiled_state, wc, fc, x)
        assert_bitwise_equal(y_c, y_e)
        assert_bitwise_equal(compiled_state[0], eager_state[0])
        assert_bitwise_equal(compiled_state[1], eager_state[1])
        g = torch.randn(y_e.shape, generator=gen)
        y_e.backward(g)
        y_c.backward(g)
        assert_bitwise_equal(wc.grad, we.grad)
        assert_bitwise_equal(fc.grad, fe.grad)  # the same kernels run


# --------------------------------------------------------------------------------------------
# ConvBn2d uses it


def _convbn(seed=0, config=None, **kwargs):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, **kwargs)
    bn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(6))
        bn.weight[3] = 0.0  # a gamma = 0 channel
        bn.bias.copy_(torch.randn(6))
        bn.running_mean.copy_(torch.randn(6) * 0.3)
        bn.running_var.copy_(torch.rand(6) + 0.5)
    fused = ConvBn2d.from_float(conv, bn, activation="relu", config=config)
    unfused_ = copy.deepcopy(fused)
    unfused_._fused_weight_path = False
    return fused, unfused_


def _step_both(fused, unfused_, x, g):
    with _RecordOps() as rec:
        y = fused(x)
    y_ref = unfused_(x)
    assert_bitwise_equal(y, y_ref)
    y.backward(g)
    y_ref.backward(g)
    for (name, p), (_, q) in zip(fused.named_parameters(), unfused_.named_parameters()):
        if q.grad is None:
            assert p.grad is None, name
        elif name == "bn.weight":  # gamma: the fold part is a sum in another order
            torch.testing.assert_close(
                p.grad, q.grad, rtol=1e-5, atol=1e-5 * float(q.grad.abs().max())
            )
        else:
            assert_bitwise_equal(p.grad, q.grad)
    for (name, b), (_, c) in zip(fused.named_buffers(), unfused_.named_buffers()):
        assert torch.equal(b, c), name
    fused.zero_grad(set_to_none=True)
    unfused_.zero_grad(set_to_none=True)
    return rec.seen


USED = {ops._fold_weight_fake_quant_nudged_.default, ops.fold_weight_fake_quant_.default}


@pytest.mark.parametrize(
    "config",
    [
        QConfig(),
        QConfig(weight=QuantSpec(per_channel=False, symmetric=False, range_source="ema")),
        QConfig(weight=QConfig().weight.replace(range_source="running")),
    ],
    ids=["default", "per_tensor_ema", "running"],
)
def test_convbn_fused_path_matches_unfused_path(config):
    fused, unfused_ = _convbn(config=config, bias=True)
    gen = torch.Generator().manual_seed(3)

    def batch():
        return torch.randn(4, 4, 7, 7, generator=gen), torch.randn(4, 6, 7, 7, generator=gen)

    assert not fused.weight_quant._range_known
    assert _step_both(fused, unfused_, *batch()) & USED  # OBSERVE, BN on batch statistics
    assert fused.weight_quant._range_known  # FakeQuantizer's mirror, set as it sets it
    assert _step_both(fused, unfused_, *batch()) & USED
    for m in (fused, unfused_):
        edgeqat.freeze_bn(m)
    assert _step_both(fused, unfused_, *batch()) & USED  # OBSERVE, BN frozen
    for m in (fused, unfused_):
        edgeqat.freeze_observers(m)
    assert fused.weight_quant.mode is Mode.FROZEN
    assert _step_both(fused, unfused_, *batch()) & USED  # FROZEN
    for m in (fused, unfused_):
        m.eval()
    with torch.no_grad():
        x, _ = batch()
        assert_bitwise_equal(fused(x), unfused_(x))
    for m in (fused, unfused_):
        m.train()
        edgeqat.learn_ranges(m)
    assert not (_step_both(fused, unfused_, *batch()) & USED)  # LEARN: the unfused path


def test_convbn_eval_observe_mode_and_unobserved_error():
    fused, unfused_ = _convbn()
    fused.eval()
    unfused_.eval()
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match="has no observed range yet") as err:
        fused(x)
    with pytest.raises(RuntimeError) as err_ref:
        unfused_(x)
    assert str(err.value) == str(err_ref.value)
    fused.train()
    unfused_.train()
    fused(x)
    unfused_(x)
    fused.eval()
    unfused_.eval()
    with torch.no_grad():
        assert_bitwise_equal(fused(x), unfused_(x))  # OBSERVE in eval mode: no observation
    assert torch.equal(fused.weight_quant.observed_min, unfused_.weight_quant.observed_min)


def test_convbn_histogram_source_takes_the_unfused_path():
    spec = QuantSpec(per_channel=False, range_source="histogram")
    fused, unfused_ = _convbn(config=QConfig(weight=spec))
    x, g = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    assert not (_step_both(fused, unfused_, x, g) & USED)
    assert fused.weight_quant._histogram_pending


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_convbn_compiled_frozen_bn_matches_eager(fresh_compile_cache):
    """torch.compile(fullgraph=True) of a ConvBn2d step with the fused op (BN frozen, so no
    running statistic changes under the compiled graph): bit for bit with eager."""
    fused, _ = _convbn()
    fused(torch.randn(4, 4, 5, 5))  # observe once
    fused.freeze_bn()
    compiled_model = copy.deepcopy(fused)
    compiled = torch.compile(compiled_model, fullgraph=True, dynamic=False)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):
        x = torch.randn(4, 4, 5, 5, generator=gen)
        g = torch.randn(4, 6, 5, 5, generator=gen)
        y, yc = fused(x), compiled(x)
        assert_bitwise_equal(yc, y)
        y.backward(g)
        yc.backward(g)
        for p, q in zip(fused.parameters(), compiled_model.parameters()):
            if p.grad is not None:
                assert_bitwise_equal(q.grad, p.grad)
        assert_bitwise_equal(
            compiled_model.weight_quant.observed_max, fused.weight_quant.observed_max
        )
