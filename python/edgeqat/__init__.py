"""edgeqat: quantization-aware training for int8 edge deployment.

Fake-quant ops with TensorFlow's FakeQuantWithMinMaxVars semantics,
implemented in C++ and registered with the PyTorch dispatcher as
``torch.ops.edgeqat.*``; this package adds typed Python entry points.
"""

from __future__ import annotations

import os

import torch  # noqa: F401  (loads libtorch before edgeqat's native library)

from . import _C  # registers the ops in torch.ops.edgeqat
from .config import QATSchedule, QConfig, QuantSpec
from .controls import freeze_bn, freeze_observers, learn_ranges, observe
from .export import ExportError, export
from .int8_model import Int8Model
from .nn import ActQuant, ConvBn2d, QuantAdd, QuantConv2d, QuantLinear
from .onnx_export import export_onnx
from .ops import fake_quant, fake_quant_per_channel
from .prepare import UnsupportedOpError, calibrate, prepare_ptq, prepare_qat
from .quantizer import FakeQuantizer, Mode

#: The version of edgeqat (the one its native library ``edgeqat._C`` was built as).
__version__: str = _C.__version__

#: Prefix for CMake's find_package(edgeqat CONFIG): pass it in CMAKE_PREFIX_PATH.
cmake_prefix_path: str = os.path.dirname(os.path.abspath(__file__))

__all__ = [
    "ActQuant",
    "ConvBn2d",
    "ExportError",
    "FakeQuantizer",
    "Int8Model",
    "Mode",
    "QATSchedule",
    "QConfig",
    "QuantAdd",
    "QuantConv2d",
    "QuantLinear",
    "QuantSpec",
    "UnsupportedOpError",
    "__version__",
    "calibrate",
    "export",
    "export_onnx",
    "cmake_prefix_path",
    "fake_quant",
    "fake_quant_per_channel",
    "freeze_bn",
    "freeze_observers",
    "learn_ranges",
    "observe",
    "prepare_ptq",
    "prepare_qat",
]
