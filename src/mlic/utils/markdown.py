"""Markdown tables from rows of dicts (report.md, the per-task sections, the compare table)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def rows_table(rows: list[dict[str, Any]], float_format: str) -> str:
    """Dict rows as a Markdown table, columns in first-seen order, floats as `float_format`."""
    columns = list(pd.DataFrame(rows).columns)
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        cells = [
            format(row[c], float_format) if isinstance(row.get(c), float) else str(row.get(c, ""))
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
