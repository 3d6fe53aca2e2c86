"""QATSchedule through QConfig and prepare_qat: phases start at their step, the count is in the
state_dict, copies keep it; QConfig.unsupported chooses error or float."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import edgeqat
from edgeqat import Mode, QATSchedule, QConfig


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def prepared(schedule: QATSchedule) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return edgeqat.prepare_qat(
        Net(), QConfig(schedule=schedule), example_inputs=torch.randn(1, 1, 6, 6)
    )


def state(model) -> tuple:
    conv = model.get_submodule("conv")
    return (conv.is_bn_frozen, model.get_submodule("input_quant").quantizer.mode)


def test_phases_start_at_their_steps():
    model = prepared(QATSchedule(freeze_bn_step=2, freeze_observers_step=3, learn_ranges_step=5))
    seen = []
    for _ in range(6):
        model(torch.randn(2, 1, 6, 6))
        seen.append(state(model))
    assert seen == [
        (False, Mode.OBSERVE),
        (False, Mode.OBSERVE),
        (True, Mode.OBSERVE),
        (True, Mode.FROZEN),
        (True, Mode.FROZEN),
        (True, Mode.LEARN),
    ]
    assert int(model.qat_schedule.step) == 6
    # Eval forwards are not training steps.
    model.eval()(torch.randn(2, 1, 6, 6))
    assert int(model.qat_schedule.step) == 6


def test_step_count_survives_state_dict_and_deepcopy():
    schedule = QATSchedule(freeze_bn_step=3)
    model = prepared(schedule)
    for _ in range(2):
        model(torch.randn(2, 1, 6, 6))
    copied = copy.deepcopy(model)
    restored = prepared(schedule)
    restored.load_state_dict(model.state_dict())
    for m in (model, copied, restored):
        assert not state(m)[0]
        m(torch.randn(2, 1, 6, 6))  # step 2: not yet
        assert not state(m)[0]
        m(torch.randn(2, 1, 6, 6))  # step 3: BN freezes
        assert state(m)[0], m is copied
    assert copied.qat_schedule.model is copied  # the copy drives itself, not the original


def test_no_schedule_no_scheduler():
    model = edgeqat.prepare_qat(Net(), example_inputs=torch.randn(1, 1, 6, 6))
    assert not hasattr(model, "qat_schedule")
    assert "qat_schedule.step" not in model.state_dict()


def test_failing_phase_names_the_quantizers():
    model = prepared(QATSchedule(freeze_observers_step=0))
    with pytest.raises(RuntimeError, match="not observed data yet: .*input_quant.quantizer"):
        model(torch.randn(2, 1, 6, 6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"freeze_bn_step": -1}, "freeze_bn_step must be a non-negative int or None, got -1"),
        ({"freeze_observers_step": 1.5}, "freeze_observers_step .* got 1.5"),
        ({"learn_ranges_step": True}, "learn_ranges_step .* got True"),
        ({"freeze_observers_step": 5, "learn_ranges_step": 5}, "must come after"),
    ],
)
def test_schedule_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QATSchedule(**kwargs)


def test_config_errors():
    with pytest.raises(TypeError, match="QConfig.schedule must be an edgeqat.QATSchedule"):
        QConfig(schedule={"freeze_bn_step": 3})
    with pytest.raises(ValueError, match="QConfig.unsupported must be 'error' or 'float', got 'x'"):
        QConfig(unsupported="x")


class WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_config_unsupported_policy():
    x = torch.randn(1, 1, 6, 6)
    with pytest.raises(edgeqat.UnsupportedOpError, match="sigmoid"):
        edgeqat.prepare_qat(WithSigmoid(), example_inputs=x)
    model = edgeqat.prepare_qat(WithSigmoid(), QConfig(unsupported="float"), example_inputs=x)
    assert isinstance(model.get_submodule("sigmoid_out_quant"), edgeqat.ActQuant)
    # The keyword overrides the config.
    with pytest.raises(edgeqat.UnsupportedOpError):
        edgeqat.prepare_qat(
            WithSigmoid(), QConfig(unsupported="float"), example_inputs=x, unsupported="error"
        )
