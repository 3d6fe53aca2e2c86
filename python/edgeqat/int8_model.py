"""Int8Model: an exported int8 model run by edgeqat's torch-free C++ runtime."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from . import _runtime

__all__ = ["Int8Model"]


class Int8Model:
    """An integer-only int8 model (docs/int8-format.md) in edgeqat's C++ runtime.

    Calling it on float tensors (the float model's NCHW / NC layout, any batch size) quantizes
    the inputs with the input scale and zero point, runs the int8 graph with integer arithmetic
    only, and returns dequantized float outputs. ``torch.int8`` inputs run int8 in, int8 out.

    Example:
        >>> float_model = torch.nn.Sequential(
        ...     torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(),
        ...     torch.nn.Flatten(), torch.nn.Linear(8 * 13 * 13, 10),
        ... )
        >>> images = torch.randn(4, 1, 28, 28)
        >>> ptq = edgeqat.prepare_ptq(float_model, example_inputs=images)
        >>> ptq = edgeqat.calibrate(ptq, [images])
        >>> edgeqat.export(ptq, "model.eq8", example_inputs=images, load=False)
        >>> model = edgeqat.Int8Model.load("model.eq8", num_threads=2)
        >>> logits = model(images)                      # float in, float out
        >>> q = model.run_int8(model.quantize(images))  # int8 in, int8 out
        >>> logits.shape, q[0].dtype
        (torch.Size([4, 10]), torch.int8)
    """

    def __init__(self, native: _runtime.Model, path: str) -> None:
        self._native = native
        self.path = path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, num_threads: int = 1, kernels: str = "fast"
    ) -> Int8Model:
        """Load (and check) a model file. ``kernels``: ``"fast"`` (default), ``"reference"``
        (the slow definition), or ``"fast/<isa>"``. A bad file raises ValueError naming it."""
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        path = os.fspath(path)
        return cls(_runtime.Model(path, num_threads=num_threads, kernels=kernels), path)

    # -- description ------------------------------------------------------------------------

    @property
    def inputs(self) -> list[dict]:
        """Per input: name, shape (one sample), scale, zero_point, qmin, qmax."""
        return self._native.inputs

    @property
    def outputs(self) -> list[dict]:
        """Per output: name, shape (one sample), scale, zero_point, qmin, qmax."""
        return self._native.outputs

    @property
    def nodes(self) -> list[dict]:
        """Per node, in execution order: name (module path), op, inputs, output."""
        return self._native.nodes

    def value(self, name: str) -> dict:
        """The value ``name`` (a graph input or a node's output, named after its module
        path): name, shape (one sample), scale, zero_point, qmin, qmax."""
        return self._native.value(name)

    @property
    def num_threads(self) -> int:
        """Threads the kernels use (settable, at least 1); results do not depend on it."""
        return self._native.num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        self._native.num_threads = n

    @property
    def kernels(self) -> str:
        """The kernels in use, resolved: ``"reference"`` or ``"fast/<isa>"``."""
        return self._native.kernels

    # -- running ------------------------------------------------------------------------------

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Float tensors in, float tensors out; ``torch.int8`` tensors in, int8 out. One
        tensor out for a one-output model, else a tuple."""
        if inputs and all(torch.is_tensor(x) and x.dtype == torch.int8 for x in inputs):
            outs = self.run_int8(*inputs)
        else:
            arrays = [_numpy(x, np.float32, i) for i, x in enumerate(inputs)]
            outs = [torch.from_numpy(a) for a in self._native.run_float(arrays)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_int8(self, *inputs: torch.Tensor, capture: Sequence[str] = ()) -> list[torch.Tensor]:
        """int8 in, int8 out: the outputs, then the values named in ``capture`` (node names),
        each ``[N, *shape]`` in the PyTorch layout."""
        arrays = [_numpy(x, np.int8, i) for i, x in enumerate(inputs)]
        return [torch.from_numpy(a) for a in self._native.run_int8(arrays, list(capture))]

    def quantize(self, x: torch.Tensor, index: int = 0) -> torch.Tensor:
        """Float input -> int8 with input ``index``'s scale and zero point, exactly as
        calling the model on float input does (the runtime's quantize kernel: round half to
        even, as ONNX QuantizeLinear, then clamped to the input's grid)."""
        info = self.inputs[index]
        q = _runtime.quantize(_numpy(x, np.float32, index), scale=info["scale"],
                              zero_point=info["zero_point"])  # fmt: skip
        return torch.from_numpy(np.clip(q, info["qmin"], info["qmax"]))

    def dequantize(self, q: torch.Tensor, name: str) -> torch.Tensor:
        """int8 values of value ``name`` -> float: ``(q - zero_point) * scale``."""
        info = self.value(name)
        return (q.to(torch.float32) - info["zero_point"]) * info["scale"]

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(i["shape"])) for i in self.inputs)
        return (
            f"Int8Model({self.path!r}, inputs=[{shapes}], nodes={len(self.nodes)}, "
            f"kernels={self.kernels!r}, num_threads={self.num_threads})"
        )


def _numpy(x, dtype, index: int) -> np.ndarray:
    if not torch.is_tensor(x):
        raise TypeError(f"input {index} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point and dtype == np.int8:
        raise TypeError(f"input {index} must be torch.int8 for run_int8, got {x.dtype}")
    return np.ascontiguousarray(
        x.detach().cpu().to(torch.float32 if dtype == np.float32 else torch.int8).numpy()
    )
