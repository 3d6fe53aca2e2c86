"""Runs the main job, examples/python/qat_fashion_mnist.py (`make demo`), as a user would: a
subprocess with --quick, its Markdown table parsed. About 20 s on one core; skipped when the
Fashion-MNIST files are not installed (Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgeqat
from edgeqat.data import DatasetError, load_fashion_mnist

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "qat_fashion_mnist.py"
ROWS = ("float", "PTQ int8 (runtime)", "QAT simulation (fake quant)", "QAT int8 (runtime)")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    # One torch thread: training steps stay steady when other jobs load the machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_qat_fashion_mnist_quick(tmp_path: Path) -> None:
    try:
        load_fashion_mnist("test", limit=1)
    except DatasetError as err:
        pytest.skip(f"Fashion-MNIST is not installed: {err}")
    proc = _run("--quick", "--out", str(tmp_path), "--threads", "2")
    assert proc.returncode == 0, f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    out = proc.stdout

    accuracies = {
        name: float(acc)
        for name, acc in re.findall(r"^\| ([^|]+?) \| ([\d.]+)% \|", out, flags=re.MULTILINE)
    }
    assert set(accuracies) == set(ROWS), out
    for name, acc in accuracies.items():
        assert 50.0 < acc <= 100.0, f"{name}: {acc}% (chance is 10%)\n{out}"

    agreement = re.search(r"top-1 agreement ([\d.]+)%", out)
    assert agreement and float(agreement.group(1)) >= 99.0, out
    assert re.search(r"int8 runtime: [\d,]+ images/s", out), out
    assert re.search(r"total wall time [\d.]+ s", out), out

    for name in ("float.pt", "ptq.eq8", "qat.eq8"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "qat.eq8").stat().st_size < (tmp_path / "float.pt").stat().st_size
    assert edgeqat.Int8Model.load(tmp_path / "qat.eq8").inputs[0]["shape"] == [1, 28, 28]


def test_missing_dataset_exits_2(tmp_path: Path) -> None:
    proc = _run("--quick", "--out", str(tmp_path), EDGEQAT_FASHION_MNIST=str(tmp_path / "none"))
    assert proc.returncode == 2, proc.stderr
    assert "dataset-fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr
