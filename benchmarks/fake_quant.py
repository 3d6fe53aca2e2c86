"""CPU benchmark of edgeqat's fake-quant ops against PyTorch's and a plain copy.

For each size (default 1M and 16M float32 elements, as conv weights
``[C, C, 3, 3]``) and each granularity (per tensor; per channel along axis 0),
times the forward and the forward+backward of:

- edgeqat: ``torch.ops.edgeqat.fake_quant_with_min_max_vars`` /
  ``fake_quant_with_min_max_vars_per_channel`` (min and max learnable);
- ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``
  (gradient to x only);
- ``torch._fake_quantize_learnable_per_tensor_affine`` /
  ``torch._fake_quantize_learnable_per_channel_affine`` (gradients to x, scale, zero_point);
- a plain copy, the memory-bandwidth reference: ``out.copy_(x)`` into a
  preallocated tensor, and ``x.clone()``, which, like any out-of-place op,
  also allocates (and page-faults in) its output.

All run in one process with the same number of threads, and PASS/FAIL lines
check the targets: edgeqat forward+backward at least 1.5x faster than
``torch.fake_quantize_*``, and edgeqat forward within 2x of a copy's time.

Usage::

    python benchmarks/fake_quant.py            # 1M and 16M, about a minute
    python benchmarks/fake_quant.py --quick    # shorter measurements
    python benchmarks/fake_quant.py --sizes 4M,512x256x3x3 --threads 1 --markdown
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import _common  # benchmarks/_common.py (the script's own folder is on sys.path)
import torch
from _common import cpu_model, load_average
from torch.utils import benchmark

import edgeqat

NUM_BITS = 8
QUANT_MIN, QUANT_MAX = 0, 2**NUM_BITS - 1  # narrow_range=False for every implementation
ELEMENT_BYTES = 4  # float32
# Essential traffic per element: forward reads x and writes y; the backward
# also reads the upstream gradient g and writes dx. Masks or saved inputs and
# the O(channels) range gradients are not counted, so every implementation is
# measured against the same byte count.
FWD_BYTES_PER_ELEMENT = 2 * ELEMENT_BYTES
FWD_BWD_BYTES_PER_ELEMENT = 4 * ELEMENT_BYTES
COPY_BYTES_PER_ELEMENT = 2 * ELEMENT_BYTES
BANDWIDTH_FORMULA = (
    "GB/s = bytes / time / 1e9, bytes = N * 4 * (2 for fwd: read x + write y; "
    "4 for fwd+bwd: + read g + write dx; 2 for a copy), N = elements; "
    "masks, saved tensors and per-channel terms not counted"
)

SPEEDUP_TARGET = 1.5  # edgeqat fwd+bwd vs torch.fake_quantize_*, at least
COPY_TARGET = 2.0  # edgeqat fwd time / copy time, at most

EDGEQAT = "edgeqat"
COPY_INTO = "out.copy_(x)"
CLONE = "x.clone()"


@dataclass
class Timing:
    """Seconds per call: the median over blocks, and the blocks' relative spread."""

    median_s: float
    spread: float  # interquartile range of the blocks / median


@dataclass
class Impl:
    """One implementation at one size: closures to time and their bytes."""

    name: str
    forward: Callable[[], object]
    forward_backward: Callable[[], object] | None
    fwd_bytes_per_element: int = FWD_BYTES_PER_ELEMENT


@dataclass
class Result:
    name: str
    fwd: Timing
    fwd_bwd: Timing | None
    fwd_bytes: int
    fwd_bwd_bytes: int

    @property
    def fwd_s(self) -> float:
        return self.fwd.median_s

    @property
    def fwd_bwd_s(self) -> float | None:
        return None if self.fwd_bwd is None else self.fwd_bwd.median_s


@dataclass
class Section:
    size_label: str
    shape: tuple[int, ...]
    granularity: str  # "per-tensor" or "per-channel"
    results: list[Result] = field(default_factory=list)

    def get(self, name: str) -> Result:
        return next(r for r in self.results if r.name == name)


# --------------------------------------------------------------------------- sizes


def conv_weight_shape(numel: int) -> tuple[int, ...]:
    """A square 3x3 conv weight [C, C, 3, 3], C a multiple of 16, near ``numel``."""
    channels = max(1, round(math.sqrt(numel / 9) / 16)) * 16
    return (channels, channels, 3, 3)


_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(token: str) -> tuple[str, tuple[int, ...]]:
    """``"16M"`` (binary suffixes K, M, G), ``"1000000"`` or a shape ``"512x256x3x3"``."""
    token = token.strip()
    if "x" in token.lower():
        try:
            shape = tuple(int(d) for d in token.lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            raise argparse.ArgumentTypeError(f"bad shape {token!r}, expected e.g. 512x256x3x3")
        return token, shape
    match = re.fullmatch(r"(\d+)\s*([KMG]?)", token.upper())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"bad size {token!r}, expected e.g. 1M, 16M, 1000000 or 512x256x3x3"
        )
    return token, conv_weight_shape(int(match.group(1)) * _SUFFIX[match.group(2)])


def parse_sizes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    sizes = [parse_size(t) for t in text.split(",") if t.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


# --------------------------------------------------------------------------- inputs


def make_inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    g = torch.randn(shape, generator=gen)  # preallocated upstream gradient, reused
    return x, g


def affine_qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's (scale, zero_point) for the range [lo, hi] on [QUANT_MIN, QUANT_MAX]."""
    scale = (hi - lo) / (QUANT_MAX - QUANT_MIN)
    zero_point = torch.clamp(torch.round(QUANT_MIN - lo / scale), QUANT_MIN, QUANT_MAX)
    return scale.float(), zero_point


def build_impls(x: torch.Tensor, g: torch.Tensor, per_channel: bool) -> list[Impl]:
    """The closures to time; each forward+backward clears its grads first."""
    axis = 0
    if per_channel:
        # Per output channel, slightly inside each channel's extremes.
        dims = tuple(range(1, x.dim()))
        bound = 0.9 * x.abs().amax(dim=dims)
        lo, hi = -bound, bound
    else:
        lo, hi = torch.tensor(-2.5), torch.tensor(2.5)  # clips about 1% of randn
    scale, zero_point = affine_qparams(lo, hi)
    if not per_channel:
        scale, zero_point = scale.reshape(1), zero_point.reshape(1)
    zp_int = zero_point.to(torch.int32)
    zp_float = zero_point.float()

    x_grad = x.detach().requires_grad_(True)  # same storage as x
    lo_grad = lo.clone().requires_grad_(True)
    hi_grad = hi.clone().requires_grad_(True)
    scale_grad = scale.clone().requires_grad_(True)
    zp_grad = zp_float.clone().requires_grad_(True)

    if per_channel:
        eq_op = torch.ops.edgeqat.fake_quant_with_min_max_vars_per_channel

        def eq(xx, mn, mx):
            return eq_op(xx, mn, mx, axis, NUM_BITS, False)

        def pt(xx):
            return torch.fake_quantize_per_channel_affine(
                xx, scale, zp_int, axis, QUANT_MIN, QUANT_MAX
            )

        def learnable(xx, s, z):
            return torch._fake_quantize_learnable_per_channel_affine(
                xx, s, z, axis, QUANT_MIN, QUANT_MAX, 1.0
            )

        pt_name = "torch.fake_quantize_per_channel_affine"
        learnable_name = "torch._fake_quantize_learnable_per_channel_affine"
    else:
        eq_op = torch.ops.edgeqat.fake_quant_with_min_max_vars

        def eq(xx, mn, mx):
            return eq_op(xx, mn, mx, NUM_BITS, False)

        def pt(xx):
            return torch.fake_quantize_per_tensor_affine(xx, scale, zp_int, QUANT_MIN, QUANT_MAX)

        def learnable(xx, s, z):
            return torch._fake_quantize_learnable_per_tensor_affine(
                xx, s, z, QUANT_MIN, QUANT_MAX, 1.0
            )

        pt_name = "torch.fake_quantize_per_tensor_affine"
        learnable_name = "torch._fake_quantize_learnable_per_tensor_affine"

    def eq_fwd():
        with torch.no_grad():
            return eq(x, lo, hi)

    def eq_fwd_bwd():
        x_grad.grad = lo_grad.grad = hi_grad.grad = None
        eq(x_grad, lo_grad, hi_grad).backward(g)

    def pt_fwd():
        with torch.no_grad():
            return pt(x)

    def pt_fwd_bwd():
        x_grad.grad = None
        pt(x_grad).backward(g)

    def learnable_fwd():
        with torch.no_grad():
            return learnable(x, scale, zp_float)

    def learnable_fwd_bwd():
        x_grad.grad = scale_grad.grad = zp_grad.grad = None
        learnable(x_grad, scale_grad, zp_grad).backward(g)

    out = torch.empty_like(x)

    def copy_into():
        return out.copy_(x)

    def clone():
        return x.clone()

    return [
        Impl(EDGEQAT, eq_fwd, eq_fwd_bwd),
        Impl(pt_name, pt_fwd, pt_fwd_bwd),
        Impl(learnable_name, learnable_fwd, learnable_fwd_bwd),
        Impl(COPY_INTO, copy_into, None, COPY_BYTES_PER_ELEMENT),
        Impl(CLONE, clone, None, COPY_BYTES_PER_ELEMENT),
    ]


# --------------------------------------------------------------------------- timing


def median_time(
    fn: Callable[[], object], threads: int, min_run_time: float, min_blocks: int
) -> Timing:
    """Median seconds per call over blocks of ``Timer.timeit``.

    Blocks are sized to take about a tenth of ``min_run_time`` (at least one
    call); blocks are run until ``min_run_time`` has passed and at least
    ``min_blocks`` blocks were taken. The first call (warm-up) is not counted.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    gc.collect()
    first = timer.timeit(1).median  # warm-up, and a first estimate
    number = max(1, int(min_run_time / 10 / max(first, 1e-9)))
    per_call: list[float] = []
    start = time.perf_counter()
    while len(per_call) < min_blocks or time.perf_counter() - start < min_run_time:
        per_call.append(timer.timeit(number).median)
    median = statistics.median(per_call)
    q1, _, q3 = statistics.quantiles(per_call, n=4) if len(per_call) > 1 else (median,) * 3
    return Timing(median, (q3 - q1) / median)


def run_section(
    size_label: str,
    shape: tuple[int, ...],
    per_channel: bool,
    x: torch.Tensor,
    g: torch.Tensor,
    args: argparse.Namespace,
    copy_cache: dict[str, Timing],
) -> Section:
    section = Section(size_label, shape, "per-channel" if per_channel else "per-tensor")
    numel = x.numel()
    for impl in build_impls(x, g, per_channel):
        label = f"{size_label} {section.granularity} {impl.name}"
        print(f"  timing {label} ...", file=sys.stderr, flush=True)
        if impl.forward_backward is None and impl.name in copy_cache:
            fwd = copy_cache[impl.name]  # copies do not depend on granularity
        else:
            fwd = median_time(impl.forward, args.threads, args.min_run_time, args.min_blocks)
            if impl.forward_backward is None:
                copy_cache[impl.name] = fwd
        fwd_bwd = None
        if impl.forward_backward is not None:
            fwd_bwd = median_time(
                impl.forward_backward, args.threads, args.min_run_time, args.min_blocks
            )
        section.results.append(
            Result(
                impl.name,
                fwd,
                fwd_bwd,
                numel * impl.fwd_bytes_per_element,
                numel * FWD_BWD_BYTES_PER_ELEMENT,
            )
        )
    return section


# --------------------------------------------------------------------------- report


NOISY = 0.10  # blocks' interquartile range / median above which a time is marked


def fmt_ms(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    return f"{timing.median_s * 1e3:.3f}" + ("*" if timing.spread > NOISY else "")


def fmt_gbs(nbytes: int, seconds: float | None) -> str:
    return "-" if seconds is None else f"{nbytes / seconds / 1e9:.1f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def table_rows(section: Section) -> list[list[str]]:
    ref = section.get(EDGEQAT)
    rows = []
    for r in section.results:
        if r.name == EDGEQAT:
            ratio_fwd, ratio_fb = "(ref)", "(ref)"
        elif r.fwd_bwd_s is None:  # a copy: edgeqat fwd time / copy time
            ratio_fwd, ratio_fb = fmt_ratio(ref.fwd_s / r.fwd_s), "-"
        else:  # a peer: peer time / edgeqat time
            ratio_fwd = fmt_ratio(r.fwd_s / ref.fwd_s)
            ratio_fb = fmt_ratio(r.fwd_bwd_s / ref.fwd_bwd_s)
        rows.append(
            [
                f"{section.size_label} ({math.prod(section.shape):,})",
                "x".join(map(str, section.shape)),
                section.granularity,
                r.name,
                fmt_ms(r.fwd),
                fmt_gbs(r.fwd_bytes, r.fwd_s),
                fmt_ms(r.fwd_bwd),
                fmt_gbs(r.fwd_bwd_bytes, r.fwd_bwd_s),
                ratio_fwd,
                ratio_fb,
            ]
        )
    return rows


HEADER = [
    "size (elements)",
    "shape",
    "quant",
    "implementation",
    "fwd ms",
    "fwd GB/s",
    "fwd+bwd ms",
    "fwd+bwd GB/s",
    "ratio fwd",
    "ratio fwd+bwd",
]
RATIO_LEGEND = (
    "ratio: peer rows = peer time / edgeqat time (> 1: edgeqat faster); "
    "copy rows = edgeqat fwd time / copy time (target <= 2)"
)


def print_table(sections: list[Section], markdown: bool) -> None:
    right = [False, False, False, False, True, True, True, True, True, True]
    _common.print_table(HEADER, right, [table_rows(s) for s in sections], markdown)


def allocation_notes(sections: list[Section]) -> list[str]:
    """Flag sizes where allocating the output costs more than copying into it."""
    notes = []
    for s in sections:
        if s.granularity != "per-tensor":
            continue  # the copies are shared by both granularities
        ratio = s.get(CLONE).fwd_s / s.get(COPY_INTO).fwd_s
        if ratio > COPY_TARGET:
            notes.append(
                f"note: at {s.size_label}, {CLONE} takes {ratio:.1f}x the time of {COPY_INTO}: "
                "a fresh output buffer is page-faulted in on first write (the allocator "
                "returns large blocks to the OS), which every out-of-place op pays; "
                "THP_MEM_ALLOC_ENABLE=1 or a caching malloc (jemalloc, tcmalloc) reduces it"
            )
    return notes


def check_targets(sections: list[Section]) -> list[tuple[bool, str]]:
    checks = []
    for s in sections:
        ref = s.get(EDGEQAT)
        where = f"{s.size_label} {s.granularity}"
        peer = next(r for r in s.results if r.name.startswith("torch.fake_quantize_"))
        speedup = peer.fwd_bwd_s / ref.fwd_bwd_s
        checks.append(
            (
                speedup >= SPEEDUP_TARGET,
                f"{where}: edgeqat fwd+bwd {speedup:.2f}x faster than {peer.name} "
                f"(target >= {SPEEDUP_TARGET}x)",
            )
        )
        for name, what in ((CLONE, "out-of-place copy"), (COPY_INTO, "preallocated copy")):
            ratio = ref.fwd_s / s.get(name).fwd_s
            checks.append(
                (
                    ratio <= COPY_TARGET,
                    f"{where}: edgeqat fwd takes {ratio:.2f}x the time of {name} "
                    f"({what}; target <= {COPY_TARGET}x)",
                )
            )
    return checks


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time edgeqat's fake-quant ops against PyTorch's and a plain copy (CPU).",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default="1M,16M",
        help="comma-separated element counts (binary K/M/G suffixes; shaped as conv "
        "weights [C, C, 3, 3]) or explicit shapes such as 512x256x3x3 (default: 1M,16M)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads, the same for every implementation "
        "(default: torch.get_num_threads())",
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter measurements (noisier): 0.2 s, 3 blocks"
    )
    parser.add_argument(
        "--min-run-time",
        type=float,
        default=None,
        help="seconds per measurement (default 1.0, or 0.2 with --quick)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target line FAILs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.min_run_time is None:
        args.min_run_time = 0.2 if args.quick else 1.0
    args.min_blocks = 3 if args.quick else 5
    return args


def describe(args: argparse.Namespace) -> list[str]:
    return [
        f"torch {torch.__version__}, edgeqat {edgeqat.__version__}, "
        f"Python {sys.version.split()[0]}",
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"edgeqat._C.cpu_isa(): {edgeqat._C.cpu_isa()}",
        f"threads: {args.threads} for every implementation "
        f"(torch.get_num_threads() = {torch.get_num_threads()})",
        f"time: median over >= {args.min_blocks} blocks of torch.utils.benchmark.Timer.timeit, "
        f">= {args.min_run_time:g} s per measurement, after one warm-up call; "
        f"* = blocks' interquartile range > {NOISY:.0%} of the median (noisy)",
        f"quantization: num_bits={NUM_BITS}, grid [{QUANT_MIN}, {QUANT_MAX}], "
        "per channel along axis 0 (conv weights [C_out, C_in, kh, kw])",
        "fwd: under torch.no_grad(); fwd+bwd: y.backward(g), g preallocated, grads set to "
        "None before each call; gradients to edgeqat: x, min, max; "
        "torch.fake_quantize_*: x; learnable: x, scale, zero_point",
        BANDWIDTH_FORMULA,
        RATIO_LEGEND,
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bullet = "- " if args.markdown else "  "
    print("edgeqat fake-quant benchmark (CPU, float32)")
    print()
    for note in describe(args):
        print(bullet + note)
    print(f"{bullet}load average (1, 5, 15 min) before: {load_average()}")
    print(flush=True)

    sections: list[Section] = []
    for size_label, shape in args.sizes:
        x, g = make_inputs(shape, args.seed)
        copy_cache: dict[str, Timing] = {}
        for per_channel in (False, True):
            sections.append(run_section(size_label, shape, per_channel, x, g, args, copy_cache))
        del x, g

    print_table(sections, args.markdown)
    print()
    print(f"{bullet}load average after: {load_average()} (busy CPUs make timings noisy)")
    for note in allocation_notes(sections):
        print(bullet + note)
    print()
    checks = check_targets(sections)
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 1 if args.check and not all(ok for ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
