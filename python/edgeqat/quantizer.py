"""The fake quantizer: a range source, a grid and a mode, over the C++ ops.

State lives in buffers and parameters only (``observed_min``,
``observed_max``, ``learned_min``, ``learned_max``, ``mode_code``, and for the
histogram range source ``histogram``, ``histogram_min``, ``histogram_max``),
so ``state_dict`` / ``load_state_dict`` restore a QAT run (or a calibration)
mid-way exactly. The arithmetic is ``torch.ops.edgeqat.observe_fake_quant_``
(an observer step and the fake quant in one op),
``torch.ops.edgeqat.fake_quant_with_min_max_vars[_per_channel]`` and, for the
histogram source, ``observe_histogram_`` / ``histogram_range``.

``forward`` reads no tensor value on the host: the mode is mirrored in a
Python attribute (kept in step with ``mode_code`` by :meth:`set_mode` and by
``load_state_dict``), and whether a range has been observed is checked once,
when it first matters, and then remembered. So a training step neither waits
for the device nor breaks a ``torch.compile`` graph.
"""

from __future__ import annotations

import enum

import torch
from torch import nn

from .config import QuantSpec

__all__ = ["FakeQuantizer", "Mode"]


class Mode(enum.IntEnum):
    """What a :class:`FakeQuantizer` does in ``forward``.

    - ``OBSERVE``: in training mode, fold the batch into the observed range,
      then fake-quantize with it; in eval mode, only fake-quantize. With the
      ``"histogram"`` range source, training mode only adds the batch to the
      histogram and returns it unchanged (calibration runs in float).
    - ``FROZEN``: fake-quantize with the observed range, never update it.
    - ``LEARN``: fake-quantize with ``learned_min`` / ``learned_max``,
      parameters trained by gradient (initialised from the observed range).
    - ``OFF``: identity.
    """

    OBSERVE = 0
    FROZEN = 1
    LEARN = 2
    OFF = 3


class FakeQuantizer(nn.Module):
    """Fake-quantizes a tensor with TensorFlow's FakeQuantWithMinMaxVars.

    Args:
        spec: grid and range source (:class:`~edgeqat.QuantSpec`).
        channels: number of channels along ``spec.axis``; required when
            ``spec.per_channel``.
        mode: initial :class:`Mode`.

    Shapes: ``observed_*`` and ``learned_*`` are ``[]`` per tensor and
    ``[channels]`` per channel. The quantization range always contains 0
    (the int8 spec needs an exact zero) and is ``[-b, b]`` when symmetric.

    Histogram range source (``spec.range_source == "histogram"``, post-training
    calibration; docs/observers.md): buffers ``histogram`` (``[bins]`` int64
    counts), ``histogram_min`` / ``histogram_max`` (``[]`` float64, the range
    the bins cover). In ``OBSERVE`` and training mode ``forward`` adds the
    batch to the histogram and returns it unchanged, like TFLite's calibrator,
    which runs the float model. The range is chosen from the histogram
    (``spec.histogram_method``) and written into ``observed_min`` /
    ``observed_max`` by :meth:`select_range`, which runs by itself when the
    quantizer leaves ``OBSERVE`` (:meth:`freeze`, :meth:`learn`) and whenever
    the range is needed after new data (eval mode, :meth:`observed_range`);
    from then on ``FROZEN``, ``LEARN`` and export work as for any source.

    Example:
        >>> q = edgeqat.FakeQuantizer(edgeqat.QuantSpec())  # EMA activation quantizer
        >>> y = q(torch.randn(8, 16))                       # observes, then quantizes
        >>> q.learn().mode                                  # ranges become parameters
        <Mode.LEARN: 2>
        >>> c = edgeqat.FakeQuantizer(edgeqat.QuantSpec(range_source="histogram")).train()
        >>> for x in torch.randn(4, 1000):                  # calibration batches
        ...     y = c(x)                                    # float: fills the histogram
        >>> c.freeze().mode                                 # MSE range chosen from it
        <Mode.FROZEN: 1>
    """

    def __init__(
        self, spec: QuantSpec, channels: int | None = None, mode: Mode = Mode.OBSERVE
    ) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"spec must be a QuantSpec, got {type(spec).__name__}")
        if Mode(mode) is Mode.LEARN:
            raise ValueError(
                "mode=Mode.LEARN needs an observed range to start from: build the quantizer "
                "in OBSERVE mode, run data through it, then call .learn() (or load a state_dict)"
            )
        if spec.per_channel and (channels is None or channels <= 0):
            raise ValueError(
                f"channels must be a positive int for a per-channel spec, got {channels!r}"
            )
        self.spec = spec
        shape = (channels,) if spec.per_channel else ()
        # min > max marks "nothing observed yet"; observe_min_max_ then takes
        # the first batch's range as it is.
        self.register_buffer("observed_min", torch.full(shape, float("inf")))
        self.register_buffer("observed_max", torch.full(shape, float("-inf")))
        self.learned_min = nn.Parameter(torch.zeros(shape))
        self.learned_max = nn.Parameter(torch.zeros(shape))
        self.register_buffer("mode_code", torch.tensor(int(Mode(mode)), dtype=torch.uint8))
        if spec.range_source == "histogram":
            # int64 counts stay exact (and survive model.half()); float64 ends
            # keep the bin edges exact as the range grows. min > max: empty.
            self.register_buffer("histogram", torch.zeros(spec.histogram_bins, dtype=torch.int64))
            self.register_buffer("histogram_min", torch.tensor(float("inf"), dtype=torch.float64))
            self.register_buffer("histogram_max", torch.tensor(float("-inf"), dtype=torch.float64))
        # Python mirrors of the state, read by forward instead of the buffers
        # (a buffer read is a host sync and a torch.compile graph break):
        # _mode is mode_code; _range_known records that every entry of the
        # observed range has been seen filled (it cannot empty again except
        # through load_state_dict, which recomputes it); _histogram_pending
        # that the histogram holds data not yet turned into the observed range.
        self._mode = Mode(mode)
        self._range_known = False
        self._histogram_pending = False

    # -- mode ---------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The current :class:`Mode` (persisted in the ``mode_code`` buffer)."""
        return self._mode

    def set_mode(self, mode: Mode) -> FakeQuantizer:
        """Switch to ``mode`` (a :class:`Mode` or its value); returns ``self``.

        Going to ``LEARN`` from another mode initialises ``learned_min`` / ``learned_max``
        from :meth:`observed_range` (an error if nothing was observed); going to ``FROZEN``
        or ``LEARN`` first chooses the range of a histogram source that has new data
        (:meth:`select_range`)."""
        mode = Mode(mode)
        if mode in (Mode.FROZEN, Mode.LEARN) and self._histogram_pending:
            self.select_range()
        if mode is Mode.LEARN and self._mode is not Mode.LEARN:
            self._init_learned_from_observed()
        self.mode_code.fill_(int(mode))
        self._mode = mode
        return self

    def observe(self) -> FakeQuantizer:
        """Go (back) to ``OBSERVE``: in training mode the range follows the data again,
        continuing from the observed state."""
        return self.set_mode(Mode.OBSERVE)

    def freeze(self) -> FakeQuantizer:
        """Stop observing (a histogram source chooses its range now)."""
        return self.set_mode(Mode.FROZEN)

    def learn(self) -> FakeQuantizer:
        """Make the ranges parameters, starting from the observed range (a
        histogram source chooses it now)."""
        return self.set_mode(Mode.LEARN)

    def disable(self) -> FakeQuantizer:
        """Turn the quantizer ``OFF``: ``forward`` returns its input unchanged."""
        return self.set_mode(Mode.OFF)

    @property
    def has_range(self) -> bool:
        """Whether every channel has observed data (for a histogram source: the
        histogram has data, the range is chosen from it when first needed).
        Reads the state: a host sync, until a range has been seen."""
        if not (self._range_known or self._histogram_pending):
            self._range_known = bool((self.observed_min <= self.observed_max).all())
        return self._range_known or self._histogram_pending

    # -- ranges ---------------------------------------------------------------

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The quantization range made from the observed one: widened to
        contain 0, symmetric if the spec says so. Detached. A histogram source
        first chooses its range if new data arrived since the last choice."""
        self._require_range()
        return self._derived_range()

    def select_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose the range from the histogram (``spec.histogram_method``) and
        write it into ``observed_min`` / ``observed_max``; returns it as
        :meth:`observed_range` does. Only for ``range_source="histogram"``;
        runs by itself on :meth:`freeze` / :meth:`learn` and when the range is
        needed after new data. The choice depends only on the histogram, so
        calling it again without new data gives the same range.

        Example:
            >>> q = edgeqat.FakeQuantizer(edgeqat.QuantSpec(range_source="histogram")).train()
            >>> y = q(torch.randn(1000))
            >>> lo, hi = q.select_range()
            >>> bool(lo < 0 < hi)
            True
        """
        spec = self.spec
        if spec.range_source != "histogram":
            raise RuntimeError(
                f"{self._describe()}: select_range() chooses a range from a histogram; this "
                f"quantizer has range_source={spec.range_source!r}, not 'histogram'"
            )
        if not self._histogram_pending and not bool(self.histogram_min <= self.histogram_max):
            raise RuntimeError(
                f"{self._describe()} has an empty histogram: run calibration data through it "
                "in OBSERVE mode (model.train()) first"
            )
        lo, hi = torch.ops.edgeqat.histogram_range(
            self.histogram,
            self.histogram_min,
            self.histogram_max,
            spec.histogram_method,
            float(spec.percentile),
            spec.num_bits,
            spec.narrow_range,
            spec.symmetric,
        )
        with torch.no_grad():
            self.observed_min.copy_(lo)
            self.observed_max.copy_(hi)
        self._histogram_pending = False
        self._range_known = True
        return self._derived_range()

    def _require_range(self) -> None:
        if self._histogram_pending:
            self.select_range()
        if not self.has_range:
            hint = (
                "run calibration data through it in OBSERVE mode (model.train())"
                if self.spec.range_source == "histogram"
                else "run data through it in OBSERVE mode (model.train()) or calibrate"
            )
            raise RuntimeError(
                f"{self._describe()} has no observed range yet: {hint} before freezing or "
                "evaluating"
            )

    def _derived_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        # No check: an unobserved entry (+inf, -inf) would become [0, 0].
        lo = self.observed_min.detach().clamp(max=0.0)
        hi = self.observed_max.detach().clamp(min=0.0)
        if self.spec.symmetric:
            bound = torch.maximum(-lo, hi)
            return -bound, bound
        return lo, hi

    def learned_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned range as used in ``forward`` (differentiable)."""
        if self.spec.symmetric:
            bound = self.learned_max.abs()
            return -bound, bound
        # If gradient steps cross the ends, the range degenerates to one point
        # (output 0) rather than becoming invalid; gradients still flow.
        return self.learned_min, torch.maximum(self.learned_max, self.learned_min)

    def quant_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range the quantizer uses now (for export and inspection)."""
        if self.mode is Mode.LEARN:
            lo, hi = self.learned_range()
            return lo.detach(), hi.detach()
        return self.observed_range()

    def _init_learned_from_observed(self) -> None:
        lo, hi = self.observed_range()
        with torch.no_grad():
            self.learned_min.copy_(lo)
            self.learned_max.copy_(hi)

    # -- forward ----------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` fake-quantized as the :class:`Mode` says (in ``OBSERVE`` mode and training
        mode the range observes ``x`` first; a histogram source then returns ``x`` itself).
        The output has ``x``'s shape and dtype."""
        mode = self._mode
        if mode is Mode.OFF:
            return x
        if mode is Mode.OBSERVE and self.training and self.spec.range_source == "histogram":
            torch.ops.edgeqat.observe_histogram_(
                self.histogram, self.histogram_min, self.histogram_max, x
            )
            if not self._histogram_pending and x.numel() > 0:
                self._histogram_pending = True
            return x  # calibration runs in float
        if mode is Mode.OBSERVE and self.training:
            return self._observe_and_quantize(x)
        if mode is Mode.LEARN:
            lo, hi = self.learned_range()
        else:
            if not self._range_known or self._histogram_pending:
                self._require_range()  # until a range is seen; after new histogram data
            lo, hi = self._derived_range()
        lo, hi = lo.to(x.device), hi.to(x.device)
        if self.spec.per_channel:
            return torch.ops.edgeqat.fake_quant_with_min_max_vars_per_channel(
                x, lo, hi, self.spec.axis, self.spec.num_bits, self.spec.narrow_range
            )
        return torch.ops.edgeqat.fake_quant_with_min_max_vars(
            x, lo, hi, self.spec.num_bits, self.spec.narrow_range
        )

    def _observe_and_quantize(
        self, x: torch.Tensor, clamp_min: float | None = None, clamp_max: float | None = None
    ) -> torch.Tensor:
        """forward's OBSERVE step in training: observe_min_max_, observed_range() and the
        fake quant in one op. With ``clamp_min`` / ``clamp_max`` the state observes
        ``clamp(x, clamp_min, clamp_max)`` (an activation fused in front, see ActQuant) and
        ``x`` itself is fake-quantized."""
        # A non-empty batch fills every entry (each channel slice is non-empty too); numel
        # is static to torch.compile.
        if not self._range_known and x.numel() > 0:
            self._range_known = True
        spec = self.spec
        return torch.ops.edgeqat.observe_fake_quant_(
            self.observed_min,
            self.observed_max,
            x,
            spec.axis if spec.per_channel else None,
            spec.averaging_constant,
            spec.range_source == "running",
            spec.symmetric,
            spec.num_bits,
            spec.narrow_range,
            clamp_min,
            clamp_max,
        )

    # -- state_dict -------------------------------------------------------------

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        errors_before = len(error_msgs)
        code = state_dict.get(prefix + "mode_code")
        if isinstance(code, torch.Tensor) and code.numel() == 1:
            value = int(code)
            if value not in {m.value for m in Mode}:
                error_msgs.append(
                    f"{prefix}mode_code: {value} is not a Mode "
                    f"({', '.join(f'{m.value}={m.name}' for m in Mode)})"
                )
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if len(error_msgs) == errors_before:
            # The buffers changed behind the mirrors: read them again (once).
            self._mode = Mode(int(self.mode_code))
            self._range_known = bool((self.observed_min <= self.observed_max).all())
            # A saved histogram with a saved range: the range was chosen from it.
            self._histogram_pending = (
                self.spec.range_source == "histogram"
                and not self._range_known
                and bool(self.histogram_min <= self.histogram_max)
            )

    def _describe(self) -> str:
        kind = f"per-channel (axis {self.spec.axis})" if self.spec.per_channel else "per-tensor"
        source = ", histogram" if self.spec.range_source == "histogram" else ""
        return f"FakeQuantizer({kind}, {self.spec.num_bits} bits{source})"

    def extra_repr(self) -> str:
        s = self.spec
        text = (
            f"mode={self._mode.name}, num_bits={s.num_bits}, narrow_range={s.narrow_range}, "
            f"symmetric={s.symmetric}, per_channel={s.per_channel}, axis={s.axis}, "
            f"range_source={s.range_source!r}"
        )
        if s.range_source == "histogram":
            text += f", histogram_bins={s.histogram_bins}, histogram_method={s.histogram_method!r}"
            if s.histogram_method == "percentile":
                text += f", percentile={s.percentile}"
        return text
