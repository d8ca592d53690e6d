"""Result tables as text: the Markdown a run's report, a seed summary and a CV summary print."""

from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats to 3 decimals, missing values as n/a)."""
    cells = frame.map(lambda v: "n/a" if v is None or v != v else (f"{v:.3f}" if isinstance(v, float) else str(v)))
    lines = ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells.to_numpy()]
    return "\n".join(lines)
