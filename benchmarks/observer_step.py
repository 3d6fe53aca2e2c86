"""CPU benchmark of a FakeQuantizer step in OBSERVE mode (training): fused op vs unfused ops.

For each case, times the forward and the forward+backward of:

- ``unfused``: the previous ``FakeQuantizer.forward``, written out here: read ``mode_code``,
  ``torch.ops.edgeqat.observe_min_max_``, check ``has_range`` (``.all()`` on the host),
  derive the range (clamp to contain 0; symmetric bound) with tensor ops, then
  ``fake_quant_with_min_max_vars[_per_channel]``;
- ``fused``: ``FakeQuantizer.forward`` now, one ``torch.ops.edgeqat.observe_fake_quant_``;
- ``fake quant only``: the fake-quant op with a fixed range, no observation: the floor that
  any observer step pays on top of.

Each state starts from the same observed range and is updated at every call, as in training.
All rows run in one process with the same number of threads, their timing blocks
interleaved (so a change of machine load hits every row alike); the numbers are medians over
the blocks and the ratio columns are ``unfused / this row`` (above 1: faster than unfused).

Usage::

    python benchmarks/observer_step.py            # the three default cases, about a minute
    python benchmarks/observer_step.py --quick    # shorter measurements, noisier
    python benchmarks/observer_step.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import benchmark

import edgeqat
from edgeqat import FakeQuantizer, Mode, QConfig, QuantSpec

ops = torch.ops.edgeqat


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]
    spec: QuantSpec


CASES = [
    Case("activation 64x32x112x112, per tensor, EMA", (64, 32, 112, 112), QuantSpec()),
    Case("activation 64x96x14x14, per tensor, EMA", (64, 96, 14, 14), QuantSpec()),
    Case("conv weight 64x32x3x3, per channel, symmetric", (64, 32, 3, 3), QConfig().weight),
]


def unfused_step(q: FakeQuantizer, x: torch.Tensor) -> torch.Tensor:
    """FakeQuantizer.forward in OBSERVE + training before observe_fake_quant_."""
    spec = q.spec
    mode = Mode(int(q.mode_code))
    assert mode is Mode.OBSERVE and q.training
    axis = spec.axis if spec.per_channel else None
    ops.observe_min_max_(
        q.observed_min,
        q.observed_max,
        x.detach(),
        axis,
        spec.averaging_constant,
        spec.range_source == "running",
    )
    if not bool((q.observed_min <= q.observed_max).all()):
        raise RuntimeError("no observed range")
    lo = q.observed_min.detach().clamp(max=0.0)
    hi = q.observed_max.detach().clamp(min=0.0)
    if spec.symmetric:
        bound = torch.maximum(-lo, hi)
        lo, hi = -bound, bound
    lo, hi = lo.to(x.device), hi.to(x.device)
    if spec.per_channel:
        return ops.fake_quant_with_min_max_vars_per_channel(
            x, lo, hi, spec.axis, spec.num_bits, spec.narrow_range
        )
    return ops.fake_quant_with_min_max_vars(x, lo, hi, spec.num_bits, spec.narrow_range)


def interleaved_times(
    fns: dict[str, Callable[[], object]], min_time: float, blocks: int
) -> dict[str, tuple[float, float]]:
    """Per name: (median seconds per call over blocks, interquartile range / median). The
    blocks of all functions alternate, so a change of machine load hits every row alike."""
    timers, numbers = {}, {}
    for name, fn in fns.items():
        fn()  # warm-up
        timers[name] = benchmark.Timer(
            stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
        )
        probe = timers[name].timeit(1).mean
        numbers[name] = max(1, int(min_time / blocks / max(probe, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name in fns:
            times[name].append(timers[name].timeit(numbers[name]).mean)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        med = statistics.median(ts)
        out[name] = (med, (q[2] - q[0]) / med)
    return out


def run_case(case: Case, min_time: float, blocks: int) -> list[tuple[str, float, float, str]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=gen)
    g = torch.randn(case.shape, generator=gen)
    channels = case.shape[case.spec.axis] if case.spec.per_channel else None
    quantizers = {}
    for name in ("unfused", "fused"):
        q = FakeQuantizer(case.spec, channels=channels).train()
        with torch.no_grad():
            q(x)  # start from an observed range
        quantizers[name] = q
    x_grad = x.detach().requires_grad_(True)
    axis = case.spec.axis if case.spec.per_channel else None
    lo, hi = quantizers["fused"].observed_range()

    def fq_only(xx):
        if axis is None:
            return ops.fake_quant_with_min_max_vars(xx, lo, hi, 8, case.spec.narrow_range)
        return ops.fake_quant_with_min_max_vars_per_channel(
            xx, lo, hi, axis, 8, case.spec.narrow_range
        )

    steps = {
        "unfused": lambda xx: unfused_step(quantizers["unfused"], xx),
        "fused": lambda xx: quantizers["fused"](xx),
        "fake quant only": fq_only,
    }
    fns = {}
    for name, step in steps.items():

        def fwd(step=step):
            with torch.no_grad():
                return step(x)

        def fwd_bwd(step=step):
            x_grad.grad = None
            step(x_grad).backward(g)

        fns[(name, "fwd")] = fwd
        fns[(name, "fwd_bwd")] = fwd_bwd
    times = interleaved_times(fns, min_time * len(fns), blocks)
    rows = []
    for name in steps:
        (f, f_spread), (fb, fb_spread) = times[(name, "fwd")], times[(name, "fwd_bwd")]
        noisy = "*" if max(f_spread, fb_spread) > 0.1 else ""
        rows.append((name, f, fb, noisy))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    min_time, blocks = (0.3, 3) if args.quick else (1.5, 9)
    cpu = platform.processor() or platform.machine()
    print(
        f"edgeqat {edgeqat.__version__}, torch {torch.__version__}, {cpu}, "
        f"{torch.get_num_threads()} threads; median of {blocks} blocks, ms per call "
        "(* = blocks' interquartile range above 10% of the median)"
    )
    for case in CASES:
        rows = run_case(case, min_time, blocks)
        by_name = {r[0]: r for r in rows}
        print(f"\n{case.name}  ({torch.Size(case.shape).numel():,} elements)")
        print(f"  {'':18}{'forward':>12}{'fwd+bwd':>12}{'unfused/this fwd':>19}{'fwd+bwd':>10}")
        for name, f, fb, noisy in rows:
            base = by_name["unfused"]
            print(
                f"  {name:18}{f * 1e3:12.3f}{fb * 1e3:12.3f}"
                f"{base[1] / f:19.2f}x{base[2] / fb:9.2f}x {noisy}"
            )


if __name__ == "__main__":
    main()
