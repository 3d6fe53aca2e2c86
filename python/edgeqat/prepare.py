"""prepare_qat / prepare_ptq / calibrate: put edgeqat's modules into an unmodified float model.

The model is traced with ``torch.fx`` (symbolic tracing, so ``forward`` must not branch on
tensor values). Then, on the traced graph:

1. conv -> batch norm (-> ReLU / ReLU6) chains become :class:`~edgeqat.ConvBn2d`; other
   ``Conv2d`` / ``Linear`` layers become :class:`~edgeqat.QuantConv2d` /
   :class:`~edgeqat.QuantLinear`; tensor + tensor adds (``+``, ``+=``, ``torch.add``) become
   :class:`~edgeqat.QuantAdd`, with a following ReLU / ReLU6 fused into it.
2. An :class:`~edgeqat.ActQuant` goes wherever the int8 graph has a tensor with parameters of
   its own: the model inputs and the outputs of conv, linear and concat (after the ReLU /
   ReLU6 that follows them, which the int8 op applies as a clamp before its output
   quantization).
3. Ops whose int8 output keeps its input's parameters (TFLite spec) get none: max pooling,
   flatten / reshape / view, dropout, identity, a ReLU that is not fused (all of these leave
   values on the input's grid), and average pooling, global included, whose output is rounded
   to the input's grid by a :class:`~edgeqat.nn.SharedActQuant` (same range, no observer).
4. Every conv / linear layer is linked to the :class:`~edgeqat.ActQuant` whose grid its input
   lies on (through the ops of 3), whose scale the int8 model's int32 bias uses
   (``set_input_quantizer``; the layer simulates that bias, ``QConfig.quantize_bias``).

Anything else (a standalone batch norm, sigmoid, multiplication, ...) is an error that names
every such op and where it is in the model's source, or, with ``unsupported="float"``, stays in
float and gets an :class:`~edgeqat.ActQuant` on its output (the int8 graph dequantizes before it
and quantizes after it).
"""

from __future__ import annotations

import copy
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .config import QConfig
from .controls import freeze_bn, freeze_observers
from .nn import ActQuant, ConvBn2d, QuantAdd, QuantConv2d, QuantLinear, SharedActQuant
from .nn._common import resolve_config
from .quantizer import FakeQuantizer, Mode
from .schedule import attach_schedule

__all__ = ["UnsupportedOpError", "calibrate", "prepare_ptq", "prepare_qat"]

Unsupported = Literal["error", "float"]


class UnsupportedOpError(RuntimeError):
    """The model has ops that edgeqat cannot quantize; the message names each one."""


# -- what each op is ------------------------------------------------------------------------------

_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_CAT_FUNCTIONS = {torch.cat, torch.concat}
# Ops that only move, select or clip values: the output is on the input's grid.
_PASS_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity, nn.ReLU, nn.ReLU6)
_PASS_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    F.dropout,
    F.max_pool2d,
    torch.max_pool2d,
    *_RELU_FUNCTIONS,
}
_PASS_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "relu"}
# Average pooling: the int8 op divides with rounding on the input's grid.
_POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_POOL_FUNCTIONS = {F.avg_pool2d, F.adaptive_avg_pool2d}
_EDGEQAT_MODULES = (ActQuant, SharedActQuant, ConvBn2d, QuantAdd, QuantConv2d, QuantLinear)


def _is_tensor(node: Any) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _activation_of(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """'relu' / 'relu6' if ``node`` is a ReLU / ReLU6 applied to its first argument."""
    module = _module(gm, node)
    if module is not None:
        if isinstance(module, nn.ReLU6):
            return "relu6"
        if isinstance(module, nn.ReLU):
            return "relu"
        return None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return _RELU_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target == "relu":
        return "relu"
    return None


def _is_spatial_mean(node: fx.Node) -> bool:
    """``x.mean((2, 3))`` / ``torch.mean(x, [-2, -1], keepdim)`` on a 4-D tensor: global
    average pooling written by hand."""
    is_mean = (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    )
    if not is_mean or not _is_tensor(node.args[0]):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if not isinstance(dims, (list, tuple)):
        return False
    rank = len(node.args[0].meta["tensor_meta"].shape)
    return rank == 4 and sorted(d % 4 for d in dims) == [2, 3]


def _is_pass_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = _module(gm, node)
    if module is not None:
        return isinstance(module, _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    return node.op == "call_method" and node.target in _PASS_METHODS


def _is_average_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = _module(gm, node)
    if module is not None:
        return isinstance(module, _POOL_MODULES)
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        return True
    return _is_spatial_mean(node)


def _is_tensor_add(node: fx.Node) -> bool:
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if not is_add or node.kwargs.get("alpha", 1) != 1 or len(node.args) != 2:
        return False
    return all(_is_tensor(a) for a in node.args)


def _is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CAT_FUNCTIONS


# -- where a node is, for messages and names -------------------------------------------------------


def _owner_path(node: fx.Node) -> str:
    """Dotted path of the innermost module whose forward created ``node`` ('' for the root)."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _source_line(node: fx.Node) -> str:
    """'file.py:123 in forward: out += identity', the user's line that made ``node``."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', node.stack_trace or "")
    for path, line, func, code in reversed(frames):
        if "/torch/" not in path:
            return f"{path}:{line} in {func}: {code.strip()}"
    return ""


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    module = _module(gm, node)
    if module is not None:
        what = f"module '{node.target}' ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            what += (
                " (batch norm is quantized only folded into the Conv2d right before it, when "
                "that conv's output goes to it alone and each is called once)"
            )
    else:
        target = node.target if isinstance(node.target, str) else _qualified(node.target)
        kind = "method" if node.op == "call_method" else "function"
        owner = _owner_path(node)
        place = f"module {owner!r}" if owner else "the model"
        what = f"{kind} {target} (node '{node.name}' in {place})"
    where = _source_line(node)
    return f"{what}{', at ' + where if where else ''}"


def _qualified(fn: Callable) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}.{name}" if module and module != "_operator" else f"operator.{name}"


def _leaf_name(node: fx.Node) -> str:
    """The name a new module made for ``node`` starts from: a module's attribute name, else the
    node's name (``add``, ``cat``, ``sigmoid``)."""
    return node.target.rpartition(".")[2] if node.op == "call_module" else node.name


def _new_module_path(gm: fx.GraphModule, parent: str, name: str) -> str:
    """A free attribute path ``parent.name`` (``name_1``, ``name_2``, ... if taken); a
    graph-wide counter suffix of a node name (``add_7``) is dropped first."""
    name = re.sub(r"_\d+$", "", name)
    base = f"{parent}.{name}" if parent else name
    path, i = base, 0
    while True:
        try:
            gm.get_submodule(path)
        except AttributeError:
            return path
        i += 1
        path = f"{base}_{i}"


def _set_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


# -- the passes ---------------------------------------------------------------------------------


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as err:  # torch.fx raises TraceError, TypeError, ... with its own text
        raise RuntimeError(
            f"edgeqat could not trace {type(model).__name__} with torch.fx ({err}); the model's "
            "forward must not branch on tensor values or use unsupported Python constructs"
        ) from err
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _shapes(inputs: tuple) -> str:
    return ", ".join(
        str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__ for x in inputs
    )


def _propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    """Run the float model once in eval mode, no grad, to record each node's tensor metadata
    (which nodes are tensors, their ranks). Restores every module's train/eval flag."""
    modes = {m: m.training for m in gm.modules()}
    try:
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as err:
        raise RuntimeError(
            f"the model failed on example_inputs ({_shapes(example_inputs)}): {err}"
        ) from err
    finally:
        for m, training in modes.items():
            m.train(training)


def _module_calls(gm: fx.GraphModule) -> Counter:
    return Counter(n.target for n in gm.graph.nodes if n.op == "call_module")


def _fuse_conv_bn(gm: fx.GraphModule, config: QConfig) -> None:
    """conv -> bn (-> relu / relu6) chains, where each link's output has one user, become one
    ConvBn2d at the conv's path. A conv or batch norm called more than once (shared weights)
    is not fused: one ConvBn2d cannot stand for two calls; such a batch norm is reported as
    unsupported."""
    calls = _module_calls(gm)
    for node in list(gm.graph.nodes):
        conv = _module(gm, node)
        if type(conv) is not nn.Conv2d or len(node.users) != 1 or calls[node.target] != 1:
            continue
        bn_node = next(iter(node.users))
        bn = _module(gm, bn_node)
        if (
            type(bn) is not nn.BatchNorm2d
            or calls[bn_node.target] != 1
            or bn_node.args[0] is not node
            or len(bn_node.args) != 1
        ):
            continue
        last, activation = bn_node, None
        if len(bn_node.users) == 1:
            act_node = next(iter(bn_node.users))
            activation = _activation_of(gm, act_node)
            if activation is not None and act_node.args[0] is bn_node:
                last = act_node
            else:
                activation = None
        try:
            fused = ConvBn2d.from_float(conv, bn, activation=activation, config=config)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"cannot fuse {_describe(gm, node)} with its batch norm: {err}"
            ) from err
        _set_module(gm, node.target, fused)
        last.replace_all_uses_with(node)
        for dead in [last, bn_node] if last is not bn_node else [bn_node]:
            gm.graph.erase_node(dead)


def _swap_conv_linear(gm: fx.GraphModule, config: QConfig) -> None:
    for node in gm.graph.nodes:
        module = _module(gm, node)
        if type(module) is nn.Conv2d:
            try:
                _set_module(gm, node.target, QuantConv2d.from_float(module, config))
            except ValueError as err:
                raise ValueError(f"cannot quantize {_describe(gm, node)}: {err}") from err
        elif type(module) is nn.Linear:
            _set_module(gm, node.target, QuantLinear.from_float(module, config))


def _swap_adds(gm: fx.GraphModule, config: QConfig) -> None:
    """tensor + tensor -> QuantAdd (with a following ReLU / ReLU6 fused in)."""
    for node in list(gm.graph.nodes):
        if not _is_tensor_add(node):
            continue
        last, activation = node, None
        if len(node.users) == 1:
            user = next(iter(node.users))
            activation = _activation_of(gm, user)
            if activation is not None and user.args[0] is node:
                last = user
            else:
                activation = None
        path = _new_module_path(gm, _owner_path(node), _leaf_name(node))
        _set_module(gm, path, QuantAdd(config, activation=activation))
        with gm.graph.inserting_after(last):
            add = gm.graph.call_module(path, tuple(node.args))
        add.meta = dict(last.meta)
        last.replace_all_uses_with(add)
        if last is not node:
            gm.graph.erase_node(last)
        gm.graph.erase_node(node)


def _insert_after(gm: fx.GraphModule, node: fx.Node, path: str, module: nn.Module) -> fx.Node:
    """Insert ``module`` (at ``path``) on every use of ``node``'s output."""
    _set_module(gm, path, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(path, (node,))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return new


def _place_quantizers(gm: fx.GraphModule, config: QConfig, unsupported: Unsupported) -> None:
    # quant_of[node]: the ActQuant that gives the tensor of `node` its int8 parameters.
    quant_of: dict[fx.Node, ActQuant | None] = {}
    problems: list[str] = []
    # The quantizer of each weighted module's input, per call (a module called twice may see
    # two grids: then it is not linked).
    inputs_of: dict[nn.Module, set[ActQuant | None]] = {}

    def output_quantizer(node: fx.Node, name: str) -> None:
        # The int8 op's output parameters are those of its ReLU / ReLU6 output (the int8 op
        # clamps to it). The activation moves into the ActQuant, which fuses it into the fake
        # quant (one pass over the tensor and one tensor kept for the backward fewer): from a
        # fused ConvBn2d, or an activation node right after the op.
        module = _module(gm, node)
        activation = None
        if isinstance(module, ConvBn2d) and module.activation is not None:
            activation, module.activation = module.activation, None
        elif len(node.users) == 1:
            user = next(iter(node.users))
            activation = _activation_of(gm, user)
            if activation is not None and user.args[0] is node:
                user.replace_all_uses_with(node)
                gm.graph.erase_node(user)
                quant_of[user] = None  # erased: the loop below skips it
            else:
                activation = None
        aq = ActQuant(config, activation=activation)
        path = _new_module_path(gm, _owner_path(node), f"{name}_out_quant")
        quant_of[_insert_after(gm, node, path, aq)] = aq
        quant_of[node] = aq

    for node in list(gm.graph.nodes):
        if node in quant_of or node.op in ("output", "get_attr") or not _is_tensor(node):
            continue
        module = _module(gm, node)
        if node.op == "placeholder":
            if node.meta["tensor_meta"].dtype.is_floating_point:
                aq = ActQuant(config)
                path = _new_module_path(
                    gm, "", f"{node.name}_quant" if node.name != "x" else "input_quant"
                )
                quant_of[_insert_after(gm, node, path, aq)] = aq
                quant_of[node] = aq
            continue
        if isinstance(module, QuantAdd):
            quant_of[node] = module.out_quant
            continue
        if isinstance(module, (ConvBn2d, QuantConv2d, QuantLinear)):
            x = node.args[0] if node.args else None
            inputs_of.setdefault(module, set()).add(
                quant_of.get(x) if isinstance(x, fx.Node) else None
            )
            output_quantizer(node, _leaf_name(node))
            continue
        if _is_cat(node):
            output_quantizer(node, _leaf_name(node))
            continue
        source = (
            quant_of.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        )
        if _is_pass_through(gm, node) and source is not None:
            quant_of[node] = source
            continue
        if _is_average_pool(gm, node) and source is not None:
            path = _new_module_path(gm, _owner_path(node), f"{_leaf_name(node)}_quant")
            quant_of[_insert_after(gm, node, path, SharedActQuant(source))] = source
            quant_of[node] = source
            continue
        if _is_pass_through(gm, node) or _is_average_pool(gm, node):
            # The input is float (an unsupported op left in float): quantize the output anew.
            output_quantizer(node, _leaf_name(node))
            continue
        if unsupported == "float":
            output_quantizer(node, _leaf_name(node))
            continue
        problems.append(_describe(gm, node))

    for module, sources in inputs_of.items():
        (source,) = sources if len(sources) == 1 else (None,)
        module.set_input_quantizer(source)

    if problems:
        listing = "\n  - ".join(problems)
        raise UnsupportedOpError(
            f"edgeqat cannot quantize {len(problems)} op(s) of this model:\n  - {listing}\n"
            "Supported: Conv2d (+ BatchNorm2d, ReLU / ReLU6), Linear, tensor add, concat, max / "
            "average pooling, flatten / reshape, dropout, ReLU / ReLU6. Pass "
            "unsupported='float' to keep these ops in float (their outputs get a quantizer)."
        )


def _check_model(model: nn.Module, example_inputs: Any) -> tuple:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, (*_EDGEQAT_MODULES, FakeQuantizer)):
            raise ValueError(
                f"model already contains edgeqat module '{name or '<model>'}' "
                f"({type(module).__name__}); prepare_qat / prepare_ptq take a float model"
            )
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(
            "example_inputs must be a tensor or a non-empty tuple of the model's positional "
            f"inputs, got {type(example_inputs).__name__}"
        )
    return tuple(example_inputs)


def _prepare(
    model: nn.Module, config: QConfig | None, example_inputs: Any, unsupported: Unsupported | None
) -> fx.GraphModule:
    config = resolve_config(config)
    if unsupported is None:
        unsupported = config.unsupported
    elif unsupported not in ("error", "float"):
        raise ValueError(f"unsupported must be 'error', 'float' or None, got {unsupported!r}")
    example_inputs = _check_model(model, example_inputs)
    gm = _trace(copy.deepcopy(model))
    _propagate_shapes(gm, example_inputs)
    _fuse_conv_bn(gm, config)
    _swap_conv_linear(gm, config)
    _swap_adds(gm, config)
    _place_quantizers(gm, config, unsupported)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    # The new modules take the model's train / eval mode (swapped ones copied their original's).
    gm.training = model.training
    for module in gm.modules():
        if isinstance(module, (ActQuant, QuantAdd, SharedActQuant)):
            module.train(model.training)
    return gm


def prepare_qat(
    model: nn.Module,
    config: QConfig | None = None,
    *,
    example_inputs: Any,
    unsupported: Unsupported | None = None,
) -> fx.GraphModule:
    """A quantization-aware-training copy of ``model`` (which is left unchanged).

    Args:
        model: a float model, traceable by ``torch.fx`` (torchvision's classification models
            are; :func:`edgeqat.models.mobilenet_v1` too).
        config: the :class:`~edgeqat.QConfig` (default ``QConfig()``: 8-bit weights per output
            channel, symmetric; 8-bit activations per tensor, EMA ranges).
        example_inputs: a tensor, or a tuple of the model's positional inputs, of the shapes it
            will see; run once in eval mode without gradients (the model's state is unchanged).
        unsupported: overrides ``config.unsupported``: ``"error"`` (the default config's):
            raise :class:`UnsupportedOpError` naming every op that cannot be quantized and its
            source line; ``"float"``: keep those ops in float and quantize their outputs.

    Returns:
        A ``torch.fx.GraphModule`` in the model's train / eval mode, with the module hierarchy
        of the model (a fused ConvBn2d sits at its conv's path; ``*_out_quant`` modules are
        new), every quantizer in ``OBSERVE`` mode. Train it with your own loop; use
        :func:`~edgeqat.freeze_bn`, :func:`~edgeqat.freeze_observers` and
        :func:`~edgeqat.learn_ranges` to change phase, or give ``config.schedule`` (a
        :class:`~edgeqat.QATSchedule`): the model then counts its training forwards and starts
        each phase on time (``qat_schedule`` module, its step saved in the ``state_dict``).

    Example:
        >>> from edgeqat.models import mobilenet_v1
        >>> model = mobilenet_v1(num_classes=10, in_channels=1, small_input=True, width_mult=0.25)
        >>> qat = edgeqat.prepare_qat(model, example_inputs=torch.randn(1, 1, 28, 28))
        >>> opt = torch.optim.SGD(qat.parameters(), lr=0.01)
        >>> images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> loss = torch.nn.functional.cross_entropy(qat(images), labels)
        >>> loss.backward()
        >>> opt.step()
    """
    gm = _prepare(model, config, example_inputs, unsupported)
    schedule = resolve_config(config).schedule
    return gm if schedule is None else attach_schedule(gm, schedule)


def _default_ptq_config() -> QConfig:
    # Post-training calibration takes the all-time range of the calibration data (TFLite's
    # calibrator); QAT's EMA would forget the first batches.
    return QConfig(activation=QConfig().activation.replace(range_source="running"))


def prepare_ptq(
    model: nn.Module,
    config: QConfig | None = None,
    *,
    example_inputs: Any,
    unsupported: Unsupported | None = None,
) -> fx.GraphModule:
    """A copy of ``model`` ready for post-training calibration, over the same modules as
    :func:`prepare_qat`: batch norms are folded with their trained statistics
    (:meth:`~edgeqat.ConvBn2d.freeze_bn`) and the model is in eval mode. Run
    :func:`calibrate` on it, then export or evaluate.

    Args:
        model, example_inputs, unsupported: as :func:`prepare_qat`.
        config: the :class:`~edgeqat.QConfig`; default: ``QConfig()`` with activation ranges
            ``range_source="running"`` (min / max over all calibration batches). Use a
            ``"histogram"`` activation range source where the config offers it for percentile
            or MSE ranges.

    Example:
        >>> from edgeqat.models import mobilenet_v1
        >>> model = mobilenet_v1(num_classes=10, in_channels=1, small_input=True, width_mult=0.25)
        >>> ptq = edgeqat.prepare_ptq(model, example_inputs=torch.randn(1, 1, 28, 28))
        >>> batches = [torch.randn(16, 1, 28, 28) for _ in range(4)]
        >>> ptq = edgeqat.calibrate(ptq, batches)
    """
    gm = _prepare(
        model, config if config is not None else _default_ptq_config(), example_inputs, unsupported
    )
    return freeze_bn(gm).eval()


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_batches: int | None = None,
    freeze: bool = True,
) -> nn.Module:
    """Run ``batches`` through ``model`` so its quantizers observe the data, without training.

    The model runs in eval mode (batch norm uses its running statistics, dropout is off) and
    without gradients, except that every :class:`~edgeqat.FakeQuantizer` in ``OBSERVE`` mode
    is put in training mode, since quantizers observe only then. Afterwards every module's
    train / eval flag is restored and, with ``freeze``, the observed quantizers are frozen
    (:func:`~edgeqat.freeze_observers`), so the ranges stay put.

    Args:
        model: a model from :func:`prepare_ptq` or :func:`prepare_qat` (for QAT: to start from
            calibrated ranges).
        batches: an iterable of inputs: a tensor per batch, a tuple / list whose first item is
            the input (``(images, labels)`` from a DataLoader), or a dict of keyword inputs.
        num_batches: stop after this many batches (default: all of ``batches``).
        freeze: freeze the observed ranges at the end (default True).

    Returns:
        ``model``, calibrated in place.

    Raises:
        ValueError: no batch was given, or ``num_batches`` is not a positive int.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU())
        >>> ptq = edgeqat.prepare_ptq(model, example_inputs=torch.randn(1, 1, 28, 28))
        >>> loader = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(8)]
        >>> ptq = edgeqat.calibrate(ptq, loader, num_batches=4)  # (images, labels) batches
    """
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches <= 0
    ):
        raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}")
    modes = {m: m.training for m in model.modules()}
    seen = 0
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, FakeQuantizer) and module.mode is Mode.OBSERVE:
                module.train()
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, dict):
                    model(**batch)
                elif isinstance(batch, (tuple, list)):
                    model(batch[0])
                else:
                    model(batch)
                seen += 1
                if num_batches is not None and seen >= num_batches:
                    break
    finally:
        for module, training in modes.items():
            module.train(training)
    if seen == 0:
        raise ValueError("calibrate: batches gave no batch; the quantizers observed nothing")
    return freeze_observers(model) if freeze else model
