"""Quantization configuration: frozen, validated dataclasses.

Defaults follow TensorFlow's 8-bit QAT recipe (tensorflow/model-optimization,
default_8bit_quantizers.py): weights per output channel, symmetric, narrow
range, last-value ranges; activations per tensor, asymmetric, exponential
moving average of the batch range with decay 0.999, first batch sets it.

For post-training calibration a quantizer can instead collect a histogram of
the values and choose its range from it (``range_source="histogram"``), by
percentile or by the smallest expected quantization error (docs/observers.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HistogramMethod", "QATSchedule", "QConfig", "QuantSpec", "RangeSource"]

#: Where a quantizer's range comes from while it observes.
#:  - ``"last"``: the range of the last batch (weights);
#:  - ``"ema"``: exponential moving average of batch ranges (activations);
#:  - ``"running"``: all-time min / max (calibration);
#:  - ``"histogram"``: a histogram of every value observed, the range chosen
#:    from it by ``histogram_method`` (post-training calibration; per tensor).
RangeSource = Literal["last", "ema", "running", "histogram"]

#: How a ``"histogram"`` range source chooses the range:
#:  - ``"mse"``: the range with the smallest expected squared error of the
#:    fake quant, clipping and rounding (estimated from the histogram);
#:  - ``"percentile"``: the range that holds ``percentile`` percent of the values.
HistogramMethod = Literal["percentile", "mse"]

_RANGE_SOURCES = ("last", "ema", "running", "histogram")
_HISTOGRAM_METHODS = ("percentile", "mse")
# The MSE search costs O(bins^2) per pass (~0.1 s at 2048 bins, 64x that at 16384).
_MAX_HISTOGRAM_BINS = 16384


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
        range_source: ``"last"``, ``"ema"``, ``"running"`` or ``"histogram"``
            (see :data:`RangeSource`). ``"histogram"`` is per tensor only.
        ema_decay: decay of the moving average (``range_source="ema"``); the
            new batch gets weight ``1 - ema_decay``.
        histogram_bins: bins of the histogram (``range_source="histogram"``),
            2 to 16384. PyTorch's HistogramObserver and TensorRT's calibrators
            also use 2048.
        histogram_method: ``"mse"`` or ``"percentile"`` (see
            :data:`HistogramMethod`).
        percentile: for ``histogram_method="percentile"``, in percent, 50 to
            100. A symmetric range ``[-t, t]`` keeps that share of ``|x|``; an
            asymmetric one runs from the ``(100 - percentile)``-th to the
            ``percentile``-th percentile (each end cuts ``100 - percentile``
            percent). 100 keeps everything.

    Example:
        >>> w4 = edgeqat.QuantSpec(num_bits=4, symmetric=True, per_channel=True, narrow_range=True)
        >>> calibration = edgeqat.QuantSpec(
        ...     range_source="histogram", histogram_method="percentile", percentile=99.9
        ... )
    """

    num_bits: int = 8
    narrow_range: bool = False
    symmetric: bool = False
    per_channel: bool = False
    axis: int = 0
    range_source: RangeSource = "ema"
    ema_decay: float = 0.999
    histogram_bins: int = 2048
    histogram_method: HistogramMethod = "mse"
    percentile: float = 99.99

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
        if not isinstance(self.range_source, str) or self.range_source not in _RANGE_SOURCES:
            raise ValueError(
                "QuantSpec.range_source must be 'last', 'ema', 'running' or 'histogram', "
                f"got {self.range_source!r}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"QuantSpec.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"QuantSpec.axis must be an int, got {self.axis!r}")
        if (
            isinstance(self.histogram_bins, bool)
            or not isinstance(self.histogram_bins, int)
            or not 2 <= self.histogram_bins <= _MAX_HISTOGRAM_BINS
        ):
            raise ValueError(
                f"QuantSpec.histogram_bins must be an int in [2, {_MAX_HISTOGRAM_BINS}], "
                f"got {self.histogram_bins!r}"
            )
        if (
            not isinstance(self.histogram_method, str)
            or self.histogram_method not in _HISTOGRAM_METHODS
        ):
            raise ValueError(
                "QuantSpec.histogram_method must be 'percentile' or 'mse', "
                f"got {self.histogram_method!r}"
            )
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)):
            raise TypeError(f"QuantSpec.percentile must be a float, got {self.percentile!r}")
        if not 50.0 <= self.percentile <= 100.0:
            raise ValueError(f"QuantSpec.percentile must be in [50, 100], got {self.percentile!r}")
        if self.range_source == "histogram" and self.per_channel:
            raise ValueError(
                "QuantSpec.range_source='histogram' is per tensor only: set per_channel=False "
                "(per-channel weights take 'last' or 'running')"
            )

    @property
    def averaging_constant(self) -> float:
        """Weight of a new batch in the observer update (1.0 for "last"; unused by
        "running" and "histogram")."""
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
class QATSchedule:
    """After how many training steps each QAT phase starts (``None``: never).

    A step is one ``forward`` of the prepared model in training mode. At the start of step
    ``n`` (counting from 0), if ``n`` equals a field, that phase begins, before the forward:

    Args:
        freeze_bn_step: :func:`~edgeqat.freeze_bn`: from then on training sees the folded
            inference graph (Jacob et al. 2018 freeze BN statistics late in training).
        freeze_observers_step: :func:`~edgeqat.freeze_observers`: ranges stop moving.
        learn_ranges_step: :func:`~edgeqat.learn_ranges`: ranges become parameters trained by
            gradient, starting from the observed ones (include ``learned_min`` /
            ``learned_max`` in the optimizer; ``model.parameters()`` does).

    Example:
        >>> cfg = edgeqat.QConfig(schedule=edgeqat.QATSchedule(freeze_bn_step=2000,
        ...                                                    freeze_observers_step=3000))
    """

    freeze_bn_step: int | None = None
    freeze_observers_step: int | None = None
    learn_ranges_step: int | None = None

    def __post_init__(self) -> None:
        for name in ("freeze_bn_step", "freeze_observers_step", "learn_ranges_step"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(
                    f"QATSchedule.{name} must be a non-negative int or None, got {value!r}"
                )
        if (
            self.freeze_observers_step is not None
            and self.learn_ranges_step is not None
            and self.learn_ranges_step <= self.freeze_observers_step
        ):
            # Learned ranges are parameters, not observed ones: freezing after learning began
            # would do nothing, which is certainly not what the schedule meant.
            raise ValueError(
                "QATSchedule.learn_ranges_step must come after freeze_observers_step (or leave "
                f"one of them None), got learn_ranges_step={self.learn_ranges_step}, "
                f"freeze_observers_step={self.freeze_observers_step}"
            )


@dataclass(frozen=True)
class QConfig:
    """How a model is quantized.

    Args:
        weight: spec of weight quantizers (default: 8-bit, per output channel,
            symmetric, narrow range, last-value range).
        activation: spec of activation quantizers (default: 8-bit, per
            tensor, asymmetric, EMA with decay 0.999).
        schedule: when the QAT phases start (:class:`QATSchedule`; default None: call
            :func:`~edgeqat.freeze_bn` / :func:`~edgeqat.freeze_observers` /
            :func:`~edgeqat.learn_ranges` by hand). Used by :func:`~edgeqat.prepare_qat`.
        unsupported: what :func:`~edgeqat.prepare_qat` / :func:`~edgeqat.prepare_ptq` do with
            an op they cannot quantize: ``"error"`` (default) raises
            :class:`~edgeqat.UnsupportedOpError` naming each one and its source line;
            ``"float"`` keeps it in float and quantizes its output.
        quantize_bias: simulate the int8 model's int32 bias (default True): a conv / linear
            layer linked to the quantizer of its input (``set_input_quantizer``, which
            ``prepare_qat`` / ``prepare_ptq`` call for every layer) adds
            ``round(b / (s_in * s_w[c])) * s_in * s_w[c]``, the bias the int8 model uses,
            instead of the float ``b`` (straight-through gradient). ``False``: the float bias.

    Example:
        >>> cfg = edgeqat.QConfig(weight=edgeqat.QConfig().weight.replace(num_bits=4))
        >>> cfg.weight.num_bits, cfg.weight.per_channel
        (4, True)
    """

    weight: QuantSpec = field(default_factory=_default_weight_spec)
    activation: QuantSpec = field(default_factory=_default_activation_spec)
    schedule: QATSchedule | None = None
    unsupported: Literal["error", "float"] = "error"
    quantize_bias: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.quantize_bias, bool):
            raise TypeError(f"QConfig.quantize_bias must be a bool, got {self.quantize_bias!r}")
        if self.schedule is not None and not isinstance(self.schedule, QATSchedule):
            raise TypeError(
                "QConfig.schedule must be an edgeqat.QATSchedule or None, got "
                f"{type(self.schedule).__name__}"
            )
        if self.unsupported not in ("error", "float"):
            raise ValueError(
                f"QConfig.unsupported must be 'error' or 'float', got {self.unsupported!r}"
            )
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
