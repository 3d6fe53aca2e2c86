"""Builds edgeqat's native parts by driving CMake, the project's one build
description. Use ``pip install --no-build-isolation .`` so that the extension
is compiled against the torch that is installed (torch==2.13.0).

Environment:
  EDGEQAT_BUILD_DIR   CMake build tree (default: build/python), reused by
                      later builds and by ``ctest --test-dir``
  EDGEQAT_CMAKE_ARGS  extra arguments for the CMake configure step
  EDGEQAT_JOBS        parallel compile jobs (default: number of CPUs)
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11
        import torch

        # CMake installs _C, _runtime, lib/, include/ and lib/cmake/ into the package.
        # Editable installs use the source package itself.
        if self.inplace or getattr(self, "editable_mode", False):
            package_dir = ROOT / "python" / "edgeqat"
        else:
            package_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("EDGEQAT_BUILD_DIR", ROOT / "build" / "python"))
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_INSTALL_PREFIX={package_dir}",
            "-DCMAKE_INSTALL_LIBDIR=lib",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path};{pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            *shlex.split(os.environ.get("EDGEQAT_CMAKE_ARGS", "")),
        ]
        jobs = os.environ.get("EDGEQAT_JOBS", str(os.cpu_count() or 1))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)
        subprocess.run(["cmake", "--install", str(build_dir)], check=True)
        # setuptools collects the module from its own build path.
        expected = Path(self.get_ext_fullpath(ext.name))
        built = package_dir / expected.name
        if built.resolve() != expected.resolve():
            expected.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, expected)


setup(
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=[CMakeExtension("edgeqat._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
