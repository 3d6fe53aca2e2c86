"""The figures, as PNG: accuracy per model and method, QAT training curves, and how the
activation ranges moved during QAT (against the PTQ calibration's)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_plot(table: list[dict], path: Path) -> None:
    plt = _pyplot()
    labels = [f"{r['model']}\n{r['weight_bits']}-bit w" for r in table]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(table)), 4))
    width = 0.27
    for i, (key, name) in enumerate(
        (("float_top1", "float"), ("qat_int8_top1", "QAT int8"), ("ptq_int8_top1", "PTQ int8"))
    ):
        xs = [j + (i - 1) * width for j in range(len(table))]
        bars = ax.bar(xs, [r[key] for r in table], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(table)), labels, fontsize=8)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title("Top-1 per model and method (int8 in edgeqat's runtime)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_plot(models: dict, path: Path) -> None:
    plt = _pyplot()
    names = list(models)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for phase, label in (("qat_w8", "QAT 8-bit w"), ("qat_w4", "QAT 4-bit w")):
            history = (models[name].get(phase) or {}).get("history")
            if history and history["step"]:
                ax.plot(history["step"], history["loss"], marker=".", label=label)
        ax.set_title(name)
        ax.set_xlabel("QAT step")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.suptitle("QAT training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ranges_plot(models: dict, path: Path) -> None:
    """Per model: the width of every activation range during QAT (8-bit weights), relative to
    the calibrated start, and the PTQ calibration's width (dots at the end) on the same scale."""
    plt = _pyplot()
    names = [n for n in models if (models[n].get("qat_w8") or {}).get("history")]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        history = models[name]["qat_w8"]["history"]
        ptq = (models[name].get("ptq_w8") or {}).get("ranges", {})
        steps = history["step"]
        for quantizer, values in history["ranges"].items():
            widths = [hi - lo for lo, hi in values]
            if not widths or widths[0] <= 0:
                continue
            line = ax.plot(steps[-len(widths) :], [w / widths[0] for w in widths], lw=0.8)
            if quantizer in ptq:
                lo, hi = ptq[quantizer]
                ax.plot([steps[-1]], [(hi - lo) / widths[0]], "o", ms=3, color=line[0].get_color())
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title(f"{name}: {len(history['ranges'])} activation ranges")
        ax.set_xlabel("QAT step")
        ax.set_ylabel("range width / width at start")
    fig.suptitle("Activation ranges during QAT (dots: PTQ calibration)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(table: list[dict], models: dict, out: Path) -> list[Path]:
    """accuracy.png, qat_curves.png, ranges.png in ``out``; the ones written."""
    written = []
    if table:
        accuracy_plot(table, out / "accuracy.png")
        written.append(out / "accuracy.png")
    if any((m.get("qat_w8") or {}).get("history") for m in models.values()):
        curves_plot(models, out / "qat_curves.png")
        ranges_plot(models, out / "ranges.png")
        written += [out / "qat_curves.png", out / "ranges.png"]
    return written
