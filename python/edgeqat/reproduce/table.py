"""The table: one row per model and weight width, as Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["markdown", "rows", "write_tables"]

HEADER = (
    "| model | weights | float top-1 | QAT int8 top-1 | QAT delta | PTQ int8 top-1 | PTQ delta |"
)


def rows(results: dict) -> list[dict]:
    """Table rows from results.json's ``models``: one per model and weight width with both
    a PTQ and a QAT result (8-bit first, then the 4-bit ones)."""
    out = []
    for bits in (8, 4):
        for model, phases in results["models"].items():
            fp, qat, ptq = (
                phases.get("float"),
                phases.get(f"qat_w{bits}"),
                phases.get(f"ptq_w{bits}"),
            )
            if fp is None or qat is None or ptq is None:
                continue
            out.append(
                {
                    "model": model,
                    "weight_bits": bits,
                    "activation_bits": 8,
                    "float_top1": round(fp["top1"], 2),
                    "qat_int8_top1": round(qat["top1"], 2),
                    "qat_delta": round(qat["top1"] - fp["top1"], 2),
                    "ptq_int8_top1": round(ptq["top1"], 2),
                    "ptq_delta": round(ptq["top1"] - fp["top1"], 2),
                    "qat_simulated_top1": round(qat["simulated_top1"], 2),
                    "qat_steps": qat["history"]["step"][-1] if qat.get("history") else 0,
                }
            )
    return out


def markdown(table: list[dict]) -> str:
    lines = [HEADER, "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['model']} | {r['weight_bits']}-bit | {r['float_top1']:.2f}% | "
            f"{r['qat_int8_top1']:.2f}% | {r['qat_delta']:+.2f} | {r['ptq_int8_top1']:.2f}% | "
            f"{r['ptq_delta']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(table: list[dict], settings: dict, out: Path) -> tuple[Path, Path]:
    """``out/table.md`` (the table and the settings that made it) and ``out/table.json``."""
    md, js = out / "table.md", out / "table.json"
    notes = ", ".join(f"{k}={v}" for k, v in settings.items())
    md.write_text(markdown(table) + f"\nSettings: {notes}\n")
    js.write_text(json.dumps({"settings": settings, "rows": table}, indent=1) + "\n")
    return md, js
