"""The quantized modules (edgeqat.nn) and the model-level controls against slow, obvious
references written here from torch.ops.edgeqat.* and plain torch (F.conv2d, F.linear,
torch.nn.BatchNorm2d).

Forward outputs and gradients are compared bit for bit (torch.equal): each reference runs the
same float operations in the same order as the numerics spec (int8-numerics.md sections 1 and
6), so any difference is a defect, not rounding. The float-model comparisons (folded float
graph against conv + BN, QAT against float) state their tolerances. One exception: ConvBn2d's
gamma gradient, whose fold part is a per-channel sum that the fused weight op
(fold_weight_fake_quant_) adds in another order (assert_fold_grad_close).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F
from helpers import int8_bias
from torch import nn

import edgeqat
from edgeqat import (
    ActQuant,
    ConvBn2d,
    Mode,
    QConfig,
    QuantAdd,
    QuantConv2d,
    QuantLinear,
    QuantSpec,
)
from edgeqat.nn import SharedActQuant
from edgeqat.nn._bias import int32_bias

ops = torch.ops.edgeqat


# --------------------------------------------------------------------------------------------
# References


def fq_weight(w: torch.Tensor) -> torch.Tensor:
    """The default weight quantization: 8 bits, narrow range, symmetric bound max|w| per output
    channel (axis 0), the range of this very weight ("last" range source)."""
    bound = w.detach().abs().amax(dim=tuple(range(1, w.dim())))
    return ops.fake_quant_with_min_max_vars_per_channel(w, -bound, bound, 0, 8, True)


def fq_act(x: torch.Tensor) -> torch.Tensor:
    """The default activation quantization of a first batch: 8 bits, asymmetric, the batch
    range widened to contain 0."""
    lo = x.detach().amin().clamp(max=0.0)
    hi = x.detach().amax().clamp(min=0.0)
    return ops.fake_quant_with_min_max_vars(x, lo, hi, 8, False)


def fold(weight, bias, gamma, beta, mean, var, eps):
    """Inference BN fold: f = gamma / sqrt(var + eps), W' = W f, b' = (b - mean) f + beta."""
    f = gamma / torch.sqrt(var + eps)
    b = bias if bias is not None else torch.zeros_like(mean)
    return f, weight * f.reshape(-1, 1, 1, 1), (b - mean) * f + beta


def activate(y, activation):
    if activation == "relu":
        return torch.clamp(y, min=0.0)
    if activation == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    return y


def forget_weight_range(module: nn.Module) -> None:
    """Mark the weight quantizer as not observed, so its next batch sets the range directly
    (the references compute each step's weight range from scratch)."""
    module.weight_quant.observed_min.fill_(float("inf"))
    module.weight_quant.observed_max.fill_(float("-inf"))


def assert_fold_grad_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """ConvBn2d's gradient to gamma (bn.weight). Part of it comes through the fold factor
    f = gamma / sqrt(var + eps) as a per-channel sum over the weight's elements, which
    fold_weight_fake_quant_ adds in double and rounds once and autograd adds in float in its own
    order: the same terms (bit for bit), not the same rounding of their sum. Both are within a
    few float ulps of the sum of the terms' magnitudes, which here stays below the largest
    gradient: 1e-5 of it bounds the difference with a wide margin (seen: below 3e-7)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def leaf(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone().requires_grad_(True)


def random_bn(channels: int, seed: int, momentum: float | None = 0.1) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g))  # negative gammas included
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.num_batches_tracked.fill_(7)
    return bn


# --------------------------------------------------------------------------------------------
# QuantLinear / QuantConv2d

CONV_CASES = {
    "3x3": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    "stride2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    "dilation2": dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, dilation=2),
    "depthwise": dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6),
    "depthwise_stride2": dict(
        in_channels=6, out_channels=12, kernel_size=3, stride=2, padding=1, groups=6
    ),
    "grouped_rect_same": dict(
        in_channels=4, out_channels=6, kernel_size=(3, 1), padding="same", groups=2
    ),
    "1x1_nobias": dict(in_channels=4, out_channels=6, kernel_size=1, bias=False),
}


def conv_args(m):
    return dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)


@pytest.mark.parametrize("bias", [True, False])
def test_quant_linear_matches_reference(bias):
    torch.manual_seed(0)
    fc = QuantLinear.from_float(nn.Linear(12, 5, bias=bias))
    x = torch.randn(3, 2, 12)
    grad = torch.randn(3, 2, 5)
    for _ in range(2):
        w, b, xr = leaf(fc.weight), leaf(fc.bias), leaf(x)
        expected = F.linear(xr, fq_weight(w), b)
        expected.backward(grad)
        xq = leaf(x)
        fc.zero_grad()
        y = fc(xq)
        y.backward(grad)
        assert torch.equal(y, expected)
        assert torch.equal(fc.weight.grad, w.grad)
        assert torch.equal(xq.grad, xr.grad)
        if bias:
            assert torch.equal(fc.bias.grad, b.grad)
        with torch.no_grad():  # a new weight: the range follows it
            fc.weight.mul_(1.5)
        forget_weight_range(fc)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_quant_conv2d_matches_reference(case):
    torch.manual_seed(1)
    conv = QuantConv2d(**CONV_CASES[case])
    x = torch.randn(2, conv.in_channels, 9, 8)
    w, b, xr = leaf(conv.weight), leaf(conv.bias), leaf(x)
    expected = F.conv2d(xr, fq_weight(w), b, **conv_args(conv))
    grad = torch.randn_like(expected)
    expected.backward(grad)
    xq = leaf(x)
    y = conv(xq)
    y.backward(grad)
    assert torch.equal(y, expected)
    assert torch.equal(conv.weight.grad, w.grad)
    assert torch.equal(xq.grad, xr.grad)
    if b is not None:
        assert torch.equal(conv.bias.grad, b.grad)
    # Eval mode quantizes with the observed range, the same one here.
    conv.eval()
    assert torch.equal(conv(x), expected.detach())


def test_learned_weight_ranges_get_gradients():
    torch.manual_seed(2)
    conv = QuantConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    conv(x)  # observe
    conv.weight_quant.learn()
    with torch.no_grad():  # a narrower range clips the largest weights: d max != 0
        conv.weight_quant.learned_max.mul_(0.6)
    bound = leaf(conv.weight_quant.learned_max)
    w = leaf(conv.weight)
    b_ = bound.abs()
    expected = F.conv2d(
        x, ops.fake_quant_with_min_max_vars_per_channel(w, -b_, b_, 0, 8, True), conv.bias, 1, 1
    )
    grad = torch.randn_like(expected)
    expected.backward(grad)
    y = conv(x)
    y.backward(grad)
    assert torch.equal(y, expected)
    assert torch.equal(conv.weight_quant.learned_max.grad, bound.grad)
    assert (bound.grad != 0).all()
    assert torch.equal(conv.weight.grad, w.grad)
    # Symmetric: the range is [-|learned_max|, |learned_max|]; learned_min takes no part.
    assert conv.weight_quant.learned_min.grad is None


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_from_float_to_float_round_trip(case):
    torch.manual_seed(3)
    float_conv = nn.Conv2d(**CONV_CASES[case])
    qconv = QuantConv2d.from_float(float_conv)
    assert qconv.config == QConfig()
    assert qconv.weight is not float_conv.weight
    assert torch.equal(qconv.weight, float_conv.weight)
    back = qconv.to_float()
    assert type(back) is nn.Conv2d
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
        assert getattr(back, name) == getattr(float_conv, name), name
    assert (back.dilation, back.groups) == (float_conv.dilation, float_conv.groups)
    assert torch.equal(back.weight, float_conv.weight)
    assert (back.bias is None) == (float_conv.bias is None)
    if back.bias is not None:
        assert torch.equal(back.bias, float_conv.bias)
    x = torch.randn(2, float_conv.in_channels, 7, 7)
    assert torch.equal(back(x), float_conv(x))
    # With the quantizer off, the module is the float conv.
    qconv.weight_quant.disable()
    assert torch.equal(qconv(x), float_conv(x))
    with torch.no_grad():  # copies, not shared storage
        qconv.weight.add_(1.0)
    assert torch.equal(back.weight, float_conv.weight)


def test_linear_from_float_to_float_round_trip():
    torch.manual_seed(4)
    fc = nn.Linear(7, 3).eval()
    cfg = QConfig(weight=QConfig().weight.replace(num_bits=4))
    q = QuantLinear.from_float(fc, cfg)
    assert q.config is cfg and not q.training
    back = q.to_float()
    assert type(back) is nn.Linear and not back.training
    assert torch.equal(back.weight, fc.weight) and torch.equal(back.bias, fc.bias)
    assert back.weight.data_ptr() != q.weight.data_ptr()
    assert QuantLinear.from_float(nn.Linear(7, 3, bias=False)).to_float().bias is None


def test_per_tensor_weight_config():
    torch.manual_seed(5)
    cfg = QConfig(weight=QConfig().weight.replace(per_channel=False))
    conv = QuantConv2d(3, 4, 3, config=cfg)
    x = torch.randn(1, 3, 5, 5)
    bound = conv.weight.detach().abs().amax()
    wq = ops.fake_quant_with_min_max_vars(conv.weight, -bound, bound, 8, True)
    assert torch.equal(conv(x), F.conv2d(x, wq, conv.bias))


def test_conv_errors():
    with pytest.raises(ValueError, match="padding_mode='zeros' only.*'reflect'"):
        QuantConv2d(3, 4, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='zeros' only.*'circular'"):
        QuantConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"))
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        ConvBn2d.from_float(nn.Conv2d(3, 4, 3, padding_mode="replicate"), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="groups=2"):
        QuantConv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        QuantConv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="axis=0.*axis=1"):
        QuantLinear(3, 4, config=QConfig(weight=QConfig().weight.replace(axis=1)))
    with pytest.raises(TypeError, match="torch.nn.Conv2d"):
        QuantConv2d.from_float(nn.Linear(3, 4))
    with pytest.raises(TypeError, match="QConfig"):
        QuantLinear(3, 4, config=QConfig().weight)


def test_last_range_is_exact():
    g = torch.Generator().manual_seed(0)
    fc = QuantLinear(64, 64)
    for step in range(20):
        w = torch.randn(64, 64, generator=g) * (step + 1)
        with torch.no_grad():
            fc.weight.copy_(w)
        fc(torch.randn(1, 64))
        assert torch.equal(fc.weight_quant.observed_max, w.amax(1)), step
        assert torch.equal(fc.weight_quant.observed_min, w.amin(1)), step


# --------------------------------------------------------------------------------------------
# ConvBn2d

CONVBN_CASES = {
    "3x3": dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, bias=False),
    "3x3_bias": dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, bias=True),
    "depthwise_stride2": dict(
        in_channels=5, out_channels=5, kernel_size=3, stride=2, padding=1, groups=5, bias=False
    ),
    "dilation2_bias": dict(
        in_channels=3, out_channels=4, kernel_size=3, padding=2, dilation=2, bias=True
    ),
}


def make_convbn(case, activation=None, seed=0, momentum=0.1):
    torch.manual_seed(seed)
    kwargs = dict(CONVBN_CASES[case])
    conv = nn.Conv2d(**kwargs)
    bn = random_bn(conv.out_channels, seed + 100, momentum)
    return ConvBn2d.from_float(conv, bn, activation=activation), conv, bn


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("case", list(CONVBN_CASES))
def test_convbn_frozen_is_the_folded_conv(case, activation):
    m, conv, bn = make_convbn(case, activation, seed=10)
    m.freeze_bn()
    x = torch.randn(4, conv.in_channels, 8, 8) * 2
    w, b, gamma, beta = leaf(conv.weight), leaf(conv.bias), leaf(bn.weight), leaf(bn.bias)
    _, w_fold, b_fold = fold(w, b, gamma, beta, bn.running_mean, bn.running_var, bn.eps)
    expected = activate(F.conv2d(x, fq_weight(w_fold), b_fold, **conv_args(conv)), activation)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    y = m(x)  # training mode, BN frozen
    y.backward(grad)
    assert m.training and m.is_bn_frozen
    assert torch.equal(y, expected)
    # The running statistics no longer move.
    assert torch.equal(m.bn.running_mean, bn.running_mean)
    assert torch.equal(m.bn.running_var, bn.running_var)
    assert int(m.bn.num_batches_tracked) == 7
    # Gradients reach every parameter through the fold.
    assert torch.equal(m.weight.grad, w.grad)
    assert_fold_grad_close(m.bn.weight.grad, gamma.grad)
    assert torch.equal(m.bn.bias.grad, beta.grad)
    if b is not None:
        assert torch.equal(m.bias.grad, b.grad)
    # The exporter's view is the same fold.
    w_exp, b_exp = m.folded_weight_and_bias()
    assert torch.equal(w_exp, w_fold.detach()) and torch.equal(b_exp, b_fold.detach())
    assert not w_exp.requires_grad and not b_exp.requires_grad


@pytest.mark.parametrize("case", ["3x3_bias", "depthwise_stride2"])
def test_convbn_eval_is_the_folded_conv(case):
    """Eval mode without freezing: the folded graph with the running statistics."""
    m, conv, bn = make_convbn(case, "relu", seed=11)
    x = torch.randn(3, conv.in_channels, 8, 8)
    m(x)  # training step: observes the weight, updates the running statistics
    forget_weight_range(m)
    m(x)
    m.eval()
    with torch.no_grad():
        _, w_fold, b_fold = fold(
            m.weight, m.bias, m.bn.weight, m.bn.bias, m.bn.running_mean, m.bn.running_var, bn.eps
        )
    # The weight range was observed before BN's last update: quantize with it, as export does.
    lo, hi = m.weight_quant.quant_range()
    wq = ops.fake_quant_with_min_max_vars_per_channel(w_fold, lo, hi, 0, 8, True)
    stats = (m.bn.running_mean.clone(), m.bn.running_var.clone())
    y = m(x)
    assert torch.equal(y, F.relu(F.conv2d(x, wq, b_fold, **conv_args(conv))))
    assert torch.equal(m.bn.running_mean, stats[0]) and torch.equal(m.bn.running_var, stats[1])


def simulate_training(x, conv, ref_bn, activation):
    """The training-mode reference: conv with the fake-quantized folded weight divided by the
    fold factor (the un-folded weight on the folded grid) and the conv bias, then the float
    BatchNorm2d with batch statistics (which updates ref_bn's running statistics). gamma = 0
    channels: the float weight."""
    w, b = conv.weight, conv.bias
    f, w_fold, _ = fold(w, b, ref_bn.weight, ref_bn.bias, ref_bn.running_mean,
                        ref_bn.running_var, ref_bn.eps)  # fmt: skip
    w_q = fq_weight(w_fold)
    channels = []
    for c in range(w.shape[0]):
        channels.append(w[c] if f[c] == 0 else w_q[c] / f[c])
    y = F.conv2d(x, torch.stack(channels), b, **conv_args(conv))
    return activate(ref_bn(y), activation)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("activation", [None, "relu6"])
@pytest.mark.parametrize("case", list(CONVBN_CASES))
def test_convbn_training_matches_simulation(case, activation, momentum):
    m, conv, bn = make_convbn(case, activation, seed=20, momentum=momentum)
    ref_conv, ref_bn = leaf_module(conv), leaf_module(bn).train()
    for step in range(3):
        x = torch.randn(4, conv.in_channels, 8, 8) * (step + 1) + step
        expected = simulate_training(x, ref_conv, ref_bn, activation)
        grad = torch.randn_like(expected)
        expected.backward(grad)
        forget_weight_range(m)
        y = m(x)
        y.backward(grad)
        assert torch.equal(y, expected), step
        assert torch.equal(m.bn.running_mean, ref_bn.running_mean), step
        assert torch.equal(m.bn.running_var, ref_bn.running_var), step
        assert torch.equal(m.bn.num_batches_tracked, ref_bn.num_batches_tracked), step
        for got, want in [
            (m.weight, ref_conv.weight),
            (m.bias, ref_conv.bias),
            (m.bn.bias, ref_bn.bias),
        ]:
            if got is not None:
                assert torch.equal(got.grad, want.grad), step
        assert_fold_grad_close(m.bn.weight.grad, ref_bn.weight.grad)
    assert int(m.bn.num_batches_tracked) == 10


def leaf_module(module: nn.Module) -> nn.Module:
    """A deep copy with fresh leaves (gradients accumulate separately)."""
    return copy.deepcopy(module)


def test_convbn_training_is_close_to_float_conv_bn():
    """Sanity of the un-fold: QAT training output against the float conv + BatchNorm2d (8-bit
    weights: within 0.05 on BN-normalised outputs; running statistics within 1 %)."""
    m, conv, bn = make_convbn("3x3", seed=21)
    float_bn = copy.deepcopy(bn).train()
    x = torch.randn(8, 3, 10, 10)
    with torch.no_grad():
        y = m(x)
        expected = float_bn(conv(x))
    torch.testing.assert_close(y, expected, atol=0.05, rtol=0)
    torch.testing.assert_close(m.bn.running_mean, float_bn.running_mean, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(m.bn.running_var, float_bn.running_var, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("case", ["3x3_bias", "depthwise_stride2"])
def test_convbn_gamma_zero(case, activation):
    m, conv, bn = make_convbn(case, activation, seed=30)
    zero = torch.tensor([1, 3])
    with torch.no_grad():
        m.bn.weight[zero] = 0.0
        bn.weight[zero] = 0.0
    beta = bn.bias.detach()
    ref_conv, ref_bn = leaf_module(conv), leaf_module(bn).train()
    x = torch.randn(4, conv.in_channels, 8, 8)

    # Training, BN learning: finite; gamma = 0 channels are exactly beta (after activation).
    expected = simulate_training(x, ref_conv, ref_bn, activation)
    y = m(x)
    assert torch.isfinite(y).all()
    assert torch.equal(y, expected)
    assert torch.equal(
        y[:, zero], activate(beta[zero].reshape(1, -1, 1, 1), activation).expand_as(y[:, zero])
    )
    # Running statistics of those channels follow the float conv output, like BatchNorm2d's.
    assert torch.isfinite(m.bn.running_mean).all() and torch.isfinite(m.bn.running_var).all()
    assert torch.equal(m.bn.running_mean, ref_bn.running_mean)
    assert torch.equal(m.bn.running_var, ref_bn.running_var)
    float_bn = copy.deepcopy(bn).train()
    with torch.no_grad():
        float_bn(conv(x))
    assert torch.equal(m.bn.running_mean[zero], float_bn.running_mean[zero])
    # Gradients are finite; gamma gets sum(grad * x_hat) and can leave 0.
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    for p in m.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
    assert_fold_grad_close(m.bn.weight.grad, ref_bn.weight.grad)
    if activation is None:
        assert (m.bn.weight.grad[zero] != 0).all()
    assert (m.weight.grad[zero] == 0).all()

    # Frozen and eval: the folded graph gives beta on those channels, still finite.
    for mode in ("frozen", "eval"):
        if mode == "frozen":
            m.freeze_bn()
        else:
            m.unfreeze_bn().eval()
        if mode == "frozen":
            forget_weight_range(m)  # eval mode observes nothing: the frozen step's range
        y = m(x)
        assert torch.isfinite(y).all(), mode
        assert torch.equal(
            y[:, zero], activate(beta[zero].reshape(1, -1, 1, 1), activation).expand_as(y[:, zero])
        ), mode
        _, w_fold, b_fold = fold(m.weight, m.bias, m.bn.weight, m.bn.bias, m.bn.running_mean,
                                 m.bn.running_var, m.bn.eps)  # fmt: skip
        wq = fq_weight(w_fold)
        assert torch.equal(y, activate(F.conv2d(x, wq, b_fold, **conv_args(conv)), activation))


def test_convbn_from_float_to_float():
    m, conv, bn = make_convbn("depthwise_stride2", "relu6", seed=40)
    assert torch.equal(m.weight, conv.weight) and m.bias is None
    assert m.bn.eps == bn.eps and m.bn.momentum == bn.momentum
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(m.bn, name), getattr(bn, name)), name
    seq = m.to_float()
    assert isinstance(seq, nn.Sequential) and len(seq) == 2
    assert type(seq[0]) is nn.Conv2d and type(seq[1]) is nn.ReLU6
    w_fold, b_fold = m.folded_weight_and_bias()
    assert torch.equal(seq[0].weight, w_fold) and torch.equal(seq[0].bias, b_fold)
    assert (seq[0].stride, seq[0].padding, seq[0].groups) == (conv.stride, conv.padding, 5)
    # The folded float graph against conv + BN in eval mode: float rounding only.
    x = torch.randn(2, 5, 9, 9)
    with torch.no_grad():
        expected = F.relu6(copy.deepcopy(bn).eval()(conv(x)))
        torch.testing.assert_close(seq(x), expected, atol=1e-5, rtol=1e-5)
    plain = ConvBn2d.from_float(nn.Conv2d(3, 4, 1, bias=True), nn.BatchNorm2d(4)).to_float()
    assert len(plain) == 1 and plain[0].bias is not None


def test_convbn_state_dict_keeps_bn_frozen():
    m, _, _ = make_convbn("3x3", seed=41)
    m(torch.randn(2, 3, 6, 6))
    m.freeze_bn()
    assert "bn_frozen" in m.state_dict()
    fresh = ConvBn2d(3, 5, 3, padding=1)
    assert not fresh.is_bn_frozen
    fresh.load_state_dict(m.state_dict())
    assert fresh.is_bn_frozen
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(fresh(x), m(x))


def test_convbn_errors():
    with pytest.raises(ValueError, match="activation.*'gelu'"):
        ConvBn2d(3, 4, 3, activation="gelu")
    with pytest.raises(ValueError, match="affine=True and track_running_stats=True"):
        ConvBn2d.from_float(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))
    with pytest.raises(ValueError, match="num_features=5.*out_channels=4"):
        ConvBn2d.from_float(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="BatchNorm2d"):
        ConvBn2d.from_float(nn.Conv2d(3, 4, 3), nn.BatchNorm1d(4))


# --------------------------------------------------------------------------------------------
# ActQuant / QuantAdd


def test_act_quant():
    torch.manual_seed(50)
    aq = ActQuant()
    x = torch.randn(4, 3, 5) + 0.5
    y = aq(x)
    assert torch.equal(y, fq_act(x))
    assert aq.quantizer.mode is Mode.OBSERVE and aq.quantizer.spec == QConfig().activation
    # Eval mode: no observation, the same range.
    aq.eval()
    lo, hi = aq.quantizer.quant_range()
    assert torch.equal(aq(3 * x), ops.fake_quant_with_min_max_vars(3 * x, lo, hi, 8, False))
    assert torch.equal(aq.quantizer.quant_range()[1], hi)
    # Frozen in training mode: no observation either; off: identity.
    aq.train().quantizer.freeze()
    aq(10 * x)
    assert torch.equal(aq.quantizer.quant_range()[1], hi)
    aq.quantizer.disable()
    assert torch.equal(aq(x), x)
    # Gradient: straight through inside the nudged range, which need not hold the extremes.
    xg, xr = leaf(x), leaf(x)
    aq.quantizer.observe()
    aq.eval()(xg).sum().backward()
    ops.fake_quant_with_min_max_vars(xr, lo, hi, 8, False).sum().backward()
    assert torch.equal(xg.grad, xr.grad) and xg.grad.sum() >= x.numel() - 2


def test_quant_add():
    torch.manual_seed(51)
    add = QuantAdd()
    a = torch.randn(2, 4, 3, 3)
    b = torch.randn(2, 4, 1, 3)  # broadcast
    ar, br = leaf(a), leaf(b)
    expected = fq_act(ar + br)
    expected.sum().backward()
    aq, bq = leaf(a), leaf(b)
    y = add(aq, bq)
    y.sum().backward()
    assert torch.equal(y, expected)
    assert torch.equal(aq.grad, ar.grad) and torch.equal(bq.grad, br.grad)
    assert isinstance(add.out_quant, ActQuant)
    # The inputs are not quantized again: identical to quantizing the float sum.
    assert len([m for m in add.modules() if isinstance(m, edgeqat.FakeQuantizer)]) == 1


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_quant_add_fused_activation(activation):
    # The output range is observed after the activation (the int8 add clamps, then has one set
    # of output parameters), so negative sums do not widen it.
    torch.manual_seed(52)
    add = QuantAdd(activation=activation)
    a, b = 4 * torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    act = F.relu if activation == "relu" else F.relu6
    assert torch.equal(add(a, b), fq_act(act(a + b)))
    assert float(add.out_quant.quantizer.observed_min) == float(act(a + b).min()) == 0.0
    with pytest.raises(ValueError, match="activation.*'gelu'"):
        QuantAdd(activation="gelu")


def _act_reference(activation, x, lo, hi):
    """fq(act(x)) with the relu applied as its own op: values and (away from x == 0, 6) the
    gradient the fused path must give."""
    act = F.relu if activation == "relu" else F.relu6
    return ops.fake_quant_with_min_max_vars(act(x), lo, hi, 8, False)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_act_quant_fused_activation(activation):
    torch.manual_seed(53)
    act = F.relu if activation == "relu" else F.relu6
    aq = ActQuant(activation=activation)
    plain = ActQuant()  # observes act(x) as a separate op: the unfused semantics
    for step in range(3):
        x = 5 * torch.randn(4, 6, 5, 5) + step
        x.view(-1)[:5] = torch.tensor([0.0, 6.0, -1e-9, 6.0 + 1e-6, 1e-9])  # the boundaries
        xf, xr = leaf(x), leaf(x)
        y = aq(xf)
        expected = plain(act(xr))
        # Values and the observed range: bit for bit those of fq(act(x)).
        assert torch.equal(y, expected)
        assert torch.equal(aq.quantizer.observed_min, plain.quantizer.observed_min)
        assert torch.equal(aq.quantizer.observed_max, plain.quantizer.observed_max)
        assert float(aq.quantizer.observed_min) == 0.0
        # Gradient: the straight-through mask on x; act'(x) * mask differs only at x == 0
        # (and x == 6 for ReLU6), where the fused path passes the gradient.
        g = torch.randn_like(x)
        y.backward(g)
        expected.backward(g)
        boundary = (x == 0) | ((x == 6) if activation == "relu6" else torch.zeros_like(x).bool())
        assert torch.equal(xf.grad[~boundary], xr.grad[~boundary])
        assert torch.equal(xf.grad[x == 0], g[x == 0])
    # Frozen and eval: the same range, no observation.
    lo, hi = aq.quantizer.quant_range()
    x = 8 * torch.randn(3, 6, 4, 4)
    aq.quantizer.freeze()
    assert torch.equal(aq(x), _act_reference(activation, x, lo, hi))
    aq.quantizer.observe()
    aq.eval()
    assert torch.equal(aq(x), _act_reference(activation, x, lo, hi))
    assert torch.equal(aq.quantizer.quant_range()[1], hi)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_act_quant_activation_unfused_paths(activation):
    torch.manual_seed(54)
    x = 4 * torch.randn(2, 3, 4, 4)
    # Learn mode: the learned lower end may leave 0, so the activation comes first.
    aq = ActQuant(activation=activation)
    aq(x)
    aq.quantizer.learn()
    with torch.no_grad():
        aq.quantizer.learned_min.fill_(-0.5)
    lo, hi = aq.quantizer.learned_range()
    assert torch.equal(aq(x), _act_reference(activation, x, lo.detach(), hi.detach()))
    # A symmetric spec cannot fuse (its range is [-b, b]): activation first.
    sym = QConfig(activation=QConfig().activation.replace(symmetric=True))
    aq = ActQuant(sym, activation=activation)
    y = aq(x)
    lo, hi = aq.quantizer.quant_range()
    assert float(lo) < 0
    assert torch.equal(y, _act_reference(activation, x, lo, hi))
    # A loaded state whose range leaves the activation's output range: activation first.
    aq = ActQuant(activation=activation)
    aq(x)
    state = aq.state_dict()
    state["quantizer.observed_min"] = torch.tensor(-1.0)
    state["quantizer.observed_max"] = torch.tensor(9.0)
    aq.load_state_dict(state)
    aq.quantizer.freeze()
    assert not aq._can_fuse_activation()
    assert torch.equal(aq(x), _act_reference(activation, x, torch.tensor(-1.0), torch.tensor(9.0)))
    with pytest.raises(ValueError, match="activation.*'tanh'"):
        ActQuant(activation="tanh")


def test_shared_act_quant_uses_the_source_range_and_never_observes():
    torch.manual_seed(53)
    source = ActQuant()
    shared = edgeqat.nn.SharedActQuant(source)
    x = torch.randn(4, 8, 5, 5)
    source(x)
    lo, hi = source.quantizer.quant_range()
    pooled = F.adaptive_avg_pool2d(x, 1) * 40  # wider than the source's range: clipped
    assert float(pooled.max()) > float(hi)
    y = shared(pooled)
    assert torch.equal(y, ops.fake_quant_with_min_max_vars(pooled, lo, hi, 8, False))
    assert torch.equal(source.quantizer.quant_range()[1], hi)  # no observation
    assert list(shared.state_dict()) == [] and list(shared.parameters()) == []
    # LEARN: gradients reach the source's learned range through the shared use too.
    source.quantizer.learn()
    shared(pooled).sum().backward()
    assert source.quantizer.learned_max.grad is not None
    assert float(source.quantizer.learned_max.grad) != 0.0
    source.quantizer.disable()
    assert torch.equal(shared(pooled), pooled)
    with pytest.raises(TypeError, match="ActQuant"):
        edgeqat.nn.SharedActQuant(torch.nn.ReLU())


# --------------------------------------------------------------------------------------------
# The int32 bias: a layer linked to the quantizer of its input adds the int8 model's bias


def weight_range(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The default weight range of fq_weight: [-max|w|, max|w|] per output channel."""
    bound = w.detach().abs().amax(dim=tuple(range(1, w.dim())))
    return -bound, bound


def layer_op(layer):
    """The float op of a QuantLinear / QuantConv2d: (x, weight, bias) -> output."""
    if isinstance(layer, QuantLinear):
        return F.linear
    return lambda x, w, b: F.conv2d(x, w, b, **conv_args(layer))


LINKED_CASES = ["linear"] + [c for c, kw in CONV_CASES.items() if kw.get("bias", True)]


def make_layer(case):
    if case == "linear":
        return QuantLinear(12, 5), (3, 2, 12)
    layer = QuantConv2d(**CONV_CASES[case])
    return layer, (2, layer.in_channels, 9, 8)


@pytest.mark.parametrize("case", LINKED_CASES)
def test_linked_layer_adds_the_int32_bias(case):
    torch.manual_seed(80)
    layer, shape = make_layer(case)
    aq = ActQuant()
    assert layer.input_quantizer is None
    assert layer.set_input_quantizer(aq) is layer and layer.input_quantizer is aq
    op = layer_op(layer)
    for step in range(3):  # observing: each step's ranges (the input's moves by EMA)
        xq = aq(torch.randn(shape) * (step + 1) + 0.3 * step).detach()
        lo, hi = aq.quantizer.quant_range()  # the range aq used for this batch
        w, b, xr = leaf(layer.weight), leaf(layer.bias), leaf(xq)
        expected = op(xr, fq_weight(w), int8_bias(b, (lo, hi), weight_range(w)))
        grad = torch.randn_like(expected)
        expected.backward(grad)
        xl = leaf(xq)
        layer.zero_grad()
        y = layer(xl)
        y.backward(grad)
        assert torch.equal(y, expected), step
        assert torch.equal(layer.weight.grad, w.grad), step
        assert torch.equal(xl.grad, xr.grad), step
        # Straight through: the bias gets the float bias's gradient.
        bf = leaf(layer.bias)
        op(xq, fq_weight(layer.weight.detach()), bf).backward(grad)
        assert torch.equal(layer.bias.grad, bf.grad), step
        # The rounding shows: the float bias gives another output.
        assert not torch.equal(y, op(xq, fq_weight(w), b)), step
    # Eval mode: the same bias from the frozen state.
    layer.eval()
    aq.eval()
    x = torch.randn(shape)
    xq = aq(x)
    lo, hi = aq.quantizer.quant_range()
    w = layer.weight.detach()
    expected = op(xq, fq_weight(w), int8_bias(layer.bias.detach(), (lo, hi), weight_range(w)))
    assert torch.equal(layer(xq), expected)


@pytest.mark.parametrize("case", ["3x3_bias", "depthwise_stride2"])
def test_linked_convbn_int32_bias_once_bn_is_frozen(case):
    m, conv, bn = make_convbn(case, "relu", seed=81)
    plain = copy.deepcopy(m)  # not linked
    aq = ActQuant()
    m.set_input_quantizer(aq)
    x = torch.randn(4, conv.in_channels, 8, 8)
    # BN on batch statistics: the float conv bias, as unlinked (BN removes any constant).
    xq = aq(x).detach()
    assert torch.equal(m(xq), plain(xq))
    assert torch.equal(m.bn.running_mean, plain.bn.running_mean)
    # BN frozen (training) and eval: the folded bias b' as the int8 model's int32 bias.
    m.freeze_bn()
    for mode in ("frozen", "eval"):
        if mode == "eval":
            m.unfreeze_bn().eval()
            aq.eval()
        xq = aq(x * 1.5).detach()
        lo, hi = aq.quantizer.quant_range()
        if mode == "frozen":
            forget_weight_range(m)  # the range of this step's folded weight
        w, b = leaf(m.weight), leaf(m.bias)
        gamma, beta = leaf(m.bn.weight), leaf(m.bn.bias)
        _, w_fold, b_fold = fold(w, b, gamma, beta, m.bn.running_mean, m.bn.running_var, bn.eps)
        bias = int8_bias(b_fold, (lo, hi), weight_range(w_fold))
        expected = F.relu(F.conv2d(xq, fq_weight(w_fold), bias, **conv_args(conv)))
        grad = torch.randn_like(expected)
        expected.backward(grad)
        m.zero_grad()
        y = m(xq)
        y.backward(grad)
        assert torch.equal(y, expected), mode
        assert torch.equal(m.weight.grad, w.grad), mode
        assert torch.equal(m.bn.bias.grad, beta.grad), mode  # straight through b'
        assert_fold_grad_close(m.bn.weight.grad, gamma.grad)
        if b is not None:
            assert torch.equal(m.bias.grad, b.grad), mode
        unrounded = F.relu(F.conv2d(xq, fq_weight(w_fold), b_fold, **conv_args(conv)))
        assert not torch.equal(y, unrounded), mode


def test_bias_stays_float_where_the_int8_model_is_not_simulated():
    torch.manual_seed(82)
    layer = QuantConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 7, 7)
    w, b = layer.weight, layer.bias

    def float_bias(xq, weight=None):
        return F.conv2d(xq, fq_weight(w) if weight is None else weight, b, padding=1)

    def int_bias(xq, q):
        return F.conv2d(xq, fq_weight(w), int8_bias(b, q.quant_range(), weight_range(w)), padding=1)

    # Not linked.
    assert torch.equal(layer(x), float_bias(x))
    # Linked to an input quantizer that has not seen data yet.
    aq = ActQuant()
    layer.set_input_quantizer(aq)
    assert torch.equal(layer(x), float_bias(x))
    xq = aq(x)
    assert torch.equal(layer(xq), int_bias(xq, aq.quantizer))
    # QConfig(quantize_bias=False).
    off = QuantConv2d(4, 6, 3, padding=1, config=QConfig(quantize_bias=False))
    off.load_state_dict(layer.state_dict())
    off.set_input_quantizer(aq)
    assert torch.equal(off(xq), float_bias(xq))
    # The input quantizer turned off: the input is float.
    aq.quantizer.disable()
    assert torch.equal(layer(x), float_bias(x))
    aq.quantizer.observe()
    # The weight quantizer turned off: float weights, float bias.
    layer.weight_quant.disable()
    assert torch.equal(layer(xq), float_bias(xq, w))
    layer.weight_quant.observe()
    # A histogram source calibrating (float), then with its range chosen.
    hist = ActQuant(QConfig(activation=QuantSpec(range_source="histogram")))
    layer.set_input_quantizer(hist)
    assert torch.equal(hist(x), x)
    assert torch.equal(layer(x), float_bias(x))
    # Not calibrating any more, the new data not yet turned into a range (the quantizer's own
    # forward did not run): the layer has the range chosen, as that forward would.
    hist.quantizer.eval()
    assert hist.quantizer._histogram_pending
    assert torch.equal(layer(x), int_bias(x, hist.quantizer))
    assert not hist.quantizer._histogram_pending
    hist.quantizer.train()
    hist(x)  # more data
    hist.quantizer.freeze()
    xq = hist(x)
    assert torch.equal(layer(xq), int_bias(xq, hist.quantizer))
    # Learned input range: the learned one, detached (no gradient to it through the bias).
    aq.quantizer.learn()
    with torch.no_grad():
        aq.quantizer.learned_max.mul_(0.75)
    layer.set_input_quantizer(aq)
    y = layer(x)
    assert torch.equal(y, int_bias(x, aq.quantizer))
    y.sum().backward()
    assert aq.quantizer.learned_max.grad is None
    # A SharedActQuant links its source; None unlinks.
    assert layer.set_input_quantizer(SharedActQuant(hist)).input_quantizer is hist
    assert layer.set_input_quantizer(None).input_quantizer is None
    assert torch.equal(layer(x), float_bias(x))
    with pytest.raises(TypeError, match="ActQuant, a SharedActQuant or None"):
        layer.set_input_quantizer(aq.quantizer)


def test_int32_bias_rounds_like_the_exporter():
    """Power-of-two scales: s_in = 2**-4 (range [0, 255 / 16]), s_w = 2**-3 (narrow, symmetric
    [-127 / 8, 127 / 8]), so s = 2**-7 and b / s is exact: ties go away from zero (std::round),
    a bias beyond int32 is clamped, a degenerate range has scale 1."""
    in_spec, w_spec = QConfig().activation, QConfig().weight
    in_range = (torch.tensor(0.0), torch.tensor(255 / 16))
    w_range = (torch.full((1,), -127 / 8), torch.full((1,), 127 / 8))
    steps = torch.tensor([2.5, -2.5, 1.5, 0.5, -0.5, 0.49, 3.0, 1e12, -1e12])
    got = int32_bias(steps * 2**-7, in_range, in_spec, w_range, w_spec)
    limit = float(2**31 - 1)
    want = torch.tensor([3.0, -3.0, 2.0, 1.0, -1.0, 0.0, 3.0, limit, -limit]) * 2**-7
    assert torch.equal(got, want)
    zero = (torch.tensor(0.0), torch.tensor(0.0))
    assert torch.equal(
        int32_bias(torch.tensor([2.5]), zero, in_spec, zero, w_spec), torch.tensor([3.0])
    )
    # Random values, per channel and per tensor, against the rational-arithmetic reference.
    g = torch.Generator().manual_seed(83)
    for channels in (1, 64):
        bias = torch.randn(64, generator=g) * 10.0 ** torch.randint(-4, 3, (64,), generator=g)
        lo, hi = -torch.rand((), generator=g), torch.rand((), generator=g) * 5
        w_hi = torch.rand(channels, generator=g) + 1e-3
        got = int32_bias(bias, (lo, hi), in_spec, (-w_hi, w_hi), w_spec)
        want = reference.simulated_bias(
            bias.numpy(), (float(lo), float(hi)), -w_hi.numpy(), w_hi.numpy()
        )
        assert np.array_equal(got.numpy(), want), channels


def test_input_quantizer_link_is_not_state():
    torch.manual_seed(84)
    model = TinyNet()
    unlinked = copy.deepcopy(model)
    for m in (unlinked.stem, unlinked.dw, unlinked.pw, unlinked.head):
        m.set_input_quantizer(None)
    assert list(model.state_dict()) == list(unlinked.state_dict())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in unlinked.named_parameters()]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in unlinked.named_modules()]
    x = torch.randn(2, 3, 6, 6)
    model(x)
    # deepcopy maps the link to the copy's own quantizer.
    twin = copy.deepcopy(model)
    assert twin.dw.input_quantizer is twin.stem_q and twin.head.input_quantizer is twin.pool_q
    assert torch.equal(twin(x), model(x))
    # A state_dict loads into a linked model and gives the same outputs.
    unlinked.load_state_dict(model.state_dict())
    for m, q in ((unlinked.stem, unlinked.in_q), (unlinked.dw, unlinked.stem_q),
                 (unlinked.pw, unlinked.dw_q), (unlinked.head, unlinked.pool_q)):  # fmt: skip
        m.set_input_quantizer(q)
    model.eval()
    unlinked.eval()
    assert torch.equal(unlinked(x), model(x))


class Chain(nn.Module):
    """ActQuant -> depthwise QuantConv2d -> ActQuant -> ConvBn2d -> ActQuant -> mean ->
    SharedActQuant -> QuantLinear -> ActQuant, every layer linked."""

    def __init__(self) -> None:
        super().__init__()
        self.in_q = ActQuant()
        self.dw = QuantConv2d(3, 3, 3, padding=1, groups=3)
        self.dw_q = ActQuant(activation="relu")
        self.pw = ConvBn2d(3, 8, 1, bias=True)
        self.pw_q = ActQuant()
        self.pool_q = SharedActQuant(self.pw_q)
        self.fc = QuantLinear(8, 4)
        self.out_q = ActQuant()
        self.dw.set_input_quantizer(self.in_q)
        self.pw.set_input_quantizer(self.dw_q)
        self.fc.set_input_quantizer(self.pool_q)

    def forward(self, x):
        y = self.dw_q(self.dw(self.in_q(x)))
        y = self.pool_q(self.pw_q(self.pw(y)).mean((2, 3)))
        return self.out_q(self.fc(y))


def test_linked_layers_compile_fullgraph():
    """torch.compile(fullgraph=True): no graph break, the same outputs, gradients and states as
    eager through the phases (observe, BN frozen, frozen ranges, learned ranges)."""
    torch.manual_seed(85)
    eager = Chain()
    with torch.no_grad():
        eager.pw.bn.running_var.uniform_(0.5, 1.5)
        eager.pw.bn.running_mean.normal_()
    model = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for step in range(6):
        if step == 1:
            edgeqat.freeze_bn(eager)
            edgeqat.freeze_bn(model)
        if step == 3:
            edgeqat.freeze_observers(eager)
            edgeqat.freeze_observers(model)
        if step == 4:
            edgeqat.learn_ranges(eager)
            edgeqat.learn_ranges(model)
        x = torch.randn(4, 3, 6, 6) * (1 + step)
        grad = torch.randn(4, 4)
        for m in (eager, model):
            m.zero_grad(set_to_none=True)
        if step == 0:  # BN on batch statistics: forward only (docs/qat.md's known limitation)
            with torch.no_grad():
                assert torch.equal(compiled(x), eager(x)), step
        else:
            got, want = compiled(x), eager(x)
            assert torch.equal(got, want), step
            got.backward(grad)
            want.backward(grad)
            for (name, p), (_, q) in zip(eager.named_parameters(), model.named_parameters()):
                assert (p.grad is None) == (q.grad is None), (step, name)
                if p.grad is not None:
                    assert torch.equal(q.grad, p.grad), (step, name)
        for (name, a), (_, b) in zip(eager.state_dict().items(), model.state_dict().items()):
            assert torch.equal(a, b), (step, name)


@pytest.mark.slow
def test_linked_bias_under_inductor_is_exact():
    """Inductor compiles the bias arithmetic (float32 scales, float64 quotient, rounding) to C++:
    the same values, bit for bit (a zero input makes each output the bias itself)."""
    torch.manual_seed(86)
    model = Chain()
    model(torch.randn(4, 3, 6, 6))  # observe
    model.eval()
    torch._dynamo.reset()
    layers = [(model.dw, (1, 3, 4, 4)), (model.pw, (1, 3, 4, 4)), (model.fc, (1, 8))]
    for layer, shape in layers:
        compiled = torch.compile(layer, fullgraph=True, backend="inductor")
        zeros = torch.zeros(shape)
        with torch.no_grad():
            assert torch.equal(compiled(zeros), layer(zeros)), type(layer).__name__


def test_quantize_bias_config():
    assert QConfig().quantize_bias is True
    assert QConfig(quantize_bias=False).quantize_bias is False
    with pytest.raises(TypeError, match="quantize_bias must be a bool, got 1"):
        QConfig(quantize_bias=1)


# --------------------------------------------------------------------------------------------
# A small model: controls and a state_dict round trip mid-training


class TinyNet(nn.Module):
    """Every layer linked to the quantizer of its input (its int32 bias simulated)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_q = ActQuant()
        self.stem = ConvBn2d(3, 8, 3, padding=1, activation="relu")
        self.stem_q = ActQuant()
        self.dw = ConvBn2d(8, 8, 3, stride=1, padding=1, groups=8, activation="relu6")
        self.dw_q = ActQuant()
        self.pw = QuantConv2d(8, 8, 1)
        self.pw_q = ActQuant()
        self.add = QuantAdd()
        self.pool_q = ActQuant()
        self.head = QuantLinear(8, 4)
        self.out_q = ActQuant()
        self.stem.set_input_quantizer(self.in_q)
        self.dw.set_input_quantizer(self.stem_q)
        self.pw.set_input_quantizer(self.dw_q)
        self.head.set_input_quantizer(self.pool_q)

    def forward(self, x):
        s = self.stem_q(self.stem(self.in_q(x)))
        r = self.pw_q(self.pw(self.dw_q(self.dw(s))))
        y = self.pool_q(self.add(s, r).mean((2, 3)))
        return self.out_q(self.head(y))


def quantizers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, edgeqat.FakeQuantizer)}


def test_controls():
    torch.manual_seed(60)
    model = TinyNet()
    with pytest.raises(RuntimeError, match="not observed data yet: in_q.quantizer, stem.weight"):
        edgeqat.freeze_observers(model)
    assert {q.mode for q in quantizers(model).values()} == {Mode.OBSERVE}  # nothing changed
    model(torch.randn(2, 3, 6, 6))
    model.head.weight_quant.disable()
    assert edgeqat.freeze_observers(model) is model
    modes = {n: q.mode for n, q in quantizers(model).items()}
    assert modes.pop("head.weight_quant") is Mode.OFF
    assert set(modes.values()) == {Mode.FROZEN}
    assert edgeqat.learn_ranges(model) is model
    assert model.head.weight_quant.mode is Mode.OFF
    assert model.stem_q.quantizer.mode is Mode.LEARN
    lo, hi = model.stem_q.quantizer.observed_range()
    assert torch.equal(model.stem_q.quantizer.learned_min.detach(), lo)
    assert torch.equal(model.stem_q.quantizer.learned_max.detach(), hi)
    assert edgeqat.observe(model) is model
    assert model.head.weight_quant.mode is Mode.OFF
    assert model.pw.weight_quant.mode is Mode.OBSERVE
    assert edgeqat.freeze_bn(model) is model
    assert model.stem.is_bn_frozen and model.dw.is_bn_frozen
    assert edgeqat.freeze_bn(model.stem) is model.stem


def train_steps(model, opt, batches, schedule=None):
    outputs = []
    for step, (x, target) in enumerate(batches):
        if schedule is not None:
            schedule(model, step)
        opt.zero_grad()
        out = model(x)
        F.cross_entropy(out, target).backward()
        opt.step()
        outputs.append(out.detach())
    return outputs


def test_state_dict_round_trip_mid_training():
    torch.manual_seed(70)
    batches = [(torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,))) for _ in range(9)]

    def schedule(model, step):  # observe, then freeze BN, then learn the ranges
        if step == 3:
            edgeqat.freeze_bn(model)
        if step == 4:
            edgeqat.learn_ranges(model)

    def make_opt(model):
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

    model = TinyNet()
    opt = make_opt(model)
    train_steps(model, opt, batches[:6], schedule)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    torch.manual_seed(71)  # a different initialisation, overwritten by the load
    fresh = TinyNet()
    fresh.load_state_dict(saved["model"])
    fresh_opt = make_opt(fresh)
    fresh_opt.load_state_dict(saved["opt"])
    assert fresh.stem.is_bn_frozen
    assert fresh.stem_q.quantizer.mode is Mode.LEARN

    out_a = train_steps(model, opt, batches[6:])
    out_b = train_steps(fresh, fresh_opt, batches[6:])
    for a, b in zip(out_a, out_b):
        assert torch.equal(a, b)
    state_a, state_b = model.state_dict(), fresh.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    # Training did move things after the load.
    assert not torch.equal(state_a["stem.weight"], saved["model"]["stem.weight"])
    assert not torch.equal(
        state_a["stem_q.quantizer.learned_max"], saved["model"]["stem_q.quantizer.learned_max"]
    )
