"""ActQuant: the fake quantizer of one activation tensor."""

from __future__ import annotations

import torch
from torch import nn

from ..config import QConfig
from ..quantizer import FakeQuantizer, Mode
from ._common import resolve_config

__all__ = ["ActQuant", "SharedActQuant"]


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


class SharedActQuant(nn.Module):
    """Fake-quantizes with the range of another :class:`ActQuant` (its ``source``) and never
    observes: for ops whose int8 output must keep their input's scale and zero point (average
    pooling, TFLite spec), the output is rounded to the input's grid.

    The source is not registered as a submodule: it belongs to (and is saved with) the part of
    the model that produced the input; this module only holds a reference and has no state.
    In ``LEARN`` mode gradients reach the source's learned range through this use too. While
    the source observes in float (a histogram source calibrating), this is the identity, like
    the source.

    Args:
        source: the :class:`ActQuant` whose range is shared.

    Example:
        >>> aq = edgeqat.ActQuant()
        >>> pool_quant = edgeqat.nn.SharedActQuant(aq)
        >>> y = pool_quant(F.adaptive_avg_pool2d(aq(x), 1))
    """

    def __init__(self, source: ActQuant) -> None:
        super().__init__()
        if not isinstance(source, ActQuant):
            raise TypeError(f"source must be an edgeqat.ActQuant, got {type(source).__name__}")
        # object.__setattr__ skips nn.Module's registration (no duplicate in state_dict or
        # parameters()); copy.deepcopy of the whole model still maps it to the copied source.
        object.__setattr__(self, "source", source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantizer = self.source.quantizer
        mode = quantizer.mode
        if mode is Mode.OFF:
            return x
        if (
            mode is Mode.OBSERVE
            and quantizer.training
            and getattr(quantizer.spec, "range_source", None) == "histogram"
        ):
            return x
        if mode is Mode.LEARN:
            lo, hi = quantizer.learned_range()
        else:
            lo, hi = quantizer.observed_range()
        return torch.ops.edgeqat.fake_quant_with_min_max_vars(
            x,
            lo.to(x.device),
            hi.to(x.device),
            quantizer.spec.num_bits,
            quantizer.spec.narrow_range,
        )
