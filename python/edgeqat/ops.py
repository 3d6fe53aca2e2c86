"""Fake-quant ops: thin, typed entry points to ``torch.ops.edgeqat``.

The kernels, their autograd and their Meta implementations are C++ and are
registered with the PyTorch dispatcher; these functions only turn Python
numbers into tensors. Numerics: docs/numerics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

__all__ = ["fake_quant", "fake_quant_per_channel"]

RangeLike = Union[torch.Tensor, float]
ChannelRangeLike = Union[torch.Tensor, Sequence[float]]


def _as_range(value: RangeLike | ChannelRangeLike, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    # Numbers become tensors of the compute dtype, so float64 inputs keep
    # float64 ranges (float32 for every other dtype, as the kernels compute).
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    try:
        return torch.as_tensor(value, dtype=dtype, device=like.device)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a tensor or a number (sequence of numbers per channel), got {value!r}"
        ) from err


def fake_quant(
    x: torch.Tensor,
    min: RangeLike,  # noqa: A002 - the names of TensorFlow's op
    max: RangeLike,  # noqa: A002
    num_bits: int = 8,
    narrow_range: bool = False,
) -> torch.Tensor:
    """Fake-quantize ``x`` with one learnable range, as TensorFlow's
    ``FakeQuantWithMinMaxVars``.

    The range ``[min, max]`` is nudged so that 0.0 lies exactly on the grid
    ``{qmin, ..., 2**num_bits - 1}`` (``qmin = 1`` if ``narrow_range`` else 0);
    ``x`` is clamped into the nudged range and rounded to the grid (ties up).
    Gradients (straight-through estimator): ``x`` receives the incoming
    gradient where it lies inside the nudged range (ends included), ``min`` the
    sum of the gradient below it and ``max`` the sum above it, so the range can
    be learned.

    Args:
        x: floating tensor (float32, float64, float16, bfloat16) of any shape
            and memory layout. float16/bfloat16 are computed in float32.
        min, max: 0-dim floating tensors on ``x``'s device (or Python numbers),
            finite, ``min <= max``. ``min == max`` quantizes everything to 0.0.
        num_bits: bits of the grid, 2 to 16.
        narrow_range: use ``[1, 2**num_bits - 1]`` instead of ``[0, 2**num_bits - 1]``.

    Returns:
        A tensor with the shape, dtype and layout of ``x``.

    Example:
        >>> x = torch.tensor([-1.2, -0.3, 0.0, 0.7], requires_grad=True)
        >>> lo = torch.tensor(-1.0, requires_grad=True)
        >>> hi = torch.tensor(1.0, requires_grad=True)
        >>> y = edgeqat.fake_quant(x, lo, hi)
        >>> y.sum().backward()  # x.grad, lo.grad and hi.grad are set
    """
    return torch.ops.edgeqat.fake_quant_with_min_max_vars(
        x, _as_range(min, x, "min"), _as_range(max, x, "max"), num_bits, narrow_range
    )


def fake_quant_per_channel(
    x: torch.Tensor,
    min: ChannelRangeLike,  # noqa: A002
    max: ChannelRangeLike,  # noqa: A002
    axis: int,
    num_bits: int = 8,
    narrow_range: bool = False,
) -> torch.Tensor:
    """Fake-quantize ``x`` with one range per slice along ``axis``.

    Same arithmetic as :func:`fake_quant`, per channel. The gradients to
    ``min`` and ``max`` are summed over every axis except ``axis``.

    Args:
        x: floating tensor of any shape and layout with at least one dimension.
        min, max: 1-D floating tensors (or sequences) of length ``x.size(axis)``.
        axis: the channel dimension, negative counts from the end. PyTorch conv
            and linear weights keep output channels in dim 0.
        num_bits: bits of the grid, 2 to 16.
        narrow_range: use ``[1, 2**num_bits - 1]``.

    Returns:
        A tensor with the shape, dtype and layout of ``x``.

    Example:
        >>> w = torch.randn(16, 8, 3, 3, requires_grad=True)
        >>> bound = w.detach().abs().amax(dim=(1, 2, 3))
        >>> wq = edgeqat.fake_quant_per_channel(w, -bound, bound, axis=0, narrow_range=True)
    """
    return torch.ops.edgeqat.fake_quant_with_min_max_vars_per_channel(
        x, _as_range(min, x, "min"), _as_range(max, x, "max"), axis, num_bits, narrow_range
    )
