"""Export the int8 graph (docs/int8-format.md) as an ONNX model that onnxruntime runs on CPU.

The ONNX model is a translation of the graph :func:`~edgeqat.export` writes, node by node, with
standard operators only (default domain, opset 13, IR version 7): integer kernels where ONNX has
an integer operator, otherwise the QDQ form (``DequantizeLinear -> float op -> QuantizeLinear``),
which is onnxruntime's recommended quantized format: its graph optimizer (the default
``ORT_ENABLE_ALL``) fuses the QDQ add and average pool into its ``QLinearAdd`` /
``QLinearAveragePool`` kernels; concat and global average pooling run in float between the
DequantizeLinear and QuantizeLinear.

Activations are uint8 by default (``activation_dtype="uint8"``), weights int8: the U8S8 form
onnxruntime's x86 integer kernels are built for, and the form its own quantizer writes (its
QLinearConv on int8 activations, S8S8, takes a generic path, 8-75x slower on the int8 graphs of
MobileNet v2 and ResNet-18: benchmarks/int8_runtime.py). Every activation value ``q`` of the
int8 graph is the uint8 ``q + 128`` in the ONNX model, with zero point ``zero_point + 128`` and
the same scale, so ``scale * (q - zero_point)`` is unchanged: the same model. Weights
(symmetric, zero point 0) stay int8 and int32 biases unchanged, which keeps QLinearConv's
integer arithmetic (``sum (q_x - zp_x) * q_w + bias``) exactly the int8 graph's.
``activation_dtype="int8"`` writes the activations as the int8 graph has them (S8S8).

onnxruntime computes the same values from both forms (tests/python/test_onnx_export.py, every
value compared): bit for bit at ``ORT_DISABLE_ALL``; at ``ORT_ENABLE_ALL`` bit for bit too except
its fused average pools (``QLinearAveragePool`` / ``QLinearGlobalAveragePool``), which round
some ties differently for uint8 and int8 (1 LSB on ~0.5 % of one pool's outputs; they differ
from our runtime on ties either way, see below). And one caveat, from onnxruntime's own
quantization documentation: on x86 CPUs without VNNI (AVX2, or AVX-512 without VNNI) its U8S8
kernels multiply with ``VPMADDUBSW``, whose 16-bit sums of two adjacent ``uint8 * int8``
products saturate past +-32767 (activations near 255 against same-sign weights summing past 128
in magnitude); the measurements above are on a CPU with AVX-512 VNNI, which accumulates in 32
bits. On an older CPU, compare with ``activation_dtype="int8"`` (or with
:class:`~edgeqat.Int8Model`) before relying on U8S8.

============================  ================================================================
int8 graph                    ONNX (``A`` = the activation dtype, uint8 or int8)
============================  ================================================================
graph input (float32)         ``QuantizeLinear`` to ``A`` (input scale, zero point [+ 128]);
                              a ``Clip`` when the input grid is narrower than 8 bits
``conv2d``                    ``QLinearConv``: ``A`` activations, int8 weights OIHW (the file's
                              OHWI transposed back), per-channel ``w_scale``, zero int8
                              ``w_zero_point``, int32 bias, ``pads`` = [top, left, bottom,
                              right], strides, dilations, group
``fully_connected``           ``Reshape`` [N, F] -> [N, F, 1, 1], ``QLinearConv`` 1x1 (the
                              conv's arithmetic exactly), ``Flatten`` -> [N, O]
``add``                       QDQ: ``DequantizeLinear`` a, b -> ``Add`` -> ``QuantizeLinear``
``average_pool2d``            QDQ around ``AveragePool`` (``count_include_pad=0``, pads as
                              given), or ``GlobalAveragePool`` when the window is the image
``max_pool2d``                ``MaxPool`` on ``A`` (opset 12+); padding taps never win
``flatten``                   ``Flatten(axis=1)`` on ``A`` (PyTorch's C, H, W order)
``concat``                    QDQ: ``DequantizeLinear`` each input -> ``Concat(axis=1)`` ->
                              ``QuantizeLinear``
act_min / act_max clamps      a ``Clip`` on ``A`` after the node (bounds [+ 128]), only when
                              narrower than the 8-bit range (ReLU6's top, a grid of fewer
                              than 8 bits)
graph output                  ``DequantizeLinear`` to float32
============================  ================================================================

Names: every activation value of the int8 graph is the ONNX tensor of the same name (a node's
``output``, which is its module path), so a model run with ``int8_outputs_for="all"`` returns
each value (in the activation dtype: ``q + 128`` for uint8) for a layer-by-layer comparison with
:class:`~edgeqat.Int8Model` (``run_int8`` with ``capture``). The float graph inputs and outputs
are named ``<value>_float``. Initializers are ``<value>.scale`` / ``<value>.zero_point`` and the
constants' names of the int8 graph.

Why these forms, and how close they are (tests/python/test_onnx_export.py, onnxruntime 1.31.1
from PyPI on x86-64 with AVX-512 VNNI, each op alone in a one-node model fed the same input as
our runtime, at both ``ORT_ENABLE_ALL`` and ``ORT_DISABLE_ALL``, with uint8 and with int8
activations): onnxruntime requantizes in float32 (``fl32(acc + bias) * fl(fl(s_in * s_w) /
s_out)``, rounded half to even) where our runtime uses a fixed-point multiplier rounded once,
ties toward +infinity (docs/runtime-numerics.md), so 1-LSB differences are possible; measured,
conv (plain, depthwise, strided, dilated, asymmetric padding, clamped), fully connected, add,
concat, max pool and flatten agree exactly on every output, and average pooling on ~95 % (it
differs on ties: we round the sum of the raw q ties away from zero, onnxruntime the float mean
half to even), never more than 1 LSB.

- Fully connected as a 1x1 ``QLinearConv`` keeps the int8 model's integer accumulation and
  int32 bias, whatever the optimization level. The QDQ ``Gemm`` form (per-axis DequantizeLinear
  of the weight and of the int32 bias) was measured too: exact when onnxruntime fuses it, but
  unfused (``ORT_DISABLE_ALL``) it accumulates in float and was 1 LSB off on 1 of 256000
  outputs of a 256-input layer. ``QLinearMatMul`` has no bias input.
- ``QLinearAdd`` / ``QLinearAveragePool`` / ``QLinearConcat`` exist only in the
  ``com.microsoft`` domain; the QDQ forms are standard ONNX, run anywhere QDQ is understood, and
  onnxruntime fuses add and average pool into those kernels anyway.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["export_onnx", "graph_to_onnx"]

#: The ONNX operator set and IR version of the exported models (opset 13: per-axis
#: (De)QuantizeLinear, 8-bit Clip / MaxPool; IR 7 is opset 13's, loadable by every onnxruntime
#: since 1.8).
OPSET = 13
IR_VERSION = 7

_INT8_RANGE = (-128, 127)

#: activation_dtype -> (numpy dtype, offset added to the int8 graph's values and zero points).
_ACTIVATION_DTYPES = {"uint8": (np.uint8, 128), "int8": (np.int8, 0)}


def _check_activation_dtype(activation_dtype) -> str:
    if not isinstance(activation_dtype, str) or activation_dtype not in _ACTIVATION_DTYPES:
        raise ValueError(f'activation_dtype must be "uint8" or "int8", got {activation_dtype!r}')
    return activation_dtype


def export_onnx(
    model,
    path: str | os.PathLike,
    example_inputs: Any,
    *,
    int8_outputs_for: str | Iterable[str] | None = None,
    activation_dtype: str = "uint8",
) -> str:
    """Write the int8 model of a prepared model as an ONNX file and return its path.

    The ONNX model computes what :class:`~edgeqat.Int8Model` computes (float32 NCHW input of
    any batch size, quantized with the input's scale and zero point; float32 outputs
    dequantized from the int8 outputs), with onnxruntime's float32 requantization: outputs
    agree with the int8 runtime exactly on most elements and within 1 LSB everywhere. The op
    mapping is in the module docstring (python/edgeqat/onnx_export.py).

    Activations are uint8 by default (each int8 value ``q`` stored as ``q + 128`` with zero
    point + 128: the same model), weights int8: the U8S8 form that onnxruntime runs fast on
    x86 (its int8-activation S8S8 path is many times slower); see the module docstring for
    how the two forms agree in onnxruntime.

    Args:
        model: a model returned by :func:`~edgeqat.prepare_qat` / :func:`~edgeqat.prepare_ptq`,
            trained or calibrated (as for :func:`~edgeqat.export`). Not modified.
        path: the ``.onnx`` file to write (atomically: an existing file is replaced only when
            the new one is complete).
        example_inputs: a tensor or tuple of tensors of the input shape; fixes C, H, W (the
            batch dimension is symbolic, ``"batch"``).
        int8_outputs_for: extra int8 graph outputs: value names of the int8 graph (node names,
            which are module paths, and the input's name, the ``forward`` argument's), or
            ``"all"`` for every value; each is returned by onnxruntime under its own name,
            after the float outputs, in the activation dtype (uint8: the int8 value + 128).
        activation_dtype: ``"uint8"`` (default; U8S8, onnxruntime's fast x86 form) or
            ``"int8"`` (the int8 graph's values as they are; S8S8).

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: ``model`` is not a ``torch.fx.GraphModule``.
        ExportError: the model cannot be exported to the int8 graph (see
            :func:`~edgeqat.export`).
        ValueError: an unknown value name in ``int8_outputs_for``, or ``activation_dtype`` is
            neither ``"uint8"`` nor ``"int8"``.
        ImportError: the ``onnx`` package is not installed.
    """
    import json

    from .export import export_graph

    _check_activation_dtype(activation_dtype)
    builder = export_graph(model, example_inputs)
    proto = graph_to_onnx(
        json.loads(builder.graph_json()),
        builder.constants(),
        int8_outputs_for=int8_outputs_for,
        activation_dtype=activation_dtype,
    )
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".onnx-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def graph_to_onnx(
    graph: dict,
    constants: dict[str, np.ndarray],
    *,
    int8_outputs_for: str | Iterable[str] | None = None,
    int8_io: bool = False,
    activation_dtype: str = "uint8",
):
    """The ONNX ``ModelProto`` of an int8 graph.

    Args:
        graph: the graph JSON (``json.loads(export_graph(...).graph_json())``, or a subset of
            it: ``values``, ``inputs``, ``outputs``, ``nodes``).
        constants: name -> numpy array (``export_graph(...).constants()``).
        int8_outputs_for: see :func:`export_onnx`.
        int8_io: quantized graph inputs and outputs named after the values themselves (no
            QuantizeLinear / DequantizeLinear at the boundary), like ``Int8Model.run_int8``;
            used to run one node alone. They are in the activation dtype: with ``"uint8"``
            feed ``q + 128`` for an int8 value ``q`` and subtract 128 from the outputs.
        activation_dtype: see :func:`export_onnx`.

    Raises:
        ValueError: ``activation_dtype`` is neither ``"uint8"`` nor ``"int8"``; an unknown
            value name in ``int8_outputs_for``; a constant missing or of the wrong dtype.
    """
    import onnx

    _check_activation_dtype(activation_dtype)
    return _Translator(graph, constants, onnx, activation_dtype).run(int8_outputs_for, int8_io)


class _Translator:
    def __init__(
        self, graph: dict, constants: dict[str, np.ndarray], onnx, activation_dtype: str
    ) -> None:
        self.onnx = onnx
        # Activations: this numpy dtype / ONNX element type, each int8 graph value + offset.
        self.act_dtype, self.act_offset = _ACTIVATION_DTYPES[activation_dtype]
        self.act_elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.act_dtype))
        self.h = onnx.helper
        self.graph = graph
        self.constants = constants
        self.values = {v["name"]: v for v in graph["values"]}
        self.nodes: list = []
        self.initializers: dict[str, Any] = {}
        self.grids: dict[str, tuple[str, str]] = {}
        self.value_info: list = []
        # Every tensor name in use: values, constants, the boundary float tensors.
        self.used: set[str] = set(self.values) | set(constants)

    # -- names, initializers ------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        if name in self.initializers:
            return name
        self.initializers[name] = self.onnx.numpy_helper.from_array(np.asarray(array), name)
        return name

    def fresh_init(self, base: str, array: np.ndarray) -> str:
        return self.init(self.fresh(base), array)

    def activation(self, q: int) -> np.ndarray:
        """An int8 graph integer (zero point, clamp bound) as a scalar of the activation dtype."""
        return np.array(int(q) + self.act_offset, dtype=self.act_dtype)

    def grid(self, value: str) -> tuple[str, str]:
        """Scalar scale (float32) and zero point (activation dtype) initializers of a value."""
        if value not in self.grids:
            v = self.values[value]
            scale = self.fresh_init(f"{value}.scale", np.array(v["scale"], dtype=np.float32))
            zp = self.fresh_init(f"{value}.zero_point", self.activation(v["zero_point"]))
            self.grids[value] = (scale, zp)
        return self.grids[value]

    def constant(self, name: str, dtype) -> np.ndarray:
        if name not in self.constants:
            raise ValueError(f"the int8 graph's constant {name!r} is missing")
        array = np.asarray(self.constants[name])
        if array.dtype != dtype:
            raise ValueError(f"constant {name!r} is {array.dtype}, expected {np.dtype(dtype)}")
        return array

    def add(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def activation_info(self, value: str):
        shape = ["batch", *self.values[value]["shape"]]
        return self.h.make_tensor_value_info(value, self.act_elem_type, shape)

    def float_info(self, name: str, value: str):
        shape = ["batch", *self.values[value]["shape"]]
        return self.h.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, shape)

    # -- the graph ----------------------------------------------------------------------------

    def run(self, int8_outputs_for, int8_io: bool):
        g, h, onnx = self.graph, self.h, self.onnx
        inputs, outputs = [], []
        boundary = set()
        for value in g["inputs"]:
            if int8_io:
                inputs.append(self.activation_info(value))
                boundary.add(value)
                continue
            name = self.fresh(f"{value}_float")
            inputs.append(self.float_info(name, value))
            v = self.values[value]
            scale, zp = self.grid(value)
            q = self.unclamped(value, v["qmin"], v["qmax"])
            self.add("QuantizeLinear", [name, scale, zp], q, f"{value}/quantize")
            self.clamp(value, q, v["qmin"], v["qmax"])
        for node in g["nodes"]:
            self.node(node)
        for value in g["outputs"]:
            if int8_io:
                outputs.append(self.activation_info(value))
                continue
            name = self.fresh(f"{value}_float")
            outputs.append(self.float_info(name, value))
            scale, zp = self.grid(value)
            self.add("DequantizeLinear", [value, scale, zp], name, f"{value}/dequantize")

        listed = {o.name for o in outputs}
        for value in self.extra_outputs(int8_outputs_for):
            if value not in listed:
                outputs.append(self.activation_info(value))
                listed.add(value)
        shown = listed | boundary
        self.value_info = [self.activation_info(v) for v in self.defined if v not in shown]

        initializers = list(self.initializers.values())
        graph = h.make_graph(
            self.nodes,
            "edgeqat_int8",
            inputs,
            outputs,
            initializer=initializers,
            value_info=self.value_info,
        )
        model = h.make_model(
            graph,
            opset_imports=[h.make_opsetid("", OPSET)],
            producer_name="edgeqat",
            producer_version=str(g.get("producer", "edgeqat")).replace("edgeqat ", ""),
            doc_string="edgeqat int8 model (docs/int8-format.md) as QLinear / QDQ ONNX, "
            f"{np.dtype(self.act_dtype).name} activations, int8 weights",
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model

    @property
    def defined(self) -> list[str]:
        """Int8 values defined in the graph, in order: the inputs, then each node's output."""
        return list(self.graph["inputs"]) + [n["output"] for n in self.graph["nodes"]]

    def extra_outputs(self, which) -> list[str]:
        if which is None:
            return []
        defined = self.defined
        if isinstance(which, str):
            if which != "all":
                raise ValueError(
                    f'int8_outputs_for must be "all" or a list of value names, got {which!r}'
                )
            return defined
        wanted = list(which)
        for value in wanted:
            if value not in defined:
                raise ValueError(
                    f"int8_outputs_for: no int8 value named {value!r} (values: "
                    f"{', '.join(defined)})"
                )
        return wanted

    def unclamped(self, value: str, lo: int, hi: int) -> str:
        """The name the node computing ``value`` writes: ``value`` itself, or, when its clamp
        [lo, hi] (int8 graph integers) is narrower than 8 bits, a temporary that :meth:`clamp`
        then clips into ``value`` (a no-op Clip is left out)."""
        return value if (lo, hi) == _INT8_RANGE else self.fresh(f"{value}/unclamped")

    def clamp(self, value: str, raw: str, lo: int, hi: int) -> None:
        if raw == value:
            return
        lo_name = self.fresh_init(f"{value}.act_min", self.activation(lo))
        hi_name = self.fresh_init(f"{value}.act_max", self.activation(hi))
        self.add("Clip", [raw, lo_name, hi_name], value, f"{value}/clamp")

    def dequantize(self, value: str, user: str) -> str:
        scale, zp = self.grid(value)
        out = self.fresh(f"{user}/{value}_float")
        return self.add("DequantizeLinear", [value, scale, zp], out, f"{user}/dequantize_{value}")

    def quantize(self, x: str, node: dict) -> None:
        """QuantizeLinear of a float tensor to the node's output grid, then its clamp."""
        out = node["output"]
        scale, zp = self.grid(out)
        lo, hi = node.get("act_min", -128), node.get("act_max", 127)
        q = self.unclamped(out, lo, hi)
        self.add("QuantizeLinear", [x, scale, zp], q, f"{node['name']}/quantize")
        self.clamp(out, q, lo, hi)

    # -- the nodes ----------------------------------------------------------------------------

    def node(self, node: dict) -> None:
        op = node["op"]
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise ValueError(f"node {node['name']!r}: no ONNX mapping for the int8 op {op!r}")
        handler(node)

    def qlinear_conv(self, node: dict, x: str, weight_oihw: np.ndarray, out: str, **attrs) -> str:
        name, y = node["name"], node["output"]
        w_scale = self.constant(node["name"] + ".weight_scale", np.float32)
        # The int8 graph's constants keep their names (the weight now OIHW).
        w = self.init(node["weight"], np.ascontiguousarray(weight_oihw))
        ws = self.init(node["name"] + ".weight_scale", w_scale)
        wz = self.fresh_init(f"{name}.weight_zero_point", np.zeros(w_scale.shape, np.int8))
        xs, xz = self.grid(node["inputs"][0])
        ys, yz = self.grid(y)
        inputs = [x, xs, xz, w, ws, wz, ys, yz]
        if "bias" in node:
            inputs.append(self.init(node["bias"], self.constant(node["bias"], np.int32)))
        return self.add("QLinearConv", inputs, out, f"{name}/conv", **attrs)

    def op_conv2d(self, node: dict) -> None:
        weight = self.constant(node["weight"], np.int8)  # OHWI
        top, left, bottom, right = node["padding"]
        y, lo, hi = node["output"], node["act_min"], node["act_max"]
        out = self.unclamped(y, lo, hi)
        self.qlinear_conv(
            node,
            node["inputs"][0],
            weight.transpose(0, 3, 1, 2),
            out,
            kernel_shape=list(weight.shape[1:3]),
            strides=list(node["stride"]),
            pads=[top, left, bottom, right],
            dilations=list(node["dilation"]),
            group=int(node["groups"]),
        )
        self.clamp(y, out, lo, hi)

    def op_fully_connected(self, node: dict) -> None:
        name = node["name"]
        weight = self.constant(node["weight"], np.int8)  # [O, F]
        shape = self.fresh_init(f"{name}.nchw_shape", np.array([0, -1, 1, 1], dtype=np.int64))
        x4 = self.fresh(f"{name}/input_nchw")
        self.add("Reshape", [node["inputs"][0], shape], x4, f"{name}/to_nchw")
        y4 = self.fresh(f"{name}/output_nchw")
        self.qlinear_conv(node, x4, weight[:, :, None, None], y4, kernel_shape=[1, 1])
        y, lo, hi = node["output"], node["act_min"], node["act_max"]
        out = self.unclamped(y, lo, hi)
        self.add("Flatten", [y4], out, f"{name}/flatten", axis=1)
        self.clamp(y, out, lo, hi)

    def op_add(self, node: dict) -> None:
        a, b = (self.dequantize(v, node["name"]) for v in node["inputs"])
        s = self.add("Add", [a, b], self.fresh(f"{node['name']}/sum"), f"{node['name']}/add")
        self.quantize(s, node)

    def op_concat(self, node: dict) -> None:
        parts = [self.dequantize(v, node["name"]) for v in node["inputs"]]
        y = self.fresh(f"{node['name']}/concat_float")
        self.add("Concat", parts, y, f"{node['name']}/concat", axis=1)
        self.quantize(y, node)

    def op_average_pool2d(self, node: dict) -> None:
        name, x = node["name"], node["inputs"][0]
        _, h, w = self.values[x]["shape"]
        xf = self.dequantize(x, name)
        yf = self.fresh(f"{name}/pool_float")
        if list(node["kernel"]) == [h, w] and not any(node["padding"]):
            self.add("GlobalAveragePool", [xf], yf, f"{name}/pool")
        else:
            self.add(
                "AveragePool",
                [xf],
                yf,
                f"{name}/pool",
                kernel_shape=list(node["kernel"]),
                strides=list(node["stride"]),
                pads=list(node["padding"]),
                count_include_pad=0,
            )
        self.quantize(yf, {**node, "act_min": -128, "act_max": 127})

    def op_max_pool2d(self, node: dict) -> None:
        self.add(
            "MaxPool",
            [node["inputs"][0]],
            node["output"],
            f"{node['name']}/pool",
            kernel_shape=list(node["kernel"]),
            strides=list(node["stride"]),
            pads=list(node["padding"]),
        )

    def op_flatten(self, node: dict) -> None:
        self.add("Flatten", [node["inputs"][0]], node["output"], f"{node['name']}/flatten", axis=1)
