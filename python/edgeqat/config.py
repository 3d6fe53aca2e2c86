"""Quantization configuration: frozen, validated dataclasses.

Defaults follow TensorFlow's 8-bit QAT recipe (tensorflow/model-optimization,
default_8bit_quantizers.py): weights per output channel, symmetric, narrow
range, last-value ranges; activations per tensor, asymmetric, exponential
moving average of the batch range with decay 0.999, first batch sets it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["QConfig", "QuantSpec", "RangeSource"]

#: Where a quantizer's range comes from while it observes.
#:  - ``"last"``: the range of the last batch (weights);
#:  - ``"ema"``: exponential moving average of batch ranges (activations);
#:  - ``"running"``: all-time min / max (calibration).
RangeSource = Literal["last", "ema", "running"]


@dataclass(frozen=True)
class QuantSpec:
    """The grid and the range source of one quantizer.

    Args:
        num_bits: bits of the integer grid, 2 to 16.
        narrow_range: use ``[1, 2**num_bits - 1]`` (symmetric int8 weights:
            ``[-127, 127]``).
        symmetric: the range is ``[-b, b]`` with ``b = max(|min|, |max|)``.
        per_channel: one range per slice along ``axis``.
        axis: the channel axis when ``per_channel`` (0: output channels of
            conv / linear weights).
        range_source: ``"last"``, ``"ema"`` or ``"running"`` (see
            :data:`RangeSource`).
        ema_decay: decay of the moving average (``range_source="ema"``); the
            new batch gets weight ``1 - ema_decay``.

    Example:
        >>> QuantSpec(num_bits=4, symmetric=True, per_channel=True, narrow_range=True)
    """

    num_bits: int = 8
    narrow_range: bool = False
    symmetric: bool = False
    per_channel: bool = False
    axis: int = 0
    range_source: RangeSource = "ema"
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        for name in ("narrow_range", "symmetric", "per_channel"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"QuantSpec.{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)):
            raise TypeError(f"QuantSpec.ema_decay must be a float, got {self.ema_decay!r}")
        if (
            isinstance(self.num_bits, bool)
            or not isinstance(self.num_bits, int)
            or not 2 <= self.num_bits <= 16
        ):
            raise ValueError(f"QuantSpec.num_bits must be an int in [2, 16], got {self.num_bits!r}")
        if self.range_source not in ("last", "ema", "running"):
            raise ValueError(
                "QuantSpec.range_source must be 'last', 'ema' or 'running', "
                f"got {self.range_source!r}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"QuantSpec.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"QuantSpec.axis must be an int, got {self.axis!r}")

    @property
    def averaging_constant(self) -> float:
        """Weight of a new batch in the observer update (1.0 for "last")."""
        return 1.0 - self.ema_decay if self.range_source == "ema" else 1.0

    def replace(self, **changes) -> QuantSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _default_weight_spec() -> QuantSpec:
    return QuantSpec(
        num_bits=8, narrow_range=True, symmetric=True, per_channel=True, axis=0, range_source="last"
    )


def _default_activation_spec() -> QuantSpec:
    return QuantSpec(num_bits=8, range_source="ema", ema_decay=0.999)


@dataclass(frozen=True)
class QConfig:
    """How a model is quantized.

    Args:
        weight: spec of weight quantizers (default: 8-bit, per output channel,
            symmetric, narrow range, last-value range).
        activation: spec of activation quantizers (default: 8-bit, per
            tensor, asymmetric, EMA with decay 0.999).
        learn_ranges: after observation, ranges become parameters learned by
            gradient (TF's FakeQuantWithMinMaxVars gradients).

    Example:
        >>> cfg = QConfig(weight=QConfig().weight.replace(num_bits=4))
    """

    weight: QuantSpec = field(default_factory=_default_weight_spec)
    activation: QuantSpec = field(default_factory=_default_activation_spec)
    learn_ranges: bool = False

    def __post_init__(self) -> None:
        for name in ("weight", "activation"):
            if not isinstance(getattr(self, name), QuantSpec):
                raise TypeError(
                    f"QConfig.{name} must be a QuantSpec, got {type(getattr(self, name)).__name__}"
                )
        if self.activation.per_channel:
            raise ValueError(
                "QConfig.activation.per_channel must be False: the int8 model has one scale "
                "and zero point per activation tensor"
            )
