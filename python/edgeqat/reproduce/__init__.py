"""``python -m edgeqat.reproduce``: the float / QAT / PTQ table of edgeqat on Fashion-MNIST
(MobileNet v1, MobileNet v2, ResNet-18; ResNet-50 on request).

Files, one job each: :mod:`.cli` (arguments, the main flow), :mod:`.data` (data and the
28x28 -> 3 x image_size preprocessing), :mod:`.models` (the small-input adaptation),
:mod:`.train` (training with checkpoint / resume, evaluation), :mod:`.runner` (the phases of
one model, results.json), :mod:`.table` (Markdown / JSON), :mod:`.plots` (PNGs).
"""

from .cli import main

__all__ = ["main"]
