"""CPU benchmark of one QAT training step: float vs edgeqat vs PyTorch's own QAT.

For torchvision's MobileNet v2 and ResNet-18 (``num_classes=10``), at batch 64 on
Fashion-MNIST sized inputs (28x28, the one grey channel replicated to 3, so the
models are unmodified) and on 224x224 inputs, measures the time and the peak
tensor memory of a training step

    forward -> cross-entropy loss -> backward -> SGD (momentum 0.9) step

in train mode, for these variants (``--variants``):

- ``float``: the unmodified model;
- ``edgeqat``: ``edgeqat.prepare_qat(model, example_inputs=...)``, every
  quantizer observing and batch norm learning (early QAT);
- ``edgeqat-late``: the same after ``edgeqat.freeze_bn`` and
  ``edgeqat.freeze_observers`` (late QAT);
- ``torch.ao``: PyTorch's FX graph-mode QAT, ``prepare_qat_fx`` with
  ``get_default_qat_qconfig_mapping("x86")`` (fused observer + fake-quant
  modules, ``FusedMovingAvgObsFakeQuantize``);
- ``torch.ao-late``: the same after ``disable_observer`` and
  ``freeze_bn_stats``;
- ``torch.ao-unfused``: ``get_default_qat_qconfig_mapping("x86", version=0)``:
  separate observer and ``FakeQuantize`` modules, PyTorch's older path.

Everything runs in one process with the same threads and the same input
batch; steps of the variants are interleaved (round robin) so that a change of
machine load affects all of them alike. Targets: an edgeqat step at most 1.25x
the float step's time, and its peak memory at most 1.3x float's.

Usage::

    python benchmarks/qat_step.py                       # everything (20 min on a busy 2-core CPU)
    python benchmarks/qat_step.py --sizes 28 --steps 5  # quick look
    python benchmarks/qat_step.py --models resnet18 --sizes 224 --steps 3 --markdown
    python benchmarks/qat_step.py --sizes 28 --profile  # where each variant's time goes
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import _common  # benchmarks/_common.py (the script's own folder is on sys.path)
import torch
import torch.nn.functional as F
from _common import cpu_model, load_average, parse_list
from torch import nn

import edgeqat
from edgeqat._torchvision import import_torchvision

MODELS = ("mobilenet_v2", "resnet18")
SIZES = (28, 224)
NUM_CLASSES = 10
FLOAT = "float"
EDGEQAT = "edgeqat"
EDGEQAT_LATE = "edgeqat-late"
TORCH_AO = "torch.ao"
TORCH_AO_LATE = "torch.ao-late"
TORCH_AO_UNFUSED = "torch.ao-unfused"
VARIANTS = (FLOAT, EDGEQAT, EDGEQAT_LATE, TORCH_AO, TORCH_AO_LATE, TORCH_AO_UNFUSED)
EDGEQAT_VARIANTS = (EDGEQAT, EDGEQAT_LATE)

TIME_TARGET = 1.25  # edgeqat step time / float step time, at most
MEMORY_TARGET = 1.3  # edgeqat peak memory / float peak memory, at most

LR = 1e-3
MOMENTUM = 0.9
MiB = 2**20

# --------------------------------------------------------------------------- PyTorch's QAT peer


def torch_ao_peer() -> tuple[Callable | None, str]:
    """PyTorch's QAT for unmodified models, if this torch ships it: FX graph mode
    (``torch.ao.quantization.quantize_fx.prepare_qat_fx``). Returns ``(prepare, note)``;
    ``prepare(model, example_inputs, fused)`` gives the QAT model, or ``prepare`` is None and
    ``note`` says why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization warns that it is deprecated
            from torch.ao.quantization import get_default_qat_qconfig_mapping
            from torch.ao.quantization.quantize_fx import prepare_qat_fx
    except ImportError as err:
        return None, (
            f"torch.ao.quantization FX QAT is not available in torch {torch.__version__} "
            f"({err}); its successor is torchao's PT2E QAT "
            "(torchao.quantization.pt2e.quantize_pt2e.prepare_qat_pt2e), not run here"
        )

    def prepare(model: nn.Module, example_inputs: tuple, fused: bool) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and reduce_range warnings
            mapping = get_default_qat_qconfig_mapping("x86", version=1 if fused else 0)
            return prepare_qat_fx(model, mapping, example_inputs=example_inputs)

    return prepare, (
        "torch.ao.quantization.quantize_fx.prepare_qat_fx with "
        "get_default_qat_qconfig_mapping('x86') (FusedMovingAvgObsFakeQuantize: "
        "fused observer + fake quant, per-channel symmetric weights, per-tensor "
        "activations with reduce_range); -unfused: version=0 (MovingAverage*MinMaxObserver + "
        "FakeQuantize modules)"
    )


def torch_ao_freeze(model: nn.Module) -> None:
    """PyTorch's late QAT: observers off, batch-norm statistics frozen."""
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.quantization as tq

    model.apply(tq.disable_observer)
    model.apply(nniqat.freeze_bn_stats)


# --------------------------------------------------------------------------- one configuration


@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    peak_bytes: int | None = None  # persistent + in-step peak of live tensor bytes
    step_bytes: int | None = None  # in-step peak increase over the persistent state
    persistent_bytes: int | None = None
    unaccounted_bytes: int = 0  # in-step increase left at the end that is not the gradients

    def step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), target)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


@dataclass
class Config:
    model_name: str
    size: int
    input_label: str
    variants: list[Variant]
    warmup: int
    steps: int

    def get(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


def make_input(size: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    if size == 28:
        # Fashion-MNIST: one grey channel; replicated to 3 channels so that torchvision's
        # models run unchanged (the stem sees 3 identical channels).
        grey = torch.randn(batch, 1, size, size, generator=gen)
        return grey.repeat(1, 3, 1, 1), target, f"{batch}x3x28x28 (1 ch x3)"
    x = torch.randn(batch, 3, size, size, generator=gen)
    return x, target, f"{batch}x3x{size}x{size}"


def build_variants(
    model_name: str,
    x: torch.Tensor,
    target: torch.Tensor,
    names: list[str],
    peer: Callable | None,
    seed: int,
) -> list[Variant]:
    """Every variant starts from the same float weights (deep copies); late variants have
    run one observing step before their ranges and batch norms are frozen."""
    tv = import_torchvision()
    torch.manual_seed(seed)
    float_model = getattr(tv.models, model_name)(num_classes=NUM_CLASSES).train()
    example = (x[:2],)
    variants = []
    for name in names:
        if name == FLOAT:
            model = copy.deepcopy(float_model)
        elif name in EDGEQAT_VARIANTS:
            model = edgeqat.prepare_qat(float_model, example_inputs=example).train()
        elif peer is not None:
            model = peer(copy.deepcopy(float_model), example, name != TORCH_AO_UNFUSED).train()
        else:
            continue  # no PyTorch QAT peer in this torch
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        variant = Variant(name, model, optimizer)
        if name == EDGEQAT_LATE:
            variant.step(x, target)  # observe once: the quantizers need a range to freeze
            edgeqat.freeze_observers(edgeqat.freeze_bn(model))
        elif name == TORCH_AO_LATE:
            variant.step(x, target)
            torch_ao_freeze(model)
        variants.append(variant)
    return variants


# --------------------------------------------------------------------------- time


def time_steps(config: Config, x: torch.Tensor, target: torch.Tensor) -> None:
    """Warm-up steps (not timed), then ``config.steps`` rounds; each round runs one step of
    every variant, starting with a different variant each round."""
    variants = config.variants
    for _ in range(config.warmup):
        for v in variants:
            v.step(x, target)
    for r in range(config.steps):
        gc.collect()
        for i in range(len(variants)):
            v = variants[(r + i) % len(variants)]
            start = time.perf_counter()
            loss = v.step(x, target)
            v.times.append(time.perf_counter() - start)
            v.losses.append(float(loss))  # after the clock: the host read is not timed


# --------------------------------------------------------------------------- memory
#
# Peak memory is measured at the allocator level, not as process RSS: a step is run under
# torch.profiler with profile_memory=True, which records every allocation and free of a
# tensor's memory (c10's CPU allocator reports each one, whoever asks for it: aten ops,
# autograd's saved tensors, edgeqat's C++ ops, the optimizer). The running sum of those
# events over the step is the live tensor memory relative to its start; its maximum is the
# step's peak increase: gradients plus everything kept for the backward pass (activations,
# masks, saved inputs) plus temporaries. RSS would also count what malloc keeps cached or has
# not returned to the OS, which depends on the allocator and the history of the process
# (and on the other variants run in it), not on the model.
#
# Gradients are set to None before the profiled step, so no tensor allocated before the
# profile is freed inside it (the profiler cannot size such frees); what the step leaves
# allocated should then be exactly the new gradients, which is checked
# (Variant.unaccounted_bytes). The persistent state (parameters, buffers, optimizer state,
# the input batch) is added to give the peak of all live tensors during the step.


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def persistent_bytes(v: Variant, x: torch.Tensor, target: torch.Tensor) -> int:
    tensors = [*v.model.parameters(), *v.model.buffers(), x, target]
    for state in v.optimizer.state.values():
        tensors += [t for t in state.values() if torch.is_tensor(t)]
    return _storage_bytes(tensors)


def measure_memory(v: Variant, x: torch.Tensor, target: torch.Tensor) -> None:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    v.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    v.persistent_bytes = persistent_bytes(v, x, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            v.step(x, target)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())  # stable: ties keep the recorded order
    live = peak = 0
    for e in events:
        if e.device_type() == DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    grad_bytes = _storage_bytes([p.grad for p in v.model.parameters() if p.grad is not None])
    v.step_bytes = peak
    v.peak_bytes = v.persistent_bytes + peak
    v.unaccounted_bytes = live - grad_bytes


# --------------------------------------------------------------------------- profile


def profile_ops(
    v: Variant, x: torch.Tensor, target: torch.Tensor, steps: int
) -> dict[str, tuple[float, float]]:
    """Self CPU time (ms) and calls per op name, per step, over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                v.step(x, target)
    return {
        e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in prof.key_averages()
    }


def print_profiles(
    config: Config, x: torch.Tensor, target: torch.Tensor, top: int, steps: int
) -> None:
    """Per variant: the ops whose self time per step differs most from the float step's."""
    ref = profile_ops(config.get(FLOAT), x, target, steps) if config.get(FLOAT) else {}
    ref_total = sum(ms for ms, _ in ref.values())
    for v in config.variants:
        if v.name == FLOAT:
            continue
        ops = profile_ops(v, x, target, steps)
        total = sum(ms for ms, _ in ops.values())
        print(
            f"\nprofile: {config.model_name} {config.input_label} {v.name}: self CPU "
            f"{total:.1f} ms per step (float {ref_total:.1f} ms), mean of {steps} steps under "
            "torch.profiler (its overhead included); ops by |extra time| over float:"
        )
        rows = []
        for key in set(ops) | set(ref):
            ms, n = ops.get(key, (0.0, 0))
            ref_ms, ref_n = ref.get(key, (0.0, 0))
            rows.append((ms - ref_ms, key, ms, n, ref_ms, ref_n))
        rows.sort(key=lambda r: -abs(r[0]))
        print(f"  {'op':<58} {'ms':>8} {'calls':>6} {'float ms':>9} {'calls':>6} {'extra ms':>9}")
        for extra, key, ms, n, ref_ms, ref_n in rows[:top]:
            print(f"  {key[:58]:<58} {ms:8.2f} {n:6.0f} {ref_ms:9.2f} {ref_n:6.0f} {extra:+9.2f}")


# --------------------------------------------------------------------------- report


def transparent_hugepages() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def target_cell(v: Variant, time_ratio: float | None, mem_ratio: float | None) -> str:
    if v.name not in EDGEQAT_VARIANTS or time_ratio is None:
        return ""
    t = "PASS" if time_ratio <= TIME_TARGET else "FAIL"
    m = "-" if mem_ratio is None else ("PASS" if mem_ratio <= MEMORY_TARGET else "FAIL")
    return f"time {t}, mem {m}"


def ratios(config: Config, v: Variant) -> tuple[float | None, float | None, float | None]:
    ref = config.get(FLOAT)
    if ref is None or not ref.times or not v.times:
        return None, None, None
    time_ratio = statistics.median(v.times) / statistics.median(ref.times)
    if ref.peak_bytes is None or v.peak_bytes is None:
        return time_ratio, None, None
    step_ratio = v.step_bytes / ref.step_bytes if ref.step_bytes else None
    return time_ratio, v.peak_bytes / ref.peak_bytes, step_ratio


HEADER = [
    "model",
    "input",
    "variant",
    "step ms",
    "min ms",
    "time ratio",
    "peak MiB",
    "mem ratio",
    "step MiB",
    "step ratio",
    "target (edgeqat)",
]
RIGHT = [False, False, False, True, True, True, True, True, True, True, False]


def table_rows(config: Config) -> list[list[str]]:
    rows = []
    for v in config.variants:
        time_ratio, mem_ratio, step_ratio = ratios(config, v)
        mem = v.peak_bytes is not None
        rows.append(
            [
                config.model_name,
                config.input_label,
                v.name,
                f"{statistics.median(v.times) * 1e3:.1f}" if v.times else "-",
                f"{min(v.times) * 1e3:.1f}" if v.times else "-",
                fmt_ratio(time_ratio),
                f"{v.peak_bytes / MiB:.1f}" if mem else "-",
                fmt_ratio(mem_ratio),
                f"{v.step_bytes / MiB:.1f}" if mem else "-",
                fmt_ratio(step_ratio),
                target_cell(v, time_ratio, mem_ratio),
            ]
        )
    return rows


def print_table(configs: list[Config], markdown: bool) -> None:
    _common.print_table(HEADER, RIGHT, [table_rows(c) for c in configs], markdown)


def check_targets(configs: list[Config]) -> list[tuple[bool, str]]:
    checks = []
    for config in configs:
        for v in config.variants:
            if v.name not in EDGEQAT_VARIANTS:
                continue
            time_ratio, mem_ratio, _ = ratios(config, v)
            where = f"{config.model_name} {config.input_label} {v.name}"
            if time_ratio is not None:
                checks.append(
                    (
                        time_ratio <= TIME_TARGET,
                        f"{where}: step time {time_ratio:.2f}x float (target <= {TIME_TARGET}x)",
                    )
                )
            if mem_ratio is not None:
                checks.append(
                    (
                        mem_ratio <= MEMORY_TARGET,
                        f"{where}: peak memory {mem_ratio:.2f}x float (target <= {MEMORY_TARGET}x)",
                    )
                )
    return checks


def notes(configs: list[Config]) -> list[str]:
    out = []
    for config in configs:
        for v in config.variants:
            if v.losses and not all(math.isfinite(loss) for loss in v.losses):
                out.append(
                    f"warning: {config.model_name} {config.input_label} {v.name}: "
                    "non-finite loss during the timed steps"
                )
            if abs(v.unaccounted_bytes) > MiB:
                out.append(
                    f"warning: {config.model_name} {config.input_label} {v.name}: the profiled "
                    f"step left {v.unaccounted_bytes / MiB:+.1f} MiB besides the gradients "
                    "(memory events the profiler could not pair); its memory numbers are "
                    "approximate"
                )
    return out


# --------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 16 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated square input sizes >= 16 (e.g. 28,224), got {text!r}"
        )
    return sizes


def default_steps(size: int) -> tuple[int, int]:
    """(warm-up, timed) steps: 2 and 20 for small inputs, 1 and 3 for large ones."""
    return (2, 20) if size <= 64 else (1, 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time and peak memory of a QAT training step: float vs edgeqat vs "
        "PyTorch's QAT (CPU).",
    )
    parser.add_argument(
        "--models",
        type=parse_list(MODELS),
        default=list(MODELS),
        help=f"comma-separated torchvision models (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(SIZES),
        help="comma-separated square input sizes; 28 is Fashion-MNIST's, one channel "
        "replicated to 3 (default: 28,224)",
    )
    parser.add_argument(
        "--variants",
        type=parse_list(VARIANTS),
        default=list(VARIANTS),
        help=f"comma-separated variants (default: all: {','.join(VARIANTS)}); ratios need float",
    )
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per variant (default: 20 at sizes <= 64, 3 above)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed warm-up steps per variant (default: 2 at sizes <= 64, 1 above)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads (default: torch.get_num_threads()); on a busy machine "
        "--threads 1 is far less noisy",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) memory step")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile --profile-steps steps of each variant and list the ops whose "
        "time differs most from the float step's",
    )
    parser.add_argument(
        "--profile-top", type=int, default=15, help="ops listed per variant with --profile"
    )
    parser.add_argument(
        "--profile-steps", type=int, default=3, help="steps averaged with --profile (default 3)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target line FAILs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.batch < 2:
        parser.error("--batch must be at least 2 (batch norm in train mode)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def describe(args: argparse.Namespace, peer_note: str) -> list[str]:
    tv = import_torchvision()
    return [
        f"torch {torch.__version__}, torchvision {tv.__version__}, edgeqat "
        f"{edgeqat.__version__}, Python {sys.version.split()[0]}",
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; threads: {args.threads} "
        f"(torch.set_num_threads) for every variant; transparent huge pages: "
        f"{transparent_hugepages()}",
        f"step: zero_grad(set_to_none) + forward + cross_entropy + backward + SGD "
        f"(lr {LR}, momentum {MOMENTUM}), train mode, float32, batch {args.batch}, "
        f"num_classes={NUM_CLASSES}; the same input batch every step",
        "edgeqat: edgeqat.prepare_qat(model, example_inputs=x[:2]), default QConfig "
        "(weights 8-bit per channel symmetric, activations 8-bit per tensor EMA), "
        "quantizers observing, BN learning; -late: after one step, freeze_bn + "
        "freeze_observers",
        f"PyTorch QAT peer: {peer_note}; -late: after one step, disable_observer + freeze_bn_stats",
        "time: median (and min) over the timed steps, after the warm-up steps; variants' "
        "steps interleaved round robin; ratio = variant / float",
        "memory: peak of live tensor bytes during one step (allocator events under "
        "torch.profiler(profile_memory=True)), gradients set to None before it: peak MiB = "
        "persistent state (parameters, buffers, momentum, input) + step MiB (the step's "
        "peak increase: gradients, tensors saved for backward, temporaries)",
        f"targets (edgeqat rows): time ratio <= {TIME_TARGET}x, mem ratio (peak MiB) <= "
        f"{MEMORY_TARGET}x",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    peer, peer_note = torch_ao_peer()
    bullet = "- " if args.markdown else "  "
    print("edgeqat QAT training-step benchmark (CPU)")
    print()
    for line in describe(args, peer_note):
        print(bullet + line)
    print(f"{bullet}load average (1, 5, 15 min) before: {load_average()}")
    print(flush=True)

    started = time.perf_counter()
    configs: list[Config] = []
    for size in args.sizes:
        warmup, steps = default_steps(size)
        warmup = warmup if args.warmup is None else args.warmup
        steps = steps if args.steps is None else args.steps
        x, target, input_label = make_input(size, args.batch, args.seed)
        for model_name in args.models:
            print(f"  {model_name} {input_label}: building ...", file=sys.stderr, flush=True)
            variants = build_variants(model_name, x, target, args.variants, peer, args.seed)
            config = Config(model_name, size, input_label, variants, warmup, steps)
            print(
                f"  {model_name} {input_label}: {warmup} warm-up + {steps} timed steps x "
                f"{len(variants)} variants ...",
                file=sys.stderr,
                flush=True,
            )
            time_steps(config, x, target)
            if not args.no_memory:
                for v in variants:
                    measure_memory(v, x, target)
            if args.profile:
                print_profiles(config, x, target, args.profile_top, args.profile_steps)
            configs.append(config)
            # Free this configuration's models before building the next.
            for v in variants:
                v.model = v.optimizer = None  # type: ignore[assignment]
            gc.collect()
        del x, target

    if args.profile:
        print()
    print_table(configs, args.markdown)
    print()
    elapsed = time.perf_counter() - started
    print(f"{bullet}load average after: {load_average()} (busy CPUs make timings noisy)")
    print(f"{bullet}total time of the measurements: {elapsed:.0f} s")
    for note in notes(configs):
        print(bullet + note)
    print()
    checks = check_targets(configs)
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 1 if args.check and not all(ok for ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
