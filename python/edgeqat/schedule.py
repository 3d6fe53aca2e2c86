"""A QAT phase schedule: freeze BN, freeze or learn ranges after given numbers of steps.

The steps are counted by the model itself (a ``qat_step`` buffer, so ``state_dict`` restores
the count and a resumed run switches phase at the same step), one per forward in training
mode. The phases are those of :mod:`edgeqat.controls`; calling those functions by hand works
just as well and needs no schedule.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from .config import QATSchedule
from .controls import freeze_bn, freeze_observers, learn_ranges

__all__ = ["QATScheduler", "attach_schedule"]

_PHASES = (
    ("freeze_bn_step", freeze_bn),
    ("freeze_observers_step", freeze_observers),
    ("learn_ranges_step", learn_ranges),
)


class QATScheduler(nn.Module):
    """Counts the training steps of the model it belongs to and starts the phases of a
    :class:`QATSchedule` on time. Called first in the model's forward (``attach_schedule``
    puts the call in the graph, so copies of the model keep it).

    Attributes:
        schedule: the :class:`QATSchedule`.
        step: int64 buffer, the number of training forwards so far (in ``state_dict``).
    """

    def __init__(self, model: nn.Module, schedule: QATSchedule) -> None:
        super().__init__()
        if not isinstance(schedule, QATSchedule):
            raise TypeError(
                f"schedule must be an edgeqat.QATSchedule, got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        # The host copy of `step`, so counting costs no device sync; reloaded with the buffer.
        self._step = 0
        # Not a submodule (the model owns this module, not the other way round); deepcopy of
        # the model maps the reference to the copy.
        object.__setattr__(self, "model", model)

    def forward(self) -> None:
        """One training step: in training mode, start the phases due at the current step, then
        count it. Nothing in eval mode."""
        if not self.training:
            return
        for field_name, phase in _PHASES:
            if getattr(self.schedule, field_name) == self._step:
                phase(self.model)
        self._step += 1
        self.step.fill_(self._step)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._step = int(self.step)

    def extra_repr(self) -> str:
        return f"{self.schedule}, step={self._step}"


def attach_schedule(model: fx.GraphModule, schedule: QATSchedule) -> fx.GraphModule:
    """Make a prepared model follow ``schedule``: adds a :class:`QATScheduler` at
    ``model.qat_schedule``, called at the start of ``forward``. In place; returns ``model``.
    :func:`~edgeqat.prepare_qat` calls it when the config has a schedule.

    A phase that cannot start (``freeze_observers`` before any data was observed) raises from
    the forward that reaches its step, naming the quantizers. Under ``torch.compile`` the
    scheduler's Python counter breaks the graph; call the controls by hand there instead.
    """
    if not isinstance(model, fx.GraphModule):
        raise TypeError(
            f"model must be a torch.fx.GraphModule from edgeqat.prepare_qat, got "
            f"{type(model).__name__}; call edgeqat.freeze_bn / freeze_observers / learn_ranges "
            "by hand for other models"
        )
    if hasattr(model, "qat_schedule"):
        raise ValueError("model already has a qat_schedule")
    model.add_submodule("qat_schedule", QATScheduler(model, schedule))
    first = next(n for n in model.graph.nodes if n.op != "placeholder")
    with model.graph.inserting_before(first):
        model.graph.call_module("qat_schedule", ())
    model.recompile()
    return model
