"""Fashion-MNIST from the IDX files that Debian's ``dataset-fashion-mnist`` installs.

The files are read as they are (gzip-compressed IDX), nothing is downloaded.
A missing, truncated or malformed file raises :class:`DatasetError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["DEFAULT_FASHION_MNIST_DIR", "DatasetError", "load_fashion_mnist"]

#: Where Debian's dataset-fashion-mnist package puts the files; the
#: EDGEQAT_FASHION_MNIST environment variable overrides it.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Per-channel statistics of the Fashion-MNIST training images (pixel / 255).
_MEAN, _STD = 0.2860, 0.3530


class DatasetError(ValueError):
    """A dataset file is missing or not what it should be."""


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as err:
        raise DatasetError(
            f"Fashion-MNIST file not found: {path} (install Debian's dataset-fashion-mnist "
            "or set EDGEQAT_FASHION_MNIST to the folder holding the .gz files)"
        ) from err
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: not a valid gzip file ({err})") from err
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_ndim:
        raise DatasetError(
            f"{path}: not an unsigned-byte IDX file with {expected_ndim} dimension(s) "
            f"(header says type 0x{dtype_code:02x}, {ndim} dimension(s))"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape))
    if len(raw) - header_len != expected:
        raise DatasetError(
            f"{path}: header announces shape {shape} ({expected} bytes) but the file "
            f"holds {len(raw) - header_len} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a Fashion-MNIST split.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        root: folder with the four ``*-ubyte.gz`` files; defaults to
            ``$EDGEQAT_FASHION_MNIST`` or :data:`DEFAULT_FASHION_MNIST_DIR`.
        limit: keep only the first ``limit`` examples.
        normalize: return float32 images standardized with the training-set
            mean and std; otherwise uint8 pixels.

    Returns:
        ``(images, labels)``: images ``[N, 1, 28, 28]``, labels int64 ``[N]``.

    Raises:
        DatasetError: a file is missing, truncated or malformed (the message names it).
        ValueError: an unknown ``split``, or ``limit`` is not positive.

    Example:
        >>> from edgeqat.data import load_fashion_mnist
        >>> images, labels = load_fashion_mnist("test", limit=1000)
        >>> images.shape, labels.shape
        (torch.Size([1000, 1, 28, 28]), torch.Size([1000]))
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    folder = Path(root or os.environ.get("EDGEQAT_FASHION_MNIST", DEFAULT_FASHION_MNIST_DIR))
    image_file, label_file = (folder / name for name in _FILES[split])
    images = _read_idx(image_file, expected_ndim=3)
    labels = _read_idx(label_file, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{image_file} holds {images.shape[0]} images but {label_file} "
            f"holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{label_file}: label {int(labels.max())} outside 0..9")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    if normalize:
        x = (x.float() / 255.0 - _MEAN) / _STD
    return x, y
