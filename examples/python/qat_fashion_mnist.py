"""QAT on real data, int8 export, the int8 model evaluated: edgeqat's main job.

1. Trains a small float CNN (conv-bn-relu blocks, a residual add, max pool, global average
   pool, linear) on Fashion-MNIST.
2. PTQ: folds batch norm, calibrates the ranges on a few training batches, exports the int8
   model (``<out>/ptq.eq8``) and evaluates it in edgeqat's torch-free int8 runtime.
3. QAT: fine-tunes the float weights with 8-bit fake quantization (batch norm, then the
   observed ranges, frozen on a schedule), evaluates the fake-quant simulation, exports the
   int8 model (``<out>/qat.eq8``) and evaluates it in the int8 runtime.

Accuracies are on the full 10k test set. Needs Debian's dataset-fashion-mnist (or
EDGEQAT_FASHION_MNIST pointing at the four .gz files).

    python examples/python/qat_fashion_mnist.py            # about 2 minutes on 2 cores
    python examples/python/qat_fashion_mnist.py --quick    # fewer steps, for tests
    python examples/python/qat_fashion_mnist.py --help

It prints a line per phase, then a Markdown table: float / PTQ int8 / QAT simulation /
QAT int8 (runtime) test accuracy, the size of each model file (int8 file against the float
state_dict saved with torch.save), the top-1 agreement of the QAT simulation with the int8
runtime, the runtime's images/s on the test set, the total wall time and thread counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import edgeqat
from edgeqat.data import DatasetError, load_fashion_mnist

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None

# name: (float steps, QAT steps, calibration batches)
PRESETS = {"default": (1500, 400, 16), "quick": (200, 60, 4)}
FLOAT_LR, QAT_LR = 3e-3, 1e-4  # Adam, cosine decay to 0
EVAL_BATCH = 1000


# -- the model ------------------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class SmallResNet(nn.Module):
    """28x28 -> conv-bn-relu -> max pool -> conv-bn-relu (stride 2) -> residual block
    (conv-bn-relu, conv-bn, add, relu) -> global average pool -> linear. A plain float model:
    prepare_qat / prepare_ptq find the conv-bn-relu chains, the add and the pools themselves."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(1, width // 2)
        self.pool = nn.MaxPool2d(2)
        self.down = conv_bn_relu(width // 2, width, stride=2)
        self.res1 = conv_bn_relu(width, width)
        self.res2 = conv_bn_relu(width, width, relu=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.pool(self.stem(x)))
        x = F.relu(x + self.res2(self.res1(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


# -- training and evaluation ----------------------------------------------------------------------


def progress(steps: int, desc: str):
    """range(steps), with a tqdm bar when tqdm is installed."""
    return tqdm(range(steps), desc=desc, unit="step") if tqdm else range(steps)


def train(model: nn.Module, data, steps: int, lr: float, batch: int, seed: int, desc: str) -> float:
    """Adam on random batches of the training set; returns the last loss."""
    images, labels = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    model.train()
    loss = torch.tensor(float("nan"))
    bar = progress(steps, desc)
    for step in bar:
        idx = torch.randint(0, images.shape[0], (batch,), generator=generator)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if tqdm and step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss.item()


@torch.no_grad()
def predict(model, images: torch.Tensor) -> torch.Tensor:
    """Top-1 classes of a torch model or an edgeqat.Int8Model, in batches of EVAL_BATCH."""
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat(
        [model(images[i : i + EVAL_BATCH]).argmax(1) for i in range(0, len(images), EVAL_BATCH)]
    )


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (predictions == labels).float().mean().item()


# -- the three models -----------------------------------------------------------------------------


def run_float(args, train_data, test_data, out: Path) -> tuple[nn.Module, dict]:
    torch.manual_seed(args.seed)
    model = SmallResNet()
    start = time.perf_counter()
    train(model, train_data, args.float_steps, FLOAT_LR, args.batch, args.seed, "float")
    seconds = time.perf_counter() - start
    acc = accuracy(predict(model, test_data[0]), test_data[1])
    torch.save(model.state_dict(), out / "float.pt")
    print(f"float: {args.float_steps} steps in {seconds:.1f} s, test accuracy {acc:.2f}%")
    return model, {"accuracy": acc, "file": out / "float.pt"}


def calibration_batches(images: torch.Tensor, count: int, size: int = 256):
    return (images[i * size : (i + 1) * size] for i in range(count))


def run_ptq(args, float_model, train_data, test_data, out: Path) -> dict:
    """Post-training quantization: no training, ranges from a few calibration batches."""
    example = train_data[0][:1]
    ptq = edgeqat.prepare_ptq(float_model, example_inputs=example)
    edgeqat.calibrate(ptq, calibration_batches(train_data[0], args.calibration_batches))
    int8 = edgeqat.export(ptq, out / "ptq.eq8", example_inputs=example, num_threads=args.threads)
    acc = accuracy(predict(int8, test_data[0]), test_data[1])
    print(f"PTQ: {args.calibration_batches} calibration batches, int8 test accuracy {acc:.2f}%")
    return {"accuracy": acc, "file": out / "ptq.eq8"}


def run_qat(args, float_model, train_data, test_data, out: Path) -> dict:
    """Quantization-aware fine-tuning from the float weights: batch norm frozen half way,
    the observed activation ranges for the last quarter (so the export sees what training
    saw)."""
    example = train_data[0][:1]
    schedule = edgeqat.QATSchedule(
        freeze_bn_step=args.qat_steps // 2, freeze_observers_step=args.qat_steps * 3 // 4
    )
    qat = edgeqat.prepare_qat(
        float_model, edgeqat.QConfig(schedule=schedule), example_inputs=example
    )
    # Start from calibrated ranges; they keep following the data (EMA) while training.
    edgeqat.calibrate(
        qat, calibration_batches(train_data[0], args.calibration_batches), freeze=False
    )
    start = time.perf_counter()
    train(qat, train_data, args.qat_steps, QAT_LR, args.batch, args.seed + 1, "QAT")
    seconds = time.perf_counter() - start
    simulated = predict(qat, test_data[0])

    int8 = edgeqat.export(qat, out / "qat.eq8", example_inputs=example, num_threads=args.threads)
    start = time.perf_counter()
    runtime = predict(int8, test_data[0])
    images_per_s = len(runtime) / (time.perf_counter() - start)

    sim_acc, int8_acc = accuracy(simulated, test_data[1]), accuracy(runtime, test_data[1])
    agreement = accuracy(runtime, simulated)
    print(
        f"QAT: {args.qat_steps} steps in {seconds:.1f} s, simulation {sim_acc:.2f}%, "
        f"int8 runtime {int8_acc:.2f}% (top-1 agreement {agreement:.2f}%)"
    )
    return {
        "sim_accuracy": sim_acc,
        "accuracy": int8_acc,
        "agreement": agreement,
        "images_per_s": images_per_s,
        "kernels": int8.kernels,
        "file": out / "qat.eq8",
    }


# -- the report -----------------------------------------------------------------------------------


def kib(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KiB"


def print_report(args, results: dict, test_count: int, seconds: float) -> None:
    fp, ptq, qat = results["float"], results["ptq"], results["qat"]
    float_size = fp["file"].stat().st_size
    ratio = qat["file"].stat().st_size / float_size
    rows = [
        ("float", fp["accuracy"], f"{fp['file'].name} (torch.save state_dict)", kib(fp["file"])),
        ("PTQ int8 (runtime)", ptq["accuracy"], ptq["file"].name, kib(ptq["file"])),
        ("QAT simulation (fake quant)", qat["sim_accuracy"], "", ""),
        (
            "QAT int8 (runtime)",
            qat["accuracy"],
            qat["file"].name,
            f"{kib(qat['file'])} ({ratio:.2f}x)",
        ),
    ]
    print(f"\n| model | test accuracy ({test_count} images) | vs float | file | size |")
    print("|---|---|---|---|---|")
    for name, acc, file, size in rows:
        delta = "" if name == "float" else f"{acc - fp['accuracy']:+.2f}"
        print(f"| {name} | {acc:.2f}% | {delta} | {file} | {size} |")
    print(
        f"\nQAT simulation vs int8 runtime: top-1 agreement {qat['agreement']:.2f}%\n"
        f"int8 runtime: {qat['images_per_s']:,.0f} images/s on the test set "
        f"({args.threads} threads, kernels {qat['kernels']!r})\n"
        f"total wall time {seconds:.1f} s; torch threads {torch.get_num_threads()}, "
        f"int8 runtime threads {args.threads}; files in {args.out}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-steps", type=int, help="float training steps (default 1500)")
    parser.add_argument("--qat-steps", type=int, help="QAT fine-tuning steps (default 400)")
    parser.add_argument("--batch", type=int, default=128, help="training batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="int8 runtime threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edgeqat-fashion-mnist",
        help="folder for float.pt, ptq.eq8, qat.eq8 (default: under the system temp dir)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps (for tests)")
    args = parser.parse_args()
    float_steps, qat_steps, args.calibration_batches = PRESETS["quick" if args.quick else "default"]
    args.float_steps = float_steps if args.float_steps is None else args.float_steps
    args.qat_steps = qat_steps if args.qat_steps is None else args.qat_steps
    if min(args.float_steps, args.qat_steps, args.batch, args.threads) < 1:
        parser.error("--float-steps, --qat-steps, --batch and --threads must be positive")
    return args


def main() -> int:
    args = parse_args()
    start = time.perf_counter()
    try:
        train_data = load_fashion_mnist("train")
        test_data = load_fashion_mnist("test")
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"Fashion-MNIST: {len(train_data[0])} train, {len(test_data[0])} test images; "
        f"output in {args.out}"
    )
    float_model, float_result = run_float(args, train_data, test_data, args.out)
    results = {
        "float": float_result,
        "ptq": run_ptq(args, float_model, train_data, test_data, args.out),
        "qat": run_qat(args, float_model, train_data, test_data, args.out),
    }
    print_report(args, results, len(test_data[0]), time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
