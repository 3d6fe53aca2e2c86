"""What every benchmark here shares: the machine description (CPU model, load average), the
comma-separated list arguments, and the result table (Markdown, or aligned text with a blank
line between groups of rows)."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def parse_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``choices`` (or ``all``), in their order."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["all"]:
            return list(choices)
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(choices)} (or 'all'), "
                f"got {text!r}"
            )
        return [c for c in choices if c in items]  # canonical order

    return parse


def print_table(
    header: list[str], right: list[bool], groups: list[list[list[str]]], markdown: bool
) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" if r else "---" for r in right) + "|")
        for row in (row for group in groups for row in group):
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(c) for c in col) for col in zip(header, *(r for g in groups for r in g))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)
        ).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths]))
    for i, group in enumerate(g for g in groups if g):
        if i:
            print()
        for row in group:
            print(line(row))
