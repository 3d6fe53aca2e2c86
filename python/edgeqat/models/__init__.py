"""Float model definitions that edgeqat adds to torchvision's (for the published table)."""

from __future__ import annotations

from .mobilenet_v1 import MobileNetV1, mobilenet_v1

__all__ = ["MobileNetV1", "mobilenet_v1"]
