"""The result table every benchmark prints: Markdown, or aligned text with a blank line between
groups of rows. ``right[i]`` right-aligns column i (numbers)."""

from __future__ import annotations


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
