"""prepare_qat / prepare_ptq / calibrate on whole, unmodified float models.

- Unmodified torchvision models (mobilenet_v2, resnet18, resnet50) and edgeqat's MobileNet v1:
  prepared, with quantizers off they compute the float model; forward, backward and one
  optimizer step change the weights and the learned ranges.
- Graph structure: what is fused, where quantizers go and where they do not.
- Numerics: a prepared conv-bn-relu / residual / linear model against a reference written here
  from torch.ops.edgeqat.* and plain torch, bit for bit (train, learned ranges, eval).
- Unsupported ops: the error names each op, its module path and source line; or they stay in
  float with a quantizer after them.
- state_dict round trip mid-training; prepare_ptq + calibrate; torch.compile.
"""

from __future__ import annotations

import copy
import inspect
import io
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import int8_bias
from torch import nn

import edgeqat
from edgeqat import (
    ActQuant,
    ConvBn2d,
    FakeQuantizer,
    Mode,
    QConfig,
    QuantAdd,
    QuantConv2d,
    QuantLinear,
    QuantSpec,
    UnsupportedOpError,
)
from edgeqat._torchvision import import_torchvision
from edgeqat.models import mobilenet_v1
from edgeqat.nn import SharedActQuant

ops = torch.ops.edgeqat


@pytest.fixture(scope="module")
def tv():
    return import_torchvision()


# --------------------------------------------------------------------------------------------
# Helpers


def fake_quantizers(model: nn.Module) -> list[tuple[str, FakeQuantizer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantizer)]


def set_all_quantizers(model: nn.Module, mode: Mode) -> None:
    for _, q in fake_quantizers(model):
        q.set_mode(mode)


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Trained-looking batch norms: gamma, beta and running statistics away from 1 / 0, so a
    fold that ignores one of them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.num_batches_tracked.fill_(10)
    return model


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_activation(gm, node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, (nn.ReLU, nn.ReLU6))
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu, F.relu6)
    return node.op == "call_method" and node.target == "relu"


def _is_pass_through(gm, node) -> bool:
    """Ops that keep their input's grid: max pooling, flatten / view, dropout, unfused ReLU."""
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU))
    if node.op == "call_function":
        return node.target in (torch.flatten, F.max_pool2d, F.dropout, F.relu, torch.relu)
    return node.op == "call_method" and node.target in ("view", "reshape", "flatten", "relu")


def _is_max_pool_or_flatten(gm, node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, (nn.MaxPool2d, nn.Flatten))
    if node.op == "call_function":
        return node.target in (torch.flatten, F.max_pool2d)
    return node.op == "call_method" and node.target in ("view", "reshape", "flatten")


def _is_average_pool(gm, node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))
    if node.op == "call_function" and node.target in (F.avg_pool2d, F.adaptive_avg_pool2d):
        return True
    return node.op == "call_method" and node.target == "mean" and node.args[1:] in [((2, 3),)]


def grid_quantizer(gm, node) -> ActQuant | None:
    """The ActQuant whose grid the tensor of ``node`` lies on (through pass-through ops)."""
    m = _module(gm, node)
    if isinstance(m, ActQuant):
        return m
    if isinstance(m, QuantAdd):
        return m.out_quant
    if isinstance(m, SharedActQuant):
        return m.source
    if _is_pass_through(gm, node):
        return grid_quantizer(gm, node.args[0])
    return None


def _users_are_one_act_quant(gm, node) -> ActQuant | None:
    users = list(node.users)
    if len(users) == 1 and isinstance(_module(gm, users[0]), ActQuant):
        return _module(gm, users[0])
    return None


def assert_quantizers_placed(gm: torch.fx.GraphModule) -> dict[str, int]:
    """The placement rules, checked on any prepared model; returns counts for the callers.

    - every floating model input goes straight into an ActQuant;
    - every conv / linear output (after its ReLU / ReLU6 when one follows it) goes into an
      ActQuant, and every add is a QuantAdd with its own output quantizer;
    - no quantizer after max pooling / flatten, nor a second one on a tensor already quantized;
    - average pooling is followed by a SharedActQuant whose source is the quantizer of its
      input;
    - every conv / linear layer is linked to the quantizer whose grid its input lies on (its
      int32 bias's input scale);
    - no float Conv2d / Linear / BatchNorm2d remains.
    """
    counts = {"input": 0, "weighted": 0, "add": 0, "avgpool": 0, "act_quant_nodes": 0}
    act_quant_modules = []
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d):
            raise AssertionError(f"float {type(m).__name__} left at {node.target}")
        if node.op == "placeholder":
            assert _users_are_one_act_quant(gm, node) is not None, f"input {node.name}"
            counts["input"] += 1
        elif isinstance(m, (ConvBn2d, QuantConv2d, QuantLinear)):
            out = node
            users = list(node.users)
            if len(users) == 1 and _is_activation(gm, users[0]):
                out = users[0]
            assert _users_are_one_act_quant(gm, out) is not None, f"{node.target}: {out.users}"
            link = grid_quantizer(gm, node.args[0])
            assert link is not None and m.input_quantizer is link, node.target
            counts["weighted"] += 1
        elif isinstance(m, QuantAdd):
            assert not any(isinstance(_module(gm, u), ActQuant) for u in node.users), node.target
            counts["add"] += 1
        elif isinstance(m, ActQuant):
            act_quant_modules.append(m)
            source = node.args[0]
            assert grid_quantizer(gm, source) is None, f"{node.target} quantizes twice"
            counts["act_quant_nodes"] += 1
        elif _is_max_pool_or_flatten(gm, node):
            for user in node.users:
                assert not isinstance(_module(gm, user), (ActQuant, SharedActQuant)), node.name
        if _is_average_pool(gm, node):
            users = list(node.users)
            assert len(users) == 1, node.name
            shared = _module(gm, users[0])
            assert isinstance(shared, SharedActQuant), f"{node.name} -> {users[0].name}"
            source = grid_quantizer(gm, node.args[0])
            assert source is not None and shared.source is source, node.name
            counts["avgpool"] += 1
    # Every ActQuant quantizes one tensor.
    assert len({id(m) for m in act_quant_modules}) == len(act_quant_modules)
    return counts


def output_activation(gm: torch.fx.GraphModule, path: str) -> str | None:
    """The ReLU / ReLU6 of the layer at ``path``: prepare_qat moves it from the layer (a fused
    ConvBn2d, or an activation node after it) into the layer's output ActQuant, which fuses
    it into its fake quant."""
    layer = gm.get_submodule(path)
    if isinstance(layer, ConvBn2d):
        assert layer.activation is None, path
    return gm.get_submodule(f"{path}_out_quant").activation


def conv_bn_activations(gm: torch.fx.GraphModule) -> list[str | None]:
    return [
        output_activation(gm, node.target)
        for node in gm.graph.nodes
        if isinstance(_module(gm, node), ConvBn2d)
    ]


# --------------------------------------------------------------------------------------------
# Models written here


class Tiny(nn.Module):
    """Every kind of op prepare handles: conv-bn-relu, depthwise conv-bn-relu6, conv-bn, add +
    relu, max pooling, conv + functional relu (no BN), add, concat, average pooling, flatten,
    linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        )
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dw_bn = nn.BatchNorm2d(8)
        self.dw_act = nn.ReLU6(inplace=True)
        self.proj = nn.Conv2d(8, 8, 1, bias=False)
        self.proj_bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.side = nn.Conv2d(8, 8, 3, padding=1)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.proj_bn(self.proj(self.dw_act(self.dw_bn(self.dw(x)))))
        x = F.relu(x + y)
        x = self.pool(x)
        s = F.relu(self.side(x))
        z = torch.cat([x + s, s], 1)
        return self.fc(torch.flatten(self.avg(z), 1))


class Small(nn.Module):
    """conv-bn-relu, conv (bias, no BN), add + relu, global average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(z), 1))


# --------------------------------------------------------------------------------------------
# The published models: forward, backward, one step


def _model(tv, name: str) -> nn.Module:
    if name == "mobilenet_v1":
        return mobilenet_v1(num_classes=10)
    return getattr(tv.models, name)(num_classes=10)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "resnet50", "mobilenet_v1"])
def test_prepare_qat_published_models_train(tv, name):
    torch.manual_seed(0)
    model = randomize_bn(_model(tv, name), seed=1)
    x = torch.randn(1, 3, 64, 64)
    qat = edgeqat.prepare_qat(model, example_inputs=x)
    quantizers = fake_quantizers(qat)
    assert quantizers and all(q.mode is Mode.OBSERVE for _, q in quantizers)
    counts = assert_quantizers_placed(qat)
    assert counts["input"] == 1 and counts["avgpool"] == 1

    # With every quantizer off, the prepared model is the float model (eval: BN folded into
    # the conv, so equal up to the fold's float rounding, ~1e-6 relative here).
    model.eval()
    qat.eval()
    set_all_quantizers(qat, Mode.OFF)
    with torch.no_grad():
        expected, got = model(x), qat(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    set_all_quantizers(qat, Mode.OBSERVE)

    # Observe one sample, make the ranges learnable, then train one step on three other
    # samples: the step's batch exceeds most observed ranges, so most ranges get a gradient
    # (a range moves only when values fall outside it: TF's FakeQuant gradient).
    qat.train()
    with torch.no_grad():
        qat(x)
    assert all(q.has_range for _, q in quantizers)
    edgeqat.learn_ranges(qat)
    assert all(q.mode is Mode.LEARN for _, q in quantizers)
    before = {n: p.detach().clone() for n, p in qat.named_parameters()}
    optimizer = torch.optim.SGD(qat.parameters(), lr=0.01)
    out = qat(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    loss = F.cross_entropy(out, torch.tensor([1, 4, 7]))
    loss.backward()
    for n, p in qat.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), n
    optimizer.step()

    changed = {n: not torch.equal(before[n], p) for n, p in qat.named_parameters()}
    weights = [
        f"{n}.weight"
        for n, m in qat.named_modules()
        if isinstance(m, (ConvBn2d, QuantConv2d, QuantLinear))
    ]
    assert weights and all(changed[w] for w in weights)
    moved = [n for n, _ in quantizers if changed[f"{n}.learned_min"] or changed[f"{n}.learned_max"]]
    # A clear majority: 83% to 96% move in this set-up (seeds 0 and 1).
    assert len(moved) >= 0.75 * len(quantizers), (len(moved), len(quantizers))
    assert any(not n.endswith("weight_quant") for n in moved)
    assert any(n.endswith("weight_quant") for n in moved)
    # The float model is untouched by all this.
    assert not any(isinstance(m, FakeQuantizer) for m in model.modules())


# --------------------------------------------------------------------------------------------
# Graph structure


def test_structure_hand_written_model():
    torch.manual_seed(0)
    model = randomize_bn(Tiny(), seed=2)
    original = state_snapshot(model)
    x = torch.randn(2, 3, 8, 8)
    qat = edgeqat.prepare_qat(model, example_inputs=x)

    counts = assert_quantizers_placed(qat)
    assert counts == {"input": 1, "weighted": 5, "add": 2, "avgpool": 1, "act_quant_nodes": 7}

    stem, dw, proj = qat.get_submodule("stem.0"), qat.dw, qat.proj
    assert (type(stem), output_activation(qat, "stem.0")) == (ConvBn2d, "relu")
    assert (type(dw), output_activation(qat, "dw"), dw.groups) == (ConvBn2d, "relu6", 8)
    assert (type(proj), output_activation(qat, "proj")) == (ConvBn2d, None)
    assert type(qat.side) is QuantConv2d and type(qat.fc) is QuantLinear
    adds = [m for m in qat.modules() if isinstance(m, QuantAdd)]
    assert sorted(str(a.activation) for a in adds) == ["None", "relu"]
    assert all(a.out_quant.activation == a.activation for a in adds)
    # The fused BN's parameters and statistics are the model's.
    assert torch.equal(stem.weight, model.stem[0].weight)
    assert torch.equal(stem.bn.running_var, model.stem[1].running_var)
    assert torch.equal(dw.bn.weight, model.dw_bn.weight)

    nodes = {n.name: n for n in qat.graph.nodes}
    # The functional ReLU after the BN-less conv moves into the conv's output quantizer.
    (side_quant,) = nodes["side"].users
    assert isinstance(_module(qat, side_quant), ActQuant)
    assert output_activation(qat, "side") == "relu"
    # The concat gets its own quantizer; the average pool rounds to that grid.
    cat_quant = _users_are_one_act_quant(qat, nodes["cat"])
    assert cat_quant is not None
    shared = [m for m in qat.modules() if isinstance(m, SharedActQuant)]
    assert len(shared) == 1 and shared[0].source is cat_quant

    # A deep copy keeps the shared quantizer pointing into the copy.
    clone = copy.deepcopy(qat)
    clone_cat_quant = _users_are_one_act_quant(clone, {n.name: n for n in clone.graph.nodes}["cat"])
    clone_shared = [m for m in clone.modules() if isinstance(m, SharedActQuant)]
    assert clone_shared[0].source is clone_cat_quant and clone_cat_quant is not cat_quant

    # The original is not modified and shares nothing with the prepared model.
    qat.train()
    qat(x).sum().backward()
    assert_same_state(original, model.state_dict())
    assert not {id(m) for m in model.modules()} & {id(m) for m in qat.modules()}
    assert not {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in qat.parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert type(model.stem[0]) is nn.Conv2d and type(model.fc) is nn.Linear


def test_structure_resnet18(tv):
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10)
    original = state_snapshot(model)
    qat = edgeqat.prepare_qat(model, example_inputs=torch.randn(2, 3, 64, 64))
    assert_same_state(original, model.state_dict())
    assert not {id(m) for m in model.modules()} & {id(m) for m in qat.modules()}

    counts = assert_quantizers_placed(qat)
    # 20 conv-bn pairs + fc; 8 residual adds; input; one global average pool.
    assert counts["weighted"] == 21 and counts["add"] == 8
    assert counts["input"] == 1 and counts["avgpool"] == 1
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(conv_bn_activations(qat)) == n_bn == 20
    # Same paths as the model: the stem and every block's first conv end in a ReLU, the second
    # conv and the downsample do not (the ReLU comes after the add).
    assert output_activation(qat, "conv1") == "relu"
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i in ("0", "1"):
            block = qat.get_submodule(f"{layer}.{i}")
            assert output_activation(qat, f"{layer}.{i}.conv1") == "relu"
            assert output_activation(qat, f"{layer}.{i}.conv2") is None
            assert isinstance(block.add, QuantAdd) and block.add.activation == "relu"
            assert block.add.out_quant.activation == "relu"
    for layer in ("layer2", "layer3", "layer4"):
        assert output_activation(qat, f"{layer}.0.downsample.0") is None
    assert type(qat.fc) is QuantLinear
    # max pool: no quantizer after it, its output is on the stem's grid (which the first
    # residual add reads).
    nodes = {n.name: n for n in qat.graph.nodes}
    assert grid_quantizer(qat, nodes["maxpool"]) is _users_are_one_act_quant(qat, nodes["conv1"])
    shared = [m for m in qat.modules() if isinstance(m, SharedActQuant)]
    assert len(shared) == 1 and shared[0].source is qat.get_submodule("layer4.1.add.out_quant")


def test_structure_mobilenet_v2(tv):
    torch.manual_seed(0)
    model = tv.models.mobilenet_v2(num_classes=10)
    qat = edgeqat.prepare_qat(model, example_inputs=torch.randn(2, 3, 64, 64))
    counts = assert_quantizers_placed(qat)

    relu6 = sum(
        isinstance(m, nn.Sequential) and isinstance(m[-1], nn.ReLU6) for m in model.modules()
    )
    residual = sum(getattr(m, "use_res_connect", False) for m in model.modules())
    activations = conv_bn_activations(qat)
    assert activations.count("relu6") == relu6 == 35
    # The projection conv of each of the 17 inverted residual blocks has no activation.
    assert activations.count(None) == 17 and len(activations) == 52
    adds = [m for m in qat.modules() if isinstance(m, QuantAdd)]
    assert len(adds) == counts["add"] == residual == 10
    assert all(a.activation is None for a in adds)
    # F.adaptive_avg_pool2d in the model's forward: shared with the last conv's quantizer.
    shared = [m for m in qat.modules() if isinstance(m, SharedActQuant)]
    assert len(shared) == 1 and counts["avgpool"] == 1
    assert shared[0].source is qat.get_submodule("features.18.0_out_quant")


def test_prepare_keeps_train_and_eval_mode():
    model = Tiny()
    qat = edgeqat.prepare_qat(model, example_inputs=torch.randn(2, 3, 8, 8))
    assert qat.training and all(m.training for m in qat.modules())
    ptq = edgeqat.prepare_ptq(model, example_inputs=torch.randn(2, 3, 8, 8))
    assert not any(m.training for m in ptq.modules())
    assert model.training  # prepare ran the example in eval mode, then put the flags back


def test_prepare_qat_of_eval_model_is_in_eval_mode():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    qat = edgeqat.prepare_qat(model, example_inputs=x)
    inserted = [m for m in qat.modules() if isinstance(m, (ActQuant, QuantAdd, FakeQuantizer))]
    assert [m for m in inserted if m.training] == []


# --------------------------------------------------------------------------------------------
# Numerics against a reference made of the edgeqat ops and plain torch


class Reference:
    """The prepared ``Small`` written out by hand: its parameters as leaf tensors, its
    observer state, and the ops the int8 graph simulates, in the order ConvBn2d documents
    (training: quantize W' = W * gamma / sqrt(var + eps), conv with fq(W') / f, batch norm
    with batch statistics; BN frozen or eval: conv with fq(W') and the folded bias). Every
    bias added to a conv / linear output is the int8 model's int32 bias (helpers.int8_bias,
    with the ranges of the layer's input and weight quantizers as used in that forward)."""

    ACT = ("input", "conv1", "conv2", "add", "fc")
    WEIGHT = ("conv1_w", "conv2_w", "fc_w")

    def __init__(self, model: Small) -> None:
        def leaf(t):
            return t.detach().clone().requires_grad_(True)

        self.w1 = leaf(model.conv1.weight)
        self.gamma, self.beta = leaf(model.bn1.weight), leaf(model.bn1.bias)
        self.mean = model.bn1.running_mean.clone()
        self.var = model.bn1.running_var.clone()
        self.eps, self.momentum = model.bn1.eps, model.bn1.momentum
        self.w2, self.b2 = leaf(model.conv2.weight), leaf(model.conv2.bias)
        self.wfc, self.bfc = leaf(model.fc.weight), leaf(model.fc.bias)
        channels = {"conv1_w": 8, "conv2_w": 8, "fc_w": 5}
        self.observed = {k: [torch.tensor(math.inf), torch.tensor(-math.inf)] for k in self.ACT}
        for k, c in channels.items():
            self.observed[k] = [torch.full((c,), math.inf), torch.full((c,), -math.inf)]
        self.learned: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.bn_frozen = False

    def params(self) -> dict[str, torch.Tensor]:
        p = {
            "conv1.weight": self.w1,
            "conv1.bn.weight": self.gamma,
            "conv1.bn.bias": self.beta,
            "conv2.weight": self.w2,
            "conv2.bias": self.b2,
            "fc.weight": self.wfc,
            "fc.bias": self.bfc,
        }
        if self.learned is not None:
            paths = {
                "input": "input_quant.quantizer",
                "conv1": "conv1_out_quant.quantizer",
                "conv2": "conv2_out_quant.quantizer",
                "add": "add.out_quant.quantizer",
                "fc": "fc_out_quant.quantizer",
                "conv1_w": "conv1.weight_quant",
                "conv2_w": "conv2.weight_quant",
                "fc_w": "fc.weight_quant",
            }
            for k, (lo, hi) in self.learned.items():
                p[f"{paths[k]}.learned_max"] = hi
                if k not in self.WEIGHT:  # symmetric: [-|max|, |max|], min takes no part
                    p[f"{paths[k]}.learned_min"] = lo
        return p

    def learn(self) -> None:
        """learn_ranges: the learned range starts at the observed one (widened to contain 0,
        symmetric for weights)."""
        self.learned = {}
        for k in self.ACT + self.WEIGHT:
            lo, hi = self._observed_range(k)
            self.learned[k] = (lo.clone().requires_grad_(True), hi.clone().requires_grad_(True))

    def _observed_range(self, key):
        lo = self.observed[key][0].clamp(max=0.0)
        hi = self.observed[key][1].clamp(min=0.0)
        if key in self.WEIGHT:
            bound = torch.maximum(-lo, hi)
            return -bound, bound
        return lo, hi

    def _range(self, key):
        if self.learned is None:
            return self._observed_range(key)
        lo, hi = self.learned[key]
        if key in self.WEIGHT:
            return -hi.abs(), hi.abs()
        return lo, torch.maximum(hi, lo)

    def act(self, x, key, training, relu=False):
        # relu: the ReLU before the quantizer, which the ActQuant fuses into the fake quant
        # while observing: it observes relu(x) and fake-quantizes x (the range's lower end is
        # then 0), so the gradient passes at x == 0. Learning ranges: relu, then fake quant.
        if relu and self.learned is not None:
            x, relu = torch.relu(x), False
        if training and self.learned is None:  # EMA, decay 0.999; the first batch sets it
            seen = torch.relu(x.detach()) if relu else x.detach()
            ops.observe_min_max_(*self.observed[key], seen, None, 1.0 - 0.999, False)
        lo, hi = self._range(key)
        return ops.fake_quant_with_min_max_vars(x, lo, hi, 8, False)

    def weight(self, w, key, training):
        if training and self.learned is None:  # the range of the current weight ("last")
            ops.observe_min_max_(*self.observed[key], w.detach(), 0, 1.0, False)
        lo, hi = self._range(key)
        return ops.fake_quant_with_min_max_vars_per_channel(w, lo, hi, 0, 8, True)

    def forward(self, x, training: bool):
        x = self.act(x, "input", training)
        factor = self.gamma / torch.sqrt(self.var + self.eps)
        w1 = self.weight(self.w1 * factor.reshape(-1, 1, 1, 1), "conv1_w", training)
        if training and not self.bn_frozen:
            # Un-folded on the weight: the quantized folded weight divided by the factor.
            y = F.conv2d(x, w1 / factor.reshape(-1, 1, 1, 1), None, 1, 1)
            y = F.batch_norm(
                y, self.mean, self.var, self.gamma, self.beta, True, self.momentum, self.eps
            )
        else:
            bias = (torch.zeros_like(self.mean) - self.mean) * factor + self.beta
            y = F.conv2d(x, w1, self.bias(bias, "input", "conv1_w"), 1, 1)
        y = self.act(y, "conv1", training, relu=True)
        w2 = self.weight(self.w2, "conv2_w", training)
        z = self.act(
            F.conv2d(y, w2, self.bias(self.b2, "conv1", "conv2_w"), 1, 1), "conv2", training
        )
        z = self.act(z + y, "add", training, relu=True)
        lo, hi = self._range("add")  # average pooling: the add's grid, no observer
        p = ops.fake_quant_with_min_max_vars(F.adaptive_avg_pool2d(z, 1), lo, hi, 8, False)
        wfc = self.weight(self.wfc, "fc_w", training)
        out = F.linear(torch.flatten(p, 1), wfc, self.bias(self.bfc, "add", "fc_w"))
        return self.act(out, "fc", training)

    def bias(self, b, input_key, weight_key):
        """The int32 bias at the scale of the input's range times the weight's (the fc's input
        is the average pool's, on the add's grid)."""
        return int8_bias(b, self._range(input_key), self._range(weight_key))


def _assert_grads_equal(qat: nn.Module, ref: Reference) -> None:
    grads = {n: p.grad for n, p in qat.named_parameters()}
    for name, p in ref.params().items():
        assert grads[name] is not None, name
        if name.endswith(".bn.weight"):
            # gamma: the fold factor's part is a per-channel sum that ConvBn2d's fused weight op
            # adds in another order than autograd (test_modules.assert_fold_grad_close).
            torch.testing.assert_close(
                grads[name], p.grad, rtol=1e-5, atol=1e-5 * float(p.grad.abs().max()), msg=name
            )
            continue
        assert torch.equal(grads[name], p.grad), name
    # Parameters outside the reference (learned ranges before learn_ranges) get no gradient.
    for name, g in grads.items():
        if name not in ref.params():
            assert g is None or not g.any(), name


def test_numerics_match_reference():
    torch.manual_seed(0)
    model = randomize_bn(Small(), seed=3)
    batches = [torch.randn(4, 3, 6, 6) * s for s in (1.0, 1.7, 0.6, 1.3)]
    qat = edgeqat.prepare_qat(model, example_inputs=batches[0])
    ref = Reference(model)
    grad = torch.randn(4, 5)

    # First training step: every quantizer observes its first batch; BN uses batch statistics.
    out = qat(batches[0])
    expected = ref.forward(batches[0], training=True)
    assert torch.equal(out, expected)
    out.backward(grad)
    expected.backward(grad)
    _assert_grads_equal(qat, ref)
    assert torch.equal(qat.conv1.bn.running_mean, ref.mean)
    assert torch.equal(qat.conv1.bn.running_var, ref.var)
    assert torch.equal(qat.input_quant.quantizer.observed_max, ref.observed["input"][1])
    assert torch.equal(qat.add.out_quant.quantizer.observed_min, ref.observed["add"][0])
    assert torch.equal(qat.fc.weight_quant.observed_max, ref.observed["fc_w"][1])

    # Second step: activation ranges move by EMA, the fold uses the updated running stats.
    with torch.no_grad():
        assert torch.equal(qat(batches[1]), ref.forward(batches[1], training=True))
    assert torch.equal(qat.conv2_out_quant.quantizer.observed_max, ref.observed["conv2"][1])

    # Learned ranges, BN frozen: the ranges are parameters trained by gradient (the average
    # pool's SharedActQuant quantizes with the add's learned range).
    edgeqat.learn_ranges(edgeqat.freeze_bn(qat))
    ref.learn()
    ref.bn_frozen = True
    with torch.no_grad():  # a narrower add range: values above it, so its max gets gradients
        qat.add.out_quant.quantizer.learned_max.mul_(0.5)
        ref.learned["add"][1].mul_(0.5)
    qat.zero_grad(set_to_none=True)
    for p in ref.params().values():
        p.grad = None
    out = qat(batches[2] * 3.0)  # beyond the observed ranges: the ranges get gradients
    expected = ref.forward(batches[2] * 3.0, training=True)
    assert torch.equal(out, expected)
    out.backward(grad)
    expected.backward(grad)
    _assert_grads_equal(qat, ref)
    assert qat.add.out_quant.quantizer.learned_max.grad != 0
    assert qat.input_quant.quantizer.learned_min.grad != 0

    # Eval mode: the folded conv with the running statistics.
    qat.eval()
    with torch.no_grad():
        assert torch.equal(qat(batches[3]), ref.forward(batches[3], training=False))


# --------------------------------------------------------------------------------------------
# Unsupported ops


def _line_of(obj, marker: str) -> int:
    lines, first = inspect.getsourcelines(obj)
    return first + next(i for i, line in enumerate(lines) if marker in line)


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))  # <gate>


class WithUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = Gate()
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.gate(self.conv(x))
        x = self.act(self.bn(x))  # <bn-act>
        x = F.hardswish(x)  # <hardswish>
        return self.fc(x.mean((2, 3)))


def test_unsupported_ops_error_names_each_op_and_line():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(UnsupportedOpError) as info:
        edgeqat.prepare_qat(WithUnsupported(), example_inputs=x)
    message = str(info.value)
    here = __file__
    gate_line = f"{here}:{_line_of(Gate.forward, '<gate>')}"
    bn_line = f"{here}:{_line_of(WithUnsupported.forward, '<bn-act>')}"
    hs_line = f"{here}:{_line_of(WithUnsupported.forward, '<hardswish>')}"
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 5, message
    expected = [
        ("sigmoid", "module 'gate'", gate_line),
        ("operator.mul", "module 'gate'", gate_line),
        ("module 'bn' (BatchNorm2d)", "", bn_line),
        ("module 'act' (Hardswish)", "", bn_line),
        ("hardswish", "the model", hs_line),
    ]
    for (what, where, line), problem in zip(expected, problems):
        assert what in problem and where in problem and line in problem, problem
    assert "unsupported='float'" in message
    # The mean over (2, 3) is global average pooling: supported, not listed.
    assert "mean" not in "\n".join(problems)


def test_unsupported_ops_stay_in_float_with_a_quantizer_after():
    torch.manual_seed(0)
    model = WithUnsupported()
    x = torch.randn(2, 3, 8, 8)
    qat = edgeqat.prepare_qat(model, example_inputs=x, unsupported="float")
    nodes = {n.name: n for n in qat.graph.nodes}
    float_ops = [n for n in nodes.values() if n.name in ("gate_sigmoid", "sigmoid", "mul")]
    float_ops += [n for n in nodes.values() if n.op == "call_module" and n.target in ("bn", "act")]
    float_ops += [n for n in nodes.values() if n.name == "hardswish"]
    assert len(float_ops) == 5, list(nodes)
    for node in float_ops:
        assert _users_are_one_act_quant(qat, node) is not None, node.name
    assert type(qat.bn) is nn.BatchNorm2d and type(qat.act) is nn.Hardswish
    assert_quantizers_placed_loose(qat)

    # With quantizers off it is the float model.
    qat.eval()
    model.eval()
    set_all_quantizers(qat, Mode.OFF)
    with torch.no_grad():
        torch.testing.assert_close(qat(x), model(x), rtol=1e-5, atol=1e-6)
    # It trains (the float batch norm too, with batch statistics).
    set_all_quantizers(qat, Mode.OBSERVE)
    qat.train()
    out = qat(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and qat.gate.conv.weight.grad is not None
    assert qat.bn.weight.grad is not None
    assert all(q.has_range for _, q in fake_quantizers(qat))


def assert_quantizers_placed_loose(gm) -> None:
    """The placement rules, except that float BatchNorm2d is allowed (unsupported='float')."""
    for node in gm.graph.nodes:
        m = _module(gm, node)
        assert type(m) not in (nn.Conv2d, nn.Linear), node.target
        if isinstance(m, (ConvBn2d, QuantConv2d, QuantLinear)) or node.op == "placeholder":
            assert _users_are_one_act_quant(gm, node) is not None, node.name


def test_prepare_argument_errors():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="unsupported must be"):
        edgeqat.prepare_qat(Tiny(), example_inputs=x, unsupported="skip")
    with pytest.raises(TypeError, match="example_inputs"):
        edgeqat.prepare_qat(Tiny(), example_inputs=None)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        edgeqat.prepare_qat(lambda t: t, example_inputs=x)
    with pytest.raises(TypeError, match="QConfig"):
        edgeqat.prepare_qat(Tiny(), config="int8", example_inputs=x)
    with pytest.raises(RuntimeError, match="example_inputs"):
        edgeqat.prepare_qat(Tiny(), example_inputs=torch.randn(2, 5, 8, 8))
    qat = edgeqat.prepare_qat(Tiny(), example_inputs=x)
    with pytest.raises(ValueError, match="already contains edgeqat module"):
        edgeqat.prepare_qat(qat, example_inputs=x)

    class Branchy(nn.Module):
        def forward(self, t):
            return t if t.sum() > 0 else -t

    with pytest.raises(RuntimeError, match="torch.fx"):
        edgeqat.prepare_qat(Branchy(), example_inputs=x)


class SharedConv(nn.Module):
    """One conv called twice: once followed by a batch norm, once not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(torch.relu(self.bn(self.conv(x))))


class Siamese(nn.Module):
    """One conv-bn-relu block applied to two inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.fc = nn.Linear(8, 2)

    def forward(self, a, b):
        return self.fc((self.block(a) + self.block(b)).mean((2, 3)))


@pytest.mark.parametrize("case", ["shared_conv", "siamese_float"])
def test_module_called_twice_keeps_the_float_function(case):
    torch.manual_seed(0)
    if case == "shared_conv":
        model, inputs, unsupported = SharedConv(), (torch.randn(2, 3, 8, 8),), "error"
    else:
        model = Siamese()
        inputs = (torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
        unsupported = "float"
    model = randomize_bn(model, seed=4).eval()
    try:
        qat = edgeqat.prepare_qat(model, example_inputs=inputs, unsupported=unsupported)
    except (UnsupportedOpError, ValueError):
        return  # refusing such a model is correct too
    qat.eval()
    # A layer called on two grids has no one input scale: not linked (its bias stays float).
    for node in qat.graph.nodes:
        m = _module(qat, node)
        if isinstance(m, (ConvBn2d, QuantConv2d, QuantLinear)):
            calls = [
                n for n in qat.graph.nodes if n.op == "call_module" and n.target == node.target
            ]
            grids = {id(grid_quantizer(qat, n.args[0])) for n in calls}
            expected = grid_quantizer(qat, node.args[0]) if len(grids) == 1 else None
            assert m.input_quantizer is expected, node.target
    set_all_quantizers(qat, Mode.OFF)
    with torch.no_grad():
        torch.testing.assert_close(qat(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# state_dict mid-training


def _train(model, optimizer, batches):
    outs = []
    for x, y in batches:
        out = model(x)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(out, y).backward()
        optimizer.step()
        outs.append(out.detach())
    return outs


def _batches(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g))
        for _ in range(n)
    ]


@pytest.mark.parametrize("phase", ["observe", "frozen", "learn"])
def test_state_dict_round_trip_mid_training(phase):
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    qat = edgeqat.prepare_qat(Tiny(), example_inputs=x)
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    _train(qat, opt, _batches(1, 3))
    if phase in ("frozen", "learn"):
        edgeqat.freeze_observers(edgeqat.freeze_bn(qat))
        _train(qat, opt, _batches(2, 1))
    if phase == "learn":
        edgeqat.learn_ranges(qat)
        _train(qat, opt, _batches(3, 1))

    buffer = io.BytesIO()
    torch.save({"model": qat.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    torch.manual_seed(1)  # another float model: everything must come from the checkpoint
    resumed = edgeqat.prepare_qat(Tiny(), example_inputs=x)
    resumed_opt = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    assert not torch.equal(resumed.fc.weight, qat.fc.weight)
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])

    modes = {n: q.mode for n, q in fake_quantizers(qat)}
    assert {n: q.mode for n, q in fake_quantizers(resumed)} == modes
    expected_mode = {"observe": Mode.OBSERVE, "frozen": Mode.FROZEN, "learn": Mode.LEARN}[phase]
    assert set(modes.values()) == {expected_mode}
    assert [m.is_bn_frozen for m in resumed.modules() if isinstance(m, ConvBn2d)] == [
        phase != "observe"
    ] * 3

    more = _batches(4, 3)
    for a, b in zip(_train(qat, opt, more), _train(resumed, resumed_opt, more)):
        assert torch.equal(a, b)
    assert_same_state(state_snapshot(qat), state_snapshot(resumed))
    qat.eval()
    resumed.eval()
    with torch.no_grad():
        assert torch.equal(qat(x), resumed(x))


# --------------------------------------------------------------------------------------------
# Post-training: prepare_ptq + calibrate


def _bn_state(model):
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "running_" in k or "num_batches_tracked" in k
    }


def test_prepare_ptq_and_calibrate():
    torch.manual_seed(0)
    model = randomize_bn(Tiny(), seed=5).train()
    x = torch.randn(8, 3, 8, 8)
    ptq = edgeqat.prepare_ptq(model, example_inputs=x)
    assert not any(m.training for m in ptq.modules())
    assert all(m.is_bn_frozen for m in ptq.modules() if isinstance(m, ConvBn2d))
    act_specs = {m.quantizer.spec.range_source for m in ptq.modules() if isinstance(m, ActQuant)}
    assert act_specs == {"running"}  # all-time min / max of the calibration data
    assert ptq.get_submodule("stem.0").weight_quant.spec == QConfig().weight
    bn_before = _bn_state(ptq)
    assert bn_before

    batches = [torch.randn(8, 3, 8, 8) * s for s in (0.5, 1.0, 2.5, 1.5, 4.0)]
    taken = []

    def stream():
        for b in batches:
            taken.append(b)
            yield b

    assert edgeqat.calibrate(ptq, stream(), num_batches=3) is ptq
    assert len(taken) == 3  # stops after num_batches
    assert all(q.mode is Mode.FROZEN for _, q in fake_quantizers(ptq))
    assert not any(m.training for m in ptq.modules())
    assert_same_state(bn_before, _bn_state(ptq))  # eval mode: statistics unchanged
    # Running range: min / max over the three batches, exactly.
    q_in = ptq.input_quant.quantizer
    assert torch.equal(q_in.observed_min, torch.stack([b.min() for b in batches[:3]]).min())
    assert torch.equal(q_in.observed_max, torch.stack([b.max() for b in batches[:3]]).max())
    # Weight ranges: of the folded weights, per output channel.
    for m in ptq.modules():
        if isinstance(m, ConvBn2d):
            folded, _ = m.folded_weight_and_bias()
            assert torch.equal(m.weight_quant.observed_max, folded.amax(dim=(1, 2, 3)))
            assert torch.equal(m.weight_quant.observed_min, folded.amin(dim=(1, 2, 3)))

    # Frozen: more data changes nothing.
    ranges = state_snapshot(ptq)
    edgeqat.calibrate(ptq, [batches[4]])
    assert_same_state(ranges, state_snapshot(ptq))

    # The calibrated int8 simulation is close to the float model (8 bits; random weights).
    model.eval()
    with torch.no_grad():
        got, expected = ptq(batches[1]), model(batches[1])
    assert torch.isfinite(got).all()
    rel = (got - expected).norm() / expected.norm()
    assert rel < 0.05, rel
    assert not torch.equal(got, expected)  # and it is quantized


def test_calibrate_batch_forms_modes_and_qat_models():
    torch.manual_seed(0)
    model = randomize_bn(Tiny(), seed=6)
    x = torch.randn(4, 3, 8, 8)
    # On a QAT model in training mode: observes in eval mode, puts the flags back.
    qat = edgeqat.prepare_qat(model, example_inputs=x)
    flags = {n: m.training for n, m in qat.named_modules()}
    bn_before = _bn_state(qat)
    edgeqat.calibrate(qat, [(x, torch.zeros(4)), {"x": 2 * x}], freeze=False)
    assert {n: m.training for n, m in qat.named_modules()} == flags
    assert_same_state(bn_before, _bn_state(qat))
    assert all(q.mode is Mode.OBSERVE and q.has_range for _, q in fake_quantizers(qat))
    # The tuple's first item and the dict's keyword input were the inputs (EMA: the first
    # batch sets the range, the second moves it by 0.001 of the difference).
    q_in = qat.input_quant.quantizer
    expected = x.max() + 0.001 * (2 * x.max() - x.max())
    torch.testing.assert_close(q_in.observed_max, expected, rtol=1e-6, atol=0)
    assert q_in.observed_max > x.max()


def test_calibrate_errors_leave_the_model_as_it_was():
    ptq = edgeqat.prepare_ptq(Tiny(), example_inputs=torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="no batch"):
        edgeqat.calibrate(ptq, [])
    with pytest.raises(ValueError, match="no batch"):
        edgeqat.calibrate(ptq, iter(()))
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_batches"):
            edgeqat.calibrate(ptq, [torch.randn(2, 3, 8, 8)], num_batches=bad)
    assert not any(m.training for m in ptq.modules())
    assert all(q.mode is Mode.OBSERVE and not q.has_range for _, q in fake_quantizers(ptq))
    # Nothing observed: evaluating names the problem instead of quantizing with [0, 0].
    with pytest.raises(RuntimeError, match="no observed range"):
        ptq(torch.randn(2, 3, 8, 8))


def test_prepare_ptq_config_num_bits():
    with pytest.raises(ValueError, match="num_bits"):
        QuantSpec(num_bits=1)
    with pytest.raises(ValueError, match="num_bits"):
        QuantSpec(num_bits=17)
    torch.manual_seed(0)
    config = QConfig(activation=QuantSpec(num_bits=4, range_source="running"))
    ptq = edgeqat.prepare_ptq(Tiny(), config, example_inputs=torch.randn(2, 3, 8, 8))
    assert all(m.quantizer.spec.num_bits == 4 for m in ptq.modules() if isinstance(m, ActQuant))
    x = torch.randn(16, 3, 8, 8)
    edgeqat.calibrate(ptq, [x])
    # A 4-bit grid: at most 16 distinct values after the input quantizer.
    assert 8 < ptq.input_quant(x).unique().numel() <= 16


# --------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_resnet18_forward_matches_eager(tv, backend):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    qat = edgeqat.prepare_qat(tv.models.resnet18(num_classes=10), example_inputs=x)
    with torch.no_grad():
        qat(x)  # observe once: the eval forward quantizes with these ranges
    qat.eval()
    torch._dynamo.reset()
    compiled = torch.compile(qat, backend=backend)
    with torch.no_grad():
        expected = qat(x * 1.3)
        got = compiled(x * 1.3)
    if backend == "aot_eager":
        assert torch.equal(got, expected)
    else:
        # Inductor may reorder float reductions inside the conv / batch-norm kernels; a value
        # that lands on a rounding tie can then move by one step of a quantizer's grid. The
        # output is on fc_out_quant's grid: allow one step of it.
        lo, hi = qat.fc_out_quant.quantizer.quant_range()
        step = float(hi - lo) / 255
        assert (got - expected).abs().max() <= step * 1.001


def test_compiled_training_forward_matches_eager():
    """Compiled training-mode forwards observe like eager ones, and phase changes after the
    first compilation take effect (guards on the quantizer mode / BN state)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    eager = edgeqat.prepare_qat(randomize_bn(Tiny(), seed=7), example_inputs=x)
    model = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    for step in range(4):
        if step == 2:
            edgeqat.freeze_observers(edgeqat.freeze_bn(eager))
            edgeqat.freeze_observers(edgeqat.freeze_bn(model))
        batch = torch.randn(4, 3, 8, 8) * (1 + step)
        with torch.no_grad():
            assert torch.equal(compiled(batch), eager(batch)), step
        assert_same_state(state_snapshot(eager), state_snapshot(model))


@pytest.mark.xfail(
    strict=True,
    reason="torch 2.13 compile bug: ConvBn2d's training-mode backward (BN not frozen) differs "
    "from eager: BN updates running_var in place in the forward, and the compiled backward "
    "recomputes the fold factor gamma / sqrt(running_var + eps) from the updated buffer "
    "(exact with momentum=0 or BN frozen). docs/qat.md states the limitation.",
)
def test_compiled_training_step_gradients_match_eager():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    eager = edgeqat.prepare_qat(randomize_bn(Small(), seed=8), example_inputs=x)
    model = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    grad = torch.randn(4, 5)
    eager(x).backward(grad)
    compiled(x).backward(grad)
    for (name, p), (_, q) in zip(eager.named_parameters(), model.named_parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
