"""Export a prepared (QAT-trained or calibrated) model to the integer-only int8 model file.

The walk over the ``torch.fx`` graph is here; every numeric step (nudging the learned or
observed ranges, quantizing the folded weights, int32 biases, fixed-point multipliers, ReLU
clamps) is the C++ ``GraphBuilder`` (``edgeqat/runtime/builder.h``), which the C++ exporter
``edgeqat::export_int8`` shares. The file format: docs/int8-format.md.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import _runtime
from .nn import ActQuant, ConvBn2d, QuantAdd, QuantConv2d, QuantLinear, SharedActQuant
from .nn._bias import grid_scale
from .prepare import (
    _describe,
    _is_average_pool,
    _is_cat,
    _is_pass_through,
    _module,
    _propagate_shapes,
)
from .quantizer import FakeQuantizer, Mode
from .schedule import QATScheduler

__all__ = ["ExportError", "export", "export_graph"]


class ExportError(RuntimeError):
    """The model cannot be exported to the int8 model; the message names the node."""


def export(
    model: fx.GraphModule,
    path: str | os.PathLike,
    example_inputs: Any,
    *,
    load: bool = True,
    num_threads: int = 1,
):
    """Write the int8 model of a prepared model to ``path`` and return it loaded.

    Args:
        model: a model returned by :func:`~edgeqat.prepare_qat` or
            :func:`~edgeqat.prepare_ptq` (trained or calibrated: every quantizer has a range).
            Batch norm is folded with its running statistics (freeze it before the last
            training steps so training saw the same fold). Not modified.
        path: the file to write (atomically: an existing file is replaced only when the new
            one is complete).
        example_inputs: a tensor or tuple of tensors of the input shape (batch size is free:
            the int8 model runs any batch); fixes the spatial size.
        load: return the loaded :class:`~edgeqat.Int8Model` (default) or ``None``.
        num_threads: threads of the returned model.

    Raises:
        ExportError: an op the int8 model does not have, a quantizer without a range or turned
            off, a layer the builder rejects; the message names the node.

    Example:
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...     torch.nn.Flatten(), torch.nn.Linear(8 * 13 * 13, 10),
        ... )
        >>> x = torch.randn(16, 1, 28, 28)
        >>> ptq = edgeqat.calibrate(edgeqat.prepare_ptq(model, example_inputs=x), [x])
        >>> int8 = edgeqat.export(ptq, "model.eq8", example_inputs=x)
        >>> int8(x).shape
        torch.Size([16, 10])
    """
    builder = export_graph(model, example_inputs)
    builder.save(os.fspath(path))
    if not load:
        return None
    from .int8_model import Int8Model

    return Int8Model.load(path, num_threads=num_threads)


def export_graph(
    model: fx.GraphModule, example_inputs: Any, *, with_sources: bool = False
) -> _runtime.GraphBuilder | tuple[_runtime.GraphBuilder, dict[str, str]]:
    """The int8 graph of ``model`` as a ``GraphBuilder`` (not written): what :func:`export`
    saves and :func:`~edgeqat.export_onnx` translates. With ``with_sources``, also a dict
    from each int8 value's name to the name of the ``model.graph`` node whose output is that
    value in the fake-quant simulation (for per-layer comparisons)."""
    if not isinstance(model, fx.GraphModule):
        raise TypeError(
            "model must be the torch.fx.GraphModule returned by edgeqat.prepare_qat / "
            f"prepare_ptq, got {type(model).__name__}"
        )
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    for path, q in model.named_modules():
        if isinstance(q, FakeQuantizer) and q.mode is not Mode.OFF and not q.has_range:
            raise ExportError(
                f"cannot export: quantizer '{path}' has no range yet (train, or calibrate, first)"
            )
    gm = copy.deepcopy(model)
    _propagate_shapes(gm, inputs)
    exporter = _GraphExporter(gm)
    builder = exporter.run()
    if with_sources:
        return builder, {value: node.name for node, value in exporter.value.items()}
    return builder


def _version() -> str:
    from . import __version__

    return f"edgeqat {__version__}"


def _shape(node: fx.Node) -> list[int]:
    """The per-sample shape (batch dropped) of a node's tensor."""
    return [int(d) for d in node.meta["tensor_meta"].shape[1:]]


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


class _GraphExporter:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.builder = _runtime.GraphBuilder(_version())
        self.value: dict[fx.Node, str] = {}  # node -> int8 value name
        self.pending: dict[fx.Node, fx.Node] = {}  # weighted / cat node waiting for its ActQuant

    def fail(self, node: fx.Node, why: str) -> ExportError:
        return ExportError(f"cannot export {_describe(self.gm, node)}: {why}")

    def input_value(self, node: fx.Node, user: fx.Node) -> str:
        if not isinstance(node, fx.Node) or node not in self.value:
            raise self.fail(
                user,
                f"its input {getattr(node, 'name', node)!r} is not an int8 tensor (only "
                "quantized tensors flow through the int8 model: is a quantizer missing or "
                "turned off, or is an op in float?)",
            )
        return self.value[node]

    def run(self) -> _runtime.GraphBuilder:
        for node in self.gm.graph.nodes:
            try:
                self.visit(node)
            except ExportError:
                raise
            except (ValueError, RuntimeError) as err:
                raise self.fail(node, str(err)) from err
        return self.builder

    # -- the nodes ----------------------------------------------------------------------------

    def visit(self, node: fx.Node) -> None:
        gm, b = self.gm, self.builder
        module = _module(gm, node)
        if node.op in ("placeholder", "get_attr"):
            return  # an input is defined by the ActQuant that reads it
        if node.op == "output":
            outputs = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
            for out in outputs:
                b.mark_output(self.input_value(out, node))
            return
        if isinstance(module, QATScheduler):
            return  # counts training steps; nothing in the int8 model
        if isinstance(module, ActQuant):
            self.act_quant(node, module)
        elif isinstance(module, (ConvBn2d, QuantConv2d, QuantLinear)) or _is_cat(node):
            if len(node.users) != 1 or not isinstance(
                _module(gm, next(iter(node.users))), ActQuant
            ):
                raise self.fail(node, "its output must go to one ActQuant (as prepare_qat places)")
            self.pending[node] = node
        elif isinstance(module, QuantAdd):
            a, c = (self.input_value(x, node) for x in node.args[:2])
            if b.shape_of(a) != b.shape_of(c):
                raise self.fail(node, "the int8 add has no broadcasting; inputs differ in shape")
            self.value[node] = b.add_add(
                node.target,
                a,
                c,
                module.out_quant.activation or module.activation,
                _range(module.out_quant.quantizer, node.target),
            )
        elif isinstance(module, SharedActQuant):
            # Average pooling's output keeps its input's grid (the source quantizer's).
            self.value[node] = self.input_value(node.args[0], node)
        elif _is_average_pool(gm, node):
            self.average_pool(node, module)
        elif _is_pass_through(gm, node):
            self.pass_through(node, module)
        else:
            raise self.fail(node, "the int8 model has no such op")

    def act_quant(self, node: fx.Node, aq: ActQuant) -> None:
        b, src = self.builder, node.args[0]
        out_range = _range(aq.quantizer, node.target)
        if src.op == "placeholder":
            if aq.activation is not None:
                raise self.fail(node, "an input quantizer with an activation")
            self.value[node] = b.add_input(src.name, _shape(src), out_range)
        elif src in self.pending:
            del self.pending[src]
            if _is_cat(src):
                parts = src.args[0]
                if aq.activation is not None:
                    raise self.fail(node, "an activation after concat")
                self.check_cat(src)
                self.value[node] = b.add_concat(
                    src.name, [self.input_value(p, src) for p in parts], out_range
                )
            else:
                self.value[node] = self.weighted(src, aq, out_range)
        else:
            raise self.fail(
                node,
                "an ActQuant after an op the int8 model does not quantize (unsupported ops left "
                "in float cannot be exported)",
            )

    def weighted(self, node: fx.Node, aq: ActQuant, out_range) -> str:
        module = _module(self.gm, node)
        name = node.target
        inp = self.input_value(node.args[0], node)
        self.check_bias_link(node, module, inp)
        activation = _merge_activation(self, node, getattr(module, "activation", None), aq)
        if isinstance(module, ConvBn2d):
            weight, bias = module.folded_weight_and_bias()
        else:
            weight, bias = module.weight.detach(), module.bias
            bias = None if bias is None else bias.detach()
        spec = module.weight_quant.spec
        wmin, wmax = _weight_range(module.weight_quant, name)
        weight = _f32(weight)
        bias = None if bias is None else _f32(bias)
        if isinstance(module, QuantLinear):
            return self.builder.add_fully_connected(
                name, inp, weight, bias, wmin, wmax, spec.num_bits, spec.narrow_range,
                activation, out_range,
            )  # fmt: skip
        if module.padding_mode != "zeros":
            raise self.fail(node, f"padding_mode={module.padding_mode!r} (only 'zeros')")
        padding = _conv_padding(module, self.builder.shape_of(inp))
        return self.builder.add_conv2d(
            name, inp, weight, bias, wmin, wmax, spec.num_bits, spec.narrow_range,
            _pair(module.stride), padding, _pair(module.dilation), int(module.groups),
            activation, out_range,
        )  # fmt: skip

    def check_bias_link(self, node: fx.Node, module: nn.Module, inp: str) -> None:
        """A layer that simulates the int32 bias must be linked to a quantizer with its input's
        scale: otherwise training saw another bias than the int8 model's."""
        link = module.input_quantizer
        has_bias = isinstance(module, ConvBn2d) or module.bias is not None  # ConvBn2d: b'
        if link is None or not module.config.quantize_bias or not has_bias:
            return
        q = link.quantizer
        _check_exportable(q, f"the input quantizer linked to {_describe(self.gm, node)}")
        scale = float(grid_scale(*q.quant_range(), q.spec))
        expected = self.builder.grid_of(inp)[0]
        if scale != expected:
            raise self.fail(
                node,
                f"its bias is simulated at the scale of its linked input quantizer ({scale!r}), "
                f"but its input's int8 scale is {expected!r}: link the ActQuant of its input "
                "(set_input_quantizer), or set QConfig(quantize_bias=False)",
            )

    def check_cat(self, node: fx.Node) -> None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        rank = len(node.meta["tensor_meta"].shape)
        if rank != 4 or dim % 4 != 1:
            raise self.fail(node, f"only channel concat (dim 1 of NCHW) exists, got dim={dim}")

    def average_pool(self, node: fx.Node, module: nn.Module | None) -> None:
        b = self.builder
        x = self.input_value(node.args[0], node)
        c, h, w = b.shape_of(x)
        out = _shape(node)
        if isinstance(module, nn.AvgPool2d) or node.target is F.avg_pool2d:
            args = _call_args(
                module,
                node,
                ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override"),
                (None, None, 0, False, True, None),
            )  # fmt: skip
            kernel = _pair(args["kernel_size"])
            stride = _pair(args["stride"] if args["stride"] not in (None, []) else kernel)
            pad = _pair(args["padding"])
            if args["divisor_override"] is not None:
                raise self.fail(node, "divisor_override")
            if args["count_include_pad"] and pad != (0, 0):
                raise self.fail(
                    node,
                    "count_include_pad=True with padding: the int8 average counts only taps "
                    "inside the image (use count_include_pad=False)",
                )
            padding = _ceil_padding(node, (h, w), kernel, stride, pad, out, self)
        else:  # adaptive / global / spatial mean
            oh, ow = (out[1], out[2]) if len(out) == 3 else (1, 1)
            if h % oh or w % ow:
                raise self.fail(node, f"adaptive pooling {h}x{w} -> {oh}x{ow} is not uniform")
            kernel = stride = (h // oh, w // ow)
            padding = (0, 0, 0, 0)
        y = b.add_average_pool2d(node.name, x, kernel, stride, padding)
        if len(out) == 1:  # x.mean((2, 3)) without keepdim: [N, C]
            y = b.add_flatten(node.name + ".flatten", y)
        self.value[node] = y

    def pass_through(self, node: fx.Node, module: nn.Module | None) -> None:
        b = self.builder
        x = self.input_value(node.args[0], node)
        in_shape, out = b.shape_of(x), _shape(node)
        if isinstance(module, nn.MaxPool2d) or node.target in (F.max_pool2d, torch.max_pool2d):
            args = _call_args(
                module,
                node,
                ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                (None, None, 0, 1, False, False),
            )
            if _pair(args["dilation"]) != (1, 1) or args["return_indices"]:
                raise self.fail(node, "max pooling with dilation or return_indices")
            kernel = _pair(args["kernel_size"])
            stride = _pair(args["stride"] if args["stride"] not in (None, []) else kernel)
            padding = _ceil_padding(node, in_shape[1:], kernel, stride, _pair(args["padding"]),
                                    out, self)  # fmt: skip
            self.value[node] = b.add_max_pool2d(node.name, x, kernel, stride, padding)
            return
        if isinstance(module, (nn.Dropout, nn.Identity)) or node.target in (
            F.dropout,
            "contiguous",
        ):
            self.value[node] = x
            return
        if list(in_shape) == out:  # a reshape that changes nothing per sample
            self.value[node] = x
            return
        if len(in_shape) == 3 and out == [in_shape[0] * in_shape[1] * in_shape[2]]:
            self.value[node] = b.add_flatten(node.name, x)
            return
        raise self.fail(node, f"only flatten to [N, C*H*W] exists; {in_shape} -> {out}")


# -- helpers ------------------------------------------------------------------------------------


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _check_exportable(q: FakeQuantizer, where: str) -> None:
    if q.mode is Mode.OFF:
        raise ExportError(f"cannot export {where}: its quantizer is turned off (Mode.OFF)")
    if not q.has_range:
        raise ExportError(
            f"cannot export {where}: its quantizer has no range yet (train, or calibrate, first)"
        )


def _range(q: FakeQuantizer, where: str) -> tuple[float, float, int, bool]:
    """An activation quantizer's range as used in forward (learned in LEARN mode)."""
    _check_exportable(q, where)
    if q.spec.per_channel:
        raise ExportError(f"cannot export {where}: per-channel activation ranges")
    lo, hi = q.quant_range()
    return float(lo), float(hi), q.spec.num_bits, q.spec.narrow_range


def _weight_range(q: FakeQuantizer, where: str) -> tuple[np.ndarray, np.ndarray]:
    _check_exportable(q, where)
    lo, hi = q.quant_range()
    return _f32(lo.reshape(-1)), _f32(hi.reshape(-1))


def _merge_activation(exporter, node, own: str | None, aq: ActQuant) -> str | None:
    if own is not None and aq.activation is not None and own != aq.activation:
        raise exporter.fail(node, f"two activations ({own} and {aq.activation})")
    return own or aq.activation


def _conv_padding(module: nn.Conv2d, in_shape) -> tuple[int, int, int, int]:
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0, 0, 0)
        # "same": PyTorch pads total = dilation * (kernel - 1), the extra pixel at the end.
        pads = []
        for k, d in zip(module.kernel_size, module.dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    ph, pw = _pair(module.padding)
    return (ph, pw, ph, pw)


def _call_args(module, node: fx.Node, names, defaults) -> dict:
    """A pooling call's arguments, from the module or the functional call."""
    if module is not None:
        return {n: getattr(module, n, d) for n, d in zip(names, defaults)}
    args = dict(zip(names, defaults))
    args.update(zip(names, node.args[1:]))
    args.update({k: v for k, v in node.kwargs.items() if k in args})
    return args


def _ceil_padding(node, hw, kernel, stride, pad, out, exporter) -> tuple[int, int, int, int]:
    """Padding (top, left, bottom, right) that gives PyTorch's output size: with
    ceil_mode the last window may hang over the end, which extra bottom / right padding
    expresses (taps there are skipped, as PyTorch skips them)."""
    result = []
    for size, k, s, p, o in zip(hw, kernel, stride, pad, out[1:]):
        extra = max(0, (o - 1) * s + k - (size + 2 * p))
        if (size + 2 * p + extra - k) // s + 1 != o:
            raise exporter.fail(node, f"cannot express the pooled size {o} from {size}")
        result.append((p, p + extra))
    return (result[0][0], result[1][0], result[0][1], result[1][1])
