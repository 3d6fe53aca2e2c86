"""QuantAdd: the quantized elementwise (residual) add."""

from __future__ import annotations

import torch
from torch import nn

from ..config import QConfig
from .activation import ActQuant

__all__ = ["QuantAdd"]

_ACTIVATIONS = (None, "relu", "relu6")


class QuantAdd(nn.Module):
    """``out_quant(act(a + b))``: the add of the int8 model, whose output has its own scale and
    zero point (TFLite's ADD rescales both inputs to the output's parameters and clamps to its
    fused activation).

    The inputs are not quantized here: each is assumed to be quantized already by its
    producer's :class:`ActQuant` (the int8 graph gives every tensor one set of parameters, so a
    second quantizer on the same tensor would only disagree with the first).

    Args:
        config: the :class:`~edgeqat.QConfig` of the output quantizer (default ``QConfig()``).
        activation: ``None`` (default), ``"relu"`` or ``"relu6"``, applied before the output
            quantizer, so the output range is that of the activation's output (as the int8 add
            with a fused activation computes it: clamp, then one set of output parameters).

    Attributes:
        out_quant: the output :class:`ActQuant`.

    Shape: ``a`` and ``b`` broadcastable to each other; the output has the broadcast shape.

    Example:
        >>> add = edgeqat.QuantAdd(activation="relu")
        >>> block = torch.nn.Conv2d(8, 8, 3, padding=1)
        >>> x = torch.randn(2, 8, 4, 4)
        >>> y = add(x, block(x))                # a quantized residual connection, ResNet style
    """

    def __init__(self, config: QConfig | None = None, activation: str | None = None) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"QuantAdd: activation must be None, 'relu' or 'relu6', got {activation!r}"
            )
        self.activation = activation
        # The output quantizer applies the activation (fused into its fake quant).
        self.out_quant = ActQuant(config, activation=activation)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``out_quant(act(a + b))``."""
        return self.out_quant(a + b)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}" if self.activation else ""
