"""Unmodified torchvision models load through edgeqat._torchvision on CPU torch."""

import pytest
import torch

from edgeqat._torchvision import import_torchvision


@pytest.fixture(scope="module")
def torchvision():
    return import_torchvision()


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "resnet50"])
def test_model_runs_and_traces(torchvision, name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        assert torch.equal(traced(x), out)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_detection_ops_fail_loudly(torchvision):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    if torchvision.extension._has_ops():
        pytest.skip("torchvision's C++ extension loaded: nms is real here")
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ops.torchvision.nms(boxes, torch.tensor([1.0]), 0.5)
