"""C++ (``edgeqat::nn``, LibTorch) vs Python (``edgeqat.nn``) QAT modules.

The same small QAT model is built on both sides: ``QatNet`` below and its C++ twin in
tests/cpp/nn_test_model.h (ActQuant at the input, ConvBn2d + ReLU, a depthwise QuantConv2d, a
residual block with ConvBn2d + ReLU6 / grouped ConvBn2d and a QuantAdd with fused ReLU, mean
pooling rounded to the add's grid by a SharedActQuant, QuantLinear). Python trains it a few SGD
steps, saves the state_dict and the momentum buffers mid-training (``torch.save``), and the C++
program ``edgeqat_nn_parity`` (built by tests/cpp/CMakeLists.txt) loads them by name and
continues: BN on batch statistics, then ``freeze_bn``, then ``learn_ranges``, then one eval-mode
forward. Python continues the same way.

Everything is compared bit for bit (``torch.equal``, no tolerance): both sides run the same ATen
ops and edgeqat kernels in the same order on the same thread count, and torch.optim.SGD
(single-tensor) and torch::optim::SGD make the same float operations. The C++ program also
writes its state mid-run; Python loads that into a fresh model and continues identically (the
state_dict round trip mid-training in both directions; the C++ torch::save round trip is a
Catch2 test).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.jit._pickle
import torch.nn.functional as F
from torch import nn

import edgeqat
from edgeqat import ActQuant, ConvBn2d, QuantAdd, QuantConv2d, QuantLinear
from edgeqat.nn import SharedActQuant

ROOT = Path(__file__).resolve().parents[2]

SEED = 0
CLASSES = 4
BATCH = 16
PRE_STEPS = 3  # Python only, before the state is handed over
STEPS = 12  # on both sides
FREEZE_BN_AT = 4
MID_AT = 6
LEARN_AT = 8
LR = 0.05
MOMENTUM = 0.9


def _parity_binary() -> Path:
    build = Path(os.environ.get("EDGEQAT_BUILD_DIR", "build/python"))
    if not build.is_absolute():
        build = ROOT / build
    binary = build / "tests" / "cpp" / "edgeqat_nn_parity"
    if not binary.is_file():
        pytest.skip(
            f"the C++ parity program is not built ({binary} does not exist): run `make build` "
            "(EDGEQAT_BUILD_DIR selects another build directory)"
        )
    return binary


class Residual(nn.Module):
    """The Python twin of ``edgeqat::nn::Residual`` with an identity shortcut:
    ``add(body(x), x)``, the activation fused into the QuantAdd."""

    def __init__(self, body: nn.Module, activation: str | None = None) -> None:
        super().__init__()
        self.body = body
        self.add = QuantAdd(activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.body(x), x)


class QatNet(nn.Module):
    """The twin of ``edgeqat_test::QatNet`` (tests/cpp/nn_test_model.h): same names, same
    construction order (so the same seed gives the same weights), same forward, the same
    input-quantizer links (the int32 bias simulated, as prepare_qat links)."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.input_quant = ActQuant()
        self.stem = ConvBn2d(3, 8, 3, padding=1, activation="relu")
        self.stem_quant = ActQuant()
        self.dw = QuantConv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.dw_quant = ActQuant()
        body = nn.Sequential(
            ConvBn2d(8, 16, 1, activation="relu6"),
            ActQuant(),
            ConvBn2d(16, 8, 3, padding=1, groups=8),
            ActQuant(),
        )
        self.block = Residual(body, "relu")
        self.pool_quant = SharedActQuant(self.block.add.out_quant)
        self.fc = QuantLinear(8, classes)
        self.logits_quant = ActQuant()
        # Each layer's input quantizer (the int32 bias); fc's is the pool's, so the add's.
        self.stem.set_input_quantizer(self.input_quant)
        self.dw.set_input_quantizer(self.stem_quant)
        body[0].set_input_quantizer(self.dw_quant)
        body[2].set_input_quantizer(body[1])
        self.fc.set_input_quantizer(self.pool_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem_quant(self.stem(self.input_quant(x)))
        y = self.dw_quant(self.dw(y))
        y = self.block(y)
        y = self.pool_quant(y.mean((2, 3)))
        return self.logits_quant(self.fc(y))


def _make_model() -> QatNet:
    torch.manual_seed(SEED)
    return QatNet()


def _optimizer(model: nn.Module) -> torch.optim.SGD:
    # Single-tensor SGD: the same float operations as torch::optim::SGD.
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, foreach=False)


def _momentum(model: nn.Module, opt: torch.optim.SGD) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[name] = buf.clone()
    return out


def _set_momentum(model: nn.Module, opt: torch.optim.SGD, buffers: dict[str, torch.Tensor]):
    params = dict(model.named_parameters())
    for name, buf in buffers.items():
        opt.state[params[name]]["momentum_buffer"] = buf.clone()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _prefixed(prefix: str, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in values.items()}


def _unprefixed(prefix: str, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}


@dataclass
class Run:
    losses: list[torch.Tensor]
    outputs: list[torch.Tensor]
    mid_state: dict[str, torch.Tensor]
    mid_momentum: dict[str, torch.Tensor]
    final_state: dict[str, torch.Tensor]
    final_momentum: dict[str, torch.Tensor]
    eval_out: torch.Tensor


def _train(model: QatNet, opt: torch.optim.SGD, data: dict, start: int) -> Run:
    """Steps ``start`` .. STEPS of the schedule the C++ program runs, then an eval forward."""
    losses, outputs = [], []
    mid_state, mid_momentum = {}, {}
    model.train()
    for step in range(start, STEPS):
        if step == FREEZE_BN_AT:
            edgeqat.freeze_bn(model)
        if step == LEARN_AT:
            edgeqat.learn_ranges(model)
        if step == MID_AT:
            mid_state, mid_momentum = _state(model), _momentum(model, opt)
        opt.zero_grad()
        logits = model(data["x"][step])
        loss = F.cross_entropy(logits, data["y"][step])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        outputs.append(logits.detach())
    model.eval()
    with torch.no_grad():
        eval_out = model(data["eval_x"])
    return Run(
        losses,
        outputs,
        mid_state,
        mid_momentum,
        _state(model),
        _momentum(model, opt),
        eval_out,
    )


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(CLASSES, 3, 8, 8, generator=g)
    labels = torch.randint(CLASSES, (PRE_STEPS + STEPS, BATCH), generator=g)
    x = templates[labels] + torch.randn(PRE_STEPS + STEPS, BATCH, 3, 8, 8, generator=g)
    eval_x = templates[torch.arange(CLASSES).repeat(4)] + torch.randn(
        4 * CLASSES, 3, 8, 8, generator=g
    )
    return {"x": x, "y": labels, "eval_x": eval_x}


@dataclass
class Parity:
    init: dict[str, torch.Tensor]  # a fresh Python model's state for SEED
    handover: dict[str, torch.Tensor]  # the Python state given to C++
    python: Run  # Python's continuation from the handover
    cpp: dict[str, torch.Tensor]  # everything the C++ program wrote
    data: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Parity:
    binary = _parity_binary()
    data = _data()
    pre = {"x": data["x"][:PRE_STEPS], "y": data["y"][:PRE_STEPS]}
    main = {"x": data["x"][PRE_STEPS:], "y": data["y"][PRE_STEPS:], "eval_x": data["eval_x"]}

    model = _make_model()
    init = _state(model)
    opt = _optimizer(model)
    model.train()
    for step in range(PRE_STEPS):  # mid-training: observed ranges, BN statistics, momentum
        opt.zero_grad()
        F.cross_entropy(model(pre["x"][step]), pre["y"][step]).backward()
        opt.step()
    handover, handover_momentum = _state(model), _momentum(model, opt)
    assert handover_momentum, "the hand-over should carry momentum buffers"

    tmp = tmp_path_factory.mktemp("cpp_parity")
    request = {
        "config": torch.tensor(
            [STEPS, FREEZE_BN_AT, LEARN_AT, MID_AT, torch.get_num_threads(), SEED],
            dtype=torch.int64,
        ),
        "hyper": torch.tensor([LR, MOMENTUM], dtype=torch.float64),
        **main,
        **_prefixed("state.", handover),
        **_prefixed("momentum.", handover_momentum),
    }
    torch.save(request, tmp / "input.pt")
    proc = subprocess.run(
        [str(binary), str(tmp / "input.pt"), str(tmp / "output.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{binary.name} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
        f"--- stderr ---\n{proc.stderr}"
    )
    # torch::pickle_save tags the typed Dict[str, Tensor] with restore_type_tag, a torch
    # function the weights-only unpickler accepts once allowed.
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        cpp = torch.load(tmp / "output.pt")

    python = _train(model, opt, main, start=0)
    return Parity(init, handover, python, cpp, main)


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str):
    assert actual.keys() == expected.keys(), (
        f"{what}: names differ; only C++: {sorted(actual.keys() - expected.keys())}, "
        f"only Python: {sorted(expected.keys() - actual.keys())}"
    )
    for name, value in expected.items():
        other = actual[name]
        assert other.dtype == value.dtype and other.shape == value.shape, (
            f"{what}: {name} is {other.dtype} {tuple(other.shape)} in C++, "
            f"{value.dtype} {tuple(value.shape)} in Python"
        )
        if not torch.equal(other, value):
            diff = (other.double() - value.double()).abs().max().item()
            pytest.fail(f"{what}: {name} differs (max abs difference {diff:g})")


def test_names_match_python_state_dict(parity: Parity) -> None:
    cpp_init = _unprefixed("init.", parity.cpp)
    assert sorted(cpp_init) == sorted(parity.init)
    # Spot checks of the naming rules the mapping relies on.
    for name in (
        "stem.bn.running_var",
        "stem.bn.num_batches_tracked",
        "stem.bn_frozen",
        "stem.weight_quant.mode_code",
        "dw.bias",
        "block.body.0.weight_quant.learned_max",
        "block.body.1.quantizer.observed_min",
        "block.add.out_quant.quantizer.observed_max",
        "fc.weight",
    ):
        assert name in cpp_init
    assert "stem.bias" not in cpp_init  # ConvBn2d: no conv bias by default on both sides


def test_same_seed_gives_the_same_initial_model(parity: Parity) -> None:
    _assert_same(_unprefixed("init.", parity.cpp), parity.init, "initial state")


def test_training_steps_are_bit_identical(parity: Parity) -> None:
    cpp_losses = parity.cpp["loss"]
    py_losses = torch.stack(parity.python.losses)
    assert torch.equal(cpp_losses, py_losses), f"C++ {cpp_losses} vs Python {py_losses}"
    assert torch.equal(parity.cpp["outputs"], torch.stack(parity.python.outputs))


def test_state_after_training_is_bit_identical(parity: Parity) -> None:
    _assert_same(_unprefixed("final.state.", parity.cpp), parity.python.final_state, "final")
    _assert_same(
        _unprefixed("final.momentum.", parity.cpp), parity.python.final_momentum, "momentum"
    )
    _assert_same(_unprefixed("mid.state.", parity.cpp), parity.python.mid_state, "mid-run")


def test_eval_outputs_are_bit_identical(parity: Parity) -> None:
    assert torch.equal(parity.cpp["eval_out"], parity.python.eval_out)


def test_the_run_covered_every_phase(parity: Parity) -> None:
    """Guards the comparison itself: BN trained on batch statistics before the freeze, the
    ranges were learned after learn_ranges, and every parameter was trained."""
    final = parity.python.final_state
    mid = parity.python.mid_state
    for name in ("stem", "block.body.0", "block.body.2"):
        assert bool(final[f"{name}.bn_frozen"])
        assert not torch.equal(
            parity.handover[f"{name}.bn.running_mean"], mid[f"{name}.bn.running_mean"]
        )
        assert torch.equal(mid[f"{name}.bn.running_mean"], final[f"{name}.bn.running_mean"])
        assert int(final[f"{name}.bn.num_batches_tracked"]) == PRE_STEPS + FREEZE_BN_AT
    quantizer_modes = {k: int(v) for k, v in final.items() if k.endswith("mode_code")}
    assert len(quantizer_modes) == 12
    assert set(quantizer_modes.values()) == {int(edgeqat.Mode.LEARN)}
    assert not torch.equal(
        final["input_quant.quantizer.learned_max"], mid["input_quant.quantizer.learned_max"]
    )
    # Every weight and BN parameter was trained (gradients reached all of them).
    for name, _ in QatNet().named_parameters():
        if "learned_" not in name:
            assert not torch.equal(final[name], parity.handover[name]), name


def test_cpp_state_continues_identically_in_python(parity: Parity) -> None:
    """C++ -> Python: the C++ state (and momentum) mid-run, loaded into a fresh Python model,
    continues exactly as the C++ run did."""
    model = _make_model()
    model.load_state_dict(_unprefixed("mid.state.", parity.cpp))
    opt = _optimizer(model)
    _set_momentum(model, opt, _unprefixed("mid.momentum.", parity.cpp))
    resumed = _train(model, opt, parity.data, start=MID_AT)
    assert torch.equal(torch.stack(resumed.losses), parity.cpp["loss"][MID_AT:])
    _assert_same(resumed.final_state, _unprefixed("final.state.", parity.cpp), "resumed")
    assert torch.equal(resumed.eval_out, parity.cpp["eval_out"])


def test_python_state_dict_round_trip_mid_training(parity: Parity) -> None:
    """Python -> Python: the same from Python's own mid-run state_dict."""
    model = _make_model()
    model.load_state_dict(parity.python.mid_state)
    opt = _optimizer(model)
    _set_momentum(model, opt, parity.python.mid_momentum)
    resumed = _train(model, opt, parity.data, start=MID_AT)
    assert torch.equal(torch.stack(resumed.losses), torch.stack(parity.python.losses[MID_AT:]))
    _assert_same(resumed.final_state, parity.python.final_state, "resumed")


# -- histogram calibration ----------------------------------------------------------------------

# One quantizer a row: histogram_bins, method (0 mse, 1 percentile), percentile, num_bits,
# narrow_range, symmetric; the same specs on both sides.
HISTOGRAM_SPECS = [
    (2048, 0, 99.99, 8, False, False),
    (512, 1, 99.5, 8, False, False),
    (256, 0, 99.99, 4, True, True),
    (2048, 1, 99.9, 8, True, True),
]
HISTOGRAM_PRE = 2  # batches Python runs before handing the state over


class Calibrators(nn.Module):
    """The twin of the --histogram mode of edgeqat_nn_parity: q0 .. q<k-1>, one histogram
    FakeQuantizer a spec."""

    def __init__(self) -> None:
        super().__init__()
        for i, (bins, method, percentile, num_bits, narrow, symmetric) in enumerate(
            HISTOGRAM_SPECS
        ):
            spec = edgeqat.QuantSpec(
                range_source="histogram",
                histogram_bins=bins,
                histogram_method="mse" if method == 0 else "percentile",
                percentile=percentile,
                num_bits=num_bits,
                narrow_range=narrow,
                symmetric=symmetric,
            )
            self.add_module(f"q{i}", edgeqat.FakeQuantizer(spec))


def _calibration_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    steps = 6
    x = torch.randn(steps, 4, 64, generator=g)
    x[1] = x[1] ** 3  # heavy tails
    x[3] *= 4.0  # widens the histogram range after the hand-over
    x[4] = x[4].abs() + 0.5  # positive only
    return {"x": x, "eval_x": 5.0 * torch.randn(4, 64, generator=g)}


def _calibrate(model: Calibrators, batches: torch.Tensor) -> list[list[int]]:
    model.train()
    identity = []
    for batch in batches:
        identity.append([int(q(batch) is batch) for q in model.children()])
    return identity


@pytest.fixture(scope="module")
def histogram_parity(tmp_path_factory: pytest.TempPathFactory) -> dict:
    binary = _parity_binary()
    data = _calibration_data()
    model = Calibrators()
    init = _state(model)
    _calibrate(model, data["x"][:HISTOGRAM_PRE])
    handover = _state(model)
    rest = data["x"][HISTOGRAM_PRE:]

    tmp = tmp_path_factory.mktemp("cpp_parity_histogram")
    request = {
        "specs": torch.tensor(HISTOGRAM_SPECS, dtype=torch.float64),
        "x": rest,
        "eval_x": data["eval_x"],
        **_prefixed("state.", handover),
    }
    torch.save(request, tmp / "input.pt")
    proc = subprocess.run(
        [str(binary), "--histogram", str(tmp / "input.pt"), str(tmp / "output.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{binary.name} --histogram exited with {proc.returncode}\n--- stdout ---\n"
        f"{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        cpp = torch.load(tmp / "output.pt")

    identity = _calibrate(model, rest)
    calibrated = _state(model)
    for q in model.children():
        q.freeze()
    frozen = _state(model)
    model.eval()
    with torch.no_grad():
        eval_out = {f"q{i}": q(data["eval_x"]) for i, q in enumerate(model.children())}
    return {
        "cpp": cpp,
        "init": init,
        "identity": identity,
        "calibrated": calibrated,
        "frozen": frozen,
        "eval_out": eval_out,
    }


def test_histogram_calibrators_have_python_state_names_and_shapes(histogram_parity) -> None:
    cpp_init = _unprefixed("init.", histogram_parity["cpp"])
    _assert_same(cpp_init, histogram_parity["init"], "initial histogram state")
    assert {"q0.histogram", "q0.histogram_min", "q0.histogram_max"} <= cpp_init.keys()
    assert cpp_init["q1.histogram"].shape == (512,)


def test_histogram_calibration_runs_in_float_on_both_sides(histogram_parity) -> None:
    identity = histogram_parity["cpp"]["identity"]
    assert identity.tolist() == histogram_parity["identity"]
    assert bool((identity == 1).all())


def test_histogram_calibration_and_chosen_ranges_are_bit_identical(histogram_parity) -> None:
    """C++ continues a Python calibration from its state_dict: the histograms, then the ranges
    chosen on freeze(), then the eval-mode outputs are the same bit for bit."""
    cpp = histogram_parity["cpp"]
    _assert_same(
        _unprefixed("calibrated.state.", cpp), histogram_parity["calibrated"], "calibrated"
    )
    frozen = histogram_parity["frozen"]
    _assert_same(_unprefixed("frozen.state.", cpp), frozen, "frozen")
    for i in range(len(HISTOGRAM_SPECS)):
        assert int(frozen[f"q{i}.mode_code"]) == int(edgeqat.Mode.FROZEN)
        assert float(frozen[f"q{i}.observed_min"]) < 0.0 < float(frozen[f"q{i}.observed_max"])
        assert torch.equal(cpp[f"eval_out.q{i}"], histogram_parity["eval_out"][f"q{i}"])
