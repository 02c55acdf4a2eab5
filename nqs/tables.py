"""Markdown tables: the one helper every command's table output goes through."""
from __future__ import annotations

from typing import Any, Sequence

_RULES = {None: "---", "left": ":---", "right": "---:", "center": ":---:"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Sequence[str | None] | None = None) -> str:
    """A GitHub-flavoured Markdown table, compact (`| a | b |`, no padding), without a trailing newline.

    Cells are `str()`-ed; a '|' inside a cell is escaped as '\\|' and a newline becomes a space, so every line
    has the same number of columns. `align` gives one of None, 'left', 'right', 'center' per column
    (default: None for all, the renderer's default). A row of the wrong length is a ValueError.
    """
    width = len(headers)
    align = [None] * width if align is None else list(align)
    if len(align) != width or any(a not in _RULES for a in align):
        raise ValueError(f"align must give one of {sorted(_RULES, key=str)} for each of the {width} columns, "
                         f"got {align!r}")

    def line(cells: Sequence[Any]) -> str:
        text = [str(c).replace("|", "\\|").replace("\n", " ") for c in cells]
        return "| " + " | ".join(text) + " |"

    lines = [line(headers), "|" + "|".join(_RULES[a] for a in align) + "|"]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells for {width} columns: {list(row)!r}")
        lines.append(line(row))
    return "\n".join(lines)
