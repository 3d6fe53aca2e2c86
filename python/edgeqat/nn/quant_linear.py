"""QuantLinear: a linear layer whose weight is fake-quantized per output channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QConfig
from ._bias import InputQuantizerLink
from ._common import (
    copy_weight_and_bias,
    init_weight_and_bias,
    make_weight_quantizer,
    resolve_config,
)

__all__ = ["QuantLinear"]


class QuantLinear(InputQuantizerLink, nn.Module):
    """``F.linear(x, weight_quant(weight), bias)``.

    The float weight and bias are the trained parameters. The weight is fake-quantized by
    ``weight_quant`` (``config.weight``; by default 8 bits, symmetric, narrow range
    ``[-127, 127]``, one range per output channel, the range of the current weight). The input
    and output activations are quantized by separate :class:`~edgeqat.ActQuant` modules.

    Bias: the int8 model stores it as an int32 with scale ``s = s_in * s_w[c]``. Linked to the
    quantizer of its input (:meth:`set_input_quantizer`, which :func:`~edgeqat.prepare_qat`
    calls), with ``config.quantize_bias`` (default), the layer adds exactly that bias,
    ``round(b / s) * s`` (as :class:`~edgeqat.QuantConv2d` documents); unlinked, the float bias.

    Args:
        in_features, out_features, bias, device, dtype: as :class:`torch.nn.Linear`
            (``bias=True``).
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``).

    Shapes: input ``[*, in_features]``, output ``[*, out_features]``; ``weight``
    ``[out_features, in_features]``, ``bias`` ``[out_features]``.

    Example:
        >>> fc = edgeqat.QuantLinear.from_float(torch.nn.Linear(16, 4))
        >>> y = fc(torch.randn(8, 16))          # [8, 4]; training mode observes the weight
        >>> plain = fc.to_float()               # torch.nn.Linear with the same float weights
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        config: QConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.in_features = in_features
        self.out_features = out_features
        init_weight_and_bias(self, (out_features, in_features), bias, device, dtype)
        self.weight_quant = make_weight_quantizer(self.config.weight, out_features, device)
        self._init_input_quantizer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight_quant(weight), bias)``, the bias simulated as the int8 model's
        int32 bias when the layer is linked to its input's quantizer."""
        weight = self.weight_quant(self.weight)  # first: the bias reads the range it used
        return F.linear(x, weight, self._bias_for_forward(self.bias))

    @classmethod
    def from_float(cls, module: nn.Linear, config: QConfig | None = None) -> QuantLinear:
        """A QuantLinear with a copy of ``module``'s weight and bias (same device, dtype and
        train / eval mode); ``config`` defaults to ``QConfig()``. Not linked to an input
        quantizer (:meth:`set_input_quantizer`)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module must be a torch.nn.Linear, got {type(module).__name__}")
        qmod = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            config=config,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        copy_weight_and_bias(qmod, module.weight, module.bias)
        return qmod.train(module.training)

    def to_float(self) -> nn.Linear:
        """A torch.nn.Linear with a copy of the float (not quantized) weight and bias."""
        module = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        copy_weight_and_bias(module, self.weight, self.bias)
        return module.train(self.training)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
