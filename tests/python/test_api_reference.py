"""docs/api.md, the API reference, is generated from the docstrings by tools/api_reference.py.

The committed file must be what the generator writes now, every public object must have a
docstring (so it has an entry worth reading), and the generator must refuse an undocumented one.
The reference's doctest examples (``pycon`` blocks) run in test_docs.py with the other docs.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path

import pytest

import edgeqat
import edgeqat.data
import edgeqat.models
import edgeqat.nn
import edgeqat.reproduce
from edgeqat.reproduce import cli

REPO = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "api_reference", REPO / "tools" / "api_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api = _load_generator()


@pytest.fixture(scope="module")
def generated() -> str:
    return api.generate()


# -------------------------------------------------------------------------- up to date


def test_docs_api_md_is_up_to_date(generated: str) -> None:
    problem = api.check(expected=generated)
    assert problem is None, problem


def test_check_names_what_differs(generated: str, tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text(
        generated.replace("Fake-quantize `x` with one learnable range", "An older text"),
        encoding="utf-8",
    )
    problem = api.check(stale, expected=generated)
    assert problem is not None and "out of date" in problem
    assert "`edgeqat.fake_quant`" in problem  # the entry that changed
    assert "-An older text" in problem  # and the diff
    assert "does not exist" in api.check(tmp_path / "missing.md", expected=generated)


def test_check_command_line(capsys) -> None:
    assert api.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_output_is_deterministic_text(generated: str) -> None:
    # Nothing that changes between machines or runs: no checkout path, no object address.
    assert str(REPO) not in generated
    assert not re.search(r"\bat 0x[0-9a-f]+", generated)
    # Every fence has a language (test_docs.py runs them by language; api.md runs only pycon).
    openings = re.findall(r"^```(.*)$", generated, re.M)[::2]
    assert set(openings) == {"text", "pycon"}, set(openings)


def test_reference_lists_the_registered_ops(generated: str) -> None:
    for op in ("fake_quant_with_min_max_vars", "observe_fake_quant_", "histogram_range"):
        assert f"edgeqat::{op}(Tensor" in generated
    assert "### `edgeqat/runtime/model.h`" in generated  # the C++ headers, subfolders too


# ------------------------------------------------------------------- everything documented


def _public_objects():
    """(shown name, owner module, attribute name) of every public object."""
    for name in edgeqat.__all__:
        yield f"edgeqat.{name}", edgeqat, name
    for module in (edgeqat.nn, edgeqat.models, edgeqat.data):
        for name in module.__all__:
            yield f"{module.__name__}.{name}", module, name
    yield "edgeqat.reproduce.main", edgeqat.reproduce, "main"
    yield "edgeqat.reproduce.cli.console", cli, "console"


def _docstring(obj) -> str:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature a dataclass writes when it has no docstring
    return doc.strip()


def _public_methods(cls):
    """Public methods and properties of ``cls`` and of its edgeqat base classes (the generator
    documents those; ``extra_repr``, nn.Module's repr hook, excepted)."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("edgeqat"):
            continue
        for name, attr in vars(klass).items():
            if (name.startswith("_") and name != "__call__") or name == "extra_repr":
                continue
            if isinstance(attr, property):
                yield name, attr.fget
            elif isinstance(attr, (classmethod, staticmethod)):
                yield name, attr.__func__
            elif inspect.isfunction(attr):
                yield name, attr


def test_every_public_object_has_a_docstring() -> None:
    missing = []
    for shown, module, name in _public_objects():
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            if not _docstring(obj):
                missing.append(shown)
        elif not api.data_comment(module, name):  # data: a #: comment above the assignment
            missing.append(f"{shown} (no #: comment)")
        if inspect.isclass(obj):
            missing += [f"{shown}.{m}" for m, fn in _public_methods(obj) if not _docstring(fn)]
    assert not missing, f"undocumented public objects: {missing}"


def test_every_public_object_has_an_entry(generated: str) -> None:
    absent = []
    for shown, _, name in _public_objects():
        entries = (f"#### `{shown}`", f"#### `edgeqat.{name}`")
        if not any(entry in generated for entry in entries):
            absent.append(shown)
    assert not absent, f"not in docs/api.md: {absent}"


# ------------------------------------------------------------- undocumented objects refused


def _fake_module() -> types.ModuleType:
    fake = types.ModuleType("fake_api", "A module for the test.")

    def documented(x: int = 1) -> int:
        """Has a docstring."""
        return x

    def undocumented():
        return None

    class Thing:
        """A documented class with an undocumented method."""

        def method(self):
            return None

    for obj in (documented, undocumented, Thing):
        obj.__module__ = "fake_api"
    fake.documented, fake.undocumented, fake.Thing, fake.LIMIT = documented, undocumented, Thing, 3
    fake.__all__ = ["documented", "undocumented", "Thing", "LIMIT"]
    return fake


def test_generator_refuses_undocumented_objects() -> None:
    with pytest.raises(api.UndocumentedError) as err:
        api.render_python_module(_fake_module())
    message = str(err.value)
    for name in ("fake_api.undocumented", "fake_api.Thing.method", "fake_api.LIMIT"):
        assert name in message
    assert "fake_api.documented" not in message


def test_command_line_fails_on_undocumented_objects(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "fake_api", _fake_module())
    monkeypatch.setattr(api, "PYTHON_SECTIONS", [*api.PYTHON_SECTIONS, ("fake_api", "a", None)])
    assert api.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "no docstring" in err and "fake_api.undocumented" in err


def test_documented_module_renders() -> None:
    fake = _fake_module()
    text = api.render_python_module(fake, "documented only", ["documented"])
    assert "#### `fake_api.documented`" in text
    assert "fake_api.documented(x: int = 1) -> int" in text
