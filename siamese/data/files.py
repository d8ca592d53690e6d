"""A dataset's files as people really have them: tables in any common delimiter, folders named in any case.

Readers locate their tables and image folders here and read every table through :func:`read_csv`, so a
Kaggle copy (``ham10000_images_part_1/``) or a Dataverse download (``HAM10000_metadata.tab``) reads like
the original.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from siamese.data.table import DataError, require_columns, require_values

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

DELIMITERS = ",\t;|"
"""Delimiters a table may use: CSV, tab-separated (HAM10000's ``.tab`` as Dataverse serves it), semicolons
(spreadsheets in locales with a decimal comma) and pipes."""
SNIFF_BYTES = 64 * 1024


def read_csv(path: str | Path, columns: Iterable[str] = ()) -> pd.DataFrame:
    """A table (comma-, tab-, semicolon- or pipe-separated, quoted or not: the delimiter is sniffed) with
    a clear error when it is missing, unparsable, a single column (an unknown format), lacks ``columns`` or
    has a blank cell in one of them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, sep=sniff_delimiter(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); a table here is UTF-8 CSV or tab-separated text") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    if frame.shape[1] < 2:
        raise DataError(f"{path}: read as a single column headed {str(frame.columns[0])[:60]!r}; a table here "
                        f"is comma-, tab-, semicolon- or |-separated text")
    require_columns(frame, columns, str(path))
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    require_values(frame, columns, str(path))
    return frame


def sniff_delimiter(path: Path) -> str:
    """The table's delimiter among :data:`DELIMITERS`, by ``csv.Sniffer`` on its first complete lines; a comma
    when none stands out (a binary file then fails in the parser, with its own message)."""
    with path.open("rb") as stream:
        head = stream.read(SNIFF_BYTES)
    if len(head) == SNIFF_BYTES and b"\n" in head:
        head = head[:head.rindex(b"\n")]  # a cut last line would count fewer delimiters
    sample = head.decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def strip_suffix(image_id: str) -> str:
    """An image id without its image extension (``ISIC_0024306.jpg`` -> ``ISIC_0024306``)."""
    stem, suffix = os.path.splitext(str(image_id))
    return stem if suffix.lower() in IMAGE_SUFFIXES else str(image_id)


def find_entries(root: Path, relative: str, folders: bool = True) -> list[Path]:
    """The folders (or, with ``folders=False``, files) under ``root`` whose path is ``relative``, each part
    matched ignoring case, as file extensions are: the name a dataset ships under is known, its
    capitalisation is not (Kaggle's HAM10000 unpacks as ``ham10000_images_part_1``). Exact matches come
    first; ``.`` is ``root`` itself."""
    parts = [part for part in PurePosixPath(relative).parts if part != "."]
    matches = [root] if root.is_dir() else []
    for i, part in enumerate(parts):
        want_folder = folders or i < len(parts) - 1
        found = []
        for base in matches:
            with os.scandir(base) as entries:
                names = [e.name for e in entries
                         if e.name.lower() == part.lower() and (e.is_dir() if want_folder else e.is_file())]
            found += [base / name for name in sorted(names, key=lambda name: (name != part, name))]
        matches = found
    return matches


def index_images(root: Path, subdirs: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Image id (file stem) to path over the folders a dataset is known to ship in, and what was searched
    (each folder with its image count, or marked absent), for messages about missing images."""
    found: dict[str, Path] = {}
    searched: list[str] = []
    seen: set[Path] = set()
    for sub in subdirs:
        folders = find_entries(root, sub)
        if not folders:
            searched.append(f"{sub}/ (absent)")
        for folder in folders:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            count = 0
            with os.scandir(folder) as entries:
                for entry in entries:
                    stem, suffix = os.path.splitext(entry.name)
                    if suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                        found.setdefault(stem, Path(entry.path))
                        count += 1
            searched.append(f"{folder.relative_to(root)}/ ({count} images)")
    return found, searched
