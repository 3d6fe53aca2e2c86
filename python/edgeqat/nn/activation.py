"""ActQuant: the fake quantizer of one activation tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QConfig
from ..quantizer import FakeQuantizer, Mode
from ._common import resolve_config

__all__ = ["ActQuant", "SharedActQuant"]

_ACTIVATIONS = (None, "relu", "relu6")


class ActQuant(nn.Module):
    """Fake-quantizes an activation tensor (the model input, or the output of a conv, linear,
    add or pool) with ``config.activation``: one range per tensor, as the int8 model has one
    scale and zero point per activation tensor.

    With ``activation`` (``"relu"`` / ``"relu6"``) it computes ``fq(act(x))``: the activation
    of the layer before it, moved here (``prepare_qat`` does this for a fused conv + BN + ReLU
    and for an add + ReLU), where it is exported as that layer's output clamp. With an
    asymmetric per-tensor range in OBSERVE or FROZEN mode the activation is fused into the
    fake quant (same values bit for bit, one pass over the tensor and one saved tensor fewer;
    the gradient differs only at ``x == 0`` exactly, and at ``x == 6`` for ReLU6); otherwise
    (LEARN mode, where the learned lower end may leave 0) it is applied first.

    Args:
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``: 8 bits, asymmetric,
            EMA of the batch range with decay 0.999, the first batch sets it).
        activation: ``None`` (default), ``"relu"`` or ``"relu6"``.

    Attributes:
        quantizer: the :class:`~edgeqat.FakeQuantizer`; its range (``quantizer.quant_range()``)
            gives the tensor's int8 scale and zero point at export.

    Shape: any; the output has the input's shape and dtype.

    Example:
        >>> aq = edgeqat.ActQuant()
        >>> y = aq(torch.randn(8, 16, 4, 4))   # training mode: observes, then quantizes
    """

    def __init__(self, config: QConfig | None = None, activation: str | None = None) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ActQuant: activation must be None, 'relu' or 'relu6', got {activation!r}"
            )
        self.config = resolve_config(config)
        self.activation = activation
        self.quantizer = FakeQuantizer(self.config.activation)
        # Python mirror: whether the observed range lies inside the activation's output range
        # (true by construction: it is observed on act(x); rechecked when a state_dict is
        # loaded), which the fused path needs.
        self._range_in_activation = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fq(x)``, or ``fq(act(x))`` with an activation; in ``OBSERVE`` mode and training
        mode the range observes the batch first."""
        if self.activation is None:
            return self.quantizer(x)
        if self._can_fuse_activation():
            return self._fused_activation_forward(x)
        return self.quantizer(_apply_activation(self.activation, x))

    # -- the activation fused into the fake quant -------------------------------------------

    def _can_fuse_activation(self) -> bool:
        quantizer = self.quantizer
        spec = quantizer.spec
        return (
            quantizer.mode in (Mode.OBSERVE, Mode.FROZEN)
            and spec.range_source in ("last", "ema", "running")
            and not spec.symmetric
            and not spec.per_channel
            and self._range_in_activation
        )

    def _fused_activation_forward(self, x: torch.Tensor) -> torch.Tensor:
        # The observer sees act(x): observe_fake_quant_'s clamp bounds ([0, inf) for ReLU,
        # [0, 6] for ReLU6) clamp x's batch range without materialising act(x). The
        # asymmetric range made from it then has lower end exactly 0 (the observed minimum is
        # >= 0 and the range is widened to contain 0) and upper end at most 6 for ReLU6, so
        # fake-quantizing x itself clamps the negative values to 0 and (ReLU6) values above 6
        # to a grid point at or below the one 6 rounds to: the output equals fq(act(x)) bit
        # for bit, in one op, with one elementwise pass and one saved tensor fewer. The
        # gradient is the fake quant's straight-through mask on x, so it differs from
        # act'(x) * mask(act(x)) only at x == 0 exactly (and x == 6 for ReLU6).
        quantizer = self.quantizer
        if quantizer.mode is Mode.OBSERVE and quantizer.training:
            return quantizer._observe_and_quantize(
                x, 0.0, 6.0 if self.activation == "relu6" else None
            )
        if not quantizer._range_known:
            quantizer._require_range()  # FakeQuantizer's check and message
        lo, hi = quantizer._derived_range()
        spec = quantizer.spec
        return torch.ops.edgeqat.fake_quant_with_min_max_vars(
            x, lo.to(x.device), hi.to(x.device), spec.num_bits, spec.narrow_range
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        lo = state_dict.get(prefix + "quantizer.observed_min")
        hi = state_dict.get(prefix + "quantizer.observed_max")
        if self.activation is not None and isinstance(lo, torch.Tensor):
            # Filled entries must lie in the activation's range; (inf, -inf) means unobserved.
            filled = lo <= hi
            inside = (lo >= 0) & ((hi <= 6.0) if self.activation == "relu6" else True)
            self._range_in_activation = bool((inside | ~filled).all())

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}" if self.activation else ""


def _apply_activation(activation: str, x: torch.Tensor) -> torch.Tensor:
    # Not in place: x may be a tensor other code still reads.
    return F.relu(x) if activation == "relu" else F.relu6(x)


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
        >>> x = aq(torch.randn(2, 8, 4, 4))  # observes, then quantizes
        >>> y = pool_quant(torch.nn.functional.adaptive_avg_pool2d(x, 1))  # on x's grid
    """

    def __init__(self, source: ActQuant) -> None:
        super().__init__()
        if not isinstance(source, ActQuant):
            raise TypeError(f"source must be an edgeqat.ActQuant, got {type(source).__name__}")
        # object.__setattr__ skips nn.Module's registration (no duplicate in state_dict or
        # parameters()); copy.deepcopy of the whole model still maps it to the copied source.
        object.__setattr__(self, "source", source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to the source's grid (its observed range, the learned one in ``LEARN``
        mode); ``x`` itself while the source is ``OFF`` or a histogram source calibrating."""
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
