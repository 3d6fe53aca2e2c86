"""QuantAdd: the quantized elementwise (residual) add."""

from __future__ import annotations

import torch
from torch import nn

from ..config import QConfig
from .activation import ActQuant

__all__ = ["QuantAdd"]


class QuantAdd(nn.Module):
    """``out_quant(a + b)``: the add of the int8 model, whose output has its own scale and
    zero point (TFLite's ADD rescales both inputs to the output's parameters).

    The inputs are not quantized here: each is assumed to be quantized already by its
    producer's :class:`ActQuant` (the int8 graph gives every tensor one set of parameters, so a
    second quantizer on the same tensor would only disagree with the first).

    Args:
        config: the :class:`~edgeqat.QConfig` of the output quantizer (default ``QConfig()``).

    Attributes:
        out_quant: the output :class:`ActQuant`.

    Shape: ``a`` and ``b`` broadcastable to each other; the output has the broadcast shape.

    Example:
        >>> add = edgeqat.QuantAdd()
        >>> y = add(x, block(x))                # a quantized residual connection
    """

    def __init__(self, config: QConfig | None = None) -> None:
        super().__init__()
        self.out_quant = ActQuant(config)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out_quant(a + b)
