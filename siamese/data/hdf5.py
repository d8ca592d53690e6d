"""Images stored inside an HDF5 file, one encoded image file's bytes per key (ISIC 2024's
``train-image.hdf5``), read one at a time without unpacking the archive.

Such an image is named ``FILE::KEY`` wherever a path is (a table's ``path`` column, cache keys, messages),
so everything downstream of the reader treats it as a file; only the decoder looks inside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import h5py

SEPARATOR = "::"
SUFFIXES = (".hdf5", ".h5")

_handles: dict[tuple[int, str], Any] = {}


def member(file: str | Path, key: str) -> str:
    """The path-like name of the image stored under ``key`` in ``file``."""
    return f"{file}{SEPARATOR}{key}"


def split_member(path: str | Path) -> tuple[Path, str] | None:
    """``(file, key)`` for a name made by :func:`member`, None for an ordinary path."""
    text = str(path)
    if SEPARATOR not in text:
        return None
    file, key = text.rsplit(SEPARATOR, 1)
    return (Path(file), key) if Path(file).suffix.lower() in SUFFIXES else None


def archive(file: str | Path) -> h5py.File:
    """``file`` open for reading, once per process: a handle must not cross into a forked DataLoader worker,
    and opening the archive for every image would cost more than decoding it."""
    import h5py  # here, so commands that never meet an HDF5 file do not pay for importing it

    key = (os.getpid(), str(file))
    if key not in _handles:
        _handles[key] = h5py.File(file, "r")
    return _handles[key]


def read_member(file: str | Path, key: str) -> bytes:
    """The stored bytes of ``key`` (a scalar byte string, or a 1-D uint8 array as some converters write).

    Raises KeyError when ``file`` has no such key, OSError when it is not a readable HDF5 file."""
    value = archive(file)[key][()]
    return bytes(value) if isinstance(value, bytes | np.bytes_) else np.asarray(value, dtype=np.uint8).tobytes()


def member_keys(file: str | Path) -> set[str]:
    """Every key at the top of ``file`` (one per image), read from its index alone."""
    return set(archive(file).keys())
