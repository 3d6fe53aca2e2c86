"""The flow for one model: float baseline, PTQ and QAT at 8-bit (and 4-bit) weights, each
int8 model exported and evaluated in edgeqat's runtime.

Every finished phase is recorded in ``<out>/results.json`` (with its accuracy and history) and
its files stay in ``<out>/<model>/``; a rerun with the same settings skips what is done and
resumes an interrupted training phase from its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

import edgeqat

from .models import build_model
from .train import activation_ranges, evaluate, save_atomic, train

__all__ = ["StopRequested", "Results", "run_model", "weight_config"]

SIM_EVAL_IMAGES = 1000


class StopRequested(Exception):
    """--stop-after reached: the results so far are saved."""


class Results:
    """``<out>/results.json``: the settings and, per model, the finished phases."""

    def __init__(self, path: Path, settings: dict, fresh: bool) -> None:
        self.path = path
        self.data = {"settings": settings, "models": {}}
        if fresh and path.exists():
            path.unlink()
        if path.exists() and not fresh:
            old = json.loads(path.read_text())
            changed = {
                k: (old["settings"].get(k), v)
                for k, v in settings.items()
                if k not in _RESUME_FREE and old["settings"].get(k) != v
            }
            if changed:
                what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise ValueError(
                    f"{path} holds a run with other settings ({what}); pass --fresh to start "
                    "over or choose another --out"
                )
            self.data["models"] = old["models"]
            self.data["settings"] = {**old["settings"], **settings}

    def phase(self, model: str, phase: str) -> dict | None:
        return self.data["models"].get(model, {}).get(phase)

    def record(self, model: str, phase: str, result: dict) -> None:
        self.data["models"].setdefault(model, {})[phase] = result
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


# Settings that may change between a run and its resumption.
_RESUME_FREE = {"models", "device", "threads", "stop_after", "plots", "fresh", "w4"}


def weight_config(bits: int, schedule: edgeqat.QATSchedule | None = None, ptq: bool = False):
    """QConfig with ``bits``-bit weights (per channel, symmetric, narrow range); activations
    8-bit, EMA for QAT, all-time min / max (``running``) for PTQ calibration."""
    base = edgeqat.QConfig()
    activation = base.activation.replace(range_source="running") if ptq else base.activation
    return edgeqat.QConfig(
        weight=base.weight.replace(num_bits=bits), activation=activation, schedule=schedule
    )


def _float_phase(name, args, data, results, folder: Path, log) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = build_model(
        name,
        num_classes=data.num_classes,
        width_mult=args.width_mult if name.startswith("mobilenet") else 1.0,
        small_input=args.image_size <= 64,
    )
    weights = folder / "float.pt"
    done = results.phase(name, "float")
    if done is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
        log(f"{name} float: done before ({done['top1']:.2f}%), loaded {weights}")
        return model
    start = time.perf_counter()
    history = None
    given = args.float_weights.get(name)
    if given is not None:
        state = torch.load(given, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        log(f"{name} float: loaded the given weights {given}")
    else:
        model.to(args.device)
        history = train(
            model,
            data,
            steps=args.float_steps,
            lr=args.float_lr,
            batch=args.batch,
            seed=args.seed,
            checkpoint=folder / "float.ckpt",
            desc=f"{name} float",
            device=args.device,
            checkpoint_every=args.checkpoint_every,
            log=log,
        )
    top1 = evaluate(model.to(args.device), data, args.device)
    model.cpu()
    save_atomic(model.state_dict(), weights)
    seconds = time.perf_counter() - start
    log(f"{name} float: test top-1 {top1:.2f}% ({seconds:.0f} s)")
    results.record(
        name,
        "float",
        {"top1": top1, "seconds": seconds, "weights": str(given or weights), "history": history},
    )
    return model


def _ptq_phase(name, bits, float_model, args, data, results, folder: Path, log) -> None:
    phase = f"ptq_w{bits}"
    if results.phase(name, phase) is not None:
        log(f"{name} PTQ {bits}-bit: done before ({results.phase(name, phase)['top1']:.2f}%)")
        return
    start = time.perf_counter()
    example = data.example_input()
    ptq = edgeqat.prepare_ptq(float_model, weight_config(bits, ptq=True), example_inputs=example)
    edgeqat.calibrate(ptq, data.calibration_batches(args.calibration_batches))
    path = folder / f"{phase}.eq8"
    int8 = edgeqat.export(ptq, path, example_inputs=example, num_threads=args.threads)
    top1 = evaluate(int8, data)
    seconds = time.perf_counter() - start
    log(f"{name} PTQ {bits}-bit weights: int8 runtime top-1 {top1:.2f}% ({seconds:.0f} s)")
    ranges = {k: list(v) for k, v in activation_ranges(ptq).items()}
    results.record(
        name, phase, {"top1": top1, "seconds": seconds, "file": str(path), "ranges": ranges}
    )


def _qat_phase(name, bits, float_model, args, data, results, folder: Path, log) -> None:
    phase = f"qat_w{bits}"
    if results.phase(name, phase) is not None:
        log(f"{name} QAT {bits}-bit: done before ({results.phase(name, phase)['top1']:.2f}%)")
        return
    start = time.perf_counter()
    example = data.example_input()
    steps = args.qat_steps
    if args.learn_ranges:  # ranges observed for a quarter, then trained by gradient
        schedule = edgeqat.QATSchedule(freeze_bn_step=steps // 2, learn_ranges_step=steps // 4)
    else:  # ranges observed (EMA) for three quarters, then frozen
        schedule = edgeqat.QATSchedule(
            freeze_bn_step=steps // 2, freeze_observers_step=steps * 3 // 4
        )
    qat = edgeqat.prepare_qat(float_model, weight_config(bits, schedule), example_inputs=example)
    # Start from calibrated ranges; they keep following the data (EMA) while training.
    edgeqat.calibrate(qat, data.calibration_batches(args.calibration_batches), freeze=False)
    qat.to(args.device)
    history = train(
        qat,
        data,
        steps=steps,
        lr=args.qat_lr,
        batch=args.batch,
        seed=args.seed + bits,
        checkpoint=folder / f"{phase}.ckpt",
        desc=f"{name} QAT {bits}-bit",
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        track_ranges=True,
        log=log,
    )
    # The fake-quant simulation is slow on the CPU: the first SIM_EVAL_IMAGES test images.
    simulated = evaluate(qat, data, args.device, limit=SIM_EVAL_IMAGES)
    qat.cpu().eval()
    path = folder / f"{phase}.eq8"
    int8 = edgeqat.export(qat, path, example_inputs=example, num_threads=args.threads)
    top1 = evaluate(int8, data)
    seconds = time.perf_counter() - start
    log(
        f"{name} QAT {bits}-bit weights: {steps} steps, simulation top-1 {simulated:.2f}% "
        f"(first {min(SIM_EVAL_IMAGES, data.test_count)} test images), "
        f"int8 runtime top-1 {top1:.2f}% ({seconds:.0f} s)"
    )
    results.record(
        name,
        phase,
        {
            "top1": top1,
            "simulated_top1": simulated,
            "simulated_images": min(SIM_EVAL_IMAGES, data.test_count),
            "seconds": seconds,
            "file": str(path),
            "history": history,
        },
    )


def run_model(name: str, args, data, results: Results, log=print) -> None:
    """All phases of one model; raises :class:`StopRequested` after ``args.stop_after``."""
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    float_model = _float_phase(name, args, data, results, folder, log)
    float_model.eval()
    if args.stop_after == "float":
        raise StopRequested(f"stopped after the float phase of {name} (--stop-after float)")
    for bits in (8, 4) if name in args.w4 else (8,):
        _ptq_phase(name, bits, float_model, args, data, results, folder, log)
        if args.stop_after == "ptq":
            raise StopRequested(f"stopped after the PTQ phase of {name} (--stop-after ptq)")
        _qat_phase(name, bits, float_model, args, data, results, folder, log)
        if args.stop_after == "qat":
            raise StopRequested(f"stopped after the QAT phase of {name} (--stop-after qat)")
