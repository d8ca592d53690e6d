"""Real dermoscopic artefacts (air bubbles, ink markings, rulers) inserted into other images.

The templates are those Katsch, Rinner and Tschandl cut from HAM10000 images (Dermatol Pract Concept
2022;12(3):e2022126), laid out as ``meta.json`` plus ``src/``. Bubbles and rulers come as a crop *with*
the artefact and the same crop repaired by hand *without* it: their difference is the artefact alone, and
adding it to another image carries its highlights and shadows without the source's skin. Ink markings
are stamps on white, composed by multiplication, which is how ink darkens skin (white changes nothing).
Templates were cut from 600x450 images, so they are scaled by the target's width over 600. Insertion is
seeded, keeps the image's size and dtype, and, given a lesion mask, keeps the artefact off the lesion
(a circle goes around it), as artefacts are in the clinic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamese.config import ARTEFACT_TYPES
from siamese.data.crops import lesion_box
from siamese.data.decode import decode
from siamese.data.table import DataError
from siamese.runtime.json_files import read_json

SOURCE_WIDTH = 600
"""Width of the HAM10000 images the templates were cut from."""
FOOTPRINT_LEVEL = 10
"""A template pixel changes the image where the difference (or the stamp's darkening) exceeds this."""
PLACEMENT_TRIES = 50
BUBBLES_PER_FIELD = (3, 8)
PAIR = re.compile(r"^(?P<stem>.+?)_(?:(?P<kind>with|without)_(?P<n>\d+)|(?P<n2>\d+)_(?P<kind2>with|without))$")


@dataclass
class Template:
    """One artefact: a signed difference (bubble, ruler) or a uint8 stamp on white (marking)."""

    kind: str
    subclass: str | None
    name: str
    pixels: np.ndarray

    def scaled(self, factor: float, rotate: bool = False) -> np.ndarray:
        """The template resized by ``factor`` (and turned a quarter for a vertical ruler stored lying), with
        everything outside its footprint made exactly neutral: the hand repair's faint noise and a stamp's
        off-white paper then change no pixel, so the artefact lands only where it is seen."""
        pixels = np.rot90(self.pixels) if rotate else self.pixels
        height, width = pixels.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if self.kind == "marking":
            stamp = np.array(Image.fromarray(np.ascontiguousarray(pixels)).resize(size, Image.Resampling.BILINEAR))
            stamp[~footprint(stamp, self.kind)] = 255
            return stamp
        channels = [Image.fromarray(np.ascontiguousarray(pixels[..., c]).astype(np.float32), mode="F")
                    .resize(size, Image.Resampling.BILINEAR) for c in range(3)]
        difference = np.stack([np.asarray(c) for c in channels], axis=-1)
        return np.where(footprint(difference, self.kind)[..., None], difference, 0.0)


def footprint(template: np.ndarray, kind: str) -> np.ndarray:
    """Where a (scaled) template changes an image."""
    if kind == "marking":
        return (255 - template.min(axis=-1).astype(np.int16)) > FOOTPRINT_LEVEL
    return np.abs(template).max(axis=-1) > FOOTPRINT_LEVEL


@dataclass
class ArtefactLibrary:
    """Every template of a folder, by type; :meth:`insert` puts one artefact of a type into an image."""

    folder: Path
    templates: dict[str, list[Template]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> ArtefactLibrary:
        """Read ``meta.json`` and every template it lists; anything missing or malformed is named."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: artefact index not found (a templates folder holds meta.json and src/)")
        try:
            entries = read_json(meta_path)["artefacts"]
        except (ValueError, KeyError, TypeError) as exc:  # ValueError: read_json on a file that is not JSON
            raise DataError(f"{meta_path}: malformed artefact index ({type(exc).__name__}: {exc}); it needs a list "
                            "under 'artefacts'") from exc
        library = cls(folder, {kind: [] for kind in ARTEFACT_TYPES})
        for number, entry in enumerate(entries):
            try:
                kind, subfolder = entry["class"], folder / entry["artefact_folder"]
            except (KeyError, TypeError) as exc:
                raise DataError(f"{meta_path}: artefact entry {number} lacks {exc}") from exc
            if kind not in ARTEFACT_TYPES:
                raise DataError(f"{meta_path}: artefact entry {number} has unknown class {kind!r}")
            if not subfolder.is_dir():
                raise DataError(f"{subfolder}: artefact folder listed in {meta_path} not found")
            reader = _stamps if kind == "marking" else _differences
            library.templates[kind] += [Template(kind, entry.get("subclass"), name, pixels)
                                        for name, pixels in reader(subfolder)]
        return library

    def counts(self) -> dict[str, int]:
        return {kind: len(found) for kind, found in self.templates.items()}

    def insert(self, image: np.ndarray, kind: str, rng: np.random.Generator,
               mask: np.ndarray | None = None) -> np.ndarray:
        """``image`` (``HxWx3`` uint8) with one artefact of ``kind`` added; a new array of the same shape."""
        if kind not in ARTEFACT_TYPES:
            raise ValueError(f"unknown artefact type {kind!r}; choose from {list(ARTEFACT_TYPES)}")
        if not self.templates.get(kind):
            raise DataError(f"{self.folder}: no {kind} templates")
        factor = image.shape[1] / SOURCE_WIDTH
        out = image.astype(np.float32)
        if kind == "bubble":
            for _ in range(rng.integers(*BUBBLES_PER_FIELD, endpoint=True)):
                template = self._pick(kind, rng).scaled(factor)
                _add(out, template, _free_spot(template, kind, image.shape, mask, rng))
        elif kind == "ruler":
            template = self._pick(kind, rng)
            vertical = template.subclass == "vertical"
            along = image.shape[0] if vertical else image.shape[1]
            length = max(template.pixels.shape[:2])
            pixels = template.scaled(min(factor, 0.95 * along / length), rotate=vertical and
                                     template.pixels.shape[1] > template.pixels.shape[0])
            _add(out, pixels, _edge_spot(pixels, vertical, image.shape, mask, rng))
        else:
            template = self._pick(kind, rng)
            if template.subclass == "circle":
                pixels, spot = _around_lesion(template, image.shape, mask, factor)
            else:
                pixels = template.scaled(factor)
                spot = _free_spot(pixels, kind, image.shape, mask, rng)
            _multiply(out, pixels, spot)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _pick(self, kind: str, rng: np.random.Generator) -> Template:
        found = self.templates[kind]
        return found[int(rng.integers(len(found)))]


@dataclass
class ArtefactPixels:
    """Training augmentation: with probability ``p`` an image from a pixel source gets one artefact of a
    random type. Draws come from torch's generator, which the run seeds and each loader worker reseeds."""

    library: ArtefactLibrary
    p: float
    source: Any = None

    def __post_init__(self) -> None:
        if not 0 < self.p <= 1:
            raise ValueError(f"--augment-artefacts is a probability in (0, 1]; got {self.p}")

    def over(self, source: Any) -> ArtefactPixels:
        return ArtefactPixels(self.library, self.p, source)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> np.ndarray:
        import torch

        pixels = self.source[i]
        if torch.rand(()).item() >= self.p:
            return pixels
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        return self.library.insert(pixels, ARTEFACT_TYPES[int(rng.integers(len(ARTEFACT_TYPES)))], rng)


def _stamps(folder: Path) -> list[tuple[str, np.ndarray]]:
    return [(path.stem, _read_rgb(path)) for path in sorted(folder.glob("*.png"))]


def _differences(folder: Path) -> list[tuple[str, np.ndarray]]:
    """with - without for every pair in the folder (``X_with_NN``/``X_without_NN`` or ``X_NN_with``...)."""
    pairs: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.glob("*.png")):
        match = PAIR.match(path.stem)
        if match is None:
            raise DataError(f"{path}: not named as a with/without pair (X_with_NN.png or X_NN_with.png)")
        number = match["n"] or match["n2"]
        pairs.setdefault(number, {})[match["kind"] or match["kind2"]] = path
    found = []
    for number, pair in sorted(pairs.items()):
        if set(pair) != {"with", "without"}:
            present = next(iter(pair.values()))
            raise DataError(f"{present}: its {'without' if 'with' in pair else 'with'} partner is missing")
        with_artefact, without = _read_rgb(pair["with"]), _read_rgb(pair["without"])
        if with_artefact.shape != without.shape:
            raise DataError(f"{pair['with']}: {with_artefact.shape[:2]} but {pair['without'].name} is "
                            f"{without.shape[:2]}")
        found.append((f"{folder.name}_{number}", with_artefact.astype(np.int16) - without.astype(np.int16)))
    if not found:
        raise DataError(f"{folder}: no artefact templates in it")
    return found


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(decode(path, "RGB", kind="artefact template"))


Spot = tuple[int, int]
"""Top-left corner ``(row, column)`` of a template in the image; it may hang over the edges."""


def _overlap(pixels: np.ndarray, kind: str, spot: Spot, mask: np.ndarray | None) -> int:
    if mask is None:
        return 0
    region, inside = _window(pixels.shape, spot, mask.shape)
    return int((footprint(pixels, kind)[inside] & mask[region]).sum())


def _free_spot(pixels: np.ndarray, kind: str, shape: tuple[int, ...], mask: np.ndarray | None,
               rng: np.random.Generator) -> Spot:
    """A random place for the template, the first of several draws that keeps its footprint off the lesion
    (the least overlapping if none does)."""
    best, best_overlap = (0, 0), None
    for _ in range(PLACEMENT_TRIES):
        spot = (int(rng.integers(0, max(1, shape[0] - pixels.shape[0] + 1))),
                int(rng.integers(0, max(1, shape[1] - pixels.shape[1] + 1))))
        overlap = _overlap(pixels, kind, spot, mask)
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = spot, overlap
        if overlap == 0:
            break
    return best


def _edge_spot(pixels: np.ndarray, vertical: bool, shape: tuple[int, ...], mask: np.ndarray | None,
               rng: np.random.Generator) -> Spot:
    """Along the left or right edge (vertical) or the top or bottom edge (horizontal), the side that keeps the
    ruler off the lesion (a random one without a mask)."""
    height, width = pixels.shape[:2]
    if vertical:
        row = int(rng.integers(0, max(1, shape[0] - height + 1)))
        sides = [(row, 0), (row, max(0, shape[1] - width))]
    else:
        column = int(rng.integers(0, max(1, shape[1] - width + 1)))
        sides = [(0, column), (max(0, shape[0] - height), column)]
    order = rng.permutation(2)
    return min((sides[i] for i in order), key=lambda spot: _overlap(pixels, "ruler", spot, mask))


def _around_lesion(template: Template, shape: tuple[int, ...], mask: np.ndarray | None,
                   factor: float) -> tuple[np.ndarray, Spot]:
    """An ink circle centred on the lesion, grown until its ring clears the lesion (the image's centre and
    the template's own scale without a mask)."""
    box = lesion_box(mask, 0.0) if mask is not None else None
    if box is None:
        pixels = template.scaled(factor)
        return pixels, ((shape[0] - pixels.shape[0]) // 2, (shape[1] - pixels.shape[1]) // 2)
    left, top, right, bottom = box
    centre = ((top + bottom) / 2, (left + right) / 2)
    scale = 1.3 * max((bottom - top) / template.pixels.shape[0], (right - left) / template.pixels.shape[1])
    for _ in range(8):
        pixels = template.scaled(scale)
        spot = (round(centre[0] - pixels.shape[0] / 2), round(centre[1] - pixels.shape[1] / 2))
        if _overlap(pixels, "marking", spot, mask) == 0:
            break
        scale *= 1.15
    return pixels, spot


def _window(template_shape: tuple[int, ...], spot: Spot, image_shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """The image region a template at ``spot`` covers and the matching part of the template, both clipped."""
    top, left = spot
    bottom, right = top + template_shape[0], left + template_shape[1]
    t0, l0 = max(top, 0), max(left, 0)
    b0, r0 = min(bottom, image_shape[0]), min(right, image_shape[1])
    region = (slice(t0, max(t0, b0)), slice(l0, max(l0, r0)))
    inside = (slice(t0 - top, max(t0, b0) - top), slice(l0 - left, max(l0, r0) - left))
    return region, inside


def _add(image: np.ndarray, difference: np.ndarray, spot: Spot) -> None:
    region, inside = _window(difference.shape, spot, image.shape)
    image[region] += difference[inside]


def _multiply(image: np.ndarray, stamp: np.ndarray, spot: Spot) -> None:
    region, inside = _window(stamp.shape, spot, image.shape)
    image[region] *= stamp[inside].astype(np.float32) / 255.0
