"""Helpers shared by the quantized modules: the default config and the weight quantizer."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import QConfig, QuantSpec
from ..quantizer import FakeQuantizer

__all__ = [
    "copy_weight_and_bias",
    "init_weight_and_bias",
    "make_weight_quantizer",
    "resolve_config",
]


def resolve_config(config: QConfig | None) -> QConfig:
    """``config``, or the default :class:`~edgeqat.QConfig` when it is None."""
    if config is None:
        return QConfig()
    if not isinstance(config, QConfig):
        raise TypeError(f"config must be an edgeqat.QConfig or None, got {type(config).__name__}")
    return config


def make_weight_quantizer(
    spec: QuantSpec, out_channels: int, device: torch.device | str | None = None
) -> FakeQuantizer:
    """The weight quantizer of a conv / linear layer with ``out_channels`` outputs.

    A per-channel spec must use axis 0: the int8 model (TFLite spec) has one weight scale per
    output channel, and PyTorch keeps output channels in dim 0 of conv and linear weights.
    """
    if spec.per_channel and spec.axis != 0:
        raise ValueError(
            "a per-channel weight QuantSpec must have axis=0 (output channels of conv / linear "
            f"weights), got axis={spec.axis}"
        )
    quantizer = FakeQuantizer(spec, channels=out_channels if spec.per_channel else None)
    return quantizer if device is None else quantizer.to(device)


def copy_weight_and_bias(dst: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Copy ``weight`` (and ``bias`` if given) into ``dst.weight`` / ``dst.bias``, no grad."""
    with torch.no_grad():
        dst.weight.copy_(weight)
        if bias is not None:
            dst.bias.copy_(bias)


def init_weight_and_bias(
    module: nn.Module,
    weight_shape: tuple[int, ...],
    bias: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> None:
    """Create ``module.weight`` (and ``module.bias`` or a None bias) and initialise them as
    torch.nn.Linear / Conv2d do: Kaiming-uniform weight, bias uniform in +-1/sqrt(fan_in)."""
    factory = {"device": device, "dtype": dtype}
    module.weight = nn.Parameter(torch.empty(weight_shape, **factory))
    if bias:
        module.bias = nn.Parameter(torch.empty(weight_shape[0], **factory))
    else:
        module.register_parameter("bias", None)
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound)
