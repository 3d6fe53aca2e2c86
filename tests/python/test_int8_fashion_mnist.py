"""The exported int8 model against the fake-quant simulation it came from, on real data.

Unmodified torchvision MobileNet v2 and ResNet-18 (10 classes; the 28x28 Fashion-MNIST image
repeated to 3 channels) are trained in float for 100 steps, then with QAT for 60 (batch norm
and observers frozen on a schedule), on a Fashion-MNIST subset, exported with edgeqat.export
and run in edgeqat's int8 runtime:

- per layer: every int8 value of the runtime against the simulation's tensor at the same
  place (its int8 grid index), on test images, each simulated layer fed the int8 model's own
  input values (so the comparison measures the layer, not the rounding differences that
  accumulate upstream): at least 99.9% within 1 LSB;
- end to end: top-1 agreement on the full 10k test set at least 99.5%;
- the int8 file is at most 0.27x the float model's state_dict;
- onnxruntime on the exported ONNX model: layer by layer (each op alone, fed the same int8
  input as our runtime) never more than 1 LSB from our runtime; end to end top-1 agreement
  with our runtime at least 99% on the full test set.

Skipped when the dataset is not installed (Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import fx

import edgeqat
from edgeqat._torchvision import import_torchvision
from edgeqat.data import DatasetError, load_fashion_mnist
from edgeqat.export import export_graph
from edgeqat.onnx_export import graph_to_onnx

pytestmark = pytest.mark.slow

TRAIN_IMAGES = 8_000
BATCH = 64
FLOAT_STEPS, FLOAT_LR = 100, 2e-3  # a float start (QAT from random weights ranges poorly)
QAT_STEPS, QAT_LR = 60, 2e-4
SCHEDULE = edgeqat.QATSchedule(freeze_bn_step=30, freeze_observers_step=45)
LAYER_IMAGES = 128  # test images for the per-layer comparison
# Targets (the issue's).
LAYER_WITHIN_1_LSB = 0.999
TOP1_AGREEMENT = 0.995
SIZE_RATIO = 0.27
ORT_TOP1_AGREEMENT = 0.99


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


def _train(model, train, steps: int, lr: float) -> None:
    images, labels = train
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(TRAIN_IMAGES, (BATCH,), generator=g)
        loss = F.cross_entropy(model(_images(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _train_qat(name: str, train) -> fx.GraphModule:
    tv = import_torchvision()
    torch.manual_seed(0)
    model = getattr(tv.models, name)(num_classes=10)
    _train(model, train, FLOAT_STEPS, FLOAT_LR)
    qat = edgeqat.prepare_qat(
        model, edgeqat.QConfig(schedule=SCHEDULE), example_inputs=_images(train[0][:2])
    )
    _train(qat, train, QAT_STEPS, QAT_LR)
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
    assert correct_sim / n >= 0.4  # learned something (chance: 0.1), so agreement means something

    # onnxruntime, layer by layer: each op alone, fed our runtime's int8 input values.
    builder = export_graph(qat, example)
    graph, constants = json.loads(builder.graph_json()), builder.constants()
    ours = {graph["inputs"][0]: model.quantize(x).numpy()}
    ours.update({v: q.numpy() for v, q in zip(names, captured)})
    exact = total = 0
    for node in graph["nodes"]:
        inputs = list(dict.fromkeys(node["inputs"]))
        sub = {**graph, "inputs": inputs, "outputs": [node["output"]], "nodes": [node]}
        # uint8 activations (export_onnx's default): fed q + 128, compared minus 128.
        (got,) = _session(graph_to_onnx(sub, constants, int8_io=True)).run(
            None, {v: (ours[v].astype(np.int16) + 128).astype(np.uint8) for v in inputs}
        )
        diff = np.abs(got.astype(np.int32) - 128 - ours[node["output"]].astype(np.int32))
        assert diff.max() <= 1, (node["name"], int(diff.max()))
        exact += int((diff == 0).sum())
        total += diff.size
    # End to end on the test set: onnxruntime's float outputs against ours.
    onnx_path = edgeqat.export_onnx(qat, tmp_path / f"{name}.onnx", example_inputs=example)
    session = _session(onnx_path)
    feed = session.get_inputs()[0].name
    ort_agree = 0
    for i in range(0, len(test_images), 500):
        xb = _images(test_images[i : i + 500])
        (got,) = session.run(None, {feed: xb.numpy()})
        ort_agree += int((torch.from_numpy(got).argmax(1) == model(xb).argmax(1)).sum())
    print(
        f"{name}: onnxruntime layer by layer {exact / total:.5f} exact, max 1 LSB; top-1 "
        f"agreement with our runtime {ort_agree / n:.4f}"
    )
    assert ort_agree / n >= ORT_TOP1_AGREEMENT

    # MobileNet v2 meets it since the QAT modules simulate the int8 model's int32 bias
    # (QConfig.quantize_bias, docs/qat.md): measured 99.92% (ResNet-18 99.96%), per layer
    # 1.00000 of the values exact. With the float bias (rounded to the accumulator scale
    # s_in * s_w only at export: an error of up to 0.5 * s_in * s_w / s_out output LSBs, ~0.05
    # here) its depthwise layers differed by 1 LSB on ~0.1-0.3% of values, and 17 blocks of
    # them flipped low-margin predictions: 98.2%.
    assert agree / n >= TOP1_AGREEMENT


def _session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not isinstance(model, (str, bytes)):
        model = model.SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
