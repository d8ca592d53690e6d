"""The one table every reader returns, and the error every reader raises.

Downstream code (splits, audit, loaders) only ever sees this table, so a new dataset needs a reader
and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("image_id", "label", "group", "dataset")


class DataError(ValueError):
    """Bad input data; the message names the file and the first offenders."""


def first_offenders(values: Iterable[object], limit: int = 5) -> str:
    items = [str(v) for v in values]
    shown = ", ".join(items[:limit])
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{shown}{more}"


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; found {list(frame.columns)}"
        )


def require_values(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    """Refuse blank cells in ``columns``, naming the file's line numbers (the header is line 1): a row without
    a label, a group or a path cannot be placed in a split, and one without a lesion id could leak."""
    for column in columns:
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if blank.any():
            lines = (np.flatnonzero(blank.to_numpy()) + 2).tolist()
            raise DataError(f"{source}: {len(lines)} row(s) with no {column} (line(s) {first_offenders(lines)}); "
                            f"every row needs one")


@dataclass
class DatasetTable:
    """Images of one dataset: a table plus, for in-memory datasets, the pixel array.

    ``frame`` holds ``image_id``, ``label``, ``group``, ``dataset`` and either ``path`` (files) or
    ``index`` (rows of ``images``); a ``split`` column is present when the source defines one.
    ``excluded`` counts rows left out on purpose (by reason), so nothing disappears silently.
    """

    frame: pd.DataFrame
    images: np.ndarray | None = None
    excluded: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_columns(self.frame, REQUIRED_COLUMNS, "dataset table")
        if self.frame.empty:
            raise DataError("dataset table is empty: no images were found")
        if "path" not in self.frame.columns and "index" not in self.frame.columns:
            raise DataError("dataset table needs a 'path' or an 'index' column")
        duplicated = self.frame["image_id"][self.frame["image_id"].duplicated()]
        if len(duplicated):
            raise DataError(f"duplicate image_id values: {first_offenders(duplicated.unique())}")

    @property
    def name(self) -> str:
        return str(self.frame["dataset"].iloc[0])

    @property
    def classes(self) -> list[str]:
        return sorted(self.frame["label"].unique())

    def subset(self, image_ids: Iterable[str]) -> DatasetTable:
        """Rows for these ids, in the order given (shares the pixel array)."""
        indexed = self.frame.set_index("image_id", drop=False)
        ids = list(image_ids)
        unknown = [i for i in ids if i not in indexed.index]
        if unknown:
            raise DataError(f"image ids not in dataset {self.name}: {first_offenders(unknown)}")
        return DatasetTable(indexed.loc[ids].reset_index(drop=True), self.images, dict(self.excluded))

    def exclude(self, mask: pd.Series, reason: str) -> DatasetTable:
        """Drop rows where ``mask`` is true, counting them under ``reason``."""
        count = int(mask.sum())
        excluded = dict(self.excluded)
        if count:
            excluded[reason] = excluded.get(reason, 0) + count
        return DatasetTable(self.frame[~mask].reset_index(drop=True), self.images, excluded)
