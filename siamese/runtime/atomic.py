"""Files written whole or not at all, also when several processes write the same one at once.

Runs that share a ``--cache-dir`` (seeds of one setting, ``cv`` folds, ``dedup`` beside training) may build
the same cache file at the same moment. Each writer gets a temporary name of its own beside the target, so
no two processes ever write one file, and renames it over the target when complete: a reader sees no file or
a whole one, and when two build the same cache both finish, the last rename leaving identical contents.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A private temporary path beside ``path`` (same extension, so ``np.save`` keeps the name) for the block
    to write; renamed over ``path`` when the block ends, removed when it raises or is interrupted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)  # atomic within one filesystem, and the partial lies beside its target
    finally:
        partial.unlink(missing_ok=True)
