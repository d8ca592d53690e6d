"""Reading the JSON files a run leaves (``config.json``, ``metrics.json``, ``preprocess.json``...), so that a
damaged one is an error that names it rather than the parser's bare position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a run's folder, in words (``no such folder``, ``a file, not a folder``); None
    when it is a folder."""
    path = Path(path)
    if path.is_dir():
        return None
    return "a file, not a folder" if path.exists() else "no such folder"


def read_json(path: str | Path) -> Any:
    """The parsed contents of ``path``.

    Raises FileNotFoundError (naming the file) when it is missing, ValueError naming the file and the
    parser's complaint when it is not JSON (a run interrupted while writing it, or an edit gone wrong)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a JSON file (not text); the file is damaged or not this package's") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); the file is damaged or was edited by hand") from None
