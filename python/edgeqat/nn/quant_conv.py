"""QuantConv2d: a 2-D convolution whose weight is fake-quantized per output channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..config import QConfig
from ._bias import InputQuantizerLink
from ._common import (
    copy_weight_and_bias,
    init_weight_and_bias,
    make_weight_quantizer,
    resolve_config,
)

__all__ = ["QuantConv2d"]


class _Conv2dBase(InputQuantizerLink, nn.Module):
    """Geometry, float weight / bias, weight quantizer and input-quantizer link shared by
    QuantConv2d and ConvBn2d."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride,
        padding,
        dilation,
        groups: int,
        bias: bool,
        padding_mode: str,
        config: QConfig | None,
        device,
        dtype,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if padding_mode != "zeros":
            # The int8 conv pads with the input's zero point, i.e. real 0; other modes would
            # need an explicit pad op in the int8 graph.
            raise ValueError(
                f"{name} supports padding_mode='zeros' only, got padding_mode={padding_mode!r}; "
                "pad explicitly (F.pad) before the conv instead"
            )
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must be positive and divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        self.config = resolve_config(config)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(
                    f"{name}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' needs stride 1, got {self.stride}")
            self.padding = padding
        else:
            self.padding = _pair(padding)
        self.groups = groups
        self.padding_mode = padding_mode
        init_weight_and_bias(
            self,
            (out_channels, in_channels // groups, *self.kernel_size),
            bias,
            device,
            dtype,
        )
        self.weight_quant = make_weight_quantizer(self.config.weight, out_channels, device)
        self._init_input_quantizer()

    @staticmethod
    def _geometry_of(conv: nn.Conv2d) -> dict:
        return {
            "in_channels": conv.in_channels,
            "out_channels": conv.out_channels,
            "kernel_size": conv.kernel_size,
            "stride": conv.stride,
            "padding": conv.padding,
            "dilation": conv.dilation,
            "groups": conv.groups,
            "padding_mode": conv.padding_mode,
        }

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _float_conv(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
        """A torch.nn.Conv2d of this geometry holding copies of ``weight`` and ``bias``."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=bias is not None,
            padding_mode="zeros",
            device=weight.device,
            dtype=weight.dtype,
        )
        copy_weight_and_bias(conv, weight, bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"


class QuantConv2d(_Conv2dBase):
    """``F.conv2d(x, weight_quant(weight), bias, stride, padding, dilation, groups)``.

    Any stride, padding (numbers, ``"valid"``, ``"same"``), dilation and groups (depthwise:
    ``groups = in_channels``); ``padding_mode="zeros"`` only, since the int8 conv pads with
    real 0. The weight is fake-quantized by ``weight_quant`` (``config.weight``; by default 8
    bits, symmetric, narrow range ``[-127, 127]``, one range per output channel, the range of
    the current weight). Activations are quantized by separate :class:`~edgeqat.ActQuant`
    modules.

    Bias: the int8 model adds it as an int32 at the accumulator's scale
    ``s = s_in * s_w[c]`` (``s_in`` the input's scale, ``s_w[c]`` the weight scale of output
    channel ``c``). Linked to the quantizer of its input (:meth:`set_input_quantizer`, which
    :func:`~edgeqat.prepare_qat` calls), with ``config.quantize_bias`` (default), the layer
    adds exactly that bias, ``round(b / s) * s``, with the scales of the ranges used in this
    forward (the input quantizer's, the weight quantizer's after it observed this weight), as
    the exporter computes it (float64, ties away from zero, clamped to int32), bit for bit;
    gradient straight through to ``bias``. Unlinked, or while either quantizer passes floats
    through (no range yet, OFF, a histogram source calibrating), the float bias.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype: as :class:`torch.nn.Conv2d` (``stride=1``,
            ``padding=0``, ``dilation=1``, ``groups=1``, ``bias=True``).
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``).

    Shapes: input ``[N, in_channels, H, W]`` (or unbatched ``[in_channels, H, W]``), output
    ``[N, out_channels, H_out, W_out]``; ``weight``
    ``[out_channels, in_channels // groups, kH, kW]``, ``bias`` ``[out_channels]``.

    Example:
        >>> dw = edgeqat.QuantConv2d(32, 32, 3, stride=2, padding=1, groups=32)  # depthwise
        >>> y = dw(torch.randn(2, 32, 16, 16))  # [2, 32, 8, 8]
        >>> plain = dw.to_float()               # torch.nn.Conv2d, same float weights
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
        bias: bool = True,
        padding_mode: str = "zeros",
        config: QConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.conv2d(x, weight_quant(weight), bias, ...)``, the bias simulated as the int8
        model's int32 bias when the layer is linked to its input's quantizer."""
        weight = self.weight_quant(self.weight)  # first: the bias reads the range it used
        return self._conv(x, weight, self._bias_for_forward(self.bias))

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: QConfig | None = None) -> QuantConv2d:
        """A QuantConv2d with ``module``'s geometry and a copy of its weight and bias (same
        device, dtype and train / eval mode); ``config`` defaults to ``QConfig()``. Not linked
        to an input quantizer (:meth:`set_input_quantizer`)."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module must be a torch.nn.Conv2d, got {type(module).__name__}")
        qmod = cls(
            **cls._geometry_of(module),
            bias=module.bias is not None,
            config=config,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        copy_weight_and_bias(qmod, module.weight, module.bias)
        return qmod.train(module.training)

    def to_float(self) -> nn.Conv2d:
        """A torch.nn.Conv2d with a copy of the float (not quantized) weight and bias."""
        return self._float_conv(self.weight.detach(), self.bias)
