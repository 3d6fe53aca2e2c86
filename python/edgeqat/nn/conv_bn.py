"""ConvBn2d: conv + batch norm (+ ReLU / ReLU6) trained with the batch norm folded into the
quantized weights, as the int8 model will compute it (int8-numerics.md section 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QConfig
from ..quantizer import Mode
from ._common import copy_weight_and_bias
from .quant_conv import _Conv2dBase

__all__ = ["ConvBn2d"]

_ACTIVATIONS = (None, "relu", "relu6")
# Range sources fold_weight_fake_quant_ serves (its averaging_constant / accumulate carry them);
# others take the unfused path.
_FUSED_RANGE_SOURCES = ("last", "ema", "running")


class ConvBn2d(_Conv2dBase):
    """Conv2d + BatchNorm2d + optional ReLU / ReLU6, with BN folded into the quantized weight.

    The int8 model has no batch norm: it runs ``conv(x, W') + b'`` with the inference fold

    - ``f  = gamma / sqrt(running_var + eps)`` (one factor per output channel),
    - ``W' = W * f`` and ``b' = (b - running_mean) * f + beta`` (``b = 0`` without a conv bias),

    and quantizes ``W'`` (not ``W``) per output channel. So ``weight_quant`` always sees the
    folded weight ``W * f`` (running statistics), in every mode below.

    ``forward`` depends on the mode:

    - training mode, BN not frozen (PyTorch's conv_fused approach, with the un-fold moved onto
      the weight): ``y = conv(x, fq(W') / f, b)`` undoes the fold to recover the un-folded
      conv output (with quantized weights; equal to PyTorch's ``conv(x, fq(W')) / f + b`` up to
      float rounding, one pass over the weight instead of the output), and
      ``self.bn`` normalises it with the batch statistics and updates its running statistics
      exactly as torch.nn.BatchNorm2d does (its ``momentum``, ``None`` for a cumulative
      average). The output is BN's training output, so the float model's training dynamics are
      kept while the weight sees its deployed quantization.
    - after :meth:`freeze_bn`, or in eval mode: ``conv(x, fq(W'), b')``, exactly the graph the
      int8 export computes; running statistics no longer change. Gradients still reach
      ``weight``, ``bias``, ``bn.weight`` and ``bn.bias`` through the fold.

    Then the activation is applied (ReLU6 is ``clamp(y, 0, 6)``).

    Bias: linked to the quantizer of its input (:meth:`set_input_quantizer`, which
    :func:`~edgeqat.prepare_qat` calls) and with ``config.quantize_bias`` (default), the folded
    bias ``b'`` of the BN-frozen / eval forward is the int8 model's int32 bias,
    ``round(b' / s) * s`` with ``s = s_in * s_w[c]`` (as :class:`~edgeqat.QuantConv2d`
    documents; gradients straight through to ``b'``, so to ``bias``, ``bn.weight``,
    ``bn.bias``). While BN normalises with batch statistics, the conv's own float ``bias`` is
    added as it is: BN subtracts the batch mean, so a per-channel constant before it changes
    nothing, and the int8 model's bias (made with the running statistics) is not part of that
    forward at all; simulating its rounding there would only move the running mean.

    The weight path (``W * f``, ``weight_quant``'s observer step and fake quant, the un-fold)
    runs as one op, ``torch.ops.edgeqat.fold_weight_fake_quant_``, with a C++ backward, while
    ``weight_quant`` is in OBSERVE or FROZEN mode: the same values and weight gradients, bit for
    bit, as the separate ops (still used in LEARN / OFF mode and for a histogram range source);
    the fold part of ``gamma``'s gradient is the same per-channel sum added in another order.

    ``gamma = 0`` channels: ``f = 0`` there, so ``W'`` and the quantized weight are 0 and
    ``b' = beta`` (the exact BN output, ``0 * x_hat + beta``). Dividing by ``f`` would give
    0 / 0 = NaN in the training path, so there the channel's conv uses the float weight ``W``
    instead of ``fq(W') / f``: BN's output for that channel is still exactly ``beta`` (whatever
    the finite conv output is), its running statistics follow the float conv output, as a float
    BatchNorm2d's would, and ``gamma`` gets its gradient ``sum(grad * x_hat)`` so it can leave
    0. ``weight_quant`` still sees the folded weight (0 in that channel), so the quantizer's view
    is the same in every mode. Only an exact 0 is special: a tiny nonzero ``f`` divides exactly.

    Export: :meth:`folded_weight_and_bias` gives ``(W', b')`` and ``weight_quant.quant_range()``
    the weight ranges. The weight range is observed on ``W'`` made with the running statistics
    of that forward, before BN updates them, so freeze BN (and run a training step, or
    calibrate) before export for the range and ``W'`` to match exactly.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            padding_mode, device, dtype: as :class:`torch.nn.Conv2d` (``padding_mode="zeros"``
            only).
        bias: whether the conv has a bias (default ``False``, as usual before a BN).
        activation: ``None`` (default), ``"relu"`` or ``"relu6"``.
        eps, momentum: as :class:`torch.nn.BatchNorm2d` (``1e-5``, ``0.1``).
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``).

    Attributes:
        weight, bias: the float conv parameters.
        bn: the torch.nn.BatchNorm2d holding ``gamma`` (``bn.weight``), ``beta``
            (``bn.bias``) and the running statistics.
        weight_quant: the weight :class:`~edgeqat.FakeQuantizer`.
        bn_frozen: a bool buffer (so ``state_dict`` restores it).

    Shapes: input ``[N, in_channels, H, W]``, output ``[N, out_channels, H_out, W_out]``.

    Example:
        >>> conv = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        >>> bn = torch.nn.BatchNorm2d(16)
        >>> m = edgeqat.ConvBn2d.from_float(conv, bn, activation="relu")
        >>> y = m(torch.randn(8, 3, 32, 32))    # BN with batch statistics, weights folded
        >>> m = m.freeze_bn()                   # from now on: conv(x, fq(W')) + b'
        >>> w_fold, b_fold = m.folded_weight_and_bias()
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        activation: str | None = None,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        config: QConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ConvBn2d: activation must be None, 'relu' or 'relu6', got {activation!r}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            config,
            device,
            dtype,
        )
        self.activation = activation
        self.bn = nn.BatchNorm2d(
            out_channels, eps=eps, momentum=momentum, device=device, dtype=dtype
        )
        self.register_buffer("bn_frozen", torch.tensor(False, device=device))
        # Python mirror of bn_frozen read by forward: reading the buffer would be a host sync
        # and a torch.compile graph break every step. Kept in step by freeze_bn / unfreeze_bn
        # and by load_state_dict.
        self._bn_frozen = False

    # The fused weight path (_fused_weight); False runs the unfused ops, for comparisons and
    # benchmarks (set on the class or on one module).
    _fused_weight_path = True

    # -- BN state -------------------------------------------------------------------------------

    def freeze_bn(self) -> ConvBn2d:
        """Stop updating the running statistics and train the folded inference graph."""
        self.bn_frozen.fill_(True)
        self._bn_frozen = True
        return self

    def unfreeze_bn(self) -> ConvBn2d:
        """Go back to batch statistics in training mode."""
        self.bn_frozen.fill_(False)
        self._bn_frozen = False
        return self

    @property
    def is_bn_frozen(self) -> bool:
        """Whether the BN statistics are frozen (:meth:`freeze_bn`)."""
        return self._bn_frozen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._bn_frozen = bool(self.bn_frozen)

    # -- folding --------------------------------------------------------------------------------

    def _fold_factor(self) -> torch.Tensor:
        # f = gamma / sqrt(running_var + eps), as torch.nn.utils.fusion.fuse_conv_bn_weights;
        # the same expression (same roundings) feeds the weight, the bias and the un-fold.
        return self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)

    def _folded_bias(self, factor: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is not None else torch.zeros_like(self.bn.running_mean)
        return (bias - self.bn.running_mean) * factor + self.bn.bias

    def folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W', b')`` with the running statistics, detached: ``W'``
        ``[out_channels, in_channels // groups, kH, kW]`` (float, not quantized; quantize
        with ``weight_quant.quant_range()``), ``b'`` ``[out_channels]``."""
        with torch.no_grad():
            factor = self._fold_factor()
            weight = self.weight * factor.reshape(-1, 1, 1, 1)
            return weight.detach(), self._folded_bias(factor).detach()

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training mode with BN not frozen: the conv with the un-folded quantized weight,
        then BN with the batch statistics; otherwise ``conv(x, fq(W'), b')``. Then the
        activation (see the class docstring)."""
        factor = self._fold_factor()
        batch_stats = self.training and not self._bn_frozen
        weight = self._fused_weight(factor, unfold=batch_stats)
        if weight is None:
            weight_q = self.weight_quant(self.weight * factor.reshape(-1, 1, 1, 1))
            if batch_stats:
                y = self._forward_batch_stats(x, weight_q, factor)
            else:
                y = self._conv(x, weight_q, self._bias_for_forward(self._folded_bias(factor)))
        elif batch_stats:
            y = self.bn(self._conv(x, weight, self.bias))
        else:
            y = self._conv(x, weight, self._bias_for_forward(self._folded_bias(factor)))
        # In place: y is this module's own fresh tensor (BN's or the conv's output), and neither
        # BN's backward nor the conv's needs it, so the activation costs no second activation
        # tensor kept for the backward (as torchvision's ReLU(inplace=True)).
        if self.activation == "relu":
            return F.relu(y, inplace=True)
        if self.activation == "relu6":
            return F.relu6(y, inplace=True)
        return y

    def _fused_weight(self, factor: torch.Tensor, unfold: bool) -> torch.Tensor | None:
        """The conv weight through ``torch.ops.edgeqat.fold_weight_fake_quant_``: ``W * f``,
        the weight quantizer's step (observing in OBSERVE mode and training mode, as
        FakeQuantizer.forward), the fake quant and, with ``unfold``, the un-fold (``fq(W') / f``,
        ``W`` where ``f == 0``) in one op with a C++ backward. The same values, bit for bit, as
        the unfused path (``weight_quant(W * f)``, then :meth:`_forward_batch_stats`) and the
        same gradient to the weight; the gradient to the factor (so gamma's) is the same sum in
        another order (float rounding). ``None`` where the unfused path must run: a quantizer
        in LEARN or OFF mode, a range source the op does not serve (histogram), or a factor /
        state that does not match the weight's dtype / device."""
        quantizer = self.weight_quant
        spec = quantizer.spec
        mode = quantizer.mode
        if (
            not self._fused_weight_path
            or (mode is not Mode.OBSERVE and mode is not Mode.FROZEN)
            or spec.range_source not in _FUSED_RANGE_SOURCES
            or (spec.per_channel and spec.axis != 0)
            or factor.dtype != self.weight.dtype
            or quantizer.observed_min.device != self.weight.device
        ):
            return None
        observe = mode is Mode.OBSERVE and quantizer.training
        if not observe and not quantizer._range_known:
            quantizer._require_range()  # FakeQuantizer's check and message, until a range is seen
        weight = torch.ops.edgeqat.fold_weight_fake_quant_(
            quantizer.observed_min,
            quantizer.observed_max,
            self.weight,
            factor,
            observe,
            spec.averaging_constant,
            spec.range_source == "running",
            spec.symmetric,
            spec.num_bits,
            spec.narrow_range,
            unfold,
        )
        # FakeQuantizer's mirror: a non-empty weight fills every entry of the range.
        if observe and not quantizer._range_known and self.weight.numel() > 0:
            quantizer._range_known = True
        return weight

    def _forward_batch_stats(
        self, x: torch.Tensor, weight_q: torch.Tensor, factor: torch.Tensor
    ) -> torch.Tensor:
        # The un-fold divides the quantized weight, not the conv output: conv is linear in the
        # weight, so conv(x, fq(W') / f) = conv(x, fq(W')) / f up to float rounding, and
        # a pass over the weight is cheaper than a pass over the output, in the forward and in
        # the backward (which, dividing the output, would also keep the conv output alive).
        # gamma = 0 channels: the float weight, divided by 1 (see the class docstring).
        # torch.where rather than a branch on the values keeps the path free of host syncs.
        zero = factor == 0
        # f + [f == 0] (exactly f, or 1 where f = 0) rather than torch.where(f == 0, 1, f):
        # under torch.compile (torch 2.13) the partitioner recomputed the where in the backward
        # from running_var after BN had updated it in place, giving wrong weight gradients.
        safe_factor = (factor + zero.to(factor.dtype)).reshape(-1, 1, 1, 1)
        zero = zero.reshape(-1, 1, 1, 1)
        weight = torch.where(zero, self.weight, weight_q / safe_factor)
        return self.bn(self._conv(x, weight, self.bias))

    # -- conversion -----------------------------------------------------------------------------

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d,
        activation: str | None = None,
        config: QConfig | None = None,
    ) -> ConvBn2d:
        """A ConvBn2d with copies of ``conv``'s weight / bias and of ``bn``'s parameters and
        running statistics (``num_batches_tracked`` included), ``bn``'s ``eps`` and
        ``momentum``, and ``conv``'s device, dtype and train / eval mode. Not linked to an
        input quantizer (:meth:`set_input_quantizer`)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"bn must be a torch.nn.BatchNorm2d, got {type(bn).__name__}")
        if not (bn.affine and bn.track_running_stats):
            raise ValueError(
                "bn must have affine=True and track_running_stats=True to be folded, got "
                f"affine={bn.affine}, track_running_stats={bn.track_running_stats}"
            )
        if bn.num_features != conv.out_channels:
            raise ValueError(
                f"bn.num_features={bn.num_features} must equal conv.out_channels="
                f"{conv.out_channels}"
            )
        qmod = cls(
            **cls._geometry_of(conv),
            bias=conv.bias is not None,
            activation=activation,
            eps=bn.eps,
            momentum=bn.momentum,
            config=config,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        copy_weight_and_bias(qmod, conv.weight, conv.bias)
        qmod.bn.load_state_dict(bn.state_dict())
        return qmod.train(conv.training)

    def to_float(self) -> nn.Sequential:
        """The float inference equivalent: ``nn.Sequential(conv)`` or, with an activation,
        ``nn.Sequential(conv, nn.ReLU() | nn.ReLU6())``, where ``conv`` is a torch.nn.Conv2d
        (with bias) holding the folded ``(W', b')`` of :meth:`folded_weight_and_bias`, not
        quantized. It equals this module's eval-mode float graph (conv then BN with running
        statistics) up to float rounding."""
        weight, bias = self.folded_weight_and_bias()
        layers: list[nn.Module] = [self._float_conv(weight, bias)]
        if self.activation == "relu":
            layers.append(nn.ReLU())
        elif self.activation == "relu6":
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers).train(self.training)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", activation={self.activation!r}, bn_frozen={self._bn_frozen}"
        )
