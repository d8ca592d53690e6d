"""Reading the JSON files a run leaves (``config.json``, ``metrics.json``, ``preprocess.json``...), so that a
damaged one is an error that names it rather than the parser's bare position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
