"""A QAT phase schedule: freeze BN, freeze or learn ranges after given numbers of steps.

The steps are counted by the model itself (a ``qat_step`` buffer, so ``state_dict`` restores
the count and a resumed run switches phase at the same step), one per forward in training
mode. The phases are those of :mod:`edgeqat.controls`; calling those functions by hand works
just as well and needs no schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from .controls import freeze_bn, freeze_observers, learn_ranges

__all__ = ["QATSchedule", "QATScheduler", "attach_schedule"]


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

    def phases_at(self, step: int) -> list:
        """The control functions that start at ``step``, in the order they are applied."""
        todo = [
            (self.freeze_bn_step, freeze_bn),
            (self.freeze_observers_step, freeze_observers),
            (self.learn_ranges_step, learn_ranges),
        ]
        return [fn for at, fn in todo if at == step]


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
        if not self.training:
            return
        for phase in self.schedule.phases_at(self._step):
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
