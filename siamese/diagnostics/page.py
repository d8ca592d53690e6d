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


def _json_element(name: str, payload: Any) -> str:
    # JSON in a non-script <script> element: the HTML parser only scans it, and JSON.parse reads it faster
    # than the JavaScript parser reads the same text as a literal. "</" would end the element early if an
    # image id or a label held "</script>"; "<\/" is a JSON escape of it
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="page-{name}">{text}</script>\n'


MARKS = ("page:plotly", "page:data", "page:drawn")
"""The ``performance.mark`` names a page sets: plotly.js evaluated, its data parsed, its first drawing done
(the last set by the page's script; ``benchmarks/bench_explorer.py`` reads them)."""


def write_page(path: str | Path, title: str, body: str, payload: dict[str, Any], script: str | None,
               deferred: dict[str, Any] | None = None) -> Path:
    """Write one HTML file: the shared stylesheet, plotly.js, ``payload`` as ``window.PAGE_DATA``, then the
    named page script (a file of ``siamese/diagnostics/assets``; None for none). ``deferred``: name to data
    the page parses only when it needs it (``JSON.parse`` of the text of the element ``page-NAME``), placed
    after the script so that the first drawing waits for none of it. ``body`` is trusted HTML of this
    package; ``title`` is escaped. Raises ValueError when a payload holds NaN or infinity (JSON has neither:
    put None where a value is missing)."""
    from plotly.offline import get_plotlyjs  # here: importing plotly is slow and only a page needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join([
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n",
        f"<style>{_asset('page.css')}</style>\n<script>{get_plotlyjs()}</script>\n",
        f"<script>performance.mark(\"{MARKS[0]}\")</script>\n</head><body>\n{body}\n",
        _json_element("data", payload),
        "<script>window.PAGE_DATA = JSON.parse(document.getElementById(\"page-data\").textContent);",
        f"performance.mark(\"{MARKS[1]}\")</script>\n",
        f"<script>{_asset(script)}</script>\n" if script else "",
        *(_json_element(name, data) for name, data in (deferred or {}).items()),
        "</body></html>\n"])
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)  # a reader never opens half a page
    return path


def page_data(path: str | Path, name: str = "data") -> Any:
    """The payload (``name`` "data") or the deferred data ``name`` that a page of :func:`write_page` holds
    (for tests and for scripts that reuse it). Raises ValueError when the file holds no such data."""
    text = Path(path).read_text(encoding="utf-8")
    opening = f'<script type="application/json" id="page-{name}">'
    start = text.find(opening)
    if start < 0:
        raise ValueError(f"{path}: no {name!r} data of a page of siamese.diagnostics.page")
    start += len(opening)
    return json.loads(text[start:text.index("</script>", start)])
