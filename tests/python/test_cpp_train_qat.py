"""examples/cpp/train_qat: QAT on Fashion-MNIST from C++ (LibTorch + edgeqat::nn, export_int8,
the torch-free runtime), built against the installed edgeqat CMake package and run on a short
schedule, with no Python in its process.

Measured (300 float steps, 100 QAT steps, batch 64, 2 threads, seed 0; AMD EPYC, 2 cores, about
20 s): float 81.70%, QAT simulation 81.55%, int8 runtime 81.55%, int8 vs simulation top-1
agreement 100.00%. The floors below are far above chance (10%) and below run-to-run noise (the
thread count and the machine change float summation order); a broken quantizer or export costs
many points or collapses to chance, and the int8 model disagreeing with its simulation on more
than 1% of the images means the export does not compute what training simulated.

Building takes about 30 s (less with a warm ccache); the whole module is marked slow. Skipped
when the dataset is not installed (Debian's dataset-fashion-mnist, or EDGEQAT_FASHION_MNIST
pointing at the four files).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

if shutil.which("cmake") is None:
    pytest.skip("cmake is not installed", allow_module_level=True)

import torch  # noqa: E402
from cmake_example import build_example, run_checked  # noqa: E402

import edgeqat  # noqa: E402
from edgeqat.data import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp" / "train_qat"
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SHORT_SCHEDULE = ["--float-steps", "300", "--qat-steps", "100", "--batch", "64", "--threads", "2"]
FLOAT_FLOOR = 75.0  # percent; measured 81.70
INT8_FLOOR = 75.0  # percent; measured 81.55
MAX_INT8_DROP = 2.0  # points below float; measured 0.15
MIN_AGREEMENT = 99.0  # percent of test images where int8 and simulation pick the same class


def _data_dir() -> Path | None:
    """The folder the program reads by default, if it holds the four files (.gz or not)."""
    folder = Path(os.environ.get("EDGEQAT_FASHION_MNIST") or DEFAULT_FASHION_MNIST_DIR)
    if all((folder / f"{name}.gz").is_file() or (folder / name).is_file() for name in FILES):
        return folder
    return None


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp_train_qat_build")
    path = build_example(EXAMPLE, build, "train_qat")
    cache = (build / "CMakeCache.txt").read_text()
    found = re.search(r"^edgeqat_DIR:PATH=(.*)$", cache, re.MULTILINE)
    assert found, "find_package(edgeqat) did not record edgeqat_DIR"
    assert Path(found.group(1)).resolve().is_relative_to(Path(edgeqat.cmake_prefix_path).resolve())
    return path


def _percent(pattern: str, out: str) -> float:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no match for {pattern!r} in:\n{out}"
    return float(found.group(1))


def test_short_schedule_trains_and_int8_matches_the_simulation(
    binary: Path, tmp_path: Path
) -> None:
    if _data_dir() is None:
        pytest.skip(
            "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, or set "
            "EDGEQAT_FASHION_MNIST to the folder holding the four IDX files)"
        )
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [str(binary), *SHORT_SCHEDULE, "--seed", "0", "--log-every", "50", "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"train_qat exited with {proc.returncode}:\n{out}"

    # Progress per phase: loss lines for float and QAT, the schedule, the calibration.
    assert re.search(r"^float: step\s+300/300 ", out, re.MULTILINE), out
    assert re.search(r"^QAT: step\s+100/100 ", out, re.MULTILINE), out
    assert "freeze_bn at step 50, freeze_observers at step 75" in out, out

    float_acc = _percent(r"^\| float \| (\S+)% \|", out)
    sim_acc = _percent(r"^\| QAT simulation \(fake quant\) \| (\S+)% \|", out)
    int8_acc = _percent(r"^\| QAT int8 \(runtime\) \| (\S+)% \|", out)
    agreement = _percent(r"top-1 agreement (\S+)%$", out)
    assert float_acc >= FLOAT_FLOOR, out
    assert int8_acc >= INT8_FLOOR and int8_acc >= float_acc - MAX_INT8_DROP, out
    assert agreement >= MIN_AGREEMENT, out
    assert abs(int8_acc - sim_acc) <= 100.0 - MIN_AGREEMENT, out

    # The files it announces. The int8 file, run by Python's Int8Model on the test set that
    # edgeqat.data loads, scores what the program reported: the C++ IDX reader and its
    # normalization feed the model what the Python side would.
    for name in ("float.pt", "qat.pt", "qat.eq8"):
        assert (out_dir / name).is_file(), name
    images, labels = load_fashion_mnist("test")
    int8 = edgeqat.Int8Model.load(out_dir / "qat.eq8", num_threads=2)
    with torch.no_grad():
        predicted = torch.cat([int8(images[i : i + 1000]).argmax(1) for i in range(0, 10000, 1000)])
    python_acc = 100.0 * (predicted == labels).double().mean().item()
    assert abs(python_acc - int8_acc) < 0.015, (python_acc, int8_acc)


def test_reads_unzipped_files_from_data(binary: Path, tmp_path: Path) -> None:
    """--data with the IDX files already unzipped (no .gz) reads them as they are."""
    source = _data_dir()
    if source is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES:
        gz = source / f"{name}.gz"
        if gz.is_file():
            (raw / name).write_bytes(gzip.decompress(gz.read_bytes()))
        else:
            shutil.copy(source / name, raw / name)
    proc = run_checked(
        [str(binary), "--data", str(raw), "--float-steps", "4", "--qat-steps", "4"]
        + ["--calibration-batches", "1", "--out", str(tmp_path / "out")]
    )
    assert f"Fashion-MNIST from {raw}: 60000 training, 10000 test images" in proc.stdout
    assert (tmp_path / "out" / "qat.eq8").is_file(), proc.stdout


def test_missing_dataset_says_how_to_install_it(binary: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "EDGEQAT_FASHION_MNIST": str(empty)}
    proc = subprocess.run(
        [str(binary), "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"Fashion-MNIST file not found: {empty}/train-images-idx3-ubyte.gz" in proc.stderr
    assert "dataset-fashion-mnist" in proc.stderr and "EDGEQAT_FASHION_MNIST" in proc.stderr


def test_bad_option_is_a_usage_error(binary: Path) -> None:
    proc = subprocess.run([str(binary), "--qat-steps", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--qat-steps wants an integer >= 1" in proc.stderr, proc.stderr
    helped = run_checked([str(binary), "--help"])
    assert "--float-steps" in helped.stdout and "EDGEQAT_FASHION_MNIST" in helped.stdout
