"""python -m edgeqat.reproduce: argument errors, resuming an interrupted training phase, and
tiny end-to-end runs (stopped after the float phase, then resumed) writing the table and plots
(marked slow: they read Fashion-MNIST; skipped when it is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgeqat
from edgeqat.data import DatasetError, load_fashion_mnist
from edgeqat.reproduce.cli import console, main, parse_args
from edgeqat.reproduce.models import build_model
from edgeqat.reproduce.train import train


def _fashion_mnist_or_skip() -> None:
    try:
        load_fashion_mnist("test", limit=1)
    except DatasetError as err:
        pytest.skip(f"Fashion-MNIST is not installed: {err}")


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--models", "vgg16"], ("--models", "'vgg16'")),
        (["--models", "resnet18", "--w4", "mobilenet_v1"], ("--w4", "mobilenet_v1")),
        (["--batch", "0"], ("--batch", "'0'")),
        (["--qat-steps", "ten"], ("--qat-steps", "'ten'")),
        (["--float-steps", "-1"], ("--float-steps", "'-1'")),
        (["--qat-lr", "-0.1"], ("--qat-lr", "'-0.1'")),
        (["--float-weights", "resnet18"], ("--float-weights", "'resnet18'")),
        (["--float-weights", "resnet18=/no/such.pt"], ("--float-weights", "/no/such.pt")),
        (["--float-steps", "0", "--models", "resnet18"], ("--float-steps 0", "resnet18")),
        (["--device", "nonsense"], ("--device", "'nonsense'")),
        (["--stop-after", "export"], ("--stop-after", "'export'")),
        (["--image-folder", "/no/such/folder"], ("--image-folder", "/no/such/folder")),
    ],
)
def test_bad_arguments_name_argument_and_value(argv, names, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for name in names:
        assert name in err, err


def test_quick_preset_and_overrides() -> None:
    args = parse_args(["--quick", "--qat-steps", "7", "--models", "resnet18"])
    assert (args.float_steps, args.qat_steps, args.width_mult) == (300, 7, 0.5)
    assert args.w4 == ("resnet18",)
    assert parse_args(["--w4", "none"]).w4 == ()


def test_console_needs_the_subcommand(capsys) -> None:
    assert console(["train"]) == 2
    assert "edgeqat reproduce" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        console(["reproduce", "--models", "vgg16"])
    assert "usage: edgeqat reproduce" in capsys.readouterr().err


def test_missing_dataset_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet18", "resnet50"])
def test_models_take_small_inputs(name: str) -> None:
    model = build_model(name, width_mult=0.25 if name.startswith("mobilenet") else 1.0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet18", "resnet50"])
def test_small_input_models_have_overall_stride_16(name: str) -> None:
    model = build_model(name, width_mult=0.25 if name.startswith("mobilenet") else 1.0).eval()
    trunk = (
        model.features
        if name.startswith("mobilenet")
        else nn.Sequential(*list(model.children())[:-2])
    )
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 32, 32)).shape[-2:] == (2, 2)


class _Data:
    """Random linearly separable data; ``fail_at`` raises on that batch (an interruption)."""

    train_count = 256

    def __init__(self, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.fail_at, self.drawn = fail_at, 0

    def train_batch(self, batch, generator):
        if self.drawn == self.fail_at:
            raise KeyboardInterrupt
        self.drawn += 1
        idx = torch.randint(0, 256, (batch,), generator=generator)
        return self.x[idx], self.y[idx]


def _train(model, data, checkpoint: Path) -> dict:
    return train(
        model,
        data,
        steps=10,
        lr=1e-2,
        batch=16,
        seed=3,
        checkpoint=checkpoint,
        desc="t",
        device=torch.device("cpu"),
        checkpoint_every=4,
        log=lambda _: None,
    )


def test_interrupted_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    interrupted = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    interrupted.load_state_dict(reference.state_dict())
    _train(reference, _Data(), tmp_path / "reference.ckpt")

    with pytest.raises(KeyboardInterrupt):  # stopped during step 7: checkpoint of step 4
        _train(interrupted, _Data(fail_at=6), tmp_path / "run.ckpt")
    assert torch.load(tmp_path / "run.ckpt", weights_only=False)["step"] == 4
    torch.manual_seed(99)  # a new process: the random state of dropout comes from the checkpoint
    resumed_data = _Data()
    history = _train(interrupted, resumed_data, tmp_path / "run.ckpt")
    assert resumed_data.drawn == 6  # steps 5..10 only
    assert history["step"][-1] == 10
    for a, b in zip(reference.parameters(), interrupted.parameters()):
        torch.testing.assert_close(a, b)


TINY = [
    "--models", "mobilenet_v2", "--width-mult", "0.25", "--image-size", "28",
    "--float-steps", "30", "--qat-steps", "10", "--batch", "32", "--calibration-batches", "2",
    "--train-limit", "2000", "--test-limit", "500", "--threads", "1", "--checkpoint-every", "20",
]  # fmt: skip


@pytest.mark.slow  # end-to-end on real data: about 10 s on 2 idle cores
def test_tiny_run_stopped_after_float_then_resumed(tmp_path: Path, capsys) -> None:
    _fashion_mnist_or_skip()
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out), "--stop-after", "float"]) == 0
    first = capsys.readouterr().out
    assert "mobilenet_v2 float: test top-1" in first
    assert "--stop-after float" in first
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]["mobilenet_v2"]) == {"float"}
    assert not (out / "table.md").exists()
    float_weights = (out / "mobilenet_v2" / "float.pt").read_bytes()

    assert main([*TINY, "--out", str(out), "--stop-after", "ptq"]) == 0
    assert "--stop-after ptq" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]["mobilenet_v2"]) == {"float", "ptq_w8"}

    assert main([*TINY, "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert "mobilenet_v2 PTQ 8-bit: done before" in second
    assert "mobilenet_v2 float: done before" in second
    assert "float: epoch" not in second  # the float phase was not trained again
    assert (out / "mobilenet_v2" / "float.pt").read_bytes() == float_weights

    table = json.loads((out / "table.json").read_text())
    assert [(r["model"], r["weight_bits"]) for r in table["rows"]] == [
        ("mobilenet_v2", 8),
        ("mobilenet_v2", 4),
    ]
    for row in table["rows"]:
        for key in ("float_top1", "qat_int8_top1", "ptq_int8_top1"):
            assert 0.0 <= row[key] <= 100.0
        assert row["qat_delta"] == pytest.approx(row["qat_int8_top1"] - row["float_top1"], abs=0.02)
    md = (out / "table.md").read_text()
    assert md.startswith("| model | weights | float top-1 | QAT int8 top-1 |")
    assert "| mobilenet_v2 | 4-bit |" in md and "| mobilenet_v2 | 4-bit |" in second
    for name in ("accuracy.png", "qat_curves.png", "ranges.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in ("ptq_w8.eq8", "qat_w8.eq8", "ptq_w4.eq8", "qat_w4.eq8"):
        assert (out / "mobilenet_v2" / name).is_file(), name

    # A third run has nothing left to do; other settings are refused.
    assert main([*TINY, "--out", str(out)]) == 0
    assert "QAT 4-bit: done before" in capsys.readouterr().out
    assert main([*TINY, "--out", str(out), "--qat-steps", "11"]) == 2
    assert "qat_steps 10 -> 11" in capsys.readouterr().err


def test_module_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeqat.reproduce", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m edgeqat.reproduce" in proc.stdout
    assert "--stop-after" in proc.stdout


def test_image_folder_run(tmp_path: Path, capsys) -> None:
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "out"
    argv = [
        "--image-folder", str(tmp_path / "images"), "--models", "mobilenet_v2",
        "--width-mult", "0.25", "--float-steps", "2", "--qat-steps", "2", "--batch", "4",
        "--calibration-batches", "1", "--w4", "none", "--no-plots", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "ImageFolder" in capsys.readouterr().out
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [(r["model"], r["weight_bits"]) for r in rows] == [("mobilenet_v2", 8)]
    int8 = edgeqat.Int8Model.load(out / "mobilenet_v2" / "qat_w8.eq8")
    assert int8.inputs[0]["shape"] == [3, 32, 32]
    assert int8(torch.zeros(1, 3, 32, 32)).shape == (1, 2)  # two classes


@pytest.mark.slow  # end-to-end on real data: about 10 s on 2 idle cores
def test_tiny_run_with_learned_ranges(tmp_path: Path, capsys) -> None:
    _fashion_mnist_or_skip()
    out = tmp_path / "out"
    argv = [*TINY, "--w4", "none", "--learn-ranges", "--qat-lr", "1e-2", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["learn_ranges"] is True
    ranges = results["models"]["mobilenet_v2"]["qat_w8"]["history"]["ranges"]
    assert ranges
    # One entry per step; from step 3 of 10 on the ranges are parameters trained by gradient.
    moved = [values[2] != values[-1] for values in ranges.values()]
    assert any(moved)
    assert (out / "mobilenet_v2" / "qat_w8.eq8").is_file()
