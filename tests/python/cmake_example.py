"""Building the standalone C++ examples against the installed edgeqat CMake package, as their
READMEs tell users to (shared by test_cpp_example.py and test_cpp_train_qat.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import edgeqat


def run_checked(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs cmd, capturing its output; a non-zero exit fails the test with both streams."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return proc


def build_example(source: Path, build: Path, target: str, *extra: str) -> Path:
    """Configures (Release, Ninja and ccache when present, CMAKE_PREFIX_PATH = the installed
    package's; the package must find Torch by itself) and builds ``source`` in ``build``;
    returns the path of the executable ``target``."""
    configure = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={edgeqat.cmake_prefix_path}",
        *extra,
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    ccache = shutil.which("ccache")
    if ccache:
        configure.append(f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}")
    run_checked(configure)
    run_checked(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)])
    binary = build / target
    assert binary.is_file(), f"{binary} was not built"
    return binary
