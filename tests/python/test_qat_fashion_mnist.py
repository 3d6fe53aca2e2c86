"""End to end on real data: a small CNN trained in float on a Fashion-MNIST subset, then
post-training quantized (prepare_ptq + calibrate) and quantization-aware trained (prepare_qat,
a few hundred steps from the float checkpoint, BN and observers frozen on a schedule). Both
keep the float model's test accuracy within a stated margin; every figure is measured here.

About 20 s on one idle core; skipped when the dataset is not installed
(Debian's dataset-fashion-mnist, or EDGEQAT_FASHION_MNIST pointing at the .gz files).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeqat
from edgeqat.data import DatasetError, load_fashion_mnist
from edgeqat.nn import SharedActQuant

pytestmark = pytest.mark.slow

TRAIN_IMAGES = 10_000  # the training subset; the test set is the full 10k images
BATCH = 64
FLOAT_STEPS = 800
FLOAT_LR = 3e-3
QAT_STEPS = 300
QAT_LR = 1e-4
FREEZE_BN_STEP = 150  # the schedule: batch norm statistics frozen half way,
FREEZE_OBSERVERS_STEP = 225  # activation ranges frozen for the last quarter
CALIBRATION_BATCHES = 10

# Measured (one thread): float 86.6%, PTQ 86.7%, QAT 86.8%; the same PTQ with 4-bit weights
# and activations gets 74.4%. So 8-bit quantization costs this network a few tenths of a point
# at most, and the margins below leave room for run-to-run noise (the thread count changes
# float summation order, and 800 Adam steps amplify it) without hiding a broken quantizer,
# which costs several points or collapses to chance (10%).
FLOAT_ACCURACY_FLOOR = 80.0
QAT_MARGIN = 1.5  # points: QAT accuracy >= float accuracy - QAT_MARGIN
PTQ_MARGIN = 2.0  # points: calibrated (no training) accuracy >= float accuracy - PTQ_MARGIN


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallResNet(nn.Module):
    """28x28 -> conv-bn-relu -> max pool -> conv-bn-relu (stride 2) -> residual block (add +
    relu) -> average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(1, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.down = _conv_bn_relu(8, 16, 2)
        self.res1 = _conv_bn_relu(16, 16, 1)
        self.res2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.res2_bn = nn.BatchNorm2d(16)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        x = self.down(self.pool(self.stem(x)))
        x = F.relu(x + self.res2_bn(self.res2(self.res1(x))))
        return self.fc(torch.flatten(self.avg(x), 1))


def _train(model, images, labels, steps, lr, seed, on_step=None) -> float:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to 0: the run ends converged for its length, not mid-descent.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        if on_step is not None:
            on_step(step)
        idx = torch.randint(0, images.shape[0], (BATCH,), generator=generator)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return loss.item()


@torch.no_grad()
def _accuracy(model, images, labels) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + 2000]).argmax(1) == labels[i : i + 2000]).sum().item()
        for i in range(0, images.shape[0], 2000)
    )
    return 100.0 * correct / images.shape[0]


@pytest.fixture(scope="module")
def data():
    try:
        train = load_fashion_mnist("train", limit=TRAIN_IMAGES)
        test = load_fashion_mnist("test")
    except DatasetError as err:
        pytest.skip(f"Fashion-MNIST is not installed: {err}")
    return train, test


@pytest.fixture(scope="module")
def float_checkpoint(data):
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(0)
    model = SmallResNet()
    _train(model, train_x, train_y, FLOAT_STEPS, FLOAT_LR, seed=1)
    accuracy = _accuracy(model, test_x, test_y)
    print(f"\nfloat: {FLOAT_STEPS} steps, test accuracy {accuracy:.2f}%")
    return model, accuracy


def _calibration_batches(images):
    return (images[i * 256 : (i + 1) * 256] for i in range(CALIBRATION_BATCHES))


def test_float_checkpoint_is_trained(float_checkpoint):
    _, accuracy = float_checkpoint
    assert accuracy >= FLOAT_ACCURACY_FLOOR


def test_ptq_keeps_float_accuracy(data, float_checkpoint):
    (train_x, _), (test_x, test_y) = data
    model, float_accuracy = float_checkpoint
    ptq = edgeqat.prepare_ptq(model, example_inputs=train_x[:2])
    edgeqat.calibrate(ptq, _calibration_batches(train_x))
    accuracy = _accuracy(ptq, test_x, test_y)
    print(f"\nPTQ: {CALIBRATION_BATCHES} calibration batches, test accuracy {accuracy:.2f}%")
    assert accuracy >= float_accuracy - PTQ_MARGIN
    # It really is the int8 simulation: the logits lie on the output quantizer's 256 levels.
    with torch.no_grad():
        logits = ptq(test_x[:2000])
    assert logits.unique().numel() <= 256


def test_qat_keeps_float_accuracy(data, float_checkpoint):
    (train_x, train_y), (test_x, test_y) = data
    model, float_accuracy = float_checkpoint
    before = {k: v.clone() for k, v in model.state_dict().items()}

    qat = edgeqat.prepare_qat(model, example_inputs=train_x[:2])
    assert any(isinstance(m, edgeqat.QuantAdd) and m.activation == "relu" for m in qat.modules())
    assert any(isinstance(m, SharedActQuant) for m in qat.modules())
    # Start from calibrated ranges, then train with the quantizers observing (EMA).
    edgeqat.calibrate(qat, _calibration_batches(train_x), freeze=False)

    def schedule(step: int) -> None:
        if step == FREEZE_BN_STEP:
            edgeqat.freeze_bn(qat)
        if step == FREEZE_OBSERVERS_STEP:
            edgeqat.freeze_observers(qat)

    loss = _train(qat, train_x, train_y, QAT_STEPS, QAT_LR, seed=2, on_step=schedule)
    assert all(m.is_bn_frozen for m in qat.modules() if isinstance(m, edgeqat.ConvBn2d))
    quantizers = [m for m in qat.modules() if isinstance(m, edgeqat.FakeQuantizer)]
    assert quantizers and all(q.mode is edgeqat.Mode.FROZEN for q in quantizers)

    accuracy = _accuracy(qat, test_x, test_y)
    print(
        f"\nQAT: {QAT_STEPS} steps, last loss {loss:.3f}, test accuracy {accuracy:.2f}% "
        f"(float {float_accuracy:.2f}%)"
    )
    assert accuracy >= float_accuracy - QAT_MARGIN
    with torch.no_grad():
        logits = qat(test_x[:2000])
    assert logits.unique().numel() <= 256
    # The float checkpoint is unchanged.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
