"""Builds the standalone C++ examples against the installed edgeqat CMake package and runs
them, with no Python in their processes:

- examples/cpp: find_package(edgeqat), the edgeqat::edgeqat target, the installed headers and
  LibTorch training through edgeqat's C++ autograd;
- examples/cpp/runtime_only: find_package(edgeqat COMPONENTS runtime) with Torch made
  unfindable, edgeqat::edgeqat_runtime alone, running a model exported from Python: its outputs
  equal edgeqat.Int8Model's."""

from __future__ import annotations

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

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp"
RUNTIME_EXAMPLE = EXAMPLE / "runtime_only"


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example(EXAMPLE, tmp_path_factory.mktemp("cpp_example_build"), "qat_linear")


def test_runtime_only_program_needs_no_torch(tmp_path: Path) -> None:
    """find_package(edgeqat COMPONENTS runtime) with Torch unfindable
    (CMAKE_DISABLE_FIND_PACKAGE_Torch): it configures, builds, links no torch library, and
    runs an exported model exactly as Int8Model does."""
    binary = build_example(
        RUNTIME_EXAMPLE, tmp_path / "build", "run_int8", "-DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON"
    )
    cache = (binary.parent / "CMakeCache.txt").read_text()
    assert not re.search(r"^Torch_DIR:PATH=.+$", cache, re.MULTILINE), "Torch was looked up"
    ldd = run_checked(["ldd", str(binary)]).stdout
    assert not re.search(r"lib(torch|c10)", ldd), ldd

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )
    example = torch.randn(2, 3, 8, 8)
    qat = edgeqat.prepare_qat(model, example_inputs=example).train()
    with torch.no_grad():
        for _ in range(3):
            qat(torch.randn(16, 3, 8, 8))
    qat.eval()
    path = tmp_path / "model.eq8"
    int8 = edgeqat.export(qat, path, example_inputs=example[:1])
    x = torch.randn(4, 3, 8, 8)
    x.numpy().astype("<f4").tofile(tmp_path / "x.f32")
    proc = run_checked([str(binary), str(path), str(tmp_path / "x.f32"), "4", "2"])
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("input ") and lines[0].endswith("[3, 8, 8]"), proc.stdout
    assert lines[1].endswith("[5]"), proc.stdout
    got = torch.tensor([[float(v) for v in line.split()] for line in lines[2:]])
    assert torch.equal(got, int8(x)), (got, int8(x))
    # A bad file is a clear error and exit status 1, not a crash.
    (tmp_path / "bad.eq8").write_bytes(b"EQINT8\r\n" + bytes(100))
    bad = subprocess.run([str(binary), str(tmp_path / "bad.eq8")], capture_output=True, text=True)
    assert bad.returncode == 1 and "run_int8: " in bad.stderr, bad.stderr


def test_example_uses_the_installed_package(example_binary: Path) -> None:
    cache = (example_binary.parent / "CMakeCache.txt").read_text()
    found = re.search(r"^edgeqat_DIR:PATH=(.*)$", cache, re.MULTILINE)
    assert found, "find_package(edgeqat) did not record edgeqat_DIR"
    assert Path(found.group(1)).resolve().is_relative_to(Path(edgeqat.cmake_prefix_path).resolve())
    torch_dir = re.search(r"^Torch_DIR:PATH=(.*)$", cache, re.MULTILINE)
    assert torch_dir, "Torch was not found"
    # The torch the package was built against, not some other LibTorch.
    assert Path(torch_dir.group(1)).resolve().is_relative_to(Path(torch.__file__).resolve().parent)


def test_example_trains_and_learns_the_ranges(example_binary: Path) -> None:
    proc = subprocess.run([str(example_binary)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"example exited with {proc.returncode}:\n{out}"

    # Every range got a non-zero gradient at the first step.
    grads = re.search(
        r"range gradients at step 0: \|act_min\| (\S+) \|act_max\| (\S+) "
        r"\|w_min\| (\S+) \|w_max\| (\S+)",
        out,
    )
    assert grads, out
    for name, value in zip(("act_min", "act_max", "w_min", "w_max"), grads.groups()):
        assert float(value) > 0.0, f"no gradient reached {name}:\n{out}"
    assert "gradients reached min and max: yes" in out, out

    # The loss fell a lot: the ranges start far too narrow.
    losses = [float(v) for v in re.findall(r"^step\s+\d+\s+loss (\S+)", out, re.MULTILINE)]
    assert len(losses) >= 2, out
    assert losses[-1] < 0.1 * losses[0], f"loss did not fall enough: {losses}"
    assert "loss fell: yes" in out, out

    # The learned activation range widened from [-0.5, 0.5] and still holds 0.
    act = re.search(r"act = \[(\S+), (\S+)\]", out)
    assert act, out
    act_min, act_max = float(act.group(1)), float(act.group(2))
    assert act_min < -1.0 and act_max > 1.0, out
