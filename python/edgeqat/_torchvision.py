"""Import torchvision's model definitions on a CPU-only torch.

The torchvision wheel that PyPI serves for torch 2.13 on Linux x86-64 is
built against CUDA torch: its ``_C`` extension needs ``libtorch_cuda.so`` and
does not load on the CPU build of torch. torchvision is designed to work
without its extension (detection ops then raise when called), except that
``torchvision/_meta_registrations.py`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which fails
when the extension did not define them. Defining those two schemas first
lets the unmodified model code (``torchvision.models``) import, run and
trace; calling ``nms`` itself still fails, loudly.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

__all__ = ["import_torchvision"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, importable even when its C++
    extension cannot load (CPU torch with the CUDA torchvision wheel).

    Raises:
        ImportError: torchvision is not installed.
    """
    global _library
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    # The failed import left a partial module behind: drop it, define the
    # schemas the meta registrations expect, import again.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for name, schema in _SCHEMAS.items():
            if not hasattr(torch.ops.torchvision, name):
                _library.define(schema)
    return importlib.import_module("torchvision")
