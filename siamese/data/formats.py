"""Image formats beyond Pillow's own, and why a file that is not an image here is not.

Pillow's plugins are extended with ``pillow-heif`` (HEIC/HEIF, what phones save); AVIF is Pillow's own from
11.2. A file in a format no installed plugin decodes is recognised by its signature and refused with the
package that would read it, not called corrupt; folders are summarised by what in them was left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

try:  # a dependency, but where its wheel is missing the refusal below names it instead of import failing
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")
SIGNATURE_BYTES = 32
SHOWN = 5
"""How many unused files a message names; the rest are counted."""


def signature_format(head: bytes) -> tuple[str, str] | None:
    """``(format, what reads it)`` for file contents ``head`` (the first :data:`SIGNATURE_BYTES`) in a format
    that Pillow reads only with a plugin, or None. ISO media files (HEIF, AVIF) name their brand at byte 8."""
    brand = head[8:12] if head[4:8] == b"ftyp" else b""
    if brand in AVIF_BRANDS:
        return "AVIF", "Pillow 11.2 or later built with libavif (pip install -U pillow)"
    if brand in HEIF_BRANDS:
        return "HEIC/HEIF", "pillow-heif (pip install pillow-heif)"
    if head.startswith(b"\xff\x0a") or head[4:12] == b"JXL \r\n\x87\n":
        return "JPEG XL", "pillow-jxl-plugin (pip install pillow-jxl-plugin)"
    return None


RASTER_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
                     (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
"""Leading bytes of the formats Pillow reads itself: a file that starts so but cannot be opened is a damaged
image (refused when read, with its reason), not a file that is no image."""


def raster_format(head: bytes) -> str | None:
    """The format whose signature ``head`` starts with (JPEG, PNG, GIF, TIFF, WebP), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for signature, name in RASTER_SIGNATURES if head.startswith(signature)), None)


def read_head(path: Path | bytes) -> bytes:
    """The first :data:`SIGNATURE_BYTES` of the file at ``path`` (or of the bytes given)."""
    if isinstance(path, bytes):
        return path[:SIGNATURE_BYTES]
    with Path(path).open("rb") as stream:
        return stream.read(SIGNATURE_BYTES)


def unidentified_reason(path: Path | bytes) -> str:
    """Why Pillow could not identify the file at ``path`` (or whose contents start with the bytes given): a
    known format without its plugin (naming the package to install), a damaged image of a format Pillow reads,
    or not an image at all (an empty file said as such)."""
    head = read_head(path)
    if not head:
        return "empty file (0 bytes)"
    known = signature_format(head)
    if known is not None:
        return f"no decoder for this format ({known[0]}; needs {known[1]})"
    damaged = raster_format(head)
    if damaged is not None:
        return f"truncated or corrupt {damaged} data (its header cannot be read)"
    return f"not an image (its first bytes {head[:12]!r} match no format Pillow knows)"


def unused_summary(folder: Path | str, unused: dict[str, str] | Iterable[str], what: str = "not images") -> str:
    """One line counting the files of ``folder`` left out and naming the first :data:`SHOWN` (with the reason
    when one is known)."""
    reasons = unused if isinstance(unused, dict) else dict.fromkeys(unused, "")
    names = sorted(reasons)
    shown = ", ".join(f"{name} ({reasons[name]})" if reasons[name] else name for name in names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{folder}: {len(names)} file(s) not used ({what}): {shown}{more}"


def warn_unused(folder: Path | str, unused: dict[str, str] | Iterable[str], what: str = "not images") -> None:
    """:func:`unused_summary` as a warning (one line on stderr from the command line), when any were left out."""
    if unused:
        warnings.warn(unused_summary(folder, unused, what), stacklevel=3)
