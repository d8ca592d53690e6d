"""A dataset's files as people really have them: tables in any common delimiter, folders named in any case.

Readers locate their tables and image folders here and read every table through :func:`read_csv`, so a
Kaggle copy (``ham10000_images_part_1/``) or a Dataverse download (``HAM10000_metadata.tab``) reads like
the original.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image

from siamese.data.decode import is_image
from siamese.data.formats import unidentified_reason
from siamese.data.table import DataError, require_columns, require_values

PLUGIN_SUFFIXES = (".heic", ".heif", ".avif", ".jxl")
"""Image extensions whose plugin may be absent: still recognised in table ids, so such an image is named
and refused with the package to install rather than reported missing."""

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


@cache
def image_suffixes() -> frozenset[str]:
    """Every extension an installed Pillow plugin registers (``.jpg`` ... ``.webp``, ``.heic`` with
    pillow-heif), and :data:`PLUGIN_SUFFIXES`. Only names in tables are judged by it: files are judged by
    their contents."""
    return frozenset(Image.registered_extensions()) | frozenset(PLUGIN_SUFFIXES)


def strip_suffix(image_id: str) -> str:
    """An image id without its image extension (``ISIC_0024306.jpg`` -> ``ISIC_0024306``)."""
    stem, suffix = os.path.splitext(str(image_id))
    return stem if suffix.lower() in image_suffixes() else str(image_id)


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


def index_images(root: Path, subdirs: Iterable[str]) -> tuple[dict[str, Path], list[str], list[Path]]:
    """Image id (file stem) to path over the folders a dataset is known to ship in, whatever the files'
    extensions (a ``.webp``, ``.heic`` or extension-less image is found like a ``.jpg``); of several files
    sharing a stem (an image and its ``.json`` sidecar) the one Pillow identifies is taken. Also what was
    searched (each folder with its file count, or marked absent), for messages about missing images, and
    every file seen, so the caller can count those no row uses."""
    found: dict[str, Path] = {}
    searched: list[str] = []
    files: list[Path] = []
    seen: set[Path] = set()
    for sub in subdirs:
        folders = find_entries(root, sub)
        if not folders:
            searched.append(f"{sub}/ (absent)")
        for folder in folders:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            by_stem: dict[str, list[Path]] = {}
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file():
                        path = Path(entry.path)
                        files.append(path)
                        by_stem.setdefault(os.path.splitext(entry.name)[0], []).append(path)
            for stem, paths in by_stem.items():
                if stem not in found:
                    found[stem] = the_image(paths)
            searched.append(f"{folder.relative_to(root)}/ ({sum(map(len, by_stem.values()))} file(s))")
    return found, searched, files


def the_image(paths: list[Path]) -> Path:
    """Of files sharing a stem, the first (by name, image extensions first) that Pillow identifies; the first
    of them all when none is (it is then refused with its reason when read)."""
    if len(paths) == 1:
        return paths[0]
    ordered = sorted(paths, key=lambda path: (path.suffix.lower() not in image_suffixes(), path.name))
    return next((path for path in ordered if is_image(path)), ordered[0])


def image_files(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """The files directly in ``folder`` that an installed Pillow plugin identifies (sorted), and every other
    entry (sub-folders included) with why it is not used, so a caller can account for the whole folder."""
    images: list[Path] = []
    unused: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            unused[f"{path.name}/"] = "a folder (not searched)"
        elif is_image(path):
            images.append(path)
        else:
            unused[path.name] = unidentified_reason(path)
    return images, unused
