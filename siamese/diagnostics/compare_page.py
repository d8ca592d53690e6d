"""The ``compare`` command's page: each stage-1 recipe's figures, its paired differences from the references
with their 95 % intervals as error bars, the runs it won and its training time. One self-contained file, as
the explorer's (:mod:`siamese.diagnostics.page`), built from ``compare.csv`` alone, so that it can be written
for a finished ``OUT`` folder too::

    python -m siamese.diagnostics.compare_page OUT
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from siamese.data.table import DataError
from siamese.diagnostics.page import write_page

PAGE_FILE = "compare.html"
BODY = """<div id="bar"><h1 id="title"></h1><span id="note"></span>
<label>metric <select id="metric"></select></label></div>
<div id="differences"></div><div id="seconds" style="height:260px"></div>
<table class="compare"><thead id="head"></thead><tbody id="rows"></tbody></table>"""


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compare_payload(table: pd.DataFrame, title: str) -> dict[str, Any]:
    """The data of a compare page from the ``compare.csv`` table (one row per recipe and model, then one per
    reference): the metrics are the ``METRIC_mean`` columns, the references those named by
    ``METRIC_vs_REFERENCE_ahead`` columns. Missing figures (a reference's own differences, an interval of
    one run) are None. Raises DataError when the table lacks the columns ``compare`` writes."""
    needed = {"recipe", "model", "runs", "seconds"}
    if not needed <= set(table.columns):
        raise DataError(f"not a compare.csv table: it lacks {sorted(needed - set(table.columns))}")
    metrics = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    if not metrics:
        raise DataError("not a compare.csv table: no METRIC_mean column")
    pattern = re.compile(rf"(?:{'|'.join(map(re.escape, metrics))})_vs_(.+)_ahead")
    references = list(dict.fromkeys(m.group(1) for c in table.columns if (m := pattern.fullmatch(c))))
    rows = []
    for _, row in table.iterrows():
        entry = {"recipe": str(row["recipe"]), "model": str(row["model"]), "runs": int(row["runs"]),
                 "seconds": _number(row["seconds"]),
                 "mean": {m: _number(row[f"{m}_mean"]) for m in metrics},
                 "sd": {m: _number(row.get(f"{m}_sd")) for m in metrics}, "vs": {}}
        for reference in references:
            for metric in metrics:
                prefix = f"{metric}_vs_{reference}"
                if _number(row.get(prefix)) is not None:
                    entry["vs"].setdefault(reference, {})[metric] = {
                        "mean": _number(row[prefix]), "low": _number(row[f"{prefix}_low"]),
                        "high": _number(row[f"{prefix}_high"]), "ahead": int(row[f"{prefix}_ahead"]),
                        "runs": int(row[f"{prefix}_runs"])}
        rows.append(entry)
    return {"title": title, "metrics": metrics, "references": references, "rows": rows}


def write_compare_page(out: str | Path) -> Path:
    """``OUT/compare.html`` from ``OUT/compare.csv``, titled by the first line of ``OUT/compare.md`` where
    there is one. Raises DataError when ``compare.csv`` is missing or is not such a table."""
    out = Path(out)
    if not (out / "compare.csv").is_file():
        raise DataError(f"{out / 'compare.csv'} not found: run `python -m siamese compare ... --out {out}` first")
    markdown = out / "compare.md"
    heading = markdown.read_text(encoding="utf-8").splitlines()[0].lstrip("# ") if markdown.is_file() else ""
    payload = compare_payload(pd.read_csv(out / "compare.csv"), heading or f"stage-1 recipes compared in {out.name}")
    return write_page(out / PAGE_FILE, payload["title"], BODY, payload, "compare.js")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siamese.diagnostics.compare_page",
                                     description="write OUT/compare.html from a compare run's OUT/compare.csv")
    parser.add_argument("out", help="the folder `python -m siamese compare --out` wrote")
    args = parser.parse_args(argv)
    try:
        print(write_compare_page(args.out))
    except DataError as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
