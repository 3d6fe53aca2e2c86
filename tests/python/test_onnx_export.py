"""edgeqat.export_onnx against onnxruntime (from PyPI, CPU, no mocks): the file loads and passes
the ONNX checker; every op, alone in a one-node model fed the SAME int8 input as our runtime,
agrees with it exactly on most outputs and never by more than 1 LSB
(../shared/reference/int8-numerics.md section 5); the whole model's float outputs agree on the
top-1 class. All of it with uint8 activations (the default, U8S8: fed q + 128, the outputs
compared minus 128) and with int8 ones (S8S8); the uint8 file's tensors are uint8; the two files
agree with each other; the errors.

Measured (onnxruntime 1.31.1, x86-64 with AVX-512 VNNI; printed with ``pytest -s``), for both
activation dtypes alike, layer by layer on 256 inputs at both optimization levels
(ORT_ENABLE_ALL, ORT_DISABLE_ALL): conv2d (plain, depthwise with depth multiplier 2, stride 2,
dilation 2, asymmetric "same" padding, ReLU6 clamp below the grid's top, 6-bit grids),
fully_connected, add, concat, max_pool2d (ceil mode) and flatten 100 % exact; average_pool2d
94-98.5 % exact (ties: we round the raw sum ties away from zero, onnxruntime the float mean half
to even); never more than 1 LSB. End to end on 512 random float inputs: top-1 agreement 100 % for
each model (outputs exact: small 100 %, big 70 %, big6 86-88 %: the average pools' 1-LSB tie
differences propagate through the fully connected layers). uint8 vs int8 file, every value:
identical at ORT_DISABLE_ALL; at ORT_ENABLE_ALL identical but for onnxruntime's fused average
pools, which round some ties differently for the two dtypes (big's ``avg``: 99.5 % equal, 1 LSB
apart elsewhere).
"""

from __future__ import annotations

import copy
import json
import platform
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_export import Net, trained_model  # noqa: E402

import edgeqat  # noqa: E402
from edgeqat.export import export_graph  # noqa: E402
from edgeqat.onnx_export import graph_to_onnx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

#: export_onnx's activation dtypes, the default first: an int8 value q is q + offset in ONNX.
DTYPES = ["uint8", "int8"]
OFFSET = {"uint8": 128, "int8": 0}


def _to_onnx(q: np.ndarray, dtype: str) -> np.ndarray:
    """An int8 value of our runtime as the ONNX model's activation (q + 128 for uint8)."""
    return (q.astype(np.int16) + OFFSET[dtype]).astype(dtype)


def _from_onnx(a: np.ndarray) -> np.ndarray:
    """An ONNX activation (uint8 or int8) as the int8 graph's value, in int32."""
    return a.astype(np.int32) - OFFSET[a.dtype.name]


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _session(model, level: str = "all") -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.log_severity_level = 3
    if not isinstance(model, (str, bytes)):
        model = model.SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# A model with every op of the int8 graph


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # depthwise, depth multiplier 2
        self.pw = nn.Conv2d(16, 16, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.a = nn.Conv2d(16, 8, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(16, 8, 2, padding="same")  # pads (0, 0, 1, 1)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        y = F.relu6(self.bn(self.conv(x)))
        y = F.relu(self.dw(y))
        y = F.relu(y + self.pw_bn(self.pw(y)))
        y = self.pool(y)
        y = torch.cat([self.a(y), F.relu(self.b(y))], 1)
        y = self.avg(y)
        y = y.mean((2, 3))  # global average pool + flatten
        y = F.relu(self.fc1(torch.flatten(y, 1)))
        return self.fc2(y)


BIG_OPS = [
    ("conv2d", "conv"),
    ("conv2d", "dw"),
    ("conv2d", "pw"),
    ("add", "add"),
    ("max_pool2d", "pool"),
    ("conv2d", "a"),
    ("conv2d", "b"),
    ("concat", "cat"),
    ("average_pool2d", "avg"),
    ("average_pool2d", "mean"),
    ("flatten", "mean.flatten"),
    ("fully_connected", "fc1"),
    ("fully_connected", "fc2"),
]


def trained_big(activation_bits: int = 8, seed: int = 0, steps: int = 6):
    torch.manual_seed(seed)
    config = edgeqat.QConfig(
        activation=edgeqat.QConfig().activation.replace(num_bits=activation_bits)
    )
    qat = edgeqat.prepare_qat(Big(), config, example_inputs=torch.randn(2, 3, 20, 20))
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        x = torch.randn(16, 3, 20, 20)
        loss = F.cross_entropy(qat(x), torch.randint(5, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == steps // 2:
            edgeqat.freeze_bn(qat)
    edgeqat.freeze_observers(qat)
    if activation_bits == 8:
        # A ReLU6 whose grid reaches past 6: its clamp (act_max) is below 127 -> an int8 Clip.
        qat.get_submodule("conv_out_quant").quantizer.observed_max.fill_(8.0)
    return qat.eval()


class Exported:
    """A prepared model, its int8 graph, our runtime and the ONNX file."""

    def __init__(self, qat, example, tmp_path) -> None:
        self.qat = qat
        builder = export_graph(qat, example)
        self.graph = json.loads(builder.graph_json())
        self.constants = builder.constants()
        self.int8 = edgeqat.export(qat, tmp_path / "model.eq8", example_inputs=example)
        # The default (uint8 activations), and int8 activations.
        self.path = edgeqat.export_onnx(qat, tmp_path / "model.onnx", example_inputs=example)
        self.paths = {
            "uint8": self.path,
            "int8": edgeqat.export_onnx(
                qat, tmp_path / "model_s8.onnx", example_inputs=example, activation_dtype="int8"
            ),
        }

    def values(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Every int8 value of our runtime on float input x."""
        q = self.int8.quantize(x)
        names = [n["name"] for n in self.graph["nodes"]]
        outs = self.int8.run_int8(q, capture=names)[len(self.graph["outputs"]) :]
        return {self.graph["inputs"][0]: q.numpy(), **{n: o.numpy() for n, o in zip(names, outs)}}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return Exported(trained_model(), torch.randn(1, 3, 10, 10), tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return Exported(trained_big(), torch.randn(1, 3, 20, 20), tmp_path_factory.mktemp("big"))


@pytest.fixture(scope="module")
def big6(tmp_path_factory):
    """6-bit activations: every grid is [-128, -65], so every node and the input clamp. Seed 1:
    seed 0 trains a model whose largest logit mostly saturates at the top of the output grid
    (a quarter of the outputs have two top classes, decided by 1-LSB differences)."""
    return Exported(
        trained_big(6, seed=1), torch.randn(1, 3, 20, 20), tmp_path_factory.mktemp("big6")
    )


MODELS = ["small", "big", "big6"]


# --------------------------------------------------------------------------------------------
# The file


def test_small_model_loads_runs_and_checks(small):
    onnx.checker.check_model(small.path, full_check=True)
    proto = onnx.load(small.path)
    assert proto.opset_import[0].version == 13 and proto.ir_version == 7
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    sess = _session(small.path)
    (inp,) = sess.get_inputs()
    assert inp.name == "x_float" and inp.type == "tensor(float)"
    assert inp.shape == ["batch", 3, 10, 10]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [("fc_float", ["batch", 5])]
    for n in (1, 7):
        x = torch.randn(n, 3, 10, 10)
        (y,) = sess.run(None, {"x_float": x.numpy()})
        assert y.dtype == np.float32 and y.shape == (n, 5)
        # The output is on the int8 output grid.
        info = small.int8.outputs[0]
        q = y / info["scale"] + info["zero_point"]
        assert np.allclose(q, np.round(q), atol=1e-3)


def test_op_mapping(big):
    ops = [n.op_type for n in onnx.load(big.path).graph.node]
    assert ops.count("QLinearConv") == 7  # 5 convs + 2 fully connected as 1x1 convs
    assert ops.count("Clip") == 1  # the ReLU6 whose clamp is narrower than the grid
    for op in ("MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Add", "Flatten"):
        assert op in ops, op
    assert [(n["op"], n["name"]) for n in big.graph["nodes"]] == BIG_OPS
    conv = next(n for n in big.graph["nodes"] if n["name"] == "conv")
    assert conv["act_max"] < 127 and conv["act_min"] == -128


def test_six_bit_grids_are_clamped(big6):
    ops = [n.op_type for n in onnx.load(big6.path).graph.node]
    # The input and every node whose output grid is new (not pools / flatten) clamp to it.
    assert ops.count("Clip") == 1 + 9
    for name, v in big6.values(torch.randn(8, 3, 20, 20)).items():
        info = next(i for i in big6.graph["values"] if i["name"] == name)
        assert v.min() >= info["qmin"] and v.max() <= info["qmax"], name


@pytest.mark.parametrize("model", ["big", "big6"])
def test_activations_are_uint8_by_default(model, request):
    """Every activation tensor, zero point and clamp bound has the activation dtype (uint8 by
    default: the int8 graph's + 128); weights and their zero points stay int8, biases int32."""
    m = request.getfixturevalue(model)
    values = {v["name"]: v for v in m.graph["values"]}
    bounds = {n["output"]: (n["act_min"], n["act_max"]) for n in m.graph["nodes"] if "act_min" in n}
    bounds.update({x: (values[x]["qmin"], values[x]["qmax"]) for x in m.graph["inputs"]})
    for dtype, path in m.paths.items():
        act, offset = np.dtype(dtype), OFFSET[dtype]
        proto = onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=True)
        g = proto.graph
        assert f"{dtype} activations, int8 weights" in proto.doc_string
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        # Every tensor a node computes is float32 (QDQ) or an activation.
        types = {t.type.tensor_type.elem_type for t in [*g.value_info, *g.output]}
        assert types == {onnx.TensorProto.FLOAT, onnx.helper.np_dtype_to_tensor_dtype(act)}
        # Zero points: the int8 graph's + offset, in the activation dtype; scales unchanged.
        zero_points = 0
        for name, v in values.items():
            if f"{name}.zero_point" in inits:
                zp, scale = inits[f"{name}.zero_point"], inits[f"{name}.scale"]
                assert zp.dtype == act and int(zp) == v["zero_point"] + offset, name
                assert scale.dtype == np.float32 and float(scale) == np.float32(v["scale"])
                zero_points += 1
        assert zero_points >= len(m.graph["nodes"]) - 3  # all but max pool and flatten
        convs = clips = 0
        for n in g.node:
            if n.op_type == "QLinearConv":
                _, _, xz, w, _, wz, _, yz, b = n.input
                assert inits[xz].dtype == act and inits[yz].dtype == act, n.name
                assert inits[w].dtype == np.int8 and inits[b].dtype == np.int32, n.name
                assert inits[wz].dtype == np.int8 and not inits[wz].any(), n.name
                convs += 1
            elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert inits[n.input[2]].dtype == act, n.name
            elif n.op_type == "Clip":
                lo, hi = inits[n.input[1]], inits[n.input[2]]
                assert lo.dtype == act and hi.dtype == act, n.name
                assert (int(lo), int(hi)) == tuple(b + offset for b in bounds[n.output[0]])
                clips += 1
        assert convs == 7 and clips == (1 if model == "big" else 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_every_int8_value_is_an_output_by_name(model, dtype, request, tmp_path):
    m = request.getfixturevalue(model)
    path = edgeqat.export_onnx(
        m.qat, tmp_path / "all.onnx", torch.randn(1, *m.int8.inputs[0]["shape"]),
        int8_outputs_for="all", activation_dtype=dtype,
    )  # fmt: skip
    sess = _session(path)
    names = [o.name for o in sess.get_outputs()]
    defined = m.graph["inputs"] + [n["output"] for n in m.graph["nodes"]]
    assert names == [f"{v}_float" for v in m.graph["outputs"]] + defined
    torch.manual_seed(2)
    x = torch.randn(64, *m.int8.inputs[0]["shape"])
    got = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x.numpy()})))
    ours = m.values(x)
    for v in defined:
        assert got[v].dtype == np.dtype(dtype) and got[v].shape == ours[v].shape, v
    got = {v: _from_onnx(got[v]) for v in defined}
    # Quantizing the input is the same in both (float32 division, half to even).
    assert np.array_equal(got[m.graph["inputs"][0]], ours[m.graph["inputs"][0]])
    # Where a node's inputs agree exactly, its output is within 1 LSB (1-LSB differences of
    # average pooling propagate downstream, where the outputs are compared layer by layer).
    checked = []
    for node in m.graph["nodes"]:
        if all(np.array_equal(got[i], ours[i]) for i in node["inputs"]):
            diff = np.abs(got[node["output"]] - ours[node["output"]].astype(np.int32))
            assert diff.max() <= 1, node["name"]
            checked.append(node["name"])
    assert checked[:3] == [n["name"] for n in m.graph["nodes"][:3]]


@pytest.mark.parametrize("level", ["all", "none"])
@pytest.mark.parametrize("model", MODELS)
def test_uint8_and_int8_activations_agree(model, level, request):
    """The same model: every value of the uint8 file is the int8 file's + 128. onnxruntime's
    integer kernels agree bit for bit (with VNNI; without it, x86 U8S8 can saturate 16-bit
    pair sums: onnx_export's docstring); its fused average pools (QLinearAveragePool /
    QLinearGlobalAveragePool, ORT_ENABLE_ALL only) round some ties differently for uint8 and
    int8, by 1 LSB, which then propagates downstream like their ties with our runtime."""
    if platform.machine().lower() in ("x86_64", "amd64") and not _has_vnni():
        pytest.skip("x86 CPU without VNNI: onnxruntime's U8S8 kernels may saturate")
    m = request.getfixturevalue(model)
    torch.manual_seed(3)
    x = torch.randn(256, *m.int8.inputs[0]["shape"]).numpy()
    outs = {}
    for dtype in DTYPES:
        proto = graph_to_onnx(m.graph, m.constants, int8_outputs_for="all", activation_dtype=dtype)
        sess = _session(proto, level)
        names = [o.name for o in sess.get_outputs()]
        outs[dtype] = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
    u8, s8 = outs["uint8"], outs["int8"]
    assert u8.keys() == s8.keys()
    for v in m.graph["inputs"] + [n["output"] for n in m.graph["nodes"]]:
        assert u8[v].dtype == np.uint8 and s8[v].dtype == np.int8, v
        u8[v], s8[v] = _from_onnx(u8[v]), _from_onnx(s8[v])
    assert np.array_equal(u8[m.graph["inputs"][0]], s8[m.graph["inputs"][0]])
    report = []
    for node in m.graph["nodes"]:
        y = node["output"]
        if not all(np.array_equal(u8[i], s8[i]) for i in node["inputs"]):
            continue  # a tie difference upstream
        diff = np.abs(u8[y] - s8[y])
        if node["op"] == "average_pool2d" and level == "all":
            assert diff.max() <= 1, node["name"]
            report.append(f"{node['name']} {100 * (diff == 0).mean():.2f} % equal")
        else:
            assert diff.max() == 0, node["name"]
    for v in m.graph["outputs"]:
        if np.array_equal(u8[v], s8[v]):
            assert np.array_equal(u8[f"{v}_float"], s8[f"{v}_float"]), v
    if level == "none":
        assert all(np.array_equal(u8[k], s8[k]) for k in u8)
    print(f"\n{model} uint8 vs int8 ({level}): average pools " + (", ".join(report) or "-"))


# --------------------------------------------------------------------------------------------
# Layer by layer: each op alone, the same int8 input


def _one_node_model(m: Exported, node: dict, dtype: str):
    sub = {
        "values": m.graph["values"],
        "inputs": list(dict.fromkeys(node["inputs"])),
        "outputs": [node["output"]],
        "nodes": [node],
    }
    return sub["inputs"], graph_to_onnx(sub, m.constants, int8_io=True, activation_dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", ["all", "none"])
@pytest.mark.parametrize("model", MODELS)
def test_layer_by_layer_within_one_lsb(model, level, dtype, request):
    m = request.getfixturevalue(model)
    torch.manual_seed(4)
    ours = m.values(torch.randn(256, *m.int8.inputs[0]["shape"]))
    report = []
    for node in m.graph["nodes"]:
        inputs, proto = _one_node_model(m, node, dtype)
        feed = {v: _to_onnx(ours[v], dtype) for v in inputs}
        (got,) = _session(proto, level).run(None, feed)
        want = ours[node["output"]]
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape, node["name"]
        diff = np.abs(_from_onnx(got) - want.astype(np.int32))
        exact = float((diff == 0).mean())
        report.append(f"{node['op']} {node['name']}: exact {100 * exact:.2f} %, max {diff.max()}")
        assert diff.max() <= 1, report[-1]
        # Integer kernels (QLinearConv, int8 MaxPool / Flatten) and QDQ add / concat match
        # exactly here; average pooling differs on ties only.
        assert exact >= (0.85 if node["op"] == "average_pool2d" else 0.99), report[-1]
    print(f"\n{model} ({dtype} activations, optimization {level}):\n  " + "\n  ".join(report))


# --------------------------------------------------------------------------------------------
# End to end on float input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_top1_agrees_with_the_int8_model(model, dtype, request):
    m = request.getfixturevalue(model)
    torch.manual_seed(6)
    x = torch.randn(512, *m.int8.inputs[0]["shape"])
    sess = _session(m.paths[dtype])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    want = m.int8(x).numpy()
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    lsb = np.round(np.abs(got - want) / m.int8.outputs[0]["scale"])
    print(
        f"\n{model} ({dtype} activations): top-1 agreement {100 * top1:.2f} % on 512 inputs; "
        f"outputs exact {100 * (lsb == 0).mean():.2f} %, within 1 LSB "
        f"{100 * (lsb <= 1).mean():.2f} %, max {lsb.max():.0f} LSB"
    )
    assert top1 >= 0.99  # measured: 100 % for each model


# --------------------------------------------------------------------------------------------
# Errors


def test_errors(small, tmp_path):
    x = torch.randn(1, 3, 10, 10)
    with pytest.raises(TypeError, match="GraphModule"):
        edgeqat.export_onnx(Net(), tmp_path / "a.onnx", example_inputs=x)
    assert not (tmp_path / "a.onnx").exists()
    with pytest.raises(ValueError, match="no int8 value named 'nope'"):
        edgeqat.export_onnx(small.qat, tmp_path / "b.onnx", x, int8_outputs_for=["conv", "nope"])
    with pytest.raises(ValueError, match="int8_outputs_for"):
        edgeqat.export_onnx(small.qat, tmp_path / "b.onnx", x, int8_outputs_for="every")
    for bad in ("u8", "INT8", np.uint8, None):
        message = f'activation_dtype must be "uint8" or "int8", got {re.escape(repr(bad))}'
        with pytest.raises(ValueError, match=message):
            edgeqat.export_onnx(small.qat, tmp_path / "b.onnx", x, activation_dtype=bad)
    with pytest.raises(ValueError, match="activation_dtype .* got 'float32'"):
        graph_to_onnx(small.graph, small.constants, activation_dtype="float32")
    # An existing file is replaced only by a complete new one; no temporary is left behind.
    path = tmp_path / "c.onnx"
    assert edgeqat.export_onnx(small.qat, path, x) == str(path)
    before = path.read_bytes()
    broken = copy.deepcopy(small.qat)
    broken.get_submodule("fc_out_quant").quantizer.disable()
    with pytest.raises(edgeqat.ExportError, match="turned off"):
        edgeqat.export_onnx(broken, path, x)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.onnx"]
