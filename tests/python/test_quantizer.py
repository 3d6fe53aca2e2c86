"""QuantSpec / QConfig (validation, TF defaults) and FakeQuantizer (modes, ranges, gradients,
state_dict).

The expected outputs are the fake-quant ops called directly with the range the quantizer is
documented to use (observed range widened to contain 0, [-b, b] when symmetric); the expected
observer state is a NumPy EMA / running min-max written here.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from helpers import assert_bitwise_equal

import edgeqat
from edgeqat import FakeQuantizer, Mode, QConfig, QuantSpec

fq = torch.ops.edgeqat.fake_quant_with_min_max_vars
fq_pc = torch.ops.edgeqat.fake_quant_with_min_max_vars_per_channel


def batches(n, shape, seed=0, scale=1.0, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * scale + offset for _ in range(n)]


# --------------------------------------------------------------------------------------------
# NumPy reference of the observer state (float32)


def ref_state(xs, range_source="ema", ema_decay=0.999, axis=None):
    """(observed_min, observed_max) after observing xs in order, in float32. An averaging
    constant of 1.0 ("last", or "ema" with decay 0) keeps the last batch's range exactly, as
    documented ("1.0 keeps the last batch")."""
    c = np.float32(1.0 - ema_decay if range_source == "ema" else 1.0)
    lo = hi = None
    for x in xs:
        xn = x.detach().float().numpy()
        if axis is None:
            b_lo, b_hi = np.float32(xn.min()), np.float32(xn.max())
        else:
            flat = np.moveaxis(xn, axis, 0).reshape(xn.shape[axis], -1)
            b_lo, b_hi = flat.min(axis=1), flat.max(axis=1)
        if lo is None or c == 1.0 and range_source != "running":
            lo, hi = b_lo, b_hi
        elif range_source == "running":
            lo, hi = np.minimum(lo, b_lo), np.maximum(hi, b_hi)
        else:
            lo = (lo + (b_lo - lo) * c).astype(np.float32)
            hi = (hi + (b_hi - hi) * c).astype(np.float32)
    return torch.from_numpy(np.asarray(lo, np.float32)), torch.from_numpy(
        np.asarray(hi, np.float32)
    )


def test_ref_state_hand_computed():
    xs = [torch.tensor([-2.0, 3.0]), torch.tensor([0.0, 1.0])]
    lo, hi = ref_state(xs, "ema", 0.5)
    assert (lo.item(), hi.item()) == (-1.0, 2.0)
    lo, hi = ref_state(xs, "last")
    assert (lo.item(), hi.item()) == (0.0, 1.0)
    lo, hi = ref_state(xs, "running")
    assert (lo.item(), hi.item()) == (-2.0, 3.0)


# --------------------------------------------------------------------------------------------
# QuantSpec / QConfig


def test_quant_spec_defaults_are_tf_activation_recipe():
    s = QuantSpec()
    assert (s.num_bits, s.narrow_range, s.symmetric, s.per_channel) == (8, False, False, False)
    assert (s.range_source, s.ema_decay) == ("ema", 0.999)
    assert s.averaging_constant == pytest.approx(0.001, abs=1e-15)


def test_qconfig_defaults_are_tf_recipe():
    cfg = QConfig()
    w, a = cfg.weight, cfg.activation
    # weights: per output channel (axis 0), symmetric, narrow range, last value, 8 bits
    assert w == QuantSpec(
        num_bits=8, narrow_range=True, symmetric=True, per_channel=True, axis=0, range_source="last"
    )
    assert w.averaging_constant == 1.0
    # activations: per tensor, asymmetric, full range, EMA with decay 0.999, 8 bits
    assert a == QuantSpec(
        num_bits=8,
        narrow_range=False,
        symmetric=False,
        per_channel=False,
        range_source="ema",
        ema_decay=0.999,
    )
    assert cfg.schedule is None and cfg.unsupported == "error"
    # default factories: fresh but equal objects
    assert QConfig().weight == w and QConfig() == cfg


@pytest.mark.parametrize("num_bits", [1, 17, 0, -8, 8.0, "8", None, True])
def test_quant_spec_num_bits_invalid(num_bits):
    with pytest.raises(
        ValueError,
        match=re.escape(f"QuantSpec.num_bits must be an int in [2, 16], got {num_bits!r}"),
    ):
        QuantSpec(num_bits=num_bits)


@pytest.mark.parametrize("num_bits", [2, 4, 8, 16])
def test_quant_spec_num_bits_valid(num_bits):
    assert QuantSpec(num_bits=num_bits).num_bits == num_bits


@pytest.mark.parametrize("source", ["EMA", "max", "", None, 1, ("ema",)])
def test_quant_spec_range_source_invalid(source):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "QuantSpec.range_source must be 'last', 'ema', 'running' or 'histogram', "
            f"got {source!r}"
        ),
    ):
        QuantSpec(range_source=source)


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5, float("nan"), float("inf"), -float("inf")])
def test_quant_spec_ema_decay_invalid(decay):
    with pytest.raises(ValueError, match=re.escape("QuantSpec.ema_decay must be in [0, 1), got")):
        QuantSpec(ema_decay=decay)


@pytest.mark.parametrize(
    ("decay", "c"), [(0.0, 1.0), (0.5, 0.5), (0.999, 1.0 - 0.999), (0.99999, 1.0 - 0.99999)]
)
def test_quant_spec_averaging_constant(decay, c):
    assert QuantSpec(ema_decay=decay).averaging_constant == c
    # ema_decay only matters for "ema"
    assert QuantSpec(ema_decay=decay, range_source="last").averaging_constant == 1.0
    assert QuantSpec(ema_decay=decay, range_source="running").averaging_constant == 1.0


@pytest.mark.parametrize("axis", [0.0, "0", None])
def test_quant_spec_axis_invalid(axis):
    with pytest.raises(ValueError, match=re.escape(f"QuantSpec.axis must be an int, got {axis!r}")):
        QuantSpec(axis=axis)


def test_quant_spec_ema_decay_wrong_type_names_the_field():
    with pytest.raises((TypeError, ValueError), match="ema_decay"):
        QuantSpec(ema_decay="0.999")


@pytest.mark.parametrize(
    "changes", [{"narrow_range": "no"}, {"symmetric": None}, {"per_channel": "yes"}]
)
def test_quant_spec_bool_fields_wrong_type(changes):
    with pytest.raises((TypeError, ValueError), match=next(iter(changes))):
        QuantSpec(**changes)


def test_quant_spec_is_frozen_and_replace_validates():
    s = QuantSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_bits = 4
    s4 = s.replace(num_bits=4, symmetric=True)
    assert (s4.num_bits, s4.symmetric, s.num_bits, s.symmetric) == (4, True, 8, False)
    with pytest.raises(ValueError, match="num_bits"):
        s.replace(num_bits=17)
    with pytest.raises(ValueError, match="ema_decay"):
        s.replace(ema_decay=1.0)
    assert hash(QuantSpec()) == hash(QuantSpec())


def test_qconfig_rejects_per_channel_activation():
    with pytest.raises(ValueError, match=re.escape("QConfig.activation.per_channel must be False")):
        QConfig(activation=QuantSpec(per_channel=True))
    # per-channel weights are fine
    QConfig(weight=QuantSpec(per_channel=True, axis=1))


@pytest.mark.parametrize("field", ["weight", "activation"])
@pytest.mark.parametrize("value", [None, {"num_bits": 8}, 8, "QuantSpec()"])
def test_qconfig_wrong_types(field, value):
    with pytest.raises(
        TypeError,
        match=re.escape(f"QConfig.{field} must be a QuantSpec, got {type(value).__name__}"),
    ):
        QConfig(**{field: value})


def test_qconfig_is_frozen():
    cfg = QConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.unsupported = "float"


def test_exports():
    assert edgeqat.QuantSpec is QuantSpec and edgeqat.FakeQuantizer is FakeQuantizer
    assert [m.name for m in Mode] == ["OBSERVE", "FROZEN", "LEARN", "OFF"]


# --------------------------------------------------------------------------------------------
# FakeQuantizer construction


def test_fake_quantizer_construction_errors():
    with pytest.raises(TypeError, match="spec must be a QuantSpec, got dict"):
        FakeQuantizer({"num_bits": 8})
    per_channel = QuantSpec(per_channel=True)
    for channels in (None, 0, -3):
        with pytest.raises(ValueError, match=re.escape(f"got {channels!r}")):
            FakeQuantizer(per_channel, channels=channels)


def test_fake_quantizer_initial_state():
    q = FakeQuantizer(QuantSpec(per_channel=True, axis=1), channels=5)
    assert q.mode is Mode.OBSERVE and not q.has_range
    assert q.observed_min.shape == q.observed_max.shape == (5,)
    assert q.learned_min.shape == q.learned_max.shape == (5,)
    assert torch.isposinf(q.observed_min).all() and torch.isneginf(q.observed_max).all()
    assert set(q.state_dict()) == {
        "observed_min",
        "observed_max",
        "learned_min",
        "learned_max",
        "mode_code",
    }
    assert FakeQuantizer(QuantSpec()).observed_min.shape == ()
    assert FakeQuantizer(QuantSpec(), mode=Mode.FROZEN).mode is Mode.FROZEN


# --------------------------------------------------------------------------------------------
# OBSERVE


def _expected_per_tensor(q, x):
    """The fake-quant output for the quantizer's observed state, per the documented rule."""
    lo = torch.clamp(q.observed_min, max=0.0)
    hi = torch.clamp(q.observed_max, min=0.0)
    if q.spec.symmetric:
        b = torch.maximum(-lo, hi)
        lo, hi = -b, b
    return fq(x, lo, hi, q.spec.num_bits, q.spec.narrow_range)


def test_observe_training_updates_ema_and_quantizes_with_range_containing_zero():
    q = FakeQuantizer(QuantSpec()).train()
    # all-positive data: the observed range does not contain 0, the quantization range must
    xs = batches(6, (16, 8), seed=1, scale=0.5, offset=3.0)
    for i, x in enumerate(xs):
        y = q(x)
        want_lo, want_hi = ref_state(xs[: i + 1])
        assert_bitwise_equal(q.observed_min, want_lo)
        assert_bitwise_equal(q.observed_max, want_hi)
        assert q.observed_min > 0  # the state itself is not widened
        expected = fq(x, torch.clamp(want_lo, max=0.0), torch.clamp(want_hi, min=0.0))
        assert_bitwise_equal(y, expected)
    # the EMA really moved (not just last value or first batch)
    assert q.observed_max != ref_state(xs[-1:])[1] and q.observed_max != ref_state(xs[:1])[1]


def test_observe_all_negative_data_range_contains_zero():
    q = FakeQuantizer(QuantSpec(range_source="last")).train()
    x = torch.tensor([-3.0, -2.0, -1.5])
    y = q(x)
    assert (q.observed_min.item(), q.observed_max.item()) == (-3.0, -1.5)
    assert_bitwise_equal(y, fq(x, torch.tensor(-3.0), torch.tensor(0.0)))
    lo, hi = q.observed_range()
    assert (lo.item(), hi.item()) == (-3.0, 0.0)


def test_observe_quantizes_with_the_updated_range():
    """The batch is folded in before it is quantized: the first batch is not all zeros."""
    q = FakeQuantizer(QuantSpec()).train()
    x = torch.linspace(-1.0, 1.0, 11)
    y = q(x)
    assert_bitwise_equal(y, fq(x, torch.tensor(-1.0), torch.tensor(1.0)))
    assert y.abs().max() > 0.9


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_symmetric_per_channel_weights(axis):
    spec = QConfig().weight.replace(axis=axis)
    w_shape = (6, 4, 3)
    q = FakeQuantizer(spec, channels=w_shape[axis]).train()
    ws = batches(3, w_shape, seed=2)
    # skew the channels: some all positive, some all negative
    ch_shape = [1] * len(w_shape)
    ch_shape[axis] = w_shape[axis]
    shift = torch.tensor([3.0, -3.0, 0.0, 0.5, -0.5, 10.0][: w_shape[axis]]).reshape(ch_shape)
    ws = [w + shift for w in ws]
    for w in ws:
        y = q(w)
    # the last value, up to a rounding (see test_range_source_last_keeps_last_batch_exactly)
    want_lo, want_hi = ref_state(ws[-1:], "last", axis=axis)
    torch.testing.assert_close(q.observed_min, want_lo, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.observed_max, want_hi, rtol=0, atol=1e-5)
    # the quantization rule, bit-exact from the state the quantizer holds
    want_lo, want_hi = q.observed_min.clone(), q.observed_max.clone()
    b = torch.maximum(want_lo.abs(), want_hi.abs())
    assert_bitwise_equal(y, fq_pc(ws[-1], -b, b, axis, 8, True))
    lo, hi = q.observed_range()
    assert_bitwise_equal(lo, -b)
    assert_bitwise_equal(hi, b)
    # not the full-range grid, nor the asymmetric range
    assert not torch.equal(y, fq_pc(ws[-1], -b, b, axis, 8, False))
    assert not torch.equal(
        y, fq_pc(ws[-1], want_lo.clamp(max=0), want_hi.clamp(min=0), axis, 8, True)
    )


def test_symmetric_per_tensor():
    q = FakeQuantizer(QuantSpec(symmetric=True, narrow_range=True, range_source="last")).train()
    x = torch.tensor([-0.5, 0.25, 2.0])
    y = q(x)
    assert_bitwise_equal(y, fq(x, torch.tensor(-2.0), torch.tensor(2.0), 8, True))
    assert (
        y[2] == 2.0
        and y[0] == fq(torch.tensor([-0.5]), torch.tensor(-2.0), torch.tensor(2.0), 8, True)[0]
    )


def test_eval_mode_does_not_update():
    q = FakeQuantizer(QuantSpec()).train()
    xs = batches(3, (8, 8), seed=3)
    q(xs[0])
    lo0, hi0 = q.observed_min.clone(), q.observed_max.clone()
    q.eval()
    for x in xs[1:]:
        y = q(x)
        assert_bitwise_equal(q.observed_min, lo0)
        assert_bitwise_equal(q.observed_max, hi0)
        assert_bitwise_equal(y, _expected_per_tensor(q, x))
    assert q.mode is Mode.OBSERVE


def test_frozen_never_updates():
    q = FakeQuantizer(QuantSpec()).train()
    xs = batches(4, (8, 8), seed=4)
    q(xs[0])
    q.freeze()
    assert q.mode is Mode.FROZEN
    lo0, hi0 = q.observed_min.clone(), q.observed_max.clone()
    for training in (True, False):
        q.train(training)
        for x in xs[1:]:
            y = q(x * 5)
            assert_bitwise_equal(q.observed_min, lo0)
            assert_bitwise_equal(q.observed_max, hi0)
            assert_bitwise_equal(y, _expected_per_tensor(q, x * 5))
    # back to OBSERVE: updates resume from the same state
    q.observe().train()
    q(xs[1])
    want_lo, want_hi = ref_state([xs[0], xs[1]])
    assert_bitwise_equal(q.observed_min, want_lo)
    assert_bitwise_equal(q.observed_max, want_hi)


def test_off_is_identity():
    q = FakeQuantizer(QuantSpec(), mode=Mode.OFF).train()
    x = torch.randn(5, 3, requires_grad=True)
    y = q(x)
    assert y is x
    assert not q.has_range  # nothing observed, and no error without a range
    q.eval()
    assert q(x) is x
    # after observing: OFF still passes through, state untouched
    q.observe().train()
    q(x.detach())
    lo0 = q.observed_min.clone()
    q.disable()
    x2 = x.detach() * 100
    assert q(x2) is x2
    assert_bitwise_equal(q.observed_min, lo0)


def test_range_source_running_accumulates():
    q = FakeQuantizer(QuantSpec(range_source="running")).train()
    xs = [
        torch.tensor([-1.0, 1.0]),
        torch.tensor([-3.0, 0.5]),
        torch.tensor([0.0, 2.0]),
        torch.tensor([-0.1, 0.1]),
    ]
    for x in xs:
        q(x)
    assert (q.observed_min.item(), q.observed_max.item()) == (-3.0, 2.0)
    want = ref_state(xs, "running")
    assert_bitwise_equal(q.observed_min, want[0])


def test_range_source_last_keeps_last_batch():
    q = FakeQuantizer(QuantSpec(range_source="last")).train()
    xs = [torch.tensor([-1.0, 1.0]), torch.tensor([-3.0, 5.0]), torch.tensor([-0.25, 0.75])]
    for x in xs:
        q(x)
    assert (q.observed_min.item(), q.observed_max.item()) == (-0.25, 0.75)
    # to a rounding of batch - old (see test_range_source_last_keeps_last_batch_exactly)
    xs = batches(4, (6, 5), seed=10, scale=100.0) + [torch.tensor([-0.1, 3.7])]
    for x in xs:
        q(x)
    torch.testing.assert_close(q.observed_min, torch.tensor(-0.1), rtol=0, atol=1e-4)
    torch.testing.assert_close(q.observed_max, torch.tensor(3.7), rtol=0, atol=1e-4)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(
    "changes", [{"range_source": "last"}, {"range_source": "ema", "ema_decay": 0.0}]
)
def test_range_source_last_keeps_last_batch_exactly(per_channel, changes):
    spec = QuantSpec(per_channel=per_channel, **changes)
    q = FakeQuantizer(spec, channels=2 if per_channel else None).train()
    q(torch.tensor([[-1000.0, 1000.0], [1000.0, -1000.0]]))
    x = torch.tensor([[-0.1, 3.7], [3.7, -0.1]])
    q(x)
    want = (torch.tensor([-0.1, -0.1]), torch.tensor([3.7, 3.7]))
    if not per_channel:
        want = (want[0][0], want[1][0])
    assert_bitwise_equal(q.observed_min, want[0])
    assert_bitwise_equal(q.observed_max, want[1])


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])  # 0.0: see ..._keeps_last_batch_exactly
def test_ema_decay_is_used(decay):
    q = FakeQuantizer(QuantSpec(ema_decay=decay)).train()
    xs = batches(5, (32,), seed=5)
    for x in xs:
        q(x)
    want_lo, want_hi = ref_state(xs, "ema", decay)
    assert_bitwise_equal(q.observed_min, want_lo)
    assert_bitwise_equal(q.observed_max, want_hi)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_input_dtypes(dtype):
    q = FakeQuantizer(QuantSpec()).train()
    x = (torch.randn(16, generator=torch.Generator().manual_seed(6)) * 3).to(dtype)
    y = q(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert q.observed_min.dtype == torch.float32
    assert q.observed_min.item() == float(x.min().float())
    assert_bitwise_equal(y, _expected_per_tensor(q, x))


def test_observe_input_requiring_grad():
    q = FakeQuantizer(QuantSpec()).train()
    x = torch.randn(4, 4, requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert x.grad is not None
    assert not q.observed_min.requires_grad and q.observed_min.grad_fn is None
    assert q.learned_min.grad is None  # not used in OBSERVE


def test_channels_mismatch_is_a_clear_error():
    q = FakeQuantizer(QuantSpec(per_channel=True), channels=4).train()
    with pytest.raises(RuntimeError, match=re.escape("x.size(0) = 5, got shape [4]")):
        q(torch.randn(5, 3))


def test_per_channel_quantizer_on_1d_tensor():
    q = FakeQuantizer(QuantSpec(per_channel=True, symmetric=True), channels=3).train()
    x = torch.tensor([1.0, -2.0, 3.0])
    y = q(x)
    b = x.abs()
    assert_bitwise_equal(y, fq_pc(x, -b, b, 0, 8, False))


# --------------------------------------------------------------------------------------------
# No observed range


@pytest.mark.parametrize(
    "action",
    ["frozen", "observe_eval", "learn", "quant_range", "observed_range"],
)
def test_no_observed_range_is_a_clear_error(action):
    q = FakeQuantizer(QuantSpec(per_channel=True, axis=0), channels=3)
    x = torch.randn(3, 2)
    with pytest.raises(
        RuntimeError,
        match=r"FakeQuantizer\(per-channel \(axis 0\), 8 bits\) has no observed range yet",
    ):
        if action == "frozen":
            q.freeze().train()(x)
        elif action == "observe_eval":
            q.eval()(x)
        elif action == "learn":
            q.learn()
        elif action == "quant_range":
            q.quant_range()
        else:
            q.observed_range()
    assert not q.has_range


def test_partially_observed_channels_have_no_range():
    q = FakeQuantizer(QuantSpec(per_channel=True), channels=3)
    with torch.no_grad():
        q.observed_min[:2] = -1.0
        q.observed_max[:2] = 1.0
    assert not q.has_range
    with pytest.raises(RuntimeError, match="has no observed range yet"):
        q.eval()(torch.randn(3, 2))
    # observing a batch completes it (the fresh channel takes the batch range)
    q.train()(torch.ones(3, 2) * 0.5)
    assert q.has_range
    assert q.observed_min.tolist()[2] == 0.5


def test_constructed_in_learn_mode_without_range_is_an_error():
    with pytest.raises(ValueError, match="needs an observed range"):
        FakeQuantizer(QuantSpec(), mode=Mode.LEARN)


# --------------------------------------------------------------------------------------------
# LEARN


def test_learn_initialises_from_observed_range():
    q = FakeQuantizer(QuantSpec(range_source="last")).train()
    q(torch.tensor([0.5, 2.0]))  # range [0.5, 2] -> quantization range [0, 2]
    q.learn()
    assert q.mode is Mode.LEARN
    assert (q.learned_min.item(), q.learned_max.item()) == (0.0, 2.0)
    assert q.learned_min.grad_fn is None and q.learned_min.requires_grad
    # already in LEARN: learn() again does not reset learned values
    with torch.no_grad():
        q.learned_max.fill_(3.0)
    q.learn()
    assert q.learned_max.item() == 3.0


def test_learn_does_not_observe():
    q = FakeQuantizer(QuantSpec()).train()
    q(torch.tensor([-1.0, 1.0]))
    q.learn()
    lo0, hi0 = q.observed_min.clone(), q.observed_max.clone()
    q(torch.tensor([-10.0, 10.0]))
    assert_bitwise_equal(q.observed_min, lo0)
    assert_bitwise_equal(q.observed_max, hi0)


def test_learn_gradients_reach_ranges_and_sgd_changes_them():
    q = FakeQuantizer(QuantSpec(range_source="last")).train()
    q(torch.tensor([-1.0, 1.0]))
    q.learn()
    # values below, inside and above the range
    x = torch.tensor([-3.0, -2.0, -0.5, 0.0, 0.3, 0.9, 1.5, 4.0, 5.0])
    y = q(x)
    lo_ref = torch.tensor(-1.0, requires_grad=True)
    hi_ref = torch.tensor(1.0, requires_grad=True)
    y_ref = fq(x, lo_ref, hi_ref)
    assert_bitwise_equal(y, y_ref)
    g = torch.arange(1.0, 10.0)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    assert_bitwise_equal(q.learned_min.grad, lo_ref.grad)
    assert_bitwise_equal(q.learned_max.grad, hi_ref.grad)
    assert q.learned_min.grad.item() == 1.0 + 2.0  # gradient of the two values below
    assert q.learned_max.grad.item() == 7.0 + 8.0 + 9.0  # the three above
    opt = torch.optim.SGD([q.learned_min, q.learned_max], lr=0.01)
    opt.step()
    assert q.learned_min.item() == pytest.approx(-1.0 - 0.03)
    assert q.learned_max.item() == pytest.approx(1.0 - 0.24)
    # the new range is used in the next forward
    y2 = q(x)
    assert_bitwise_equal(y2, fq(x, q.learned_min.detach(), q.learned_max.detach()))
    assert not torch.equal(y2, y)


def test_learn_per_channel_gradients():
    spec = QuantSpec(per_channel=True, axis=1, range_source="last")
    q = FakeQuantizer(spec, channels=3).train()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(8))
    q(x)
    q.learn()
    x2 = x * 2
    y = q(x2)
    lo_ref = q.learned_min.detach().clone().requires_grad_()
    hi_ref = q.learned_max.detach().clone().requires_grad_()
    y_ref = fq_pc(x2, lo_ref, hi_ref, 1, 8, False)
    assert_bitwise_equal(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    assert_bitwise_equal(q.learned_min.grad, lo_ref.grad)
    assert_bitwise_equal(q.learned_max.grad, hi_ref.grad)
    assert (q.learned_min.grad != 0).any() and (q.learned_max.grad != 0).any()


def test_symmetric_learn_uses_learned_max_as_bound():
    spec = QConfig().weight  # symmetric, narrow, per channel
    q = FakeQuantizer(spec, channels=2).train()
    w = torch.tensor([[-1.0, 0.5], [0.25, -2.0]])
    q(w)
    q.learn()
    assert q.learned_min.tolist() == [-1.0, -2.0] and q.learned_max.tolist() == [1.0, 2.0]
    with torch.no_grad():
        q.learned_min.fill_(-100.0)  # ignored when symmetric
        q.learned_max.copy_(torch.tensor([0.5, -1.5]))  # the bound is |learned_max|
    x = torch.tensor([[-3.0, 0.2, 0.7, 0.9], [1.0, -4.0, 0.1, 0.0]])
    y = q(x)
    b = torch.tensor([0.5, 1.5])
    assert_bitwise_equal(y, fq_pc(x, -b, b, 0, 8, True))
    lo, hi = q.quant_range()
    assert_bitwise_equal(lo, -b)
    assert_bitwise_equal(hi, b)
    y.sum().backward()
    # d/dm of fq(x, -|m|, |m|) = sign(m) * (grad above - grad below)
    m = q.learned_max.detach().clone().requires_grad_()
    fq_pc(x, -m.abs(), m.abs(), 0, 8, True).sum().backward()
    assert_bitwise_equal(q.learned_max.grad, m.grad)
    assert q.learned_max.grad.tolist() == [1.0, 1.0]  # ch 0: 2 above - 1 below; ch 1: -(0 - 1)
    assert q.learned_min.grad is None or (q.learned_min.grad == 0).all()
    opt = torch.optim.SGD([q.learned_max], lr=0.1)
    before = q.learned_max.detach().clone()
    opt.step()
    assert not torch.equal(q.learned_max.detach(), before)


@pytest.mark.parametrize("per_channel", [False, True])
def test_crossing_learned_ends_gives_zeros_not_errors(per_channel):
    spec = QuantSpec(per_channel=per_channel, range_source="last")
    q = FakeQuantizer(spec, channels=2 if per_channel else None).train()
    x = torch.tensor([[-1.0, 2.0], [0.5, -0.5]])
    q(x)
    q.learn()
    with torch.no_grad():
        q.learned_min.fill_(0.75)
        q.learned_max.fill_(-0.75)
    y = q(x)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()  # no error in backward either
    lo, hi = q.quant_range()
    assert torch.equal(lo, hi)


# --------------------------------------------------------------------------------------------
# state_dict


@pytest.mark.parametrize("mode", list(Mode))
def test_mode_survives_state_dict_round_trip(mode):
    q = FakeQuantizer(QuantSpec()).train()
    q(torch.randn(8))
    q.set_mode(mode)
    sd = q.state_dict()
    assert sd["mode_code"].item() == int(mode)
    fresh = FakeQuantizer(QuantSpec())
    assert fresh.mode is Mode.OBSERVE
    fresh.load_state_dict(sd)
    assert fresh.mode is mode
    for name in ("observed_min", "observed_max", "learned_min", "learned_max"):
        assert_bitwise_equal(getattr(fresh, name), getattr(q, name))


@pytest.mark.parametrize(
    "spec",
    [QuantSpec(), QuantSpec(range_source="running"), QConfig().weight.replace(axis=1)],
    ids=["ema", "running", "weight_axis1"],
)
def test_state_dict_mid_training_continues_identically(spec):
    channels = 5 if spec.per_channel else None
    xs = batches(8, (4, 5), seed=9)
    q = FakeQuantizer(spec, channels=channels).train()
    for x in xs[:3]:
        q(x)
    fresh = FakeQuantizer(spec, channels=channels).train()
    fresh.load_state_dict(q.state_dict())
    for x in xs[3:]:
        assert_bitwise_equal(fresh(x), q(x))
        for name, t in q.state_dict().items():
            assert_bitwise_equal(fresh.state_dict()[name], t)
    # and the same as never having stopped
    if spec.range_source == "last":
        return  # off by an ulp: test_range_source_last_keeps_last_batch_exactly
    want_lo, want_hi = ref_state(
        xs, spec.range_source, spec.ema_decay, 1 if spec.per_channel else None
    )
    assert_bitwise_equal(fresh.observed_min, want_lo)
    assert_bitwise_equal(fresh.observed_max, want_hi)


def test_state_dict_round_trip_in_learn_mode():
    q = FakeQuantizer(QuantSpec()).train()
    q(torch.randn(16))
    q.learn()
    with torch.no_grad():
        q.learned_max.add_(0.5)
    fresh = FakeQuantizer(QuantSpec())
    fresh.load_state_dict(q.state_dict())
    assert fresh.mode is Mode.LEARN
    x = torch.randn(16) * 3
    assert_bitwise_equal(fresh(x), q(x))


def test_load_state_dict_switches_the_mode_mirror():
    """forward reads a Python mirror of mode_code: loading a state in another mode must switch
    what forward does, not only what mode_code holds."""
    src = FakeQuantizer(QuantSpec(range_source="last")).train()
    src(torch.tensor([-1.0, 1.0]))
    src.freeze()
    dst = FakeQuantizer(QuantSpec(range_source="last")).train()
    dst(torch.tensor([-5.0, 5.0]))
    assert dst.mode is Mode.OBSERVE
    dst.load_state_dict(src.state_dict())
    assert dst.mode is Mode.FROZEN and dst.mode_code.item() == int(Mode.FROZEN)
    x = torch.tensor([-3.0, 0.5, 3.0])
    y = dst(x)  # FROZEN: no update, the loaded range [-1, 1]
    assert (dst.observed_min.item(), dst.observed_max.item()) == (-1.0, 1.0)
    assert_bitwise_equal(y, fq(x, torch.tensor(-1.0), torch.tensor(1.0)))
    # and back: a state saved in OBSERVE puts the quantizer back to observing
    dst.load_state_dict(FakeQuantizer(QuantSpec(range_source="last")).state_dict())
    assert dst.mode is Mode.OBSERVE and not dst.has_range
    dst(x)
    assert (dst.observed_min.item(), dst.observed_max.item()) == (-3.0, 3.0)


def test_load_state_dict_without_range_forgets_the_range():
    q = FakeQuantizer(QuantSpec()).train()
    q(torch.randn(8))
    assert q.has_range
    q.load_state_dict(FakeQuantizer(QuantSpec(), mode=Mode.FROZEN).state_dict())
    assert q.mode is Mode.FROZEN and not q.has_range
    with pytest.raises(RuntimeError, match="has no observed range yet"):
        q(torch.randn(8))


@pytest.mark.parametrize("code", [4, 255])
def test_load_state_dict_rejects_unknown_mode_code(code):
    q = FakeQuantizer(QuantSpec())
    sd = q.state_dict()
    sd["mode_code"] = torch.tensor(code, dtype=torch.uint8)
    with pytest.raises(
        RuntimeError, match=re.escape(f"mode_code: {code} is not a Mode (0=OBSERVE")
    ):
        q.load_state_dict(sd)
    assert q.mode is Mode.OBSERVE and q.mode_code.item() == 0


class _RecordOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", [Mode.OBSERVE, Mode.FROZEN, Mode.LEARN])
@pytest.mark.parametrize("training", [True, False])
def test_forward_reads_no_tensor_on_the_host(mode, training):
    """No .item() / bool(tensor) in forward once a range is known: such a read waits for the
    device and breaks a torch.compile graph."""
    q = FakeQuantizer(QuantSpec(per_channel=True, axis=1), channels=3).train()
    q(torch.randn(4, 3))
    q.set_mode(mode).train(training)
    with _RecordOps() as rec:
        q(torch.randn(4, 3))
    assert rec.names, "the recorder saw nothing"
    host_reads = [n for n in rec.names if n.startswith(("_local_scalar_dense", "all", "any"))]
    assert not host_reads, rec.names


@pytest.fixture
def fresh_compile_cache(tmp_path):
    torch._dynamo.reset()
    with torch._inductor.utils.fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("mode", [Mode.OBSERVE, Mode.FROZEN, Mode.LEARN])
@pytest.mark.parametrize(
    "spec",
    [QuantSpec(), QConfig().weight.replace(axis=1)],
    ids=["ema_per_tensor", "weight_per_channel"],
)
def test_compile_fullgraph_matches_eager(fresh_compile_cache, mode, spec):
    channels = 5 if spec.per_channel else None
    xs = batches(4, (6, 5), seed=11, scale=2.0)
    eager = FakeQuantizer(spec, channels=channels).train()
    eager(xs[0] * 0.5)
    eager.set_mode(mode)
    compiled_q = FakeQuantizer(spec, channels=channels).train()
    compiled_q.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_q, fullgraph=True, dynamic=False)
    for x in xs:
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = eager(xe), compiled(xc)
        assert_bitwise_equal(yc, ye)
        g = torch.linspace(-1.0, 1.0, ye.numel()).reshape(ye.shape)
        (ye * g).sum().backward()
        (yc * g).sum().backward()
        assert_bitwise_equal(xc.grad, xe.grad)
        for name, t in eager.state_dict().items():
            assert_bitwise_equal(compiled_q.state_dict()[name], t)
    if mode is Mode.LEARN:
        assert_bitwise_equal(compiled_q.learned_max.grad, eager.learned_max.grad)
        assert (eager.learned_max.grad != 0).any()
    if mode is Mode.OBSERVE:  # the compiled graph really observed
        axis = spec.axis if spec.per_channel else None
        want = ref_state([xs[0] * 0.5, *xs], spec.range_source, spec.ema_decay, axis)
        assert_bitwise_equal(compiled_q.observed_max, want[1])
