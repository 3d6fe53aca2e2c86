"""Builds the standalone C++ example (examples/cpp) against the installed
edgeqat CMake package and runs it: find_package(edgeqat), the edgeqat::edgeqat
target, the installed headers and LibTorch training through edgeqat's C++
autograd, with no Python in the process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

if shutil.which("cmake") is None:
    pytest.skip("cmake is not installed", allow_module_level=True)

import torch  # noqa: E402

import edgeqat  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp"


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return proc


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp_example_build")
    configure = [
        "cmake",
        "-S",
        str(EXAMPLE),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        # Exactly what the example's README tells users to pass: the package
        # must find Torch by itself.
        f"-DCMAKE_PREFIX_PATH={edgeqat.cmake_prefix_path}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    ccache = shutil.which("ccache")
    if ccache:
        configure.append(f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}")
    _run(configure)
    _run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)])
    binary = build / "qat_linear"
    assert binary.is_file(), f"{binary} was not built"
    return binary


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
