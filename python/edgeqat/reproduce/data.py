"""The data of the table: Fashion-MNIST in memory, or an ImageFolder tree.

Fashion-MNIST images are 28x28 grey; the models take 3-channel images of ``image_size``
(default 32): :func:`to_model_input` repeats the grey channel three times (so ImageNet-shaped
float weights fit) and resizes bilinearly, per batch (the 60k training images stay 1x28x28 in
memory). The int8 models are exported for that 3 x image_size x image_size input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import load_fashion_mnist

__all__ = ["Data", "fashion_mnist", "image_folder", "to_model_input"]


def to_model_input(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``[N, 1|3, H, W]`` -> ``[N, 3, image_size, image_size]``."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    return images.contiguous()


@dataclass
class Data:
    """Train / test images for the three phases.

    ``train_batch`` draws a random batch with a ``torch.Generator`` (whose state the training
    checkpoints keep); ``test_batches`` and ``calibration_batches`` are deterministic.
    """

    name: str
    train_images: torch.Tensor | None
    train_labels: torch.Tensor | None
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    image_size: int
    num_classes: int = 10
    folder: object = None  # ImageFolder datasets (train, test) instead of tensors

    @property
    def train_count(self) -> int:
        return len(self.folder[0]) if self.folder else len(self.train_labels)

    @property
    def test_count(self) -> int:
        return len(self.folder[1]) if self.folder else len(self.test_labels)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.image_size, self.image_size)

    def train_batch(self, batch: int, generator: torch.Generator):
        if self.folder:
            idx = torch.randint(0, self.train_count, (batch,), generator=generator)
            items = [self.folder[0][int(i)] for i in idx]
            return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
        idx = torch.randint(0, self.train_count, (batch,), generator=generator)
        return to_model_input(self.train_images[idx], self.image_size), self.train_labels[idx]

    def test_batches(self, batch: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.folder:
            yield from _loader(self.folder[1], batch)
            return
        for i in range(0, self.test_count, batch):
            images = to_model_input(self.test_images[i : i + batch], self.image_size)
            yield images, self.test_labels[i : i + batch]

    def calibration_batches(self, count: int, batch: int = 128) -> Iterator[torch.Tensor]:
        """The first ``count`` batches of a fixed shuffle of the training set."""
        order = torch.randperm(self.train_count, generator=torch.Generator().manual_seed(1234))
        for i in range(count):
            idx = order[i * batch : (i + 1) * batch]
            if self.folder:
                yield torch.stack([self.folder[0][int(j)][0] for j in idx])
            else:
                yield to_model_input(self.train_images[idx], self.image_size)


def fashion_mnist(
    image_size: int, train_limit: int | None, test_limit: int | None, root: Path | None = None
) -> Data:
    """Fashion-MNIST (from ``root``, default ``$EDGEQAT_FASHION_MNIST`` or Debian's folder);
    raises :class:`edgeqat.data.DatasetError` when the files are missing."""
    train_images, train_labels = load_fashion_mnist("train", root=root, limit=train_limit)
    test_images, test_labels = load_fashion_mnist("test", root=root, limit=test_limit)
    return Data("Fashion-MNIST", train_images, train_labels, test_images, test_labels, image_size)


def image_folder(root: Path, image_size: int) -> Data:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision's ImageFolder layout),
    resized to ``image_size`` (shorter side to 1.14x, centre crop) and ImageNet-normalized."""
    from .._torchvision import import_torchvision

    tv = import_torchvision()
    t = tv.transforms
    transform = t.Compose(
        [
            t.Resize(int(image_size * 8 / 7)),
            t.CenterCrop(image_size),
            t.ToTensor(),
            t.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    train = tv.datasets.ImageFolder(str(root / "train"), transform=transform)
    test = tv.datasets.ImageFolder(str(root / "val"), transform=transform)
    return Data(
        f"ImageFolder {root}",
        None,
        None,
        None,
        None,
        image_size,
        num_classes=len(train.classes),
        folder=(train, test),
    )


def _loader(dataset, batch: int):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=2)
    yield from loader
