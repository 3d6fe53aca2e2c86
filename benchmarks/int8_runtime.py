"""CPU inference benchmark: edgeqat's int8 runtime vs torch float32 vs onnxruntime int8 / float.

For torchvision's MobileNet v2 and ResNet-18 (``num_classes=10``) on Fashion-MNIST sized
inputs (28x28, the one grey channel replicated to 3, as ``qat_step.py`` does) and on 224x224
inputs, measures the latency at batch 1 and the throughput at batch 32, at 1 and 2 threads,
of these engines (``--engines``), all in one process:

- ``edgeqat``: the exported int8 model (``edgeqat.export``) in edgeqat's torch-free C++
  runtime, ``edgeqat.Int8Model`` with ``num_threads`` = the thread count (float in, float
  out: the input quantization and the output dequantization are timed);
- ``torch-fp32``: the float model in eval mode, eager, ``torch.inference_mode()``,
  ``torch.set_num_threads``;
- ``ort-int8``: the same int8 model exported as ONNX (``edgeqat.export_onnx`` as it writes
  it by default: QLinearConv / QDQ, float in, float out, uint8 activations and int8 weights:
  U8S8, the form onnxruntime's x86 integer kernels are built for and its own quantizer writes
  by default) in onnxruntime;
- ``ort-s8s8``: the same export with int8 activations (``activation_dtype="int8"``: the int8
  graph's values as they are, the same model, S8S8), which onnxruntime runs on a far slower
  path; for information;
- ``ort-fp32``: the float model exported to ONNX by ``torch.onnx.export`` (TorchScript
  exporter, ``dynamo=False``), in onnxruntime.

onnxruntime sessions: CPU execution provider, ``intra_op_num_threads`` = the thread count,
``inter_op_num_threads=1``, ``ORT_ENABLE_ALL`` graph optimizations, sequential execution,
other options at their defaults.

The models have random weights: each is ``edgeqat.prepare_qat``-ed and fed a few batches of
random data in train mode (no gradient step) so that every quantizer has a range and batch
norm has statistics, then ``freeze_bn`` + ``freeze_observers`` + eval and exported. Speed
does not depend on the weights' values, so nothing is trained.

Timing: per cell (model, input, batch, threads), each engine runs untimed warm-up calls,
then the engines take turns in blocks of calls (about a tenth of ``--min-time`` each, with a
short pause between blocks so that no engine's spinning worker threads steal the next
engine's CPUs) until every engine has run at least ``--min-runs`` calls and ``--min-time``
seconds. Every call is timed alone; reported: the median (and the 90th percentile) time per
call, images/s = batch / median, and time ratios against torch float32 and against
onnxruntime int8 (and S8S8) measured in the same cell. Targets (PASS/FAIL lines, exit status
1 with ``--check``): for every cell, edgeqat faster than torch float32 and at most 1.5x the
time of onnxruntime int8 (``ort-int8``, the U8S8 file); edgeqat's ratio to ``ort-s8s8`` is
printed too (INFO lines), with no target.

Usage::

    python benchmarks/int8_runtime.py                       # everything (about 10 min on 2 cores)
    python benchmarks/int8_runtime.py --quick               # a short, noisier pass
    python benchmarks/int8_runtime.py --sizes 28 --threads 1 --markdown
    python benchmarks/int8_runtime.py --engines edgeqat,ort-int8 --kernels fast/avx2
    python benchmarks/int8_runtime.py --check               # exit status 1 if a target FAILs
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import _common  # benchmarks/_common.py (the script's own folder is on sys.path)
import numpy as np
import torch
from _common import cpu_model, load_average, parse_list
from torch import nn

import edgeqat
from edgeqat import _runtime
from edgeqat._torchvision import import_torchvision

MODELS = ("mobilenet_v2", "resnet18")
SIZES = (28, 224)
THREADS = (1, 2)
BATCHES = (1, 32)
NUM_CLASSES = 10

EDGEQAT = "edgeqat"
TORCH_FP32 = "torch-fp32"
ORT_INT8 = "ort-int8"  # export_onnx's default file: uint8 activations, int8 weights (U8S8)
ORT_S8S8 = "ort-s8s8"  # export_onnx(activation_dtype="int8"): for information, no target
ORT_FP32 = "ort-fp32"
ENGINES = (EDGEQAT, TORCH_FP32, ORT_INT8, ORT_S8S8, ORT_FP32)

TORCH_TARGET = 1.0  # edgeqat time / torch float32 time, below
ORT_TARGET = 1.5  # edgeqat time / onnxruntime int8 time, at most

CALIBRATION_BATCHES = 4
CALIBRATION_BATCH = 8
PAUSE_S = 0.02  # between blocks: lets spinning worker threads (OpenMP, onnxruntime) go idle
ONNX_OPSET = 17  # the float model's ONNX export

# --------------------------------------------------------------------------- models


def make_input(size: int, batch: int, seed: int) -> tuple[torch.Tensor, str]:
    gen = torch.Generator().manual_seed(seed)
    if size == 28:
        # Fashion-MNIST: one grey channel, replicated to 3 so torchvision's models run unchanged.
        grey = torch.randn(batch, 1, size, size, generator=gen)
        return grey.repeat(1, 3, 1, 1).contiguous(), "3x28x28 (1 ch x3)"
    return torch.randn(batch, 3, size, size, generator=gen), f"3x{size}x{size}"


@dataclass
class Built:
    """One model at one input size: the float model and the exported files."""

    model_name: str
    size: int
    input_label: str
    float_model: nn.Module
    eq8_path: str
    int8_onnx_path: str  # U8S8, as export_onnx writes it by default
    s8s8_onnx_path: str
    fp32_onnx_path: str
    int8_nodes: int = 0


def build(model_name: str, size: int, directory: str, seed: int) -> Built:
    """The float model (eval) and its int8 exports (edgeqat file + int8 ONNX, U8S8 and S8S8)
    and float ONNX export, in ``directory``. Random weights; calibration on random data, no
    training."""
    tv = import_torchvision()
    torch.manual_seed(seed)
    float_model = getattr(tv.models, model_name)(num_classes=NUM_CLASSES)
    x, input_label = make_input(size, CALIBRATION_BATCH, seed + 1)
    example = x[:1]

    qat = edgeqat.prepare_qat(copy.deepcopy(float_model), example_inputs=x[:2]).train()
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):  # observers see data, batch norm gets statistics
            batch, _ = make_input(
                size, CALIBRATION_BATCH, int(torch.randint(1 << 30, (1,), generator=gen))
            )
            qat(batch)
    edgeqat.freeze_observers(edgeqat.freeze_bn(qat))
    qat.eval()

    stem = os.path.join(directory, f"{model_name}_{size}")
    eq8_path = stem + ".eq8"
    int8_onnx_path = stem + "_int8.onnx"
    s8s8_onnx_path = stem + "_s8s8.onnx"
    fp32_onnx_path = stem + "_fp32.onnx"
    edgeqat.export(qat, eq8_path, example_inputs=example, load=False)
    edgeqat.export_onnx(qat, int8_onnx_path, example_inputs=example)  # uint8 activations
    edgeqat.export_onnx(qat, s8s8_onnx_path, example_inputs=example, activation_dtype="int8")

    # The float model with the batch-norm statistics of the same calibration batches (the
    # values do not matter for speed; eval-mode batch norm does the same work either way).
    with torch.no_grad():
        float_model.train()
        for _ in range(CALIBRATION_BATCHES):
            batch, _ = make_input(
                size, CALIBRATION_BATCH, int(torch.randint(1 << 30, (1,), generator=gen))
            )
            float_model(batch)
    float_model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(
            float_model,
            (example,),
            fp32_onnx_path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    built = Built(
        model_name,
        size,
        input_label,
        float_model,
        eq8_path,
        int8_onnx_path,
        s8s8_onnx_path,
        fp32_onnx_path,
    )
    built.int8_nodes = len(edgeqat.Int8Model.load(eq8_path).nodes)
    del qat
    return built


# --------------------------------------------------------------------------- engines


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@dataclass
class Engine:
    name: str
    call: Callable[[], object]  # one inference on the cell's input batch
    output: Callable[[], np.ndarray]  # one inference, the output as float32 numpy
    before: Callable[[], None] = lambda: None  # thread setup before each block
    times: list[float] = field(default_factory=list)
    warmup_times: list[float] = field(default_factory=list)


def make_engines(
    built: Built, names: list[str], threads: int, x: torch.Tensor, kernels: str
) -> list[Engine]:
    engines = []
    x_np = np.ascontiguousarray(x.numpy())
    for name in names:
        if name == EDGEQAT:
            model = edgeqat.Int8Model.load(built.eq8_path, num_threads=threads, kernels=kernels)

            def run_eq(model=model):
                return model(x)

            engines.append(Engine(name, run_eq, lambda f=run_eq: f().numpy()))
        elif name == TORCH_FP32:
            fm = built.float_model

            def run_torch(fm=fm):
                with torch.inference_mode():
                    return fm(x)

            engines.append(
                Engine(
                    name,
                    run_torch,
                    lambda f=run_torch: f().numpy(),
                    before=lambda: torch.set_num_threads(threads),
                )
            )
        else:
            path = {
                ORT_INT8: built.int8_onnx_path,
                ORT_S8S8: built.s8s8_onnx_path,
                ORT_FP32: built.fp32_onnx_path,
            }[name]
            sess = ort_session(path, threads)
            feed = {sess.get_inputs()[0].name: x_np}

            def run_ort(sess=sess, feed=feed):
                return sess.run(None, feed)

            engines.append(Engine(name, run_ort, lambda f=run_ort: f()[0]))
    return engines


# --------------------------------------------------------------------------- timing


@dataclass
class Cell:
    built: Built
    batch: int
    threads: int
    engines: list[Engine]
    seconds: float = 0.0

    def get(self, name: str) -> Engine | None:
        return next((e for e in self.engines if e.name == name), None)


def time_cell(cell: Cell, min_time: float, min_runs: int, warmup: int) -> None:
    """Warm-up calls, then rounds in which every engine runs one block of calls (each call
    timed alone) until every engine has ``min_runs`` calls and ``min_time`` seconds."""
    started = time.perf_counter()
    block_s = min_time / 10
    blocks: dict[str, int] = {}
    for e in cell.engines:
        e.before()
        for _ in range(warmup):
            t0 = time.perf_counter()
            e.call()
            e.warmup_times.append(time.perf_counter() - t0)
        # At least 0.1 s of warm-up in all (first calls allocate, page in weights, spawn threads).
        while sum(e.warmup_times) < min(0.1, min_time):
            t0 = time.perf_counter()
            e.call()
            e.warmup_times.append(time.perf_counter() - t0)
        estimate = statistics.median(e.warmup_times[len(e.warmup_times) // 2 :])
        blocks[e.name] = max(1, int(block_s / max(estimate, 1e-6)))
        time.sleep(PAUSE_S)

    def done(e: Engine) -> bool:
        return len(e.times) >= min_runs and sum(e.times) >= min_time

    r = 0
    while not all(done(e) for e in cell.engines):
        n = len(cell.engines)
        for i in range(n):  # a different engine first in each round
            e = cell.engines[(r + i) % n]
            e.before()
            for _ in range(blocks[e.name]):
                t0 = time.perf_counter()
                e.call()
                e.times.append(time.perf_counter() - t0)
            time.sleep(PAUSE_S)
        r += 1
    cell.seconds = time.perf_counter() - started


def median(e: Engine | None) -> float | None:
    return statistics.median(e.times) if e is not None and e.times else None


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --------------------------------------------------------------------------- agreement


def agreement(built: Built, names: list[str], threads: int) -> str:
    """Sanity check that the engines compute the same model: on a batch of 8, edgeqat vs
    onnxruntime int8 in output LSBs, onnxruntime float vs torch as a max |difference|, and
    the int8 models' top-1 agreement with the float model (random weights: a loose check)."""
    x, _ = make_input(built.size, 8, 12345)
    engines = {e.name: e for e in make_engines(built, names, threads, x, "fast")}
    out = {name: e.output() for name, e in engines.items()}
    parts = []
    scale = edgeqat.Int8Model.load(built.eq8_path).outputs[0]["scale"]
    if EDGEQAT in out and ORT_INT8 in out:
        lsb = np.abs(out[EDGEQAT] - out[ORT_INT8]).max() / scale
        parts.append(f"edgeqat vs ort-int8 max {lsb:.0f} LSB")
    if ORT_INT8 in out and ORT_S8S8 in out:
        lsb = np.abs(out[ORT_S8S8] - out[ORT_INT8]).max() / scale
        parts.append(f"ort-s8s8 vs ort-int8 max {lsb:.0f} LSB")
    if TORCH_FP32 in out and ORT_FP32 in out:
        parts.append(
            f"ort-fp32 vs torch max |diff| {np.abs(out[ORT_FP32] - out[TORCH_FP32]).max():.1e}"
        )
    if TORCH_FP32 in out:
        top = out[TORCH_FP32].argmax(1)
        for name in (EDGEQAT, ORT_INT8, ORT_S8S8):
            if name in out:
                parts.append(f"{name} top-1 = torch's on {(out[name].argmax(1) == top).sum()}/8")
    return ", ".join(parts) or "not compared (needs two engines)"


# --------------------------------------------------------------------------- report


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def physical_cores() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "?"
    cores = {
        (block.get("physical id"), block.get("core id"))
        for block in (
            dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition(":") for line in para.splitlines())
            )
            for para in text.split("\n\n")
            if para.strip()
        )
    }
    return str(len(cores)) if cores else "?"


def torch_backends() -> str:
    """torch's threading library and oneDNN version, from torch.__config__.parallel_info()."""
    found = []
    for line in torch.__config__.parallel_info().splitlines():
        line = line.strip()
        if line.startswith("OpenMP") or line.startswith("Intel(R) MKL-DNN"):
            found.append(line.split(" (")[0].replace("Intel(R) MKL-DNN", "oneDNN"))
    return ", ".join(found) or "?"


def runtime_build() -> str:
    """When edgeqat's runtime module was built, and the source tree's git state: the runtime
    is under active development, so a result names the build it measured."""
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(_runtime.__file__)))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        import subprocess

        def git(*cmd: str) -> str:
            return subprocess.run(
                ["git", "-C", root, *cmd], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "csrc")
        state = f"git {head}" + (" + uncommitted changes under csrc/" if dirty else "")
    except Exception:  # no git, not a checkout: the build time alone
        state = "git state unknown"
    return f"runtime module built {built} ({state})"


def describe(args: argparse.Namespace) -> list[str]:
    import onnx
    import onnxruntime as ort

    tv = import_torchvision()
    flags = cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni") if f in flags]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs ({physical_cores()} cores, "
        f"{affinity} usable by this process); flags: {' '.join(simd) or 'none of avx2/avx512'}",
        f"edgeqat {edgeqat.__version__}: fast kernels on {_runtime.fast_active_isa()} (of "
        f"{', '.join(_runtime.fast_isas())}), Int8Model kernels={args.kernels!r}; "
        f"{runtime_build()}"
        + (
            f", EDGEQAT_RUNTIME_ISA={os.environ['EDGEQAT_RUNTIME_ISA']}"
            if os.environ.get("EDGEQAT_RUNTIME_ISA")
            else ""
        ),
        f"torch {torch.__version__} ({torch_backends()}), "
        f"torchvision {tv.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider), "
        f"onnx {onnx.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}",
        "models: torchvision, num_classes=10, random weights (speed does not depend on them): "
        f"prepare_qat + {CALIBRATION_BATCHES} calibration batches of {CALIBRATION_BATCH} random "
        "images (train mode, no gradient step) + freeze_bn + freeze_observers + eval, then "
        "edgeqat.export (.eq8) and edgeqat.export_onnx (int8 ONNX: QLinearConv / QDQ, opset 13; "
        "ort-int8: the default, uint8 activations, U8S8; ort-s8s8: activation_dtype='int8'); "
        f"float model: eval, batch-norm statistics from random batches, torch.onnx.export "
        f"(dynamo=False, opset {ONNX_OPSET}) for ort-fp32",
        "engines: edgeqat = Int8Model(num_threads=T), float in / float out; torch-fp32 = "
        "torch.set_num_threads(T), inference_mode, eager; ort-* = onnxruntime "
        "InferenceSession(intra_op_num_threads=T, inter_op_num_threads=1, ORT_ENABLE_ALL, "
        "ORT_SEQUENTIAL), float in / float out",
        f"timing: per cell and engine >= {args.warmup} warm-up calls (and >= 0.1 s), then "
        f"engines in turn, blocks of ~{args.min_time / 10:.2f} s with {PAUSE_S * 1e3:.0f} ms "
        f"pauses, until each has >= {args.min_runs} calls and >= {args.min_time:g} s; every call "
        "timed alone; ms = median per batch, p90 = 90th percentile, images/s = batch / median; "
        "vs X = this engine's median / X's median in the same cell (below 1: faster)",
        f"targets (edgeqat, every cell): vs torch-fp32 < {TORCH_TARGET:g}x; vs onnxruntime "
        f"int8 (ort-int8, U8S8) <= {ORT_TARGET:g}x; vs ort-s8s8 printed, no target",
    ]


HEADER = [
    "model",
    "input",
    "batch",
    "threads",
    "engine",
    "ms",
    "p90 ms",
    "images/s",
    "vs torch-fp32",
    "vs ort-int8",
    "vs ort-s8s8",
    "runs",
]
RIGHT = [False, False, True, True, False, True, True, True, True, True, True, True]


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def table_rows(cell: Cell) -> list[list[str]]:
    ref_torch = median(cell.get(TORCH_FP32))
    ref_ort = median(cell.get(ORT_INT8))
    ref_s8 = median(cell.get(ORT_S8S8))
    rows = []
    for e in cell.engines:
        m = median(e)
        rows.append(
            [
                cell.built.model_name,
                cell.built.input_label,
                str(cell.batch),
                str(cell.threads),
                e.name,
                fmt_ms(m),
                fmt_ms(percentile(e.times, 0.9)),
                f"{cell.batch / m:.0f}" if cell.batch / m >= 10 else f"{cell.batch / m:.1f}",
                fmt_ratio(m, ref_torch),
                fmt_ratio(m, ref_ort),
                fmt_ratio(m, ref_s8),
                str(len(e.times)),
            ]
        )
    return rows


def print_table(cells: list[Cell], markdown: bool) -> None:
    # One group per model and input size.
    groups: dict[tuple, list[list[str]]] = {}
    for cell in cells:
        key = (cell.built.model_name, cell.built.size)
        groups.setdefault(key, []).extend(table_rows(cell))
    _common.print_table(HEADER, RIGHT, list(groups.values()), markdown)


def check_targets(cells: list[Cell]) -> list[tuple[bool | None, str]]:
    """(passed, line) per target and cell; passed is None on an information line (edgeqat vs
    onnxruntime S8S8, which has no target)."""
    checks: list[tuple[bool | None, str]] = []
    for cell in cells:
        eq, tf = median(cell.get(EDGEQAT)), median(cell.get(TORCH_FP32))
        if eq is None:
            continue
        where = (
            f"{cell.built.model_name} {cell.built.input_label} batch {cell.batch} "
            f"threads {cell.threads}: edgeqat {fmt_ms(eq)} ms"
        )
        if tf is not None:
            checks.append(
                (
                    eq / tf < TORCH_TARGET,
                    f"{where} = {eq / tf:.2f}x torch-fp32 {fmt_ms(tf)} ms (target < "
                    f"{TORCH_TARGET:g}x)",
                )
            )
        oi = median(cell.get(ORT_INT8))
        if oi is not None:
            checks.append(
                (
                    eq / oi <= ORT_TARGET,
                    f"{where} = {eq / oi:.2f}x {ORT_INT8} {fmt_ms(oi)} ms (target <= "
                    f"{ORT_TARGET:g}x)",
                )
            )
        os8 = median(cell.get(ORT_S8S8))
        if os8 is not None:
            checks.append((None, f"{where} = {eq / os8:.2f}x {ORT_S8S8} {fmt_ms(os8)} ms"))
    return checks


# --------------------------------------------------------------------------- main


def parse_ints(minimum: int, what: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            values = []
        if not values or any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} >= {minimum}, got {text!r}"
            )
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Inference latency and throughput: edgeqat's int8 runtime vs torch "
        "float32 vs onnxruntime int8 / float32 (CPU).",
    )
    parser.add_argument(
        "--models",
        type=parse_list(MODELS),
        default=list(MODELS),
        help=f"comma-separated torchvision models (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--sizes",
        type=parse_ints(16, "square input sizes"),
        default=list(SIZES),
        help="comma-separated square input sizes; 28 is Fashion-MNIST's, one channel "
        "replicated to 3 (default: 28,224)",
    )
    parser.add_argument(
        "--threads",
        type=parse_ints(1, "thread counts"),
        default=list(THREADS),
        help="comma-separated thread counts, the same for every engine (default: 1,2)",
    )
    parser.add_argument(
        "--batches",
        type=parse_ints(1, "batch sizes"),
        default=list(BATCHES),
        help="comma-separated batch sizes: 1 = latency, 32 = throughput (default: 1,32)",
    )
    parser.add_argument(
        "--engines",
        type=parse_list(ENGINES),
        default=list(ENGINES),
        help=f"comma-separated engines (default: all: {','.join(ENGINES)}); ratios and "
        "targets need edgeqat, torch-fp32 and ort-int8 (ort-s8s8: information only)",
    )
    parser.add_argument(
        "--kernels",
        default="fast",
        help="edgeqat Int8Model kernels: fast (default), reference, or fast/<isa> with <isa> "
        f"one of {', '.join(_runtime.fast_isas())} (EDGEQAT_RUNTIME_ISA also caps 'fast')",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="timed seconds per engine and cell, at least (default 2; 0.3 with --quick)",
    )
    parser.add_argument(
        "--min-runs",
        type=int,
        default=None,
        help="timed calls per engine and cell, at least (default 10; 3 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed warm-up calls per engine and cell (default 3; 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="a short, noisier pass")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target line FAILs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    args = parser.parse_args(argv)
    if args.min_time is None:
        args.min_time = 0.3 if args.quick else 2.0
    if args.min_runs is None:
        args.min_runs = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.min_time <= 0 or args.min_runs < 1 or args.warmup < 0:
        parser.error("--min-time must be > 0, --min-runs >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bullet = "- " if args.markdown else "  "
    print("edgeqat int8 runtime benchmark: edgeqat vs torch float32 vs onnxruntime (CPU)")
    print()
    for line in describe(args):
        print(bullet + line)
    print(f"{bullet}load average (1, 5, 15 min) before: {load_average()}")
    print(flush=True)

    started = time.perf_counter()
    cells: list[Cell] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeqat-int8-bench-") as directory:
        for model_name in args.models:
            for size in args.sizes:
                print(f"  {model_name} {size}x{size}: building ...", file=sys.stderr, flush=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    built = build(model_name, size, directory, args.seed)
                files = ", ".join(
                    f"{label} {os.path.getsize(p) / 2**20:.1f} MiB"
                    for label, p in (
                        (".eq8", built.eq8_path),
                        ("int8 .onnx", built.int8_onnx_path),
                        ("s8s8 .onnx", built.s8s8_onnx_path),
                        ("float .onnx", built.fp32_onnx_path),
                    )
                )
                notes.append(
                    f"{model_name} {built.input_label}: {built.int8_nodes} int8 nodes; files: "
                    f"{files}; outputs: {agreement(built, args.engines, 1)}"
                )
                for threads in args.threads:
                    for batch in args.batches:
                        x, _ = make_input(size, batch, args.seed + 100 + batch)
                        engines = make_engines(built, args.engines, threads, x, args.kernels)
                        cell = Cell(built, batch, threads, engines)
                        print(
                            f"  {model_name} {built.input_label} batch {batch} threads "
                            f"{threads}: timing {len(engines)} engines ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        time_cell(cell, args.min_time, args.min_runs, args.warmup)
                        for e in cell.engines:  # drop the sessions / models, keep the times
                            e.call = e.output = e.before = None  # type: ignore[assignment]
                        cells.append(cell)
                        gc.collect()
                built.float_model = None  # type: ignore[assignment]
                gc.collect()
    torch.set_num_threads(max(args.threads))

    print_table(cells, args.markdown)
    print()
    elapsed = time.perf_counter() - started
    print(f"{bullet}load average after: {load_average()} (busy CPUs make timings noisy)")
    print(f"{bullet}total time of the measurements: {elapsed:.0f} s")
    for note in notes:
        print(bullet + note)
    print()
    checks = check_targets(cells)
    for ok, text in checks:
        print(f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'}  {text}")
    return 1 if args.check and any(ok is False for ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
