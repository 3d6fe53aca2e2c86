"""The float models of the table, adapted to small inputs (Fashion-MNIST).

Inputs are 3-channel (the grey image repeated, see :mod:`.data`) so that ImageNet-shaped float
weights fit; ``image_size`` is the side the images are resized to (32 by default). The small-input
adaptation (``small_input=True``) keeps more resolution in the first layers, as CIFAR versions of
these networks do:

- MobileNet v1 and v2: the stem convolution at stride 1 (overall stride 16 instead of 32, as in
  the common CIFAR versions; edgeqat's ``mobilenet_v1(small_input=True)`` goes further, stride 8,
  which costs four times the compute at 32x32);
- ResNet-18 / -50: a 3x3 stride-1 stem convolution instead of the 7x7 stride-2 one (the max pool
  is kept: overall stride 16).

With ``small_input=False`` the ImageNet layouts are kept (for ImageFolder runs at 224 and
torchvision's pretrained weights).
"""

from __future__ import annotations

from torch import nn

from .._torchvision import import_torchvision
from ..models import mobilenet_v1

__all__ = ["MODELS", "MODEL_LAYOUT", "build_model"]

#: The names --models takes.
MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet18", "resnet50")

#: Version of the small-input adaptation (2: MobileNet v1 at overall stride 16).
MODEL_LAYOUT = 2


def build_model(
    name: str, num_classes: int = 10, width_mult: float = 1.0, small_input: bool = True
) -> nn.Module:
    """A float model with random weights.

    Args:
        name: one of :data:`MODELS`.
        num_classes: classifier outputs.
        width_mult: channel multiplier of the MobileNets (ResNets: must be 1.0).
        small_input: adapt the stem to 28x28 / 32x32 inputs (see the module docstring).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if name.startswith("mobilenet"):
        if name == "mobilenet_v1":
            model = mobilenet_v1(num_classes=num_classes, width_mult=width_mult)
        else:
            model = import_torchvision().models.mobilenet_v2(
                num_classes=num_classes, width_mult=width_mult
            )
        if small_input:  # features[0][0]: the stem convolution in both
            model.features[0][0].stride = (1, 1)
        return model
    models = import_torchvision().models
    if width_mult != 1.0:
        raise ValueError(f"width_mult applies to the MobileNets only, got {width_mult} for {name}")
    model = getattr(models, name)(num_classes=num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
