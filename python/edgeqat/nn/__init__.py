"""Quantized training-time modules.

- :class:`QuantLinear`, :class:`QuantConv2d`: float weights fake-quantized per output channel.
- :class:`ConvBn2d`: conv + batch norm (+ ReLU / ReLU6) trained with the fold the int8 model uses.
- :class:`ActQuant`: the quantizer of an activation tensor; :class:`SharedActQuant` rounds to
  another one's grid (average pooling).
- :class:`QuantAdd`: the quantized residual add.

Each float-weight module has ``from_float`` and ``to_float``.
"""

from __future__ import annotations

from .activation import ActQuant, SharedActQuant
from .add import QuantAdd
from .conv_bn import ConvBn2d
from .quant_conv import QuantConv2d
from .quant_linear import QuantLinear

__all__ = ["ActQuant", "ConvBn2d", "QuantAdd", "QuantConv2d", "QuantLinear", "SharedActQuant"]
