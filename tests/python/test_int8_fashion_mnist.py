"""The exported int8 model against the fake-quant simulation it came from, on real data.

Unmodified torchvision MobileNet v2 and ResNet-18 (10 classes; the 28x28 Fashion-MNIST image
repeated to 3 channels) are trained with QAT for a few hundred steps on a Fashion-MNIST
subset (batch norm and observers frozen on a schedule), exported with edgeqat.export and run
in edgeqat's int8 runtime:

- per layer: every int8 value of the runtime against the simulation's tensor at the same
  place (its int8 grid index), on test images, each simulated layer fed the int8 model's own
  input values (so the comparison measures the layer, not the rounding differences that
  accumulate upstream): at least 99.9% within 1 LSB;
- end to end: top-1 agreement on the full 10k test set at least 99.5%;
- the int8 file is at most 0.27x the float model's state_dict.

Skipped when the dataset is not installed (Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import fx

import edgeqat
from edgeqat._torchvision import import_torchvision
from edgeqat.data import DatasetError, load_fashion_mnist
from edgeqat.export import export_graph

pytestmark = pytest.mark.slow

TRAIN_IMAGES = 8_000
BATCH = 64
QAT_STEPS = 150
LR = 2e-3
SCHEDULE = edgeqat.QATSchedule(freeze_bn_step=100, freeze_observers_step=125)
LAYER_IMAGES = 256  # test images for the per-layer comparison
# Targets (the issue's).
LAYER_WITHIN_1_LSB = 0.999
TOP1_AGREEMENT = 0.995
SIZE_RATIO = 0.27


@pytest.fixture(scope="module")
def data():
    try:
        train = load_fashion_mnist("train", limit=TRAIN_IMAGES)
        test = load_fashion_mnist("test")
    except DatasetError as err:
        pytest.skip(str(err))
    return train, test


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.repeat(1, 3, 1, 1)


def _train_qat(name: str, train) -> fx.GraphModule:
    tv = import_torchvision()
    torch.manual_seed(0)
    model = getattr(tv.models, name)(num_classes=10)
    images, labels = train
    qat = edgeqat.prepare_qat(
        model,
        edgeqat.QConfig(schedule=SCHEDULE),
        example_inputs=_images(images[:2]),
    )
    opt = torch.optim.Adam(qat.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for _ in range(QAT_STEPS):
        idx = torch.randint(TRAIN_IMAGES, (BATCH,), generator=g)
        loss = F.cross_entropy(qat(_images(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return qat.eval()


class _TeacherForced(fx.Interpreter):
    """Runs the simulation, keeping the output of each node that is an int8 value and then
    replacing it by the int8 model's own value (dequantized, so exactly on the same grid):
    every layer of the simulation sees the int8 model's inputs, so each layer's comparison
    measures that layer alone."""

    def __init__(self, gm: fx.GraphModule, forced: dict[str, torch.Tensor]) -> None:
        super().__init__(gm)
        self.forced = forced  # simulation node name -> the int8 model's value, as float
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.forced:
            self.outputs[n.name] = out
            return self.forced[n.name].reshape(out.shape)
        return out


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_int8_model_matches_simulation(name, data, tmp_path):
    train, (test_images, test_labels) = data
    qat = _train_qat(name, train)
    example = _images(test_images[:1])
    path = tmp_path / f"{name}.eq8"
    model = edgeqat.export(qat, path, example_inputs=example, num_threads=2)

    # File size against the float model's state_dict (float32 weights and BN state).
    float_model = getattr(import_torchvision().models, name)(num_classes=10)
    float_bytes = sum(t.numel() * t.element_size() for t in float_model.state_dict().values())
    size_ratio = os.path.getsize(path) / float_bytes
    assert size_ratio <= SIZE_RATIO, size_ratio

    # Per layer, on the same images: the runtime's int8 values against the simulation's.
    _, sources = export_graph(qat, example, with_sources=True)
    x = _images(test_images[:LAYER_IMAGES])
    names = [node["name"] for node in model.nodes]
    captured = model.run_int8(model.quantize(x), capture=names)[len(model.outputs) :]
    forced = {sources[v]: model.dequantize(q, v) for v, q in zip(names, captured)}
    recorder = _TeacherForced(qat, forced)
    with torch.no_grad():
        recorder.run(x)
    worst, exact, total = [], 0, 0
    for value, q in zip(names, captured):
        info = model.value(value)
        sim = recorder.outputs[sources[value]]
        sim_q = torch.round(sim / info["scale"]) + info["zero_point"]
        diff = (q.to(torch.float32).reshape(sim_q.shape) - sim_q).abs()
        exact += int((diff == 0).sum())
        total += diff.numel()
        worst.append((float((diff <= 1).float().mean()), value, float(diff.max())))
    worst.sort()
    print(
        f"\n{name}: {len(names)} layers, {exact / total:.5f} of all values exact; worst "
        f"(fraction within 1 LSB, layer, max LSB): {worst[:3]}"
    )
    assert worst[0][0] >= LAYER_WITHIN_1_LSB, worst[:5]

    # End to end on the whole test set.
    agree = correct_int8 = correct_sim = 0
    with torch.no_grad():
        for i in range(0, len(test_images), 500):
            xb = _images(test_images[i : i + 500])
            yb = test_labels[i : i + 500]
            sim = qat(xb).argmax(1)
            int8 = model(xb).argmax(1)
            agree += int((sim == int8).sum())
            correct_sim += int((sim == yb).sum())
            correct_int8 += int((int8 == yb).sum())
    n = len(test_images)
    print(
        f"{name}: top-1 agreement {agree / n:.4f}, simulation accuracy {correct_sim / n:.4f}, "
        f"int8 accuracy {correct_int8 / n:.4f}, file {size_ratio:.3f}x the float state_dict"
    )
    assert agree / n >= TOP1_AGREEMENT
    assert correct_sim / n >= 0.4  # learned something (chance: 0.1), so agreement means something
