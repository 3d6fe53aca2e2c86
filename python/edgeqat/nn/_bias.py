"""The int32 bias of the int8 model, simulated in the conv / linear modules.

The int8 model adds the bias as an int32 at the scale of the accumulator, ``s_in * s_w[c]``
(the input's scale times the weight scale of output channel ``c``): ``GraphBuilder``
(csrc/runtime/builder.cpp) stores ``round(b / (s_in * s_w[c]))``, in double, rounding half away
from zero. A layer linked to the quantizer of its input adds exactly that value times the scale,
so training and the simulated forward see the bias the int8 model uses (a small error, up to
half an accumulator step, but in depthwise layers, whose accumulators are short sums, often a
visible share of an output step).
"""

from __future__ import annotations

import torch

from ..config import QuantSpec
from ..quantizer import FakeQuantizer, Mode
from .activation import ActQuant, SharedActQuant

__all__ = ["InputQuantizerLink", "grid_scale", "int32_bias", "quantizing_range"]

# The largest |int32| bias the exporter accepts (GraphBuilder refuses |round(b / s)| above it).
_INT32_MAX = 2147483647.0


def grid_scale(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The scale of the fake-quant grid of the range ``[lo, hi]``, elementwise, float32.

    The fake-quant op's nudged scale ``(hi - lo) / (quant_max - quant_min)`` computed in float32
    (``nudge`` in csrc/ops/fake_quant_math.h, which ``GraphBuilder`` also uses for every scale it
    writes, the ranges passed as float32 as the exporter passes them), and 1.0 for a degenerate
    range (``hi - lo`` rounds to 0: the one-point grid), the scale the builder stores there.
    Detached."""
    lo = lo.detach().to(torch.float32)
    hi = hi.detach().to(torch.float32)
    quant_min = 1 if spec.narrow_range else 0
    # Divided by a tensor on the range's device, as the op divides: eager CUDA multiplies by
    # the reciprocal of a Python number instead (one rounding more).
    steps = torch.full(
        (), float((1 << spec.num_bits) - 1 - quant_min), dtype=torch.float32, device=lo.device
    )
    scale = (hi - lo) / steps
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantizing_range(quantizer: FakeQuantizer) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The range ``quantizer`` quantized with in its latest forward (detached; the learned one
    in LEARN mode), read after that forward, or ``None`` where its forward returns the float
    values: turned off (``OFF``), a histogram source calibrating (``OBSERVE`` in training
    mode), or no range observed yet. After the quantizer's own forward this reads only the
    host-side mirrors of the state (no host sync, no graph break). Run without that forward
    first, it reads the state as that forward would (``has_range``; a histogram with new data
    gets its range chosen), as the C++ twin always does."""
    mode = quantizer._mode
    if mode is Mode.OFF:
        return None
    if mode is Mode.LEARN:
        lo, hi = quantizer.learned_range()
        return lo.detach(), hi.detach()
    if mode is Mode.OBSERVE and quantizer.training and quantizer.spec.range_source == "histogram":
        return None
    if quantizer._histogram_pending:
        return quantizer.observed_range()
    if not (quantizer._range_known or quantizer.has_range):
        return None
    return quantizer._derived_range()


def int32_bias(
    bias: torch.Tensor,
    input_range: tuple[torch.Tensor, torch.Tensor],
    input_spec: QuantSpec,
    weight_range: tuple[torch.Tensor, torch.Tensor],
    weight_spec: QuantSpec,
) -> torch.Tensor:
    """``bias`` as the int8 model adds it: ``round(b / s) * s`` with ``s = s_in * s_w[c]``.

    ``s_in`` is :func:`grid_scale` of ``input_range`` (0-dim), ``s_w`` of ``weight_range`` (one
    per output channel, or 0-dim per tensor). As ``GraphBuilder`` computes the int32 bias: ``b``
    as float32, ``s`` and ``b / s`` in float64, rounded half away from zero (``std::round``),
    clamped to ``[-(2**31 - 1), 2**31 - 1]`` (the builder refuses a bias beyond that); the
    result ``q * s`` (float64) rounded once to ``bias``'s dtype. Gradient: straight through to
    ``bias`` (the identity), none to the ranges."""
    scale = grid_scale(*input_range, input_spec).to(torch.float64) * grid_scale(
        *weight_range, weight_spec
    ).to(torch.float64)
    scale = scale.to(bias.device)
    v = bias.detach().to(torch.float32).to(torch.float64) / scale
    # std::round: away from zero from a fractional part of 0.5 on (v - trunc(v) is exact).
    t = torch.trunc(v)
    q = torch.where((v - t).abs() >= 0.5, t + torch.sign(v), t)
    q = q.clamp(-_INT32_MAX, _INT32_MAX)
    simulated = (q * scale).to(bias.dtype)
    # Straight-through: the value of `simulated` exactly (b - b is 0), the gradient of `bias`.
    return simulated + (bias - bias.detach())


class InputQuantizerLink:
    """Mixin of QuantConv2d, ConvBn2d and QuantLinear: the optional link to the quantizer of the
    layer's input, and the bias the layer adds (the int32 bias simulated when linked).

    The link is not a submodule: the quantizer belongs to (and is saved with) the part of the
    model that produced the input, so ``state_dict`` and ``parameters()`` do not change, and
    ``copy.deepcopy`` of the whole model maps it to the copied quantizer (as
    :class:`~edgeqat.nn.SharedActQuant`'s source)."""

    input_quantizer: ActQuant | None

    def _init_input_quantizer(self) -> None:
        object.__setattr__(self, "input_quantizer", None)

    def set_input_quantizer(self, quantizer: ActQuant | SharedActQuant | None):
        """Link the :class:`~edgeqat.ActQuant` that quantizes this layer's input (a
        :class:`~edgeqat.nn.SharedActQuant` links its source, whose range it uses), or unlink
        with ``None``. :func:`~edgeqat.prepare_qat` and :func:`~edgeqat.prepare_ptq` link every
        layer. While linked and ``config.quantize_bias``, the bias is the int8 model's int32
        bias (see the class docstring). Returns ``self``."""
        if isinstance(quantizer, SharedActQuant):
            quantizer = quantizer.source
        elif quantizer is not None and not isinstance(quantizer, ActQuant):
            raise TypeError(
                "set_input_quantizer takes an edgeqat.ActQuant, a SharedActQuant or None, got "
                f"{type(quantizer).__name__}"
            )
        # Not registered (no submodule, no state_dict entries), as SharedActQuant.source.
        object.__setattr__(self, "input_quantizer", quantizer)
        return self

    def _bias_for_forward(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        """The bias to add in this forward, read after the weight quantizer ran: ``bias``
        itself, or its int32 simulation when linked, ``config.quantize_bias``, and both the
        input quantizer and the weight quantizer quantize now (each has a range, is not OFF,
        is not a histogram source calibrating)."""
        link = self.input_quantizer
        if bias is None or link is None or not self.config.quantize_bias:
            return bias
        input_range = quantizing_range(link.quantizer)
        if input_range is None:
            return bias
        weight_range = quantizing_range(self.weight_quant)
        if weight_range is None:
            return bias
        return int32_bias(
            bias, input_range, link.quantizer.spec, weight_range, self.weight_quant.spec
        )
