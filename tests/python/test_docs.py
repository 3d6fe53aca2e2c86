"""Every code snippet in the documentation runs (README.md, docs/*.md, examples/cpp/README.md).

Fences are run by their language tag; a fence without a known tag fails the test, so a new
snippet cannot go unrun:

- ``python``: the python blocks of one file, concatenated in order, run in one fresh interpreter
  (working directory: an empty temporary folder);
- ``pycon``: doctest, the blocks of one file sharing one namespace, with ``torch`` and
  ``edgeqat`` imported;
- ``cpp``: every C++ block of every file is compiled into one program (built by the README's own
  CMake snippet and configure command) and run, one process per snippet. A block with a
  ``main`` is a whole program (its includes hoisted, the rest kept in a namespace of its own); any
  other block is a function body;
- ``cmake``: goes into that program's CMakeLists.txt;
- ``bash`` / ``sh``: every command is run (see ``COMMANDS``), long runs with arguments that make
  them short, appended so they override the snippet's;
- ``json``: parses; the int8 file format's header example also has the keys a real file has;
- ``text``: output, tables, formulas; not run.

A block may be preceded by a hidden setup, in the block's language, that runs before it::

    <!-- doc-test setup
    auto x = torch::randn({4});
    -->
"""

from __future__ import annotations

import doctest
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import edgeqat

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "examples/cpp/README.md",
]
LANGUAGES = {"python", "pycon", "cpp", "cmake", "bash", "sh", "json", "text"}


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    setup: str  # from a <!-- doc-test setup ... --> comment right before the fence

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def parse(path: Path) -> list[Snippet]:
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets, setup, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- doc-test setup"):
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            setup = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        fence = re.match(r"^(\s*)```(.*)$", line)
        if fence:
            indent, lang = fence.group(1), fence.group(2).strip()
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{path.relative_to(REPO)}:{i + 1}: unclosed fence"
            body = "\n".join(ln[len(indent) :] for ln in lines[i + 1 : end])
            snippets.append(Snippet(path, i + 1, lang, body + "\n", setup))
            setup, i = "", end + 1
            continue
        if line.strip():
            setup = ""  # a setup belongs to the fence that follows it directly
        i += 1
    return snippets


SNIPPETS = [s for path in DOC_FILES for s in parse(path)]


def _of(*langs: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.lang in langs]


def _files(lang: str) -> list[Path]:
    return sorted({s.path for s in _of(lang)})


def test_every_fence_has_a_known_language() -> None:
    unknown = [f"{s.where} ```{s.lang}" for s in SNIPPETS if s.lang not in LANGUAGES]
    assert not unknown, f"tag these fences with one of {sorted(LANGUAGES)}: {unknown}"


def test_the_docs_have_snippets_of_each_kind() -> None:
    # The parser itself: a regression that finds nothing would make every test below vacuous.
    assert {"python", "cpp", "bash", "cmake", "json", "text"} <= {s.lang for s in SNIPPETS}
    assert len(SNIPPETS) >= 30


@functools.cache
def _python_on_path() -> str:
    """A PATH on which ``python`` (what the docs type) is this interpreter."""
    folder = Path(tempfile.mkdtemp(prefix="edgeqat-docs-bin-"))
    (folder / "python").symlink_to(sys.executable)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def _run(cmd, cwd: Path, timeout: int = 900, env: dict | None = None, shell: bool = False):
    env = {**(env or {}), "PATH": _python_on_path()} if shell else env
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        shell=shell,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    shown = cmd if isinstance(cmd, str) else shlex.join(map(str, cmd))
    assert proc.returncode == 0, (
        f"{shown} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
        f"--- stderr ---\n{proc.stderr[-6000:]}"
    )
    return proc


# ----------------------------------------------------------------------------------- Python


@pytest.mark.parametrize("path", _files("python"), ids=lambda p: str(p.relative_to(REPO)))
def test_python_snippets(path: Path, tmp_path: Path) -> None:
    parts = []
    for s in _of("python"):
        if s.path == path:
            parts.append(f"# ---- {s.where}\n{s.setup}\n{s.code}")
    script = tmp_path / "snippets.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    _run([sys.executable, str(script)], cwd=work)


@pytest.mark.parametrize("path", _files("pycon"), ids=lambda p: str(p.relative_to(REPO)))
def test_pycon_snippets(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    globs = {"torch": torch, "edgeqat": edgeqat}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    parser = doctest.DocTestParser()
    for s in _of("pycon"):
        if s.path == path:
            test = parser.get_doctest(s.setup + s.code, globs, s.where, str(path), s.line)
            runner.run(test, clear_globs=False)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (above)"


# -------------------------------------------------------------------------------------- C++


def cpp_program(snippets: list[Snippet]) -> str:
    """One translation unit: snippet i is ``doc_snippet_i::main_()``; ``main(argc, argv)`` runs
    the snippet whose index is argv[1]."""
    includes = {"#include <edgeqat/edgeqat.h>", "#include <torch/torch.h>"}
    bodies = []
    for i, s in enumerate(snippets):
        kept = []
        for line in (s.setup + "\n" + s.code).splitlines():
            if line.startswith("#include"):
                includes.add(line.split("//")[0].strip())
            else:
                kept.append(line)
        code = "\n".join(kept)
        if re.search(r"^int main\(\)", code, re.M):  # a whole program
            if re.search(r"\breturn\b", code.split("int main()")[1]):
                code = code.replace("int main()", "int main_()")
            else:  # main may end without a return; another function may not
                code = code.replace("int main()", "void main_body()")
                code += "\nint main_() {\n  main_body();\n  return 0;\n}"
        else:  # statements
            code = f"int main_() {{\n{code}\nreturn 0;\n}}"
        bodies.append(f"// {s.where}\nnamespace doc_snippet_{i} {{\n{code}\n}}  // namespace\n")
    cases = "\n".join(
        f"    case {i}: return doc_snippet_{i}::main_();" for i in range(len(snippets))
    )
    main = (
        "int main(int argc, char** argv) {\n"
        "  if (argc != 2) return 2;\n"
        "  try {\n"
        "    switch (std::atoi(argv[1])) {\n"
        f"{cases}\n"
        "    }\n"
        "  } catch (const std::exception& e) {\n"
        '    std::fprintf(stderr, "%s\\n", e.what());\n'
        "    return 1;\n"
        "  }\n"
        "  return 2;\n"
        "}\n"
    )
    head = "\n".join(sorted(includes | {"#include <cstdio>", "#include <cstdlib>"}))
    return f"{head}\n\n" + "\n".join(bodies) + "\n" + main


CPP = _of("cpp")


@pytest.fixture(scope="module")
def cpp_binary(tmp_path_factory) -> Path:
    """Builds the snippets the way the README tells a user to: its CMake snippet, its configure
    command (Ninja and ccache through CMake's environment variables)."""
    project = tmp_path_factory.mktemp("cpp_snippets")
    (project / "snippets.cpp").write_text(cpp_program(CPP), encoding="utf-8")
    cmake = "\n".join(s.code for s in _of("cmake"))
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(doc_snippets CXX)\n"
        "set(CMAKE_CXX_STANDARD 17)\nset(CMAKE_BUILD_TYPE Release)\n"
        "add_executable(my_trainer snippets.cpp)\n" + cmake,
        encoding="utf-8",
    )
    configure = [c for c in shell_commands(_of("bash", "sh")) if c.startswith("cmake -S . ")]
    assert len(configure) == 1, f"expected the README's one configure command, got {configure}"
    env = {}
    if shutil.which("ninja"):
        env["CMAKE_GENERATOR"] = "Ninja"
    if shutil.which("ccache"):
        env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    _run(configure[0], cwd=project, env=env, shell=True)
    _run(["cmake", "--build", "build", "-j", str(os.cpu_count() or 1)], cwd=project)
    return project / "build" / "my_trainer"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(CPP)), ids=[s.where for s in CPP])
def test_cpp_snippet(index: int, cpp_binary: Path, tmp_path: Path) -> None:
    _run([str(cpp_binary), str(index)], cwd=tmp_path, timeout=600)


# ------------------------------------------------------------------------------------- JSON


def test_json_snippets_parse() -> None:
    for s in _of("json"):
        try:
            json.loads(s.code)
        except json.JSONDecodeError as e:
            pytest.fail(f"{s.where}: {e}")


def test_int8_format_header_example_has_a_real_files_keys(tmp_path: Path) -> None:
    import eq8_file

    (example,) = [s for s in _of("json") if s.path.name == "int8-format.md"]
    shown = json.loads(example.code)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    qat = edgeqat.prepare_ptq(model, example_inputs=x)
    edgeqat.calibrate(qat, [x])
    edgeqat.export(qat.eval(), tmp_path / "m.eq8", example_inputs=x)
    header, _ = eq8_file.read(tmp_path / "m.eq8")
    assert set(shown) == set(header)
    for key in ("constants", "values", "nodes"):
        for entry in shown[key]:
            assert set(entry) == set(header[key][0]), f"{example.where}: {key} entry"


# ------------------------------------------------------------------------------------ shell


def shell_commands(snippets: list[Snippet]) -> list[str]:
    """The commands of shell snippets: continuation lines joined, comments dropped, ``&&``
    chains split."""
    commands = []
    for s in snippets:
        text = re.sub(r"\\\n\s*", " ", s.code)
        for line in text.splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def _ci_runs(command: str) -> str | None:
    ci = (REPO / ".ci/run").read_text()
    return None if re.search(rf"^{re.escape(command)}$", ci, re.M) else f".ci/run lacks {command!r}"


# Arguments appended to long runs (argparse: the last value wins) so the test is short.
SHORT = {
    "edgeqat.reproduce": [
        "--float-steps", "2", "--qat-steps", "4", "--batch", "8", "--calibration-batches", "1",
        "--train-limit", "256", "--test-limit", "64", "--no-plots",
    ],
    "benchmarks/fake_quant.py": ["--quick", "--sizes", "64K", "--min-run-time", "0.01"],
    "benchmarks/qat_step.py": [
        "--models", "mobilenet_v2", "--sizes", "28", "--batch", "2", "--steps", "1",
        "--warmup", "0", "--no-memory",
    ],
    "benchmarks/int8_runtime.py": [
        "--quick", "--models", "mobilenet_v2", "--sizes", "28", "--threads", "1",
        "--batches", "1", "--min-time", "0.01", "--min-runs", "1", "--warmup", "0",
    ],
    "train_qat": ["--float-steps", "4", "--qat-steps", "4", "--batch", "16"],
}  # fmt: skip


def run_command(command: str, cwd: Path) -> None:
    """Runs one documented shell command, or checks what covers it; unknown commands fail."""
    env_prefix = re.match(r"^((?:\w+=\S*\s+)*)(.*)$", command)
    env = dict(kv.split("=", 1) for kv in env_prefix.group(1).split())
    argv = shlex.split(env_prefix.group(2))
    if command in ("bash .ci/install-deps", "make test"):
        # CI runs these two, verbatim, in a clean clone: the suite cannot run itself.
        assert _ci_runs(command) is None, _ci_runs(command)
    elif "pip" in argv and argv[-2:] == ["-e", "."]:
        # `make build`'s editable install: the suite itself runs on it.
        installed = Path(edgeqat.__file__).resolve()
        assert installed.is_relative_to(REPO / "python"), f"edgeqat imported from {installed}"
    elif argv[0] == "make":
        # The target exists; its recipe (without the build prerequisite) is run in turn.
        skip_build = [] if argv[1:] == ["build"] else ["-o", "build"]
        dry_run = ["make", "-s", "-n", "--no-print-directory", *skip_build, *argv[1:]]
        recipe = _run(dry_run, cwd=REPO).stdout.splitlines()
        assert recipe, f"make {argv[1:]} has an empty recipe"
        for line in recipe:
            run_command(line.replace("python3 ", "python "), cwd)
    elif argv[:3] in (["python", "-m", "edgeqat.reproduce"],) or argv[:2] == [
        "edgeqat",
        "reproduce",
    ]:
        args = argv[3:] if argv[0] == "python" else argv[2:]
        extra = (
            []
            if "--help" in args
            else [*SHORT["edgeqat.reproduce"], "--out", tempfile.mkdtemp(dir=cwd)]
        )
        _run([sys.executable, "-m", "edgeqat.reproduce", *args, *extra], cwd=cwd, env=env)
    elif argv[0] == "python" and argv[1].startswith("benchmarks/"):
        _run([sys.executable, str(REPO / argv[1]), *argv[2:], *SHORT[argv[1]]], cwd=cwd, env=env)
    elif argv[0] == "cmake" or argv[0].startswith("examples/cpp/"):
        short = Path(argv[0]).name == "train_qat" and "--help" not in argv
        _run(f"{command} {shlex.join(SHORT['train_qat'])}" if short else command, cwd, shell=True)
    else:
        pytest.fail(f"no rule runs the documented command {command!r}; add one to test_docs.py")


SHELL = _of("bash", "sh")


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SHELL, ids=[s.where for s in SHELL])
def test_shell_snippet(snippet: Snippet, tmp_path: Path) -> None:
    """Commands run in a scratch folder holding a copy of examples/ (the C++ examples are built
    there, as their README says, from the repository root)."""
    shutil.copytree(
        REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("build")
    )
    if snippet.setup:
        _run(snippet.setup, cwd=tmp_path, shell=True)
    commands = shell_commands([snippet])
    assert commands, f"{snippet.where}: no command"
    for command in commands:
        if command.startswith("cmake -S . "):
            continue  # the README's consumer configure: run by the cpp_binary fixture
        run_command(command, tmp_path)
