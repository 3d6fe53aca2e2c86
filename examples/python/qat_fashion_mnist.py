"""Quantization-aware training on real data with edgeqat's fake-quant ops.

Trains a small CNN on Fashion-MNIST in float, then fine-tunes it with 8-bit
fake quantization: weights per output channel (symmetric, narrow range, the
bound learned), activations per tensor with learned [min, max] initialised
from a calibration batch. Reports float and fake-quantized test accuracy.

    python examples/python/qat_fashion_mnist.py            # ~1 minute on 2 cores
    python examples/python/qat_fashion_mnist.py --help

Until the int8 exporter exists, the "int8" figure is the fake-quantized model,
which simulates the integer arithmetic of the deployed model.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

import edgeqat
from edgeqat.data import load_fashion_mnist


class ActivationQuant(nn.Module):
    """Per-tensor activation fake quant with a learned range."""

    def __init__(self, num_bits: int) -> None:
        super().__init__()
        self.num_bits = num_bits
        self.min = nn.Parameter(torch.tensor(0.0))
        self.max = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            # First batch sets the range, widened to contain 0 as the int8 spec needs.
            with torch.no_grad():
                self.min.fill_(min(x.min().item(), 0.0))
                self.max.fill_(max(x.max().item(), 0.0))
                self.initialised.fill_(True)
        return edgeqat.fake_quant(x, self.min, self.max, self.num_bits)


class QuantConvNet(nn.Module):
    """conv-relu-conv-relu-linear with fake-quantized weights and activations."""

    def __init__(self, float_model: ConvNet, num_bits: int = 8) -> None:
        super().__init__()
        self.num_bits = num_bits
        self.layers = copy.deepcopy(float_model)
        self.bounds = nn.ParameterList(
            nn.Parameter(layer.weight.detach().abs().amax(dim=tuple(range(1, layer.weight.dim()))))
            for layer in self.layers.weighted()
        )
        self.input_quant = ActivationQuant(num_bits)
        self.act_quants = nn.ModuleList(ActivationQuant(num_bits) for _ in range(3))

    def quantized_weight(self, index: int) -> torch.Tensor:
        weight = self.layers.weighted()[index].weight
        bound = self.bounds[index]
        return edgeqat.fake_quant_per_channel(
            weight, -bound, bound, axis=0, num_bits=self.num_bits, narrow_range=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, conv2, fc = self.layers.weighted()
        x = self.input_quant(x)
        x = self.act_quants[0](F.relu(F.conv2d(x, self.quantized_weight(0), conv1.bias, 2, 1)))
        x = self.act_quants[1](F.relu(F.conv2d(x, self.quantized_weight(1), conv2.bias, 2, 1)))
        return self.act_quants[2](F.linear(x.flatten(1), self.quantized_weight(2), fc.bias))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def weighted(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def train(model: nn.Module, images, labels, steps: int, lr: float, batch: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=generator)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, images, labels) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + 1000]).argmax(1) == labels[i : i + 1000]).sum().item()
        for i in range(0, images.shape[0], 1000)
    )
    return 100.0 * correct / images.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-steps", type=int, default=1500)
    parser.add_argument("--qat-steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    print(f"Fashion-MNIST: {train_x.shape[0]} train, {test_x.shape[0]} test images")

    start = time.perf_counter()
    float_model = ConvNet()
    loss = train(float_model, train_x, train_y, args.float_steps, 2e-3, args.batch, args.seed)
    float_acc = accuracy(float_model, test_x, test_y)
    print(f"float: {args.float_steps} steps, last loss {loss:.3f}, test accuracy {float_acc:.2f}%")

    qat_model = QuantConvNet(float_model, args.bits)
    qat_model.train()
    with torch.no_grad():
        qat_model(train_x[: args.batch * 4])  # calibration batch: sets activation ranges
    ptq_acc = accuracy(qat_model, test_x, test_y)
    loss = train(qat_model, train_x, train_y, args.qat_steps, 2e-4, args.batch, args.seed + 1)
    qat_acc = accuracy(qat_model, test_x, test_y)
    print(f"QAT:   {args.qat_steps} steps, last loss {loss:.3f}, test accuracy {qat_acc:.2f}%")
    ranges = [(round(q.min.item(), 3), round(q.max.item(), 3)) for q in qat_model.act_quants]
    print(f"learned activation ranges: {ranges}")
    print()
    print(f"| model ({args.bits}-bit fake quant) | test accuracy |")
    print("|---|---|")
    print(f"| float | {float_acc:.2f}% |")
    print(f"| calibrated, before QAT | {ptq_acc:.2f}% |")
    print(f"| after QAT | {qat_acc:.2f}% |")
    print(f"total time {time.perf_counter() - start:.1f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
