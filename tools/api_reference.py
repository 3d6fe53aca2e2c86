"""Generate docs/api.md, edgeqat's API reference, from the docstrings and the C++ headers.

    python tools/api_reference.py           # rewrite docs/api.md
    python tools/api_reference.py --check   # exit 1, naming what differs, if docs/api.md is stale

Python: one section per module (its public names, in source order): signature, docstring (RST
roles turned into Markdown code, Google-style ``Args:`` / ``Raises:`` / ``Attributes:`` items as
lists, ``Example:`` sections as ``pycon`` fences, which the docs test runs with doctest), and for
classes their public methods and properties. Data (constants, type aliases) is documented by
``#:`` comments above its assignment, as Sphinx reads them. Then the schemas of the ops
registered in ``torch.ops.edgeqat``. C++: per public header, its leading comment and its
documented declarations (the comment lines directly above a declaration).

A public object without a docstring is an error (UndocumentedError), so the reference cannot
silently miss one. The output is deterministic: no addresses, dates or absolute paths.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import enum
import functools
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "api.md"
INCLUDE = REPO / "csrc" / "include"  # headers are documented by their include path

# (module, title, names): names None means the module's __all__. The package section
# ("edgeqat") holds the names of edgeqat.__all__ that no other section documents.
PYTHON_SECTIONS = [
    ("edgeqat", "the package", None),
    ("edgeqat.ops", "fake-quant ops", None),
    ("edgeqat.config", "configuration", None),
    ("edgeqat.quantizer", "the fake quantizer", None),
    ("edgeqat.prepare", "preparing a float model", None),
    ("edgeqat.controls", "QAT phase controls", None),
    ("edgeqat.schedule", "QAT phase schedule", None),
    ("edgeqat.export", "export to the int8 model file", None),
    ("edgeqat.int8_model", "the int8 runtime", None),
    ("edgeqat.onnx_export", "export to ONNX", None),
    ("edgeqat.nn", "quantized modules", None),
    ("edgeqat.models", "float models", None),
    ("edgeqat.data", "datasets", None),
    ("edgeqat.reproduce", "the reproduce command", ["main", "cli.console"]),
]

# nn.Module's repr hook: overridden by most modules, not part of their API.
SKIPPED_METHODS = {"extra_repr"}

SIGNATURE_WIDTH = 100  # longer signatures get one parameter per line


class UndocumentedError(Exception):
    """Public objects without a docstring; the message names each one."""


# ----------------------------------------------------------------------------- docstrings

_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):`(~?)([^`]+)`")
_SECTION = re.compile(r"^(Args|Arguments|Attributes|Raises|Returns|Yields|Examples?):\s*$")
_ITEM = re.compile(r"^([\w*]+(?:,\s*[\w*]+)*):\s+(.*)$")  # "name: text", "min, max: text"


def _inline(text: str) -> str:
    """RST inline markup to Markdown: roles and ``literals`` become `code`."""

    def role(m: re.Match) -> str:
        target = m.group(2).lstrip(".")
        return f"`{target.rsplit('.', 1)[-1] if m.group(1) else target}`"

    return re.sub(r"``(.+?)``", r"`\1`", _ROLE.sub(role, text))


def _section_items(body: list[str]) -> list[str]:
    """The items of an Args-style section: a line at the section's indent that reads
    ``name: text`` starts an item, anything else continues the current one."""
    items: list[str] = []
    for line in body:
        if not line.strip():
            continue
        if not items or (not line.startswith(" ") and _ITEM.match(line)):
            items.append(line.strip())
        else:
            items[-1] += " " + line.strip()
    out = []
    for item in items:
        m = _ITEM.match(item)
        out.append(f"- `{m.group(1)}`: {_inline(m.group(2))}" if m else f"- {_inline(item)}")
    return out


def render_docstring(doc: str) -> list[str]:
    """A docstring as Markdown lines."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        if not m:
            out.append(_inline(lines[i]).rstrip())
            i += 1
            continue
        # The section's body: the indented lines after it (blank lines inside included).
        j = i + 1
        while j < len(lines) and (
            lines[j].startswith(" ")
            or (not lines[j].strip() and j + 1 < len(lines) and lines[j + 1].startswith(" "))
        ):
            j += 1
        body = textwrap.dedent("\n".join(lines[i + 1 : j])).splitlines()
        name = m.group(1)
        if out and out[-1]:
            out.append("")
        if name.startswith("Example") and any(ln.startswith(">>>") for ln in body):
            # Run by the docs test (doctest), so the examples must pass.
            out += [f"**{name}:**", "", "```pycon", *(ln.rstrip() for ln in body), "```"]
        elif name in ("Returns", "Yields") or name.startswith("Example"):
            out += [f"**{name}:** " + _inline(" ".join(ln.strip() for ln in body if ln.strip()))]
        else:
            out += [f"**{name}:**", "", *_section_items(body)]
        if j < len(lines):
            out.append("")
        i = j
    return out


# ------------------------------------------------------------------------------ signatures


def _annotation(annotation) -> str:
    # The package uses `from __future__ import annotations`: annotations are source strings.
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _default(value) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    text = repr(value)
    if re.search(r"0x[0-9a-fA-F]{6,}", text):  # an address would change on every run
        raise ValueError(f"default value {text} has a memory address in its repr")
    return text


def _parameters(sig: inspect.Signature, drop_first: bool) -> list[str]:
    params = list(sig.parameters.values())[1 if drop_first else 0 :]
    out: list[str] = []
    star_done = False
    for k, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            out.append("*")
            star_done = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        star_done = star_done or p.kind is p.VAR_POSITIONAL
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + _default(p.default)
        out.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            k + 1 == len(params) or params[k + 1].kind is not p.POSITIONAL_ONLY
        ):
            out.append("/")
    return out


def format_signature(prefix: str, obj, drop_first: bool = False, returns: bool = True) -> str:
    """``prefix(params) -> return``, one parameter per line when it does not fit a line."""
    sig = inspect.signature(obj)
    params = _parameters(sig, drop_first)
    tail = ""
    if returns and sig.return_annotation is not sig.empty:
        tail = f" -> {_annotation(sig.return_annotation)}"
    one_line = f"{prefix}({', '.join(params)}){tail}"
    if len(one_line) <= SIGNATURE_WIDTH:
        return one_line
    return prefix + "(\n" + "".join(f"    {p},\n" for p in params) + ")" + tail


# ------------------------------------------------------------------------------ Python API


def data_comment(module, name: str) -> str | None:
    """The ``#:`` comment above ``name``'s assignment in ``module``'s source, or None."""
    found = _data_assignment(module, name)
    return found[0] if found else None


def _data_assignment(module, name: str) -> tuple[str, int, str] | None:
    """(``#:`` comment, line, ``: annotation = value`` as shown) of ``name``'s top-level
    assignment in ``module``'s source, or None."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    lines = source.splitlines()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        comment, k = [], node.lineno - 2
        while k >= 0 and lines[k].lstrip().startswith("#:"):
            comment.insert(0, lines[k].lstrip()[2:])
            k -= 1
        text = textwrap.dedent("\n".join(c[1:] if c.startswith(" ") else c for c in comment))
        shown = ""
        if isinstance(node, ast.AnnAssign):
            shown = ": " + ast.get_source_segment(source, node.annotation)
        # Literal values (numbers, strings, Literal[...] aliases) are shown; computed ones (an
        # installation path, a version read from the native library) are not.
        if isinstance(node.value, (ast.Constant, ast.Subscript)):
            shown += " = " + ast.get_source_segment(source, node.value)
        return text.strip(), node.lineno, shown
    return None


def _resolve(module, dotted: str):
    obj, owner = module, module
    for part in dotted.split("."):
        owner, obj = obj, getattr(obj, part)
    return owner, obj


def _is_data(obj) -> bool:
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def _source_key(owner, name: str, obj) -> tuple[str, int]:
    """(file, line) of a definition, for source order."""
    if _is_data(obj):
        found = _data_assignment(owner, name)
        return (getattr(owner, "__file__", "") or "", found[1] if found else 0)
    try:
        return (inspect.getsourcefile(obj) or "", inspect.getsourcelines(obj)[1])
    except (OSError, TypeError):
        return ("", 0)


def _public_name(section_module: str, name: str, obj) -> str:
    import edgeqat

    short = name.rsplit(".", 1)[-1]
    if name == short and not _is_data(obj) and getattr(edgeqat, short, None) is obj:
        return f"edgeqat.{short}"  # exported at the top level: the name users write
    return f"{section_module}.{name}"


def _bases(cls) -> list[str]:
    """Public base classes; private ones (leading underscore, private module) are replaced by
    theirs, ``object`` dropped."""
    out: list[str] = []
    for base in cls.__bases__:
        module = base.__module__
        if base is object:
            continue
        if base.__name__.startswith("_") or any(p.startswith("_") for p in module.split(".")):
            out += [b for b in _bases(base) if b not in out]
            continue
        if module.startswith("torch.nn.modules."):
            module = "torch.nn"  # torch.nn.modules.module.Module -> torch.nn.Module
        name = base.__qualname__ if module == "builtins" else f"{module}.{base.__qualname__}"
        out.append(name)
    return out


def public_members(cls) -> list[tuple[str, object]]:
    """(name, attribute) of the public methods and properties of ``cls``: its own and those it
    inherits from classes of its own package (edgeqat), own ones first, in source order."""
    package = cls.__module__.split(".")[0]
    found: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != package:
            continue  # torch.nn.Module, Enum, int, object: documented elsewhere
        for name, attr in vars(klass).items():
            public = not name.startswith("_") or name == "__call__"
            if name in found or not public or name in SKIPPED_METHODS:
                continue
            if isinstance(attr, (property, classmethod, staticmethod)) or inspect.isfunction(attr):
                found[name] = attr
    return sorted(found.items(), key=lambda item: _member_key(cls, item[1]))


def _function_of(attr):
    if isinstance(attr, property):
        return attr.fget
    return attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr


def _member_key(cls, attr) -> tuple[int, int]:
    """Own members first, then those of each base in MRO order; in source order within each."""
    fn = _function_of(attr)
    owner = next(
        k for k, c in enumerate(cls.__mro__) if fn.__qualname__.rsplit(".", 1)[0] == c.__qualname__
    )
    return (owner, inspect.getsourcelines(fn)[1])


def _own_doc(obj) -> str:
    """The object's own docstring (not one inherited from a base class, as inspect.getdoc
    would give)."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


class _Writer:
    """Collects the Markdown lines and the names of undocumented objects."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.undocumented: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def doc(self, name: str, doc: str | None) -> None:
        if not doc or not doc.strip():
            self.undocumented.append(name)
            return
        self.add(*render_docstring(doc), "")

    def fence(self, lang: str, text: str) -> None:
        self.add(f"```{lang}", *text.rstrip("\n").splitlines(), "```", "")


def _document_class(w: _Writer, display: str, cls) -> None:
    if issubclass(cls, enum.Enum):
        w.fence("text", f"class {display}")
    else:
        try:
            w.fence("text", format_signature(f"class {display}", cls, returns=False))
        except ValueError:  # no Python-level signature (exceptions): the bare class
            w.fence("text", f"class {display}")
    bases = _bases(cls)
    if bases:
        w.add("Bases: " + ", ".join(f"`{b}`" for b in bases), "")
    w.doc(display, _own_doc(cls))
    if issubclass(cls, enum.Enum):
        w.add("Members: " + ", ".join(f"`{m.name} = {m.value!r}`" for m in cls), "")
    short = cls.__name__
    for name, attr in public_members(cls):
        fn = _function_of(attr)
        w.add(f"##### `{short}.{name}`", "")
        if isinstance(attr, property):
            sig = inspect.signature(fn)
            kind = "property" if attr.fset is None else "property (settable)"
            ann = sig.return_annotation
            shown = "" if ann is sig.empty else f": {_annotation(ann)}"
            w.fence("text", f"{kind} {short}.{name}{shown}")
        else:
            prefix = {classmethod: "classmethod ", staticmethod: "staticmethod "}.get(
                type(attr), ""
            )
            # The first parameter (self / cls) is not shown; a staticmethod has none.
            drop_first = not isinstance(attr, staticmethod)
            w.fence("text", format_signature(f"{prefix}{short}.{name}", fn, drop_first))
        w.doc(f"{display}.{name}", _own_doc(fn))


def _document(w: _Writer, display: str, owner, name: str, obj) -> None:
    w.add(f"#### `{display}`", "")
    if inspect.isclass(obj):
        _document_class(w, display, obj)
    elif inspect.isroutine(obj):
        w.fence("text", format_signature(display, obj))
        w.doc(display, _own_doc(obj))
    else:
        found = _data_assignment(owner, name.rsplit(".", 1)[-1])
        w.fence("text", display + (found[2] if found else ""))
        w.doc(display, found[0] if found else None)


def python_section(w: _Writer, module, title: str, names: Iterable[str]) -> None:
    """One module's section: heading, the first paragraph of the module docstring, then each
    name in source order."""
    w.add(f"### `{module.__name__}`: {title}", "")
    summary = _own_doc(module).split("\n\n")[0]
    if summary:
        w.add(*render_docstring(summary), "")
    entries = []
    for name in names:
        owner, obj = _resolve(module, name)
        entries.append((_source_key(owner, name.rsplit(".", 1)[-1], obj), name, owner, obj))
    for _, name, owner, obj in sorted(entries, key=lambda e: (e[0], e[1])):
        _document(w, _public_name(module.__name__, name, obj), owner, name, obj)


def render_python_module(module, title: str = "", names: Iterable[str] | None = None) -> str:
    """The Markdown of one module's section; raises UndocumentedError naming every public
    object (of ``names``, default ``module.__all__``) that has no docstring."""
    w = _Writer()
    python_section(w, module, title or module.__name__, module.__all__ if names is None else names)
    _raise_undocumented(w)
    return "\n".join(w.lines)


def _raise_undocumented(w: _Writer) -> None:
    if w.undocumented:
        raise UndocumentedError(
            "these public objects have no docstring (or, for data, no #: comment above the "
            "assignment): " + ", ".join(w.undocumented)
        )


def _reproduce_usage(w: _Writer) -> None:
    from edgeqat.reproduce import cli

    parser = cli.build_parser(prog="python -m edgeqat.reproduce")
    # A fixed width: argparse otherwise wraps to the terminal's ($COLUMNS).
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=SIGNATURE_WIDTH)
    w.add(
        "Usage (`python -m edgeqat.reproduce --help`; the `edgeqat` console script runs the "
        "same command as `edgeqat reproduce`):",
        "",
    )
    w.fence("text", parser.format_help())


def registered_ops() -> list[str]:
    """The schemas of the ops registered in the ``edgeqat`` namespace of the dispatcher."""
    import torch

    import edgeqat  # noqa: F401  (registers the ops)

    # torch 2.13: _jit_get_all_schemas() lists every registered schema (the names alone are
    # in _dispatch_get_all_op_names()); the edgeqat ones are C++ (TORCH_LIBRARY) registrations.
    return sorted(str(s) for s in torch._C._jit_get_all_schemas() if s.name.startswith("edgeqat::"))


def _ops_section(w: _Writer) -> None:
    schemas = registered_ops()
    public = [s for s in schemas if not s.startswith("edgeqat::_")]
    internal = [s for s in schemas if s.startswith("edgeqat::_")]
    w.add(
        "### `torch.ops.edgeqat`: registered ops",
        "",
        "The C++ ops, registered with the PyTorch dispatcher by edgeqat's native library when "
        "`edgeqat` is imported; call them as `torch.ops.edgeqat.<name>`. The typed Python entry "
        "points are above, the C++ functions in `<edgeqat/ops.h>` below. Schemas, from "
        "`torch._C._jit_get_all_schemas()`:",
        "",
    )
    w.fence("text", "\n".join(public))
    if internal:
        w.add("Internal ops (the forward / backward halves the autograd formulas call; no API):")
        w.add("")
        w.fence("text", "\n".join(internal))


def python_api(w: _Writer) -> None:
    import edgeqat

    modules = {name: importlib.import_module(name) for name, _, _ in PYTHON_SECTIONS}
    # The top-level names each section documents (as the same object).
    covered = set()
    for name, _, names in PYTHON_SECTIONS[1:]:
        for n in modules[name].__all__ if names is None else names:
            obj = _resolve(modules[name], n)[1]
            if not _is_data(obj):  # data is told apart by name, not identity (interned values)
                covered |= {k for k in edgeqat.__all__ if getattr(edgeqat, k) is obj}
    for name, title, names in PYTHON_SECTIONS:
        if name == "edgeqat":
            names = [n for n in edgeqat.__all__ if n not in covered]
        elif names is None:
            names = modules[name].__all__
        python_section(w, modules[name], title, names)
        if name == "edgeqat.ops":
            _ops_section(w)
        if name == "edgeqat.reproduce":
            _reproduce_usage(w)


# --------------------------------------------------------------------------------- C++ API
#
# The headers are commented in one style: a leading comment block describing the header, then
# `//` comment blocks directly above the declarations they describe (a block documents the
# declarations that follow it up to the next blank or comment line, e.g. a setter and its
# getter). Nothing else (no Doxygen), so a small line-based reader suffices: it splits the file
# into statements, skips function bodies by brace counting, descends into namespaces and
# classes, and keeps the documented declarations, shown as the header has them minus inline
# bodies. A class that is documented (or has documented members) is shown with all its public
# members, the way a reader needs it; private members, `namespace detail` and undocumented
# declarations at namespace scope (forward declarations, uncommented helpers) are left out.


def _code(line: str) -> str:
    """A line without its `//` comment (the headers have no `//` inside string literals)."""
    i = line.find("//")
    return line if i < 0 else line[:i]


def _braces(text: str) -> int:
    return text.count("{") - text.count("}")


class _Decl:
    def __init__(self, lines: list[str], kind: str, children=None, body=None) -> None:
        self.lines = lines  # the statement, as written
        self.kind = kind  # "stmt", "function", "class", "namespace" or "block"
        self.children = children or []  # class / namespace: their items
        self.body = body or []  # block (enum, initializer): the lines up to the closing one


def _kind(text: str) -> str:
    head = re.sub(r"^template\s*<[^>]*>\s*", "", text.strip())
    if re.match(r"(class|struct|union)\b", head):
        return "class"
    if re.match(r"namespace\b", head):
        return "namespace"
    if re.match(r"enum\b", head) or "(" not in head.split("{")[0]:
        return "block"
    return "function"


def _parse_scope(lines: list[str], i: int) -> tuple[list, int]:
    """Items of the scope starting at line ``i`` up to its closing ``}``: ("blank",),
    ("comment", lines), ("access", word) and ("decl", _Decl)."""
    items: list = []
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            items.append(("blank",))
            i += 1
        elif stripped.startswith("//"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("//"):
                j += 1
            items.append(("comment", lines[i:j]))
            i = j
        elif stripped.startswith("}"):
            return items, i + 1
        elif re.match(r"(public|private|protected)\s*:", stripped):
            items.append(("access", stripped.split(":")[0].strip()))
            i += 1
        else:
            # A statement ends on a line ending in ; { or } with its parentheses closed.
            j, text = i, ""
            while j < len(lines):
                code = _code(lines[j]).rstrip()
                text += code + "\n"
                j += 1
                if text.count("(") == text.count(")") and code.endswith((";", "{", "}")):
                    break
            decl_lines = lines[i:j]
            if _braces(text) <= 0:
                items.append(("decl", _Decl(decl_lines, "stmt")))
                i = j
                continue
            kind = _kind(text)
            if kind in ("class", "namespace"):
                children, i = _parse_scope(lines, j)
                items.append(("decl", _Decl(decl_lines, kind, children=children)))
                continue
            depth, k = _braces(text), j  # skip a body / collect a block by counting braces
            while depth > 0 and k < len(lines):
                depth += _braces(_code(lines[k]))
                k += 1
            items.append(("decl", _Decl(decl_lines, kind, body=lines[j:k])))
            i = k
    return items, i


def _trailing_comment(line: str) -> str:
    i = line.find("//")
    comment = line[i:].strip() if i >= 0 else ""
    return "" if not comment or comment.startswith("// NOLINT") else "  " + comment


def _declaration(decl: _Decl) -> list[str]:
    """A non-class declaration as shown: inline function bodies dropped."""
    if decl.kind == "block":
        return decl.lines + decl.body
    lines = [ln.rstrip() for ln in decl.lines]
    last = _code(lines[-1]).rstrip()
    if decl.kind == "function":  # `... {` then a body on the next lines
        cut = last[: last.rfind("{")]
    elif last.endswith("}") and "(" in "".join(decl.lines):  # a one-line body `{ ... }`
        depth, k = 0, len(last) - 1
        while k >= 0:
            depth += {"}": 1, "{": -1}.get(last[k], 0)
            if depth == 0:
                break
            k -= 1
        cut = last[:k]
    else:  # as written, lint markers dropped
        return [_code(ln).rstrip() if "// NOLINT" in ln else ln for ln in lines]
    text = "\n".join([*lines[:-1], cut]).rstrip()
    text = re.sub(r"\)\s*:\s[\s\S]*$", ")", text)  # a constructor's member initializers
    out = text.splitlines()
    out[-1] += ";" + _trailing_comment(lines[-1])
    return out


def _is_note(comment: list[str]) -> bool:
    """A free-standing comment worth keeping: at least two lines of text besides rulers
    (``// ----``) and a lone title between them."""
    text = [c for c in comment if not re.match(r"\s*//\s*(-{3,}|={3,})", c)]
    return len([c for c in text if c.strip("/ ")]) >= 2


def _render_items(items: list, public: bool) -> list[list[str]]:
    """The documented public declarations of a namespace scope, as blocks of lines."""
    blocks: list[list[str]] = []
    k = 0
    while k < len(items):
        item = items[k]
        if item[0] == "access":
            public = item[1] == "public"
            k += 1
            continue
        if item[0] == "comment":
            nxt = items[k + 1] if k + 1 < len(items) else ("blank",)
            if nxt[0] != "decl":
                if public and _is_note(item[1]):
                    blocks.append(list(item[1]))
                k += 1
                continue
            # A documented group: the comment and the declarations right after it.
            block, k = list(item[1]), k + 1
            while k < len(items) and items[k][0] == "decl":
                block += _render_decl(items[k][1], documented=True)
                k += 1
            if public:
                blocks.append(block)
            continue
        if item[0] == "decl" and public:
            # Undocumented: shown only for what it holds (a namespace, or a class with
            # documented members).
            inner = _render_decl(item[1], documented=False)
            if inner:
                blocks.append(inner)
        k += 1
    return blocks


def _class_members(items: list, public: bool) -> tuple[list[str], bool]:
    """A class's public members, all of them (a documented class is shown whole, minus
    private members and inline bodies), with their comments and blank-line grouping; and
    whether any of them is documented."""
    out: list[str] = []
    documented = False
    for k, item in enumerate(items):
        if item[0] == "access":
            public = item[1] == "public"
        elif not public:
            continue
        elif item[0] == "blank":
            if out and out[-1]:
                out.append("")
        elif item[0] == "comment":
            attached = k + 1 < len(items) and items[k + 1][0] == "decl"
            if attached or _is_note(item[1]):
                out += item[1]
                documented = True
        else:
            out += _render_decl(item[1], documented=True)
    while out and not out[-1]:
        out.pop()
    return out, documented


def _render_decl(decl: _Decl, documented: bool) -> list[str]:
    if decl.kind == "namespace":
        name = _code(decl.lines[0]).split()[1] if len(decl.lines[0].split()) > 2 else ""
        if name == "detail":
            return []  # implementation details
        inner = _join_blocks(_render_items(decl.children, public=True))
        return [decl.lines[0].rstrip(), "", *inner, "", "}  // namespace " + name] if inner else []
    if decl.kind == "class":
        is_struct = re.search(r"\b(struct|union)\b", _code(decl.lines[0]) + _code(decl.lines[-1]))
        members, has_docs = _class_members(decl.children, public=bool(is_struct))
        if not (documented or has_docs):
            return []
        head = [ln.rstrip() for ln in decl.lines]
        indent = re.match(r"\s*", head[-1]).group(0)
        if not members:
            return [*head[:-1], head[-1] + " ... };"]
        access = [] if is_struct else [f"{indent} public:"]  # only public members are shown
        return [*head, *access, *members, f"{indent}}};"]
    return _declaration(decl) if documented else []


def _join_blocks(blocks: list[list[str]]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if out:
            out.append("")
        out += block
    return out


def header_reference(path: Path) -> tuple[str, list[str], str]:
    """(leading comment, edgeqat includes, documented declarations) of a header."""
    lines = path.read_text(encoding="utf-8").splitlines()
    k = 0
    while k < len(lines) and lines[k].startswith("//"):
        k += 1
    leading = "\n".join(re.sub(r"^// ?", "", ln) for ln in lines[:k])
    includes = re.findall(r'^#include "(edgeqat/[^"]+)"', "\n".join(lines), re.M)
    items, _ = _parse_scope(lines, k)
    body = _join_blocks(_render_items(items, public=True))
    return leading, includes, "\n".join(body)


def public_headers() -> list[Path]:
    headers = (INCLUDE / "edgeqat").rglob("*.h")
    # Top-level headers first (the umbrella edgeqat.h, ops.h), then nn/, then runtime/.
    return sorted(headers, key=lambda p: (len(p.relative_to(INCLUDE).parts), str(p)))


def cpp_api(w: _Writer) -> None:
    w.add(
        "## C++ API",
        "",
        "The public headers, under `csrc/include/` in the repository (installed with the "
        "package: `edgeqat.cmake_prefix_path`). For each: its leading comment, then its "
        "documented declarations as the header has them (inline bodies, private members and "
        "`namespace detail` left out).",
        "",
    )
    for path in public_headers():
        include = path.relative_to(INCLUDE).as_posix()
        leading, includes, body = header_reference(path)
        w.add(f"### `{include}`", "", f"`#include <{include}>` (`csrc/include/{include}`)", "")
        if leading:
            w.fence("text", leading)
        if includes:
            w.add("Includes: " + ", ".join(f"`<{i}>`" for i in includes) + ".", "")
        if body:
            w.fence("text", body)


# ---------------------------------------------------------------------------- the document


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def generate() -> str:
    """The text of docs/api.md; raises UndocumentedError if a public object has no docstring."""
    w = _Writer()
    w.add(
        "## Python API",
        "",
        "One section per module. The examples (`pycon` blocks) run as doctests, in order, with "
        "`torch` and `edgeqat` imported.",
        "",
    )
    python_api(w)
    cpp_api(w)
    _raise_undocumented(w)
    contents = []
    for line in w.lines:
        m = re.match(r"(##|###) (.*)$", line)
        if m:
            indent = "  " if m.group(1) == "###" else ""
            contents.append(f"{indent}- [{m.group(2)}](#{_anchor(m.group(2))})")
    head = [
        "# edgeqat API reference",
        "",
        "Generated by `python tools/api_reference.py` from the docstrings and the C++ headers: "
        "do not edit by hand. Edit the docstrings / header comments and rerun it "
        "(tests/python/test_api_reference.py fails while this file is out of date).",
        "",
        "## Contents",
        "",
        *contents,
        "",
    ]
    text = "\n".join(head + w.lines).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def check(path: Path = OUTPUT, expected: str | None = None) -> str | None:
    """None if ``path`` holds what generate() writes (or ``expected``), else a message naming
    the sections that differ, with a diff."""
    expected = generate() if expected is None else expected
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == expected:
        return None
    if not current:
        return f"{_shown(path)} does not exist: run python tools/api_reference.py"
    old, new = current.splitlines(), expected.splitlines()
    headings: list[str] = []
    changed = set()
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, _, _, j1, _ in matcher.get_opcodes():
        if tag == "equal":
            continue
        # The heading the change sits under, in the expected text.
        heading = next(
            (ln for ln in reversed(new[: j1 + 1]) if ln.startswith("#")), "(top of the file)"
        )
        if heading not in changed:
            changed.add(heading)
            headings.append(heading.lstrip("# "))
    diff = list(
        difflib.unified_diff(old, new, f"{_shown(path)} (now)", "generated", n=1, lineterm="")
    )
    shown = "\n".join(diff[:80]) + ("\n..." if len(diff) > 80 else "")
    return (
        f"{_shown(path)} is out of date (run python tools/api_reference.py); "
        f"changed under: {'; '.join(headings)}\n{shown}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/api.md is not what would be written"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            problem = check()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            print(f"{OUTPUT.relative_to(REPO)} is up to date")
            return 0
        OUTPUT.write_text(generate(), encoding="utf-8")
    except UndocumentedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
