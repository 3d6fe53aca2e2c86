"""ActQuant: the fake quantizer of one activation tensor."""

from __future__ import annotations

import torch
from torch import nn

from ..config import QConfig
from ..quantizer import FakeQuantizer
from ._common import resolve_config

__all__ = ["ActQuant"]


class ActQuant(nn.Module):
    """Fake-quantizes an activation tensor (the model input, or the output of a conv, linear,
    add or pool) with ``config.activation``: one range per tensor, as the int8 model has one
    scale and zero point per activation tensor.

    Args:
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``: 8 bits, asymmetric,
            EMA of the batch range with decay 0.999, the first batch sets it).

    Attributes:
        quantizer: the :class:`~edgeqat.FakeQuantizer`; its range (``quantizer.quant_range()``)
            gives the tensor's int8 scale and zero point at export.

    Shape: any; the output has the input's shape and dtype.

    Example:
        >>> aq = edgeqat.ActQuant()
        >>> y = aq(torch.randn(8, 16, 4, 4))   # training mode: observes, then quantizes
    """

    def __init__(self, config: QConfig | None = None) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.quantizer = FakeQuantizer(self.config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(x)
