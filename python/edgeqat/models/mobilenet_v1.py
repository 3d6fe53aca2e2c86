"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861), written for edgeqat.

torchvision has no MobileNet v1, and it is the model of the published QAT table (TF Model
Optimization; Krishnamoorthi 2018). The layout follows the paper and Keras'
``tf.keras.applications.MobileNet``: a 3x3 stem, 13 depthwise-separable blocks (3x3 depthwise
conv + BN + ReLU6, then 1x1 pointwise conv + BN + ReLU6), global average pooling, dropout and a
fully connected classifier. It is a plain float ``nn.Module``; ``edgeqat.prepare_qat`` turns it
into a QAT model like any torchvision model.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MobileNetV1", "mobilenet_v1"]

# (pointwise output channels, depthwise stride) of the 13 separable blocks, at width 1.0.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int):
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet v1.

    Args:
        num_classes: classifier outputs (default 1000).
        width_mult: the paper's width multiplier alpha; every layer has
            ``max(8, int(channels * width_mult))`` channels (default 1.0).
        in_channels: input channels (3 for RGB, 1 for Fashion-MNIST).
        small_input: for 28x28 / 32x32 inputs: the stem and the first downsampling block use
            stride 1 instead of 2, so the last feature map is 4x4 for a 28x28 input instead of
            1x1 (overall stride 8 instead of 32).
        dropout: dropout probability before the classifier (Keras' default 1e-3).

    Shapes: input ``[N, in_channels, H, W]``, output ``[N, num_classes]`` logits.

    Example:
        >>> from edgeqat.models import mobilenet_v1
        >>> model = mobilenet_v1(num_classes=10, in_channels=1, small_input=True)
        >>> model(torch.randn(8, 1, 28, 28)).shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        in_channels: int = 3,
        small_input: bool = False,
        dropout: float = 1e-3,
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        if num_classes <= 0 or in_channels <= 0:
            raise ValueError(
                f"num_classes and in_channels must be positive, got num_classes={num_classes}, "
                f"in_channels={in_channels}"
            )

        def width(channels: int) -> int:
            return max(8, int(channels * width_mult))

        stem = width(32)
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, stem, 3, 1 if small_input else 2, 1)]
        channels = stem
        first_downsample = True
        for out_channels, stride in _BLOCKS:
            if small_input and stride == 2 and first_downsample:
                stride, first_downsample = 1, False
            out_channels = width(out_channels)
            layers.append(
                nn.Sequential(
                    _conv_bn_relu6(channels, channels, 3, stride, channels),  # depthwise
                    _conv_bn_relu6(channels, out_channels, 1, 1, 1),  # pointwise
                )
            )
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` of images ``[N, in_channels, H, W]``."""
        x = self.features(x)
        x = self.avgpool(x).flatten(1)
        return self.classifier(self.dropout(x))


def mobilenet_v1(**kwargs) -> MobileNetV1:
    """A :class:`MobileNetV1` with randomly initialised weights; keyword arguments as the
    class."""
    return MobileNetV1(**kwargs)
