"""Command line of ``python -m edgeqat.reproduce`` (and ``edgeqat reproduce``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..data import DatasetError
from .models import MODEL_LAYOUT, MODELS

__all__ = ["console", "main", "parse_args"]

DEFAULT_MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet18")
PHASES = ("float", "ptq", "qat")

# Schedules: --quick is the same flow, shorter, under 10 minutes for the three models on 2 cores.
PRESETS = {
    "default": {  # 4.3 epochs of float training, 1.1 of QAT
        "float_steps": 2000,
        "qat_steps": 500,
        "batch": 128,
        "calibration_batches": 16,
        "width_mult": 1.0,
    },
    "quick": {
        "float_steps": 300,
        "qat_steps": 100,
        "batch": 64,
        "calibration_batches": 4,
        "width_mult": 0.5,
    },
}

DESCRIPTION = """\
Reproduce edgeqat's table: for each model, a float baseline, post-training quantization (PTQ)
and quantization-aware training (QAT) from the float baseline, both exported to int8 and
evaluated in edgeqat's int8 runtime, at 8-bit weights and (with --w4) 4-bit weights.
Writes table.md, table.json, accuracy.png, qat_curves.png and ranges.png into --out; a rerun
with the same --out resumes where it stopped."""


def _positive(name: str, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a positive {kind.__name__}, got {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text!r}")
        return value

    return parse


def _non_negative_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be an int >= 0, got {text!r}")
        return value

    return parse


def _model_list(name: str):
    def parse(text: str) -> tuple[str, ...]:
        if text in ("", "none"):
            return ()
        models = tuple(m.strip() for m in text.split(",") if m.strip())
        for m in models:
            if m not in MODELS:
                raise argparse.ArgumentTypeError(
                    f"{name}: unknown model {m!r} (choose from {', '.join(MODELS)})"
                )
        return models

    return parse


def _weights(text: str) -> tuple[str, Path]:
    model, sep, path = text.partition("=")
    if not sep or model not in MODELS:
        raise argparse.ArgumentTypeError(
            f"--float-weights takes MODEL=PATH with MODEL one of {', '.join(MODELS)}, got {text!r}"
        )
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--float-weights {text!r}: no file {path!r}")
    return model, Path(path)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    p.add_argument(
        "--models",
        type=_model_list("--models"),
        default=DEFAULT_MODELS,
        help=f"comma-separated, from {', '.join(MODELS)} (default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--w4",
        type=_model_list("--w4"),
        default=None,
        help="models that also get the 4-bit-weight rows (default: every model; 'none': none)",
    )
    p.add_argument("--out", type=Path, default=Path("reproduce-out"), help="output folder")
    p.add_argument("--quick", action="store_true", help="the reduced schedule (< 10 min)")
    p.add_argument("--float-steps", type=_non_negative_int("--float-steps"))
    p.add_argument("--qat-steps", type=_positive("--qat-steps"))
    p.add_argument("--batch", type=_positive("--batch"))
    p.add_argument("--calibration-batches", type=_positive("--calibration-batches"))
    p.add_argument("--width-mult", type=_positive("--width-mult", float), help="MobileNets only")
    p.add_argument("--float-lr", type=_positive("--float-lr", float), default=3e-3)
    p.add_argument("--qat-lr", type=_positive("--qat-lr", float), default=1e-4)
    p.add_argument(
        "--learn-ranges",
        action="store_true",
        help="QAT trains the ranges by gradient after the first quarter (default: observed, "
        "frozen for the last quarter)",
    )
    p.add_argument(
        "--image-size",
        type=_positive("--image-size"),
        default=32,
        help="side the images are resized to (default 32; <= 64 adapts the stems to small inputs)",
    )
    p.add_argument(
        "--data-dir", type=Path, help="Fashion-MNIST folder (default $EDGEQAT_FASHION_MNIST)"
    )
    p.add_argument(
        "--image-folder",
        type=Path,
        help="train on an ImageFolder tree (ROOT/train/<class>, ROOT/val/<class>) instead",
    )
    p.add_argument(
        "--float-weights",
        type=_weights,
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="a float state_dict to start from instead of training (repeatable)",
    )
    p.add_argument("--train-limit", type=_positive("--train-limit"), help="first N train images")
    p.add_argument("--test-limit", type=_positive("--test-limit"), help="first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="training device (int8 runs on the CPU)")
    p.add_argument("--threads", type=_positive("--threads"), default=2, help="int8 threads")
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=200)
    p.add_argument(
        "--stop-after",
        choices=PHASES,
        help="stop after this phase of the first model (to test resuming)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNGs")
    return p


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "default"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.models:
        parser.error("--models: give at least one model")
    args.w4 = args.models if args.w4 is None else args.w4
    extra = [m for m in args.w4 if m not in args.models]
    if extra:
        parser.error(f"--w4: {','.join(extra)} not in --models {','.join(args.models)}")
    args.float_weights = dict(args.float_weights)
    if args.float_steps == 0:
        missing = [m for m in args.models if m not in args.float_weights]
        if missing:
            parser.error(f"--float-steps 0 needs --float-weights for {', '.join(missing)}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: not a torch device: {args.device!r}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available in this torch")
    if args.image_folder is not None and not args.image_folder.is_dir():
        parser.error(f"--image-folder: no folder {str(args.image_folder)!r}")
    return args


def settings(args) -> dict:
    """What results.json records (and checks on resume)."""
    return {
        # Bumped when build_model's adaptation changes, so old checkpoints are not resumed.
        "model_layout": MODEL_LAYOUT,
        "data": str(args.image_folder) if args.image_folder else "Fashion-MNIST",
        "models": list(args.models),
        "w4": list(args.w4),
        "float_steps": args.float_steps,
        "qat_steps": args.qat_steps,
        "batch": args.batch,
        "calibration_batches": args.calibration_batches,
        "width_mult": args.width_mult,
        "float_lr": args.float_lr,
        "qat_lr": args.qat_lr,
        "learn_ranges": args.learn_ranges,
        "image_size": args.image_size,
        "float_weights": {k: str(v) for k, v in args.float_weights.items()},
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "seed": args.seed,
        "device": str(args.device),
        "threads": args.threads,
    }


def _load_data(args):
    from . import data

    if args.image_folder is not None:
        return data.image_folder(args.image_folder, args.image_size)
    return data.fashion_mnist(args.image_size, args.train_limit, args.test_limit, args.data_dir)


def main(argv=None, prog: str | None = None) -> int:
    """``python -m edgeqat.reproduce``: parse ``argv`` (default ``sys.argv[1:]``; ``prog``
    names the command in messages), run every model's phases (resuming from ``--out``), write
    the tables and plots, and return the exit status: 0 when done or stopped by
    ``--stop-after``, 2 when the data cannot be read or ``--out`` holds results of other
    settings, 130 when interrupted. Bad arguments exit through argparse (status 2)."""
    args = parse_args(argv, prog)
    from .plots import write_plots
    from .runner import Results, StopRequested, run_model
    from .table import markdown, rows, write_tables

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    try:
        data = _load_data(args)
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fresh:  # the training checkpoints of an earlier run would be resumed
        for name in args.models:
            for checkpoint in (args.out / name).glob("*.ckpt"):
                checkpoint.unlink()
    try:
        results = Results(args.out / "results.json", settings(args), args.fresh)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{data.name}: {data.train_count} train, {data.test_count} test images at "
        f"3x{args.image_size}x{args.image_size}; models {', '.join(args.models)}; "
        f"torch threads {torch.get_num_threads()}; output in {args.out}",
        flush=True,
    )
    try:
        for name in args.models:
            run_model(name, args, data, results)
    except StopRequested as stop:
        print(f"{stop}; rerun without --stop-after to resume")
        return 0
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished phases are in {args.out / 'results.json'}, training "
            "resumes from its last checkpoint when the same command runs again",
            file=sys.stderr,
        )
        return 130
    table = rows(results.data)
    md, js = write_tables(table, settings(args), args.out)
    print("\n" + markdown(table))
    written = write_plots(table, results.data["models"], args.out) if args.plots else []
    print(f"wrote {md}, {js}" + "".join(f", {p}" for p in written))
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return 0


def console(argv=None) -> int:
    """The ``edgeqat`` console script: ``edgeqat reproduce [options]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "reproduce":
        print("usage: edgeqat reproduce [options]   (edgeqat reproduce --help)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return main(argv[1:], prog="edgeqat reproduce")
