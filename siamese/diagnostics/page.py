"""Self-contained HTML pages: plotly's JavaScript inlined, the data as JSON, thumbnails as data URIs.

A page written here opens from disk with no network and no server, so it can be mailed, archived with a
run or opened on a machine that holds the images but cannot reach the internet.
"""

from __future__ import annotations

import base64
import html
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

THUMBNAIL_PX = 64
"""Longest side of a thumbnail: at JPEG quality 70 one costs a few kB, so 10,015 of them stay well under the
30 MB a page of the whole of HAM10000 may weigh."""

GROUP_NOUNS = {"isic2020": "patient"}
"""What a dataset's ``group`` column names, where it is not a lesion (ISIC 2020 groups images by patient)."""


def group_noun(dataset: str) -> str:
    """The word a page uses for an image's group in ``dataset``: "lesion" unless :data:`GROUP_NOUNS` says."""
    return GROUP_NOUNS.get(dataset, "lesion")


def thumbnail_uri(image: np.ndarray, px: int = THUMBNAIL_PX, quality: int = 70) -> str:
    """A ``data:image/jpeg`` URI of ``image`` (``H x W x 3`` or ``H x W``, uint8) shrunk so its longest side is
    ``px`` (small images are enlarged to it, so an 8x8 digit is still visible). Raises ValueError for
    ``px < 1``."""
    if px < 1:
        raise ValueError(f"thumbnail size must be at least 1 pixel, got {px}")
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    scale = px / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    # nearest for enlargements keeps a tiny image's pixels sharp; Lanczos for the usual shrinking
    picture = picture.resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _asset(name: str) -> str:
    return resources.files("siamese.diagnostics").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(payload: Any) -> str:
    # "</" would end the <script> element early if an image id or a label held "</script>"
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def write_page(path: str | Path, title: str, body: str, payload: dict[str, Any], script: str) -> Path:
    """Write one HTML file: plotly.js, ``payload`` as ``window.PAGE_DATA``, then the named page script
    (a file of ``siamese/diagnostics/assets``) and the shared stylesheet. ``body`` is trusted HTML of this
    package; ``title`` is escaped. Raises ValueError when ``payload`` holds NaN or infinity (JSON has
    neither: put None where a value is missing)."""
    from plotly.offline import get_plotlyjs  # here: importing plotly is slow and only a page needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<style>{_asset('page.css')}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>\n{body}\n"
            f"<script>window.PAGE_DATA = {_script_json(payload)};</script>\n"
            f"<script>{_asset(script)}</script>\n</body></html>\n")
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)  # a reader never opens half a page
    return path


def page_data(path: str | Path) -> dict[str, Any]:
    """The ``window.PAGE_DATA`` a page of :func:`write_page` holds (for tests and for scripts that reuse it).
    Raises ValueError when the file is not such a page."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.find("window.PAGE_DATA = ")
    if start < 0:
        raise ValueError(f"{path}: not a page of siamese.diagnostics.page (no PAGE_DATA)")
    start += len("window.PAGE_DATA = ")
    end = text.index(";</script>", start)
    return json.loads(text[start:end])  # "<\/" is a JSON escape of "</"
