"""Training loops with checkpoints (resume after an interruption), and evaluation.

A phase trains ``steps`` steps of Adam with cosine decay on random batches. Every
``checkpoint_every`` steps and at the end it writes a checkpoint (model, optimizer, scheduler,
batch generator, torch's random state for dropout, step, history) atomically; :func:`train`
given an existing checkpoint continues from its step, drawing the same batches (and dropout
masks, on the CPU) it would have drawn without the interruption.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..quantizer import FakeQuantizer, Mode

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None

__all__ = ["activation_ranges", "evaluate", "save_atomic", "train"]


def save_atomic(obj, path: Path) -> None:
    """torch.save to ``path.tmp``, then rename: an interruption never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def activation_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """The range every per-tensor quantizer uses now (activations; weights are per channel)."""
    ranges = {}
    for name, module in model.named_modules():
        if (
            isinstance(module, FakeQuantizer)
            and not module.spec.per_channel
            and module.mode is not Mode.OFF
            and module.has_range
        ):
            lo, hi = module.quant_range()
            ranges[name] = (float(lo), float(hi))
    return ranges


def train(
    model: nn.Module,
    data,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    checkpoint: Path,
    desc: str,
    device: torch.device,
    checkpoint_every: int = 200,
    track_ranges: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``model`` in place; returns the history ``{"step": [...], "loss": [...],
    "lr": [...], "ranges": {quantizer: [[lo, hi], ...]}, "seconds": s}`` (one entry per log
    point: every epoch, at least ten per phase)."""
    generator = torch.Generator().manual_seed(seed)  # the batches
    torch.manual_seed(seed)  # dropout: a resumed run draws what the uninterrupted one would
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    history: dict = {"step": [], "loss": [], "lr": [], "ranges": {}, "seconds": 0.0}
    start_step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, start_step = state["history"], state["step"]
        log(f"{desc}: resuming from {checkpoint} at step {start_step}/{steps}")

    def save(step: int) -> None:
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "step": step,
            },
            checkpoint,
        )

    epoch_steps = max(1, math.ceil(data.train_count / batch))
    log_every = max(1, min(epoch_steps, steps // 10))
    model.train()
    bar = (
        tqdm(total=steps, initial=start_step, desc=desc, unit="step", leave=False) if tqdm else None
    )
    started = time.perf_counter() - history["seconds"]
    running, count = 0.0, 0
    for step in range(start_step, steps):
        images, labels = data.train_batch(batch, generator)
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running, count = running + loss.item(), count + 1
        if bar:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        done = step + 1
        if done % log_every == 0 or done == steps:
            history["step"].append(done)
            history["loss"].append(running / count)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            if track_ranges:
                for name, r in activation_ranges(model).items():
                    history["ranges"].setdefault(name, []).append(list(r))
            history["seconds"] = time.perf_counter() - started
            message = (
                f"{desc}: epoch {done / epoch_steps:.2f} (step {done}/{steps}), "
                f"loss {running / count:.4f}, lr {history['lr'][-1]:.2e}, "
                f"{history['seconds']:.0f} s"
            )
            (bar.write if bar and log is print else log)(message)
            running, count = 0.0, 0
        if done % checkpoint_every == 0 and done != steps:
            save(done)
    if bar:
        bar.close()
    history["seconds"] = time.perf_counter() - started
    save(steps)
    return history


@torch.no_grad()
def evaluate(model, data, device: torch.device | None = None, limit: int | None = None) -> float:
    """Top-1 accuracy in percent of a torch model (on ``device``) or an
    :class:`edgeqat.Int8Model` (CPU) on the test set (its first ``limit`` images)."""
    is_module = isinstance(model, nn.Module)
    if is_module:
        model.eval()
    correct = total = 0
    for images, labels in data.test_batches():
        if is_module:
            logits = model(images.to(device)).cpu()
        else:
            logits = model(images)
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
        if limit is not None and total >= limit:
            break
    return 100.0 * correct / total
