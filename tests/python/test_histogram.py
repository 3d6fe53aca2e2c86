"""The histogram observer: torch.ops.edgeqat.observe_histogram_ / histogram_range and the
FakeQuantizer range source "histogram".

The references here are slow and obvious NumPy / Python code written from the documented rules
(csrc/ops/histogram_math.h, docs/observers.md), not from the C++:

- accumulation: every value to bin floor((v - lo) * (bins / (hi - lo))), clamped; growth: the
  smallest power of two 2^k and the whole number m of old bins, found by trying every m with
  exact rational arithmetic; old bins move whole to the new bin of their centre. Counts and
  ranges are compared exactly.
- the growth is exact: a histogram filled batch by batch equals one filled at once over its
  final range (a proportional re-binning, as PyTorch's, would not);
- percentile: within one bin width of NumPy's percentile of the raw data;
- MSE: the expected error integrated numerically (midpoint rule, the fake-quant grid from
  reference.nudge) over every candidate range; the op's choice is within a stated tolerance of
  the best candidate, and beats min / max in the actual fake-quant error of heavy-tailed data.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import reference
import torch
from helpers import assert_bitwise_equal
from torch._inductor.utils import fresh_cache

import edgeqat
from edgeqat import FakeQuantizer, Mode, QConfig, QuantSpec

ops = torch.ops.edgeqat
INF = float("inf")


def empty_state(bins=2048, dtype=torch.float64):
    return (
        torch.zeros(bins, dtype=torch.int64),
        torch.tensor(INF, dtype=dtype),
        torch.tensor(-INF, dtype=dtype),
    )


def observe(state, x):
    ops.observe_histogram_(*state, x)


# --------------------------------------------------------------------------------------------
# Reference: accumulation and growth


def ref_bin(values, lo, hi, bins):
    """The documented bin of each value (float64 arithmetic, this exact formula)."""
    values = np.asarray(values, dtype=np.float64)
    if hi == lo:
        return np.zeros(values.shape, dtype=np.int64)
    scale = np.float64(bins) / (np.float64(hi) - np.float64(lo))
    t = (values - np.float64(lo)) * scale
    return np.clip(np.floor(t), 0, bins - 1).astype(np.int64)


def ref_grown_range(lo, hi, blo, bhi, bins):
    """The covering range, by trying every power of two and every whole shift m (exact)."""
    if lo > hi:
        return blo, bhi
    if blo >= lo and bhi <= hi:
        return lo, hi
    if lo == hi:
        return min(lo, blo), max(hi, bhi)
    w = (hi - lo) / bins  # the double the layout uses
    wq = Fraction(w)
    grew_lo, grew_hi = blo < lo, bhi > hi
    k = 1
    while True:
        total = 2**k * bins
        # the new range [lo - m w, lo - m w + total w] must hold the old range and the batch:
        # m >= (lo - min) / w and m <= total - (max - lo) / w, in exact rational arithmetic
        m_min = max(0, math.ceil((Fraction(lo) - Fraction(min(blo, lo))) / wq))
        m_max = math.floor(total - (Fraction(max(bhi, hi)) - Fraction(lo)) / wq)
        if m_min <= m_max:
            if grew_lo and not grew_hi:
                m = m_max
            elif grew_hi and not grew_lo:
                m = m_min
            else:
                m = m_min + (m_max - m_min) // 2
            new_lo = lo - float(m) * w
            new_hi = new_lo + float(total) * w
            return min(new_lo, blo), max(new_hi, bhi)
        k += 1


def ref_observe(counts, lo, hi, x):
    """(counts, lo, hi) after adding x: grow, move old bins by their centres, add x."""
    x = x.detach().double().numpy().ravel()
    bins = len(counts)
    if x.size == 0:
        return counts.copy(), lo, hi
    new_lo, new_hi = ref_grown_range(lo, hi, float(x.min()), float(x.max()), bins)
    if (new_lo, new_hi) == (lo, hi):
        out = counts.copy()
    else:
        out = np.zeros(bins, dtype=np.int64)
        if lo == hi:
            out[ref_bin([lo], new_lo, new_hi, bins)[0]] += counts.sum()
        elif lo < hi:
            w = (hi - lo) / bins
            centres = lo + (np.arange(bins) + 0.5) * w
            np.add.at(out, ref_bin(centres, new_lo, new_hi, bins), counts)
    np.add.at(out, ref_bin(x, new_lo, new_hi, bins), 1)
    return out, new_lo, new_hi


def check_against_reference(batches, bins, x_dtype=torch.float32):
    state = empty_state(bins)
    counts, lo, hi = np.zeros(bins, dtype=np.int64), INF, -INF
    for i, x in enumerate(batches):
        x = x.to(x_dtype)
        counts, lo, hi = ref_observe(counts, lo, hi, x)
        observe(state, x)
        try:
            np.testing.assert_array_equal(state[0].numpy(), counts)
            assert (state[1].item(), state[2].item()) == (lo, hi)
        except AssertionError as err:
            raise AssertionError(f"batch {i}: {err}") from err
    return state


def test_reference_hand_computed():
    counts, lo, hi = ref_observe(np.zeros(4, np.int64), INF, -INF, torch.tensor([0.0, 1.0, 4.0]))
    assert (lo, hi) == (0.0, 4.0) and counts.tolist() == [1, 1, 0, 1]  # 4.0 is in the last bin
    # above the range: 2x wider, start kept, bins 0-1 merge into 0, 2-3 into 1
    counts, lo, hi = ref_observe(counts, lo, hi, torch.tensor([7.5]))
    assert (lo, hi) == (0.0, 8.0) and counts.tolist() == [2, 1, 0, 1]
    # below: 4x wider (2x is not enough for -9), the old range at the top
    counts, lo, hi = ref_observe(counts, lo, hi, torch.tensor([-9.0]))
    assert (lo, hi) == (-24.0, 8.0) and counts.tolist() == [0, 1, 0, 4]  # -9 in [-16, -8)
    # a point mass spreads to the batch's ends
    counts, lo, hi = ref_observe(np.array([3, 0]), 2.0, 2.0, torch.tensor([0.0, 4.0]))
    assert (lo, hi) == (0.0, 4.0) and counts.tolist() == [1, 4]


def test_op_hand_computed():
    state = empty_state(4)
    observe(state, torch.tensor([0.0, 1.0, 4.0]))
    observe(state, torch.tensor([7.5]))
    observe(state, torch.tensor([-9.0]))
    assert state[0].tolist() == [0, 1, 0, 4]
    assert (state[1].item(), state[2].item()) == (-24.0, 8.0)


@pytest.mark.parametrize("bins", [1, 2, 16, 2048])
def test_accumulation_and_growth_match_reference(bins):
    gen = torch.Generator().manual_seed(bins)
    batches = [
        torch.rand(200, generator=gen),  # the first batch sets the range
        torch.rand(300, generator=gen) * 0.5 + 0.2,  # inside: no growth
        torch.randn(500, generator=gen) * 3,  # both sides
        torch.rand(100, generator=gen) * 40 + 5,  # above only
        -torch.rand(100, generator=gen) * 200,  # below only
        torch.randn(7, 3, generator=gen) * 1e-3,  # tiny, inside
        torch.tensor([1e6]),  # far above: many doublings at once
    ]
    check_against_reference(batches, bins)


@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_dtypes_match_reference(x_dtype):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(1000, generator=gen) * (1 + i) for i in range(4)]
    check_against_reference(batches, 64, x_dtype)


def test_point_mass_first_batch():
    gen = torch.Generator().manual_seed(2)
    batches = [torch.full((10,), 0.5), torch.full((5,), 0.5), torch.rand(50, generator=gen) - 2]
    state = check_against_reference(batches, 32)
    assert state[0].sum() == 65


def test_layouts_count_the_same():
    x = torch.randn(4, 5, 6, 7, generator=torch.Generator().manual_seed(3))
    want = empty_state(128)
    observe(want, x)
    for other in (
        x.contiguous(memory_format=torch.channels_last),
        x.transpose(0, 3).contiguous().transpose(0, 3),
        torch.zeros(4, 5, 6, 14)[..., ::2].copy_(x),  # not dense
    ):
        got = empty_state(128)
        observe(got, other)
        for g, w in zip(got, want):
            assert_bitwise_equal(g, w)


def test_growth_merges_bins_whole():
    """A histogram filled batch by batch, through several growths, equals one filled at once
    over its final range: every old bin lies inside one new bin. (A proportional re-binning
    would split the old counts and fail this.)"""
    gen = torch.Generator().manual_seed(4)
    batches = [
        torch.rand(1000, generator=gen) + 2,
        torch.randn(2000, generator=gen) * 4,
        torch.rand(500, generator=gen) * 90,
        -torch.rand(500, generator=gen) * 300,
    ]
    state = empty_state(256)
    for x in batches:
        observe(state, x)
    lo, hi = state[1].item(), state[2].item()
    all_values = torch.cat(batches).double().numpy()
    direct = np.bincount(ref_bin(all_values, lo, hi, 256), minlength=256)
    np.testing.assert_array_equal(state[0].numpy(), direct)
    assert (hi - lo) / (all_values.max() - all_values.min()) < 2.0 + 1e-9  # at most 2x the data


def test_growth_puts_the_room_on_the_side_that_grew():
    state = empty_state(16)
    observe(state, torch.tensor([0.0, 16.0]))
    observe(state, torch.tensor([20.0]))  # above: the start stays
    assert (state[1].item(), state[2].item()) == (0.0, 32.0)
    observe(state, torch.tensor([-1.0]))  # below: the end stays
    assert (state[1].item(), state[2].item()) == (-32.0, 32.0)
    observe(state, torch.tensor([-100.0, 100.0]))  # both: centred
    assert (state[1].item(), state[2].item()) == (-128.0, 128.0)


def test_counts_stay_exact_beyond_float32():
    state = empty_state(8)
    observe(state, torch.tensor([0.0, 8.0]))
    state[0][3] = 2**40 + 1  # beyond float32's (2^24) and float64-safe
    observe(state, torch.tensor([3.5, 3.5]))
    assert state[0][3].item() == 2**40 + 3
    observe(state, torch.tensor([-8.0]))  # a growth keeps it exact: bins 2, 3 -> new bin 5
    assert state[0][5].item() == 2**40 + 3
    assert state[0].sum().item() == 2**40 + 6


def test_float32_range_state_rounds_outwards():
    """float32 ends are allowed; they round outwards so the range still covers the data."""
    state = empty_state(16, torch.float32)
    x = torch.tensor([0.1, 1 / 3], dtype=torch.float64)
    observe(state, x)
    assert state[1].item() <= 0.1 and state[2].item() >= 1 / 3
    assert state[1].dtype == torch.float32
    before = state[0].clone()
    observe(state, x)  # the same data again: no growth
    np.testing.assert_array_equal(state[0].numpy(), 2 * before.numpy())


@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_empty_x_is_a_no_op(shape):
    for state in (
        empty_state(8),
        (torch.arange(8), torch.tensor(-1.0).double(), torch.tensor(1.0).double()),
    ):
        before = [t.clone() for t in state]
        observe(state, torch.empty(shape))
        for t, b in zip(state, before):
            assert_bitwise_equal(t, b)


def test_composite_kernel_matches_cpu():
    """Devices without a fused kernel run the composite one: same counts, same range."""
    composite = torch._C.DispatchKey.CompositeExplicitAutograd
    gen = torch.Generator().manual_seed(5)
    cpu, comp = empty_state(100), empty_state(100)
    for i in range(5):
        x = torch.randn(3000, generator=gen) * (1 + 3 * i) + i
        observe(cpu, x)
        ops.observe_histogram_.default._op_dk(composite, *comp, x)
        for a, b in zip(cpu, comp):
            assert_bitwise_equal(a, b)


# --------------------------------------------------------------------------------------------
# Errors of observe_histogram_: the argument and its value named, state untouched


def _fails_untouched(state, x, message):
    before = [t.clone() for t in state]
    with pytest.raises(RuntimeError, match=re.escape(message)):
        observe(state, x)
    for t, b in zip(state, before):
        assert_bitwise_equal(t, b)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.tensor([0.0, float("nan"), 1.0]), "x contains 1 NaN and 0 infinite value(s)"),
        (torch.tensor([INF, -INF, 1.0]), "x contains 0 NaN and 2 infinite value(s)"),
        (torch.arange(3), "x must be a floating-point tensor, got dtype Long"),
    ],
)
def test_errors_bad_x(x, message):
    state = empty_state(8)
    observe(state, torch.tensor([0.0, 1.0]))
    _fails_untouched(state, x, "edgeqat::observe_histogram_: " + message)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            (torch.zeros(8), torch.tensor(INF).double(), torch.tensor(-INF).double()),
            "histogram must be an int64 tensor of counts, got dtype Float",
        ),
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.tensor(INF).double(), torch.tensor(0.0)),
            "histogram must be 1-D with at least one bin, got shape [2, 4]",
        ),
        (
            (torch.zeros(0, dtype=torch.long), torch.tensor(INF).double(), torch.tensor(0.0)),
            "histogram must be 1-D with at least one bin, got shape [0]",
        ),
        (
            (torch.zeros(8, dtype=torch.long), torch.tensor(INF).half(), torch.tensor(0.0)),
            "hist_min must be a float32 or float64 tensor, got dtype Half",
        ),
        (
            (torch.zeros(8, dtype=torch.long), torch.tensor(INF), torch.zeros(1)),
            "hist_max must be a 0-dim tensor, got shape [1]",
        ),
        (
            (torch.tensor([0, 3, 0]), torch.tensor(INF), torch.tensor(-INF)),
            "hist_min = inf > hist_max = -inf marks an empty histogram, but it holds 3 count(s)",
        ),
        (
            (torch.tensor([0, -3, 0]), torch.tensor(0.0), torch.tensor(1.0)),
            "histogram[1] = -3 is negative; counts must be >= 0",
        ),
    ],
)
def test_errors_bad_state(state, message):
    _fails_untouched(state, torch.tensor([0.5]), "edgeqat::observe_histogram_: " + message)


def test_error_state_requires_grad():
    state = list(empty_state(8))
    state[1].requires_grad_()
    with pytest.raises(RuntimeError, match="hist_min and hist_max are observer state"):
        observe(state, torch.tensor([1.0]))


def test_autograd_input_and_versions():
    state = empty_state(8)
    x = torch.randn(5, requires_grad=True)
    versions = [t._version for t in state]
    observe(state, x)
    assert all(t._version > v for t, v in zip(state, versions))
    assert state[0].sum() == 5 and not state[1].requires_grad


# --------------------------------------------------------------------------------------------
# Reference: range selection


def filled(x, bins):
    state = empty_state(bins)
    observe(state, x)
    return state


def bin_width(state):
    return (state[2].item() - state[1].item()) / state[0].numel()


def select(state, method="mse", percentile=99.99, num_bits=8, narrow=False, symmetric=False):
    lo, hi = ops.histogram_range(*state, method, percentile, num_bits, narrow, symmetric)
    assert lo.dtype == hi.dtype == torch.float32 and lo.shape == hi.shape == ()
    return lo.item(), hi.item()


def heavy_tailed(n=200_000, outliers=20, seed=0):
    """Laplace(0, 1) with a few far outliers, shifted so the range is asymmetric."""
    gen = np.random.default_rng(seed)
    x = gen.laplace(0.0, 1.0, n) + 0.5
    x[:outliers] = gen.choice([-40.0, 60.0], outliers) + gen.normal(0, 1, outliers)
    return torch.from_numpy(x.astype(np.float32))


def fake_quant_mse(x, lo, hi, num_bits=8, narrow=False):
    y = ops.fake_quant_with_min_max_vars(x, torch.tensor(lo), torch.tensor(hi), num_bits, narrow)
    return float(((y.double() - x.double()) ** 2).mean())


@pytest.mark.parametrize("percentile", [50.0, 90.0, 99.0, 99.99, 100.0])
@pytest.mark.parametrize("symmetric", [False, True])
def test_percentile_within_a_bin_of_the_data_percentile(percentile, symmetric):
    x = heavy_tailed(50_000, seed=1)
    state = filled(x, 512)
    lo, hi = select(state, "percentile", percentile, symmetric=symmetric)
    w = bin_width(state)
    xs = x.double().numpy()
    tol = w * (1 + 1e-6) + 1e-6
    if symmetric:
        t = np.percentile(np.abs(xs), percentile, method="inverted_cdf")
        assert lo == -hi and abs(hi - t) <= tol, (hi, t, w)
    else:
        want_lo = min(np.percentile(xs, 100 - percentile, method="inverted_cdf"), 0.0)
        want_hi = max(np.percentile(xs, percentile, method="inverted_cdf"), 0.0)
        assert abs(lo - want_lo) <= tol and abs(hi - want_hi) <= tol, (lo, hi, want_lo, want_hi)


def test_percentile_clips_the_outliers():
    x = heavy_tailed()
    state = filled(x, 2048)
    lo, hi = select(state, "percentile", 99.99)
    assert -40 < lo < -5 and 5 < hi < 60  # the outliers are out, the Laplace tails in
    inside = ((x >= lo) & (x <= hi)).double().mean().item()
    assert inside >= 0.9998 - 1e-9  # each end cuts about 0.01 %
    assert select(state, "percentile", 100.0) == pytest.approx(
        (x.min().item(), x.max().item()), abs=bin_width(state)
    )


def test_percentile_of_positive_data_starts_at_zero():
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(6)) + 1.0  # [1, 2)
    lo, hi = select(filled(x, 256), "percentile", 99.0)
    assert lo == 0.0 and 1.95 < hi < 2.0


def ref_expected_error(counts, lo, hi, qlo, qhi, num_bits, narrow, samples=512):
    """Midpoint-rule integral of (x - fq(x))^2 over each bin's uniform spread, per value."""
    r = reference.nudge(qlo, qhi, num_bits, narrow)
    counts = np.asarray(counts, dtype=np.float64)
    bins = len(counts)
    w = (hi - lo) / bins
    idx = np.nonzero(counts)[0]
    a = lo + idx * w
    b = np.where(idx == bins - 1, hi, lo + (idx + 1) * w)
    xs = a[:, None] + (np.arange(samples) + 0.5)[None, :] / samples * (b - a)[:, None]
    if r.degenerate:
        q = np.zeros_like(xs)
    else:
        nlo, nhi, s = float(r.nudged_min), float(r.nudged_max), float(r.scale)
        q = nlo + np.floor((np.clip(xs, nlo, nhi) - nlo) / s + 0.5) * s
    per_bin = ((xs - q) ** 2).mean(axis=1)
    return float((counts[idx] * per_bin).sum() / counts.sum())


def candidates(lo, hi, bins):
    """The documented candidate ends: bin edges on each side of 0, and 0 (float32)."""
    w = (hi - lo) / bins
    edges = [hi if i == bins else lo + i * w for i in range(bins + 1)]
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    return [f32(e) for e in edges if e < 0] + [0.0], [f32(e) for e in edges if e > 0] + [0.0]


@pytest.mark.parametrize("num_bits", [3, 8])
@pytest.mark.parametrize("data", ["laplace_outliers", "uniform_positive", "skewed"])
def test_mse_asymmetric_is_the_best_candidate(num_bits, data):
    gen = np.random.default_rng(7)
    x = {
        "laplace_outliers": heavy_tailed(20_000, 5, seed=7).numpy(),
        "uniform_positive": gen.uniform(0.5, 3.0, 20_000).astype(np.float32),
        "skewed": (gen.exponential(1.0, 20_000) - 0.7).astype(np.float32),
    }[data]
    bins = 32
    state = filled(torch.from_numpy(x), bins)
    counts, lo, hi = state[0].numpy(), state[1].item(), state[2].item()
    got = select(state, "mse", num_bits=num_bits)
    los, his = candidates(lo, hi, bins)
    errors = {
        (cl, ch): ref_expected_error(counts, lo, hi, cl, ch, num_bits, False)
        for cl in los
        for ch in his
    }
    best = min(errors.values())
    assert got[0] in los and got[1] in his
    # midpoint rule with 512 samples per bin: relative accuracy well within 1e-3
    assert errors[got] <= best * (1 + 1e-3) + 1e-12, (
        got,
        errors[got],
        min(errors, key=errors.get),
        best,
    )
    assert errors[got] <= errors[(los[0], his[0])]  # never worse than min / max


@pytest.mark.parametrize(("num_bits", "narrow"), [(4, True), (8, False), (8, True)])
def test_mse_symmetric_is_the_best_candidate(num_bits, narrow):
    x = heavy_tailed(20_000, 5, seed=8)
    bins = 64
    state = filled(x, bins)
    counts, lo, hi = state[0].numpy(), state[1].item(), state[2].item()
    got_lo, got_hi = select(state, "mse", num_bits=num_bits, narrow=narrow, symmetric=True)
    assert got_lo == -got_hi
    a = max(abs(lo), abs(hi))
    bounds = [float(np.float32(a * j / bins)) for j in range(1, bins + 1)]
    errors = {b: ref_expected_error(counts, lo, hi, -b, b, num_bits, narrow) for b in bounds}
    assert got_hi in errors
    assert errors[got_hi] <= min(errors.values()) * (1 + 1e-3), (
        got_hi,
        min(errors, key=errors.get),
    )


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(("num_bits", "factor"), [(8, 0.8), (4, 0.3)])
def test_mse_beats_min_max_on_heavy_tails(symmetric, num_bits, factor):
    """In the actual fake-quant error of the data, not only in the estimate: Laplace tails are
    worth clipping, the more so the coarser the grid (measured: 8 bits 0.75x, 4 bits 0.21x the
    min / max error). A few far outliers are not (test_mse_keeps_far_outliers)."""
    x = heavy_tailed(outliers=0)
    state = filled(x, 2048)
    lo, hi = select(state, "mse", num_bits=num_bits, symmetric=symmetric)
    mn, mx = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    if symmetric:
        b = max(-mn, mx)
        mn, mx = -b, b
    mse_error = fake_quant_mse(x, lo, hi, num_bits)
    minmax_error = fake_quant_mse(x, mn, mx, num_bits)
    assert mse_error < factor * minmax_error, (lo, hi, mse_error, minmax_error)
    # it clips the tails, not the bulk of the distribution
    assert mn < lo < -3 and 3 < hi < mx


def test_mse_keeps_far_outliers():
    """Clipping an outlier at 60 to 10 costs 2500 squared units: more than the rounding error
    that a narrower grid saves on 200 000 values."""
    x = heavy_tailed()
    lo, hi = select(filled(x, 2048), "mse")
    assert lo < -35 and hi > 55
    assert fake_quant_mse(x, lo, hi) <= fake_quant_mse(x, x.min().item(), x.max().item())


def test_mse_on_narrow_data_keeps_min_max():
    """Uniform data without tails: clipping only adds error, the choice stays near min / max."""
    x = torch.rand(50_000, generator=torch.Generator().manual_seed(9)) * 2 - 1
    lo, hi = select(filled(x, 2048), "mse")
    assert lo == pytest.approx(-1.0, abs=0.02) and hi == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("method", ["mse", "percentile"])
def test_point_mass_and_range_contains_zero(method):
    for value, symmetric, want in [
        (2.5, False, (0.0, 2.5)),
        (-1.5, False, (-1.5, 0.0)),
        (-1.5, True, (-1.5, 1.5)),
        (0.0, False, (0.0, 0.0)),
    ]:
        state = filled(torch.full((10,), value), 16)
        assert select(state, method, symmetric=symmetric) == want


def test_composite_histogram_range_is_the_op():
    state = filled(heavy_tailed(5000), 128)
    assert ops.histogram_range(*state).__len__() == 2
    meta = [t.to("meta") for t in state]
    lo, hi = ops.histogram_range(*meta, "percentile", 99.0)
    assert lo.device.type == "meta" and lo.shape == () and lo.dtype == torch.float32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("max", 99.0), "method must be 'mse' or 'percentile', got 'max'"),
        (("percentile", 49.0), "percentile must be in [50, 100], got 49"),
        (("percentile", 100.5), "percentile must be in [50, 100], got 100.5"),
        (("mse", 99.0, 1), "num_bits must be in [2, 16], got 1"),
    ],
)
def test_histogram_range_errors(args, message):
    state = filled(torch.randn(100), 16)
    with pytest.raises(RuntimeError, match=re.escape("edgeqat::histogram_range: " + message)):
        ops.histogram_range(*state, *args)


def test_histogram_range_of_empty_histogram_is_an_error():
    with pytest.raises(
        RuntimeError, match=re.escape("the histogram is empty (hist_min > hist_max)")
    ):
        ops.histogram_range(*empty_state(16))


# --------------------------------------------------------------------------------------------
# QuantSpec


def test_quant_spec_histogram_defaults():
    s = QuantSpec(range_source="histogram")
    assert (s.histogram_bins, s.histogram_method, s.percentile) == (2048, "mse", 99.99)
    assert s.averaging_constant == 1.0


@pytest.mark.parametrize("bins", [1, 0, 16385, 2.0, "2048", True, None])
def test_quant_spec_histogram_bins_invalid(bins):
    with pytest.raises(
        ValueError,
        match=re.escape(f"QuantSpec.histogram_bins must be an int in [2, 16384], got {bins!r}"),
    ):
        QuantSpec(range_source="histogram", histogram_bins=bins)


@pytest.mark.parametrize("method", ["MSE", "max", "", None, 1])
def test_quant_spec_histogram_method_invalid(method):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"QuantSpec.histogram_method must be 'percentile' or 'mse', got {method!r}"
        ),
    ):
        QuantSpec(histogram_method=method)


@pytest.mark.parametrize("percentile", [49.9, 100.01, -1.0, float("nan"), INF])
def test_quant_spec_percentile_invalid(percentile):
    with pytest.raises(
        ValueError,
        match=re.escape(f"QuantSpec.percentile must be in [50, 100], got {percentile!r}"),
    ):
        QuantSpec(percentile=percentile)
    with pytest.raises(
        TypeError, match=re.escape("QuantSpec.percentile must be a float, got '99'")
    ):
        QuantSpec(percentile="99")


def test_quant_spec_histogram_is_per_tensor_only():
    with pytest.raises(ValueError, match=re.escape("range_source='histogram' is per tensor only")):
        QuantSpec(range_source="histogram", per_channel=True)
    with pytest.raises(ValueError, match="per tensor only"):
        QConfig().weight.replace(range_source="histogram")


# --------------------------------------------------------------------------------------------
# FakeQuantizer with the histogram source

HIST = QuantSpec(range_source="histogram", histogram_bins=256)


def calibration_batches(n=4, seed=10):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 32, generator=gen) * (1 + i) + 0.25 for i in range(n)]


def test_quantizer_buffers_and_state_dict_keys():
    q = FakeQuantizer(HIST)
    assert set(q.state_dict()) == {
        "observed_min",
        "observed_max",
        "learned_min",
        "learned_max",
        "mode_code",
        "histogram",
        "histogram_min",
        "histogram_max",
    }
    assert q.histogram.shape == (256,) and q.histogram.dtype == torch.int64
    assert q.histogram_min.dtype == torch.float64 and not q.has_range
    assert "histogram" not in FakeQuantizer(QuantSpec()).state_dict()
    assert "histogram_method='mse'" in repr(q)


def test_quantizer_calibrates_in_float_then_freezes_with_the_selected_range():
    q = FakeQuantizer(HIST).train()
    state = empty_state(256)
    xs = calibration_batches()
    for x in xs:
        y = q(x)
        assert y is x  # float: no fake quant while calibrating
        observe(state, x)
    for got, want in zip((q.histogram, q.histogram_min, q.histogram_max), state):
        assert_bitwise_equal(got, want)
    assert torch.isinf(q.observed_min)  # nothing chosen yet
    assert q.has_range  # ... but one can be
    q.freeze()
    want_lo, want_hi = ops.histogram_range(*state, "mse", 99.99, 8, False, False)
    assert_bitwise_equal(q.observed_min, want_lo)
    assert_bitwise_equal(q.observed_max, want_hi)
    x = xs[0] * 3
    assert_bitwise_equal(q(x), ops.fake_quant_with_min_max_vars(x, want_lo, want_hi, 8, False))
    hist_before = q.histogram.clone()
    q(x)  # FROZEN: the histogram does not move
    assert_bitwise_equal(q.histogram, hist_before)


def test_quantizer_percentile_symmetric_spec_is_passed_through():
    spec = HIST.replace(histogram_method="percentile", percentile=99.0, symmetric=True)
    q = FakeQuantizer(spec).train()
    for x in calibration_batches():
        q(x)
    lo, hi = q.select_range()
    want = ops.histogram_range(
        q.histogram, q.histogram_min, q.histogram_max, "percentile", 99.0, 8, False, True
    )
    assert (lo.item(), hi.item()) == (want[0].item(), want[1].item())
    assert lo.item() == -hi.item()


def test_quantizer_learn_starts_from_the_selected_range():
    q = FakeQuantizer(HIST).train()
    for x in calibration_batches():
        q(x)
    q.learn()
    assert q.mode is Mode.LEARN
    lo, hi = ops.histogram_range(q.histogram, q.histogram_min, q.histogram_max)
    assert (q.learned_min.item(), q.learned_max.item()) == (lo.item(), hi.item())


def test_quantizer_eval_selects_after_new_data():
    q = FakeQuantizer(HIST).train()
    xs = calibration_batches()
    q(xs[0])
    q.eval()
    x = torch.linspace(-3, 3, 50)
    y1 = q(x)  # the range chosen from the first batch
    lo1 = q.observed_min.clone()
    q.train()
    q(xs[3] * 10)  # much wider data
    q.eval()
    y2 = q(x)  # chosen again
    assert q.observed_min < lo1 and not torch.equal(y1, y2)
    assert q.mode is Mode.OBSERVE
    lo, hi = q.observed_range()
    want = ops.histogram_range(q.histogram, q.histogram_min, q.histogram_max)
    assert (lo.item(), hi.item()) == (want[0].item(), want[1].item())


def test_quantizer_state_dict_mid_calibration_continues_identically():
    xs = calibration_batches(6)
    q = FakeQuantizer(HIST).train()
    for x in xs[:3]:
        q(x)
    fresh = FakeQuantizer(HIST).train()
    fresh.load_state_dict(q.state_dict())
    for x in xs[3:]:
        q(x)
        fresh(x)
    q.freeze()
    fresh.freeze()  # the loaded histogram counts as pending data: a range is chosen
    for name, t in q.state_dict().items():
        assert_bitwise_equal(fresh.state_dict()[name], t)
    # a frozen state loads as it is
    frozen = FakeQuantizer(HIST)
    frozen.load_state_dict(q.state_dict())
    assert frozen.mode is Mode.FROZEN
    x = xs[0] * 2
    assert_bitwise_equal(frozen(x), q(x))


def test_quantizer_errors():
    with pytest.raises(
        RuntimeError, match=r"FakeQuantizer\(per-tensor, 8 bits, histogram\) has an empty histogram"
    ):
        FakeQuantizer(HIST).select_range()
    with pytest.raises(RuntimeError, match="range_source='ema', not 'histogram'"):
        FakeQuantizer(QuantSpec()).select_range()
    q = FakeQuantizer(HIST).freeze()  # nothing calibrated: freezing is allowed, using is not
    with pytest.raises(RuntimeError, match="has no observed range yet: run calibration data"):
        q(torch.randn(3))
    q = FakeQuantizer(HIST).train()
    q(torch.randn(3))
    with pytest.raises(RuntimeError, match="x contains 1 NaN"):
        q(torch.tensor([1.0, float("nan")]))


def test_freeze_observers_and_prepare_ptq_calibrate():
    """The model-level controls and calibrate() of prepare_ptq work with histogram ranges."""
    q = FakeQuantizer(HIST).train()
    q(torch.randn(100))
    model = torch.nn.Sequential(q)
    edgeqat.freeze_observers(model)
    assert q.mode is Mode.FROZEN and q.observed_min < 0 < q.observed_max
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    config = QConfig(activation=HIST)
    ptq = edgeqat.prepare_ptq(net, config, example_inputs=torch.randn(1, 3, 8, 8))
    gen = torch.Generator().manual_seed(11)
    edgeqat.calibrate(ptq, [torch.randn(4, 3, 8, 8, generator=gen) for _ in range(3)])
    act = [
        m
        for m in ptq.modules()
        if isinstance(m, FakeQuantizer) and m.spec.range_source == "histogram"
    ]
    assert act and all(m.mode is Mode.FROZEN and m.has_range for m in act)
    for m in act:
        lo, hi = ops.histogram_range(m.histogram, m.histogram_min, m.histogram_max)
        assert (m.observed_min.item(), m.observed_max.item()) == (lo.item(), hi.item())
        assert m.histogram.sum() > 0


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile


def _opcheck_cases():
    gen = torch.Generator().manual_seed(0)
    filled_state = filled(torch.randn(500, generator=gen), 64)
    return {
        "first": (ops.observe_histogram_, (*empty_state(32), torch.randn(3, 4, generator=gen))),
        "grow": (
            ops.observe_histogram_,
            (*[t.clone() for t in filled_state], torch.randn(50, generator=gen) * 9),
        ),
        "half": (ops.observe_histogram_, (*empty_state(8), torch.randn(6, generator=gen).half())),
        "empty_x": (ops.observe_histogram_, (*empty_state(8), torch.empty(0, 2))),
        "range_mse": (ops.histogram_range, (*filled_state, "mse", 99.99, 8, False, False)),
        "range_percentile_sym": (
            ops.histogram_range,
            (*filled_state, "percentile", 99.0, 4, True, True),
        ),
    }


OPCHECK_CASES = _opcheck_cases()


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(name, requires_grad):
    """requires_grad: x for observe_histogram_; for histogram_range the float state (which it
    reads and never differentiates)."""
    op, args = OPCHECK_CASES[name]
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    if requires_grad:
        args[3 if op is ops.observe_histogram_ else 1].requires_grad_()
    torch.library.opcheck(op.default, tuple(args))


@pytest.fixture
def fresh_compile_cache(tmp_path):
    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_calibration_step_matches_eager(fresh_compile_cache):
    eager = FakeQuantizer(HIST).train()
    compiled_q = FakeQuantizer(HIST).train()
    compiled = torch.compile(compiled_q, fullgraph=True, dynamic=False)
    for x in calibration_batches(5):
        x = x * 2 + 1
        assert_bitwise_equal(compiled(x), eager(x))
        for name, t in eager.state_dict().items():
            assert_bitwise_equal(compiled_q.state_dict()[name], t)
    eager.freeze()
    compiled_q.freeze()
    x = torch.randn(16, 32)
    assert_bitwise_equal(compiled(x), eager(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_ops_match_eager(fresh_compile_cache):
    def step(h, lo, hi, x):
        ops.observe_histogram_(h, lo, hi, x * 2)
        return ops.histogram_range(h, lo, hi, "percentile", 99.0, 8, False, False)

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    e, c = empty_state(64), empty_state(64)
    for x in calibration_batches(3):
        want = step(*e, x)
        got = compiled(*c, x)
        for g, w in zip(got, want):
            assert_bitwise_equal(g, w)
        for g, w in zip(c, e):
            assert_bitwise_equal(g, w)
    assert math.isfinite(e[1].item())
