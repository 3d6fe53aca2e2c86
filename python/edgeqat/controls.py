"""Model-level QAT phase controls: one call switches every quantizer or ConvBn2d in a model.

A usual schedule (Jacob et al. 2018; Krishnamoorthi 2018): train with observing quantizers,
then :func:`freeze_bn` after a few epochs, then :func:`freeze_observers` (or
:func:`learn_ranges`) for the last ones. Every function works in place and returns the model,
so calls chain: ``learn_ranges(freeze_bn(model))``.
"""

from __future__ import annotations

from torch import nn

from .nn.conv_bn import ConvBn2d
from .quantizer import FakeQuantizer, Mode

__all__ = ["freeze_bn", "freeze_observers", "learn_ranges", "observe"]


def _quantizers(model: nn.Module, modes: tuple[Mode, ...]) -> list[tuple[str, FakeQuantizer]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, FakeQuantizer) and module.mode in modes
    ]


def _require_ranges(quantizers: list[tuple[str, FakeQuantizer]], what: str) -> None:
    # Checked for all before any mode changes, so a failed call leaves the model as it was.
    missing = [name or "<model>" for name, q in quantizers if not q.has_range]
    if missing:
        raise RuntimeError(
            f"{what}: these quantizers have not observed data yet: {', '.join(missing)}; run "
            "data through the model in training mode first"
        )


def freeze_bn(model: nn.Module) -> nn.Module:
    """Freeze the batch-norm statistics of every :class:`~edgeqat.ConvBn2d` in ``model``: from
    now on they train the folded inference graph ``conv(x, fq(W')) + b'``.

    Example:
        >>> model = edgeqat.prepare_qat(
        ...     torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)),
        ...     example_inputs=torch.randn(1, 3, 16, 16),
        ... )
        >>> model = edgeqat.freeze_bn(model)
        >>> model.get_submodule("0").is_bn_frozen
        True
    """
    for module in model.modules():
        if isinstance(module, ConvBn2d):
            module.freeze_bn()
    return model


def freeze_observers(model: nn.Module) -> nn.Module:
    """Every :class:`~edgeqat.FakeQuantizer` in ``OBSERVE`` mode goes to ``FROZEN``: ranges
    stop moving. Quantizers in other modes are left alone. Raises ``RuntimeError`` (naming the
    modules, changing nothing) if one has observed no data.

    Example:
        >>> model = edgeqat.prepare_qat(
        ...     torch.nn.Sequential(torch.nn.Linear(16, 4)), example_inputs=torch.randn(1, 16)
        ... )
        >>> y = model(torch.randn(32, 16))  # training mode: the quantizers observe
        >>> model = edgeqat.freeze_observers(model)
        >>> sorted({m.mode.name for m in model.modules() if isinstance(m, edgeqat.FakeQuantizer)})
        ['FROZEN']
    """
    quantizers = _quantizers(model, (Mode.OBSERVE,))
    _require_ranges(quantizers, "freeze_observers")
    for _, quantizer in quantizers:
        quantizer.freeze()
    return model


def learn_ranges(model: nn.Module) -> nn.Module:
    """Every :class:`~edgeqat.FakeQuantizer` in ``OBSERVE`` or ``FROZEN`` mode goes to
    ``LEARN``: its range becomes the parameters ``learned_min`` / ``learned_max``, starting from
    the observed range and trained by gradient (pass them to the optimizer: they are ordinary
    parameters of the model). ``OFF`` quantizers stay off. Raises ``RuntimeError`` (naming the
    modules, changing nothing) if one has observed no data.

    Example:
        >>> model = edgeqat.prepare_qat(
        ...     torch.nn.Sequential(torch.nn.Linear(16, 4)), example_inputs=torch.randn(1, 16)
        ... )
        >>> y = model(torch.randn(32, 16))  # training mode: the quantizers observe
        >>> model = edgeqat.learn_ranges(model)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)  # the learned ranges included
    """
    quantizers = _quantizers(model, (Mode.OBSERVE, Mode.FROZEN))
    _require_ranges(quantizers, "learn_ranges")
    for _, quantizer in quantizers:
        quantizer.learn()
    return model


def observe(model: nn.Module) -> nn.Module:
    """Every :class:`~edgeqat.FakeQuantizer` that is not ``OFF`` goes (back) to ``OBSERVE``:
    in training mode ranges follow the data again, continuing from the observed state (learned
    ranges are not copied back). ``OFF`` quantizers stay off.

    Example:
        >>> model = edgeqat.prepare_qat(
        ...     torch.nn.Sequential(torch.nn.Linear(16, 4)), example_inputs=torch.randn(1, 16)
        ... )
        >>> y = model(torch.randn(32, 16))
        >>> model = edgeqat.observe(edgeqat.freeze_observers(model))
    """
    for _, quantizer in _quantizers(model, (Mode.OBSERVE, Mode.FROZEN, Mode.LEARN)):
        quantizer.observe()
    return model
