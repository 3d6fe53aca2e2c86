"""edgeqat.export and edgeqat.Int8Model: the exported numbers against the fake-quant simulation
they come from (grids, weights, biases, multipliers, clamps), the int8 model against the
simulation end to end, the file against docs/int8-format.md (tests/python/eq8_file.py), and
the errors."""

from __future__ import annotations

import math

import eq8_file
import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F
from torch import nn

import edgeqat
from edgeqat import _runtime
from edgeqat.export import export_graph
from edgeqat.nn import ConvBn2d, QuantLinear

ops = torch.ops.edgeqat


# --------------------------------------------------------------------------------------------
# Grids: the int8 scale / zero point of a range are exactly the fake quant's


RANGES = [
    (-1.0, 1.0, 8, False),
    (0.0, 6.0, 8, False),  # after ReLU6
    (0.0, 0.731, 8, False),
    (-0.37, 2.9, 8, False),
    (-3.0e-3, 1.0e-2, 8, True),
    (-5.0, 0.0, 8, False),
    (-1.0, 1.0, 4, False),
    (0.0, 3.0, 2, True),
    (-1e6, 3e5, 8, False),
]


@pytest.mark.parametrize("lo, hi, bits, narrow", RANGES)
def test_value_grid_is_the_fake_quant_grid(lo, hi, bits, narrow):
    b = _runtime.GraphBuilder("test")
    b.add_input("x", [1000], (lo, hi, bits, narrow))
    scale, zp, qmin, qmax = b.grid_of("x")
    x = torch.linspace(2 * lo - 1, 2 * hi + 1, 1000)
    fq = ops.fake_quant_with_min_max_vars(x, torch.tensor(lo), torch.tensor(hi), bits, narrow)
    q = torch.round(fq / scale) + zp
    # Every fake-quant output is (q - zp) * scale, bit for bit, with q on the int8 grid.
    assert torch.equal((q - zp) * torch.tensor(scale, dtype=torch.float32), fq)
    assert int(q.min()) == qmin and int(q.max()) == qmax
    assert qmax - qmin == (1 << bits) - 1 - int(narrow)


def test_degenerate_range_is_a_one_point_grid():
    b = _runtime.GraphBuilder("test")
    b.add_input("x", [4], (0.0, 0.0, 8, False))
    scale, zp, qmin, qmax = b.grid_of("x")
    assert qmin == qmax == zp and scale > 0


@pytest.mark.parametrize(
    "bad, match",
    [
        ((1.0, -1.0, 8, False), "min <= max"),
        ((float("nan"), 1.0, 8, False), "finite"),
        ((-1.0, 1.0, 9, False), "num_bits"),
        ((-1.0, 1.0, 1, False), "num_bits"),
    ],
)
def test_bad_ranges_are_rejected(bad, match):
    b = _runtime.GraphBuilder("test")
    with pytest.raises(ValueError, match=match):
        b.add_input("x", [4], bad)


# --------------------------------------------------------------------------------------------
# A small prepared model


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        y = F.relu6(self.bn(self.conv(x)))
        y = F.relu(self.dw(y))
        y = y + self.pw_bn(self.pw(y))
        y = self.pool(F.relu(y))
        return self.fc(torch.flatten(y, 1))


def trained_model(seed: int = 0, steps: int = 6, config: edgeqat.QConfig | None = None):
    torch.manual_seed(seed)
    qat = edgeqat.prepare_qat(Net(), config, example_inputs=torch.randn(2, 3, 10, 10))
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        x = torch.randn(16, 3, 10, 10)
        loss = F.cross_entropy(qat(x), torch.randint(5, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == steps // 2:
            edgeqat.freeze_bn(qat)
    edgeqat.freeze_observers(qat)
    return qat.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    qat = trained_model()
    path = tmp_path_factory.mktemp("export") / "net.eq8"
    model = edgeqat.export(qat, path, example_inputs=torch.randn(1, 3, 10, 10))
    header, constants = eq8_file.read(path)
    return qat, model, header, constants


def _values(header) -> dict:
    return {v["name"]: v for v in header["values"]}


def _nodes(header) -> dict:
    return {n["name"]: n for n in header["nodes"]}


def test_graph_structure(exported):
    qat, model, header, _ = exported
    ops_in_order = [(n["op"], n["name"]) for n in header["nodes"]]
    assert ops_in_order == [
        ("conv2d", "conv"),
        ("conv2d", "dw"),
        ("conv2d", "pw"),
        ("add", "add"),
        ("max_pool2d", "pool"),
        ("flatten", "flatten"),
        ("fully_connected", "fc"),
    ]
    values = _values(header)
    assert values["x"]["shape"] == [3, 10, 10] and header["inputs"] == ["x"]  # the input's name
    assert values["pool"]["shape"] == [8, 3, 3]  # ceil_mode: 5 -> 3
    assert _nodes(header)["pool"]["padding"] == [0, 0, 1, 1]
    assert header["outputs"] == ["fc"]
    assert [n["name"] for n in model.nodes] == [name for _, name in ops_in_order]
    # Max pool and flatten keep their input's grid (the add's, whose ReLU became its clamp).
    for name in ("pool", "flatten"):
        assert (values[name]["scale"], values[name]["zero_point"]) == (
            values["add"]["scale"],
            values["add"]["zero_point"],
        )


def test_clamps(exported):
    qat, _, header, _ = exported
    values, nodes = _values(header), _nodes(header)
    # ReLU / ReLU6 moved into the output quantizers; the range starts at 0, so the ReLU clamp
    # is the zero point, which is the bottom of the grid.
    for name in ("conv", "dw", "add"):
        assert nodes[name]["act_min"] == values[name]["zero_point"] == -128
    conv = values["conv"]
    relu6_top = conv["zero_point"] + round(6.0 / conv["scale"])
    assert nodes["conv"]["act_max"] == min(127, relu6_top)
    assert nodes["pw"]["act_min"] == -128 and nodes["pw"]["act_max"] == 127


def _fq_weight(module):
    lo, hi = module.weight_quant.quant_range()
    spec = module.weight_quant.spec
    if isinstance(module, ConvBn2d):
        weight, bias = module.folded_weight_and_bias()
    else:
        weight, bias = module.weight.detach(), module.bias
    fq = ops.fake_quant_with_min_max_vars_per_channel(
        weight, lo, hi, 0, spec.num_bits, spec.narrow_range
    )
    return fq, None if bias is None else bias.detach()


@pytest.mark.parametrize("name", ["conv", "dw", "pw", "fc"])
def test_weights_bias_and_multipliers(exported, name):
    qat, _, header, constants = exported
    module = qat.get_submodule(name)
    node = _nodes(header)[name]
    values = _values(header)
    fq, bias = _fq_weight(module)
    w = constants[node["weight"]].astype(np.float32)
    if w.ndim == 4:  # OHWI in the file
        w = w.transpose(0, 3, 1, 2)
    # Not in the file (the multipliers carry it): the builder's per-layer weight scales.
    w_scale = export_graph(qat, torch.randn(1, 3, 10, 10)).constants()[f"{name}.weight_scale"]
    assert f"{name}.weight_scale" not in constants
    # int8 weight * its channel scale is the simulated (fake-quantized, folded) weight, exactly.
    shape = (-1,) + (1,) * (w.ndim - 1)
    assert np.array_equal(w * w_scale.reshape(shape), fq.numpy())
    assert np.abs(w).max() <= 127
    s_in = values[node["inputs"][0]]["scale"]
    s_out = values[name]["scale"]
    if bias is not None:
        expected = np.round(bias.numpy().astype(np.float64) / (s_in * w_scale.astype(np.float64)))
        assert np.array_equal(constants[node["bias"]], expected.astype(np.int32))
    else:
        assert "bias" not in node
    for c, (m0, shift) in enumerate(zip(constants[node["multiplier"]], constants[node["shift"]])):
        real = s_in * float(w_scale[c]) / s_out
        assert (m0, shift) == _runtime.quantize_multiplier(real)
        assert math.isclose(m0 * 2.0 ** (int(shift) - 31), real, rel_tol=2.0**-30)


@pytest.mark.parametrize("name", ["conv", "dw", "pw", "fc"])
def test_simulated_bias_is_the_int32_bias(exported, name):
    """The bias each layer of the prepared model adds in its simulated forward is the int8
    model's, bit for bit: float32(bias_q * (s_in * s_w[c])) with the file's int32 bias_q and
    the builder's scales; and bias_q is the reference's round(b / s), ties away from zero."""
    qat, _, header, constants = exported
    module = qat.get_submodule(name)
    node = _nodes(header)[name]
    s_in = _values(header)[node["inputs"][0]]["scale"]
    w_scale = export_graph(qat, torch.randn(1, 3, 10, 10)).constants()[f"{name}.weight_scale"]
    bias_q = constants[node["bias"]]
    expected = bias_q.astype(np.float64) * (np.float64(s_in) * w_scale.astype(np.float64))
    # A zero input: every output element is the bias the layer adds (no activation here).
    if isinstance(module, QuantLinear):
        zeros = torch.zeros(1, module.in_features)
    else:
        zeros = torch.zeros(1, module.in_channels, 3, 3)
    with torch.no_grad():
        out = module(zeros)
    got = out.reshape(out.shape[0], out.shape[1], -1)[0, :, 0]
    assert np.array_equal(got.numpy(), expected.astype(np.float32))
    # And the float bias would not be (the rounding is visible).
    _, bias = _fq_weight(module)
    assert not np.array_equal(bias.numpy(), expected.astype(np.float32))
    # The builder's int32 bias against the reference, from the quantizers' ranges.
    in_lo, in_hi = (float(t) for t in module.input_quantizer.quantizer.quant_range())
    w_lo, w_hi = (t.numpy() for t in module.weight_quant.quant_range())
    assert float(reference.grid_scale(in_lo, in_hi, 8, False)) == s_in  # the linked one
    q, _ = reference.int32_bias(bias.numpy(), (in_lo, in_hi), w_lo, w_hi)
    assert np.array_equal(bias_q, np.array(q, dtype=np.int32))


def test_file_is_smaller_than_the_float_state_dict(exported, tmp_path):
    qat, _, _, _ = exported
    path = tmp_path / "net.eq8"
    edgeqat.export(qat, path, example_inputs=torch.randn(1, 3, 10, 10), load=False)
    assert (
        path.stat().st_size
        < sum(t.numel() * t.element_size() for t in Net().state_dict().values()) + 16_384
    )  # a tiny model: mostly header; the size target is checked on real models


# --------------------------------------------------------------------------------------------
# The int8 model against the simulation


def _lsb_error(out: torch.Tensor, ref: torch.Tensor, scale: float) -> torch.Tensor:
    return ((out - ref).abs() / scale).round()


def test_int8_model_matches_simulation(exported):
    qat, model, _, _ = exported
    torch.manual_seed(1)
    x = torch.randn(64, 3, 10, 10)
    with torch.no_grad():
        ref = qat(x)
    out = model(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    lsb = _lsb_error(out, ref, model.outputs[0]["scale"])
    assert float((lsb <= 1).float().mean()) >= 0.99, float(lsb.max())
    assert float(lsb.max()) <= 3
    assert float((out.argmax(1) == ref.argmax(1)).float().mean()) >= 0.9


def test_int8_in_int8_out_and_batches(exported):
    _, model, _, _ = exported
    x = torch.randn(7, 3, 10, 10)
    q = model.quantize(x)
    assert q.dtype == torch.int8
    (out_q,) = model.run_int8(q)
    assert out_q.dtype == torch.int8 and out_q.shape == (7, 5)
    # float in == quantize, int8 run, dequantize
    assert torch.equal(model(x), model.dequantize(out_q, "fc"))
    assert torch.equal(model(q), out_q)
    # Any batch size gives each sample the same result as alone.
    for n in (1, 3):
        assert torch.equal(model(x[:n]), model(x)[:n])
    # Reference kernels and 2 threads: bit-identical.
    ref = edgeqat.Int8Model.load(model.path, kernels="reference")
    assert torch.equal(ref(x), model(x))
    two = edgeqat.Int8Model.load(model.path, num_threads=2)
    assert torch.equal(two(x), model(x))


def test_float_input_is_clamped_to_a_narrow_input_grid(tmp_path):
    # 6-bit activations: the input grid is [-128, -65]; float input beyond the range must land
    # on the grid's ends, as the input's fake quant clamps, in run_float as in quantize().
    config = edgeqat.QConfig(activation=edgeqat.QConfig().activation.replace(num_bits=6))
    qat = trained_model(steps=2, config=config)
    model = edgeqat.export(qat, tmp_path / "six.eq8", example_inputs=torch.randn(1, 3, 10, 10))
    assert (model.inputs[0]["qmin"], model.inputs[0]["qmax"]) == (-128, -65)
    x = 50 * torch.randn(8, 3, 10, 10)
    q = model.quantize(x)
    assert int(q.min()) == -128 and int(q.max()) == -65
    (out_q,) = model.run_int8(q)
    assert torch.equal(model(x), model.dequantize(out_q, "fc"))


def test_captures(exported):
    qat, model, header, _ = exported
    x = torch.randn(4, 3, 10, 10)
    outs = model.run_int8(model.quantize(x), capture=["conv", "pool"])
    assert [tuple(t.shape) for t in outs] == [(4, 5), (4, 8, 10, 10), (4, 8, 3, 3)]


def test_int8_model_errors(exported, tmp_path):
    _, model, _, _ = exported
    with pytest.raises(ValueError, match=r"shape \[N, 3, 10, 10\]"):
        model(torch.randn(2, 3, 9, 10))
    with pytest.raises(ValueError, match="1 input"):
        model._native.run_float([np.zeros((1, 3, 10, 10), np.float32)] * 2)
    with pytest.raises(ValueError, match="num_threads"):
        edgeqat.Int8Model.load(model.path, num_threads=0)
    # A truncated or corrupted file is an error naming it, never a crash.
    data = open(model.path, "rb").read()
    bad = tmp_path / "bad.eq8"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="bad.eq8"):
        edgeqat.Int8Model.load(bad)
    corrupted = bytearray(data)
    corrupted[len(data) - 10] ^= 0xFF
    bad.write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="CRC"):
        edgeqat.Int8Model.load(bad)
    with pytest.raises(ValueError, match="missing.eq8"):
        edgeqat.Int8Model.load(tmp_path / "missing.eq8")


# --------------------------------------------------------------------------------------------
# Export errors


def test_export_errors(tmp_path):
    x = torch.randn(2, 3, 10, 10)
    with pytest.raises(TypeError, match="GraphModule"):
        edgeqat.export(Net(), tmp_path / "a.eq8", example_inputs=x)

    class Sig(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sigmoid(self.conv(x))

    qat = edgeqat.prepare_qat(Sig(), example_inputs=x, unsupported="float")
    qat(x)
    with pytest.raises(edgeqat.ExportError, match="sigmoid"):
        edgeqat.export(qat, tmp_path / "b.eq8", example_inputs=x)
    assert not (tmp_path / "b.eq8").exists()

    fresh = edgeqat.prepare_qat(Net(), example_inputs=x)  # never ran: no ranges
    with pytest.raises(edgeqat.ExportError, match="no range"):
        edgeqat.export(fresh, tmp_path / "c.eq8", example_inputs=x)

    class Pad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.AvgPool2d(3, stride=1, padding=1)  # count_include_pad=True

        def forward(self, x):
            return self.pool(self.conv(x))

    qat = edgeqat.prepare_qat(Pad(), example_inputs=x)
    qat(x)
    with pytest.raises(edgeqat.ExportError, match="count_include_pad"):
        edgeqat.export(qat, tmp_path / "d.eq8", example_inputs=x)


def test_export_checks_the_bias_link(tmp_path):
    """A layer whose bias is simulated with another scale than its input's is refused (its
    training saw another bias than the int8 model's); without bias simulation it exports."""
    x = torch.randn(1, 3, 10, 10)
    qat = trained_model(steps=2)
    qat.get_submodule("dw").set_input_quantizer(qat.get_submodule("fc_out_quant"))
    with pytest.raises(edgeqat.ExportError, match="module 'dw'.*linked input quantizer"):
        edgeqat.export(qat, tmp_path / "a.eq8", example_inputs=x)
    qat.get_submodule("dw").set_input_quantizer(None)  # unlinked: float bias, nothing to check
    edgeqat.export(qat, tmp_path / "b.eq8", example_inputs=x, load=False)
    off = trained_model(steps=2, config=edgeqat.QConfig(quantize_bias=False))
    off.get_submodule("dw").set_input_quantizer(off.get_submodule("fc_out_quant"))
    edgeqat.export(off, tmp_path / "c.eq8", example_inputs=x, load=False)


def test_export_keeps_an_existing_file_on_error(tmp_path):
    qat = trained_model(steps=2)
    path = tmp_path / "net.eq8"
    edgeqat.export(qat, path, example_inputs=torch.randn(1, 3, 10, 10), load=False)
    before = path.read_bytes()
    qat.get_submodule("fc_out_quant").quantizer.disable()
    with pytest.raises(edgeqat.ExportError, match="turned off"):
        edgeqat.export(qat, path, example_inputs=torch.randn(1, 3, 10, 10))
    assert path.read_bytes() == before
