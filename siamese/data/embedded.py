"""Datasets that need no download: scikit-learn's digits and a seeded synthetic lesion generator.

The synthetic set reproduces what makes real dermoscopy data easy to fool yourself with: several
images per lesion, and planted near-duplicates filed under *different* lesion ids (as in HAM10000),
including one with a conflicting label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from siamese.data.readers import HAM_CLASSES
from siamese.data.table import DatasetTable


def read_digits() -> DatasetTable:
    """1,797 real 8x8 handwritten digits, as 3-channel uint8; each image is its own group."""
    digits = load_digits()
    pixels = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    pixels = np.repeat(pixels[..., None], 3, axis=-1)
    ids = [f"digit_{i:04d}" for i in range(len(pixels))]
    frame = pd.DataFrame({"image_id": ids, "label": digits.target.astype(str), "group": ids,
                          "dataset": "digits", "index": np.arange(len(ids))})
    return DatasetTable(frame, pixels)


# Per-class appearance: RGB colour, ellipse aspect, border irregularity, texture strength.
_CLASS_STYLE = {
    "akiec": ((176, 92, 78), 1.15, 0.10, 0.35),
    "bcc": ((190, 140, 150), 1.00, 0.06, 0.10),
    "bkl": ((140, 100, 60), 1.45, 0.08, 0.45),
    "df": ((150, 95, 80), 1.05, 0.02, 0.05),
    "mel": ((55, 35, 30), 1.25, 0.28, 0.30),
    "nv": ((120, 75, 50), 1.00, 0.02, 0.12),
    "vasc": ((170, 40, 60), 1.30, 0.05, 0.20),
}


def _render_lesion(rng: np.random.Generator, size: int, style: tuple, lesion: dict) -> np.ndarray:
    colour, aspect, irregular, texture = style
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    scale = lesion["radius"] * rng.uniform(0.85, 1.15)
    cx, cy = size / 2 + rng.normal(0, size * 0.04, 2)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    dist = np.hypot(u, v)
    theta = np.arctan2(v, u)
    border = 1 + sum(a * np.cos(k * theta + p) for k, a, p in lesion["harmonics"]) * irregular
    inside = dist < scale * border
    shade = np.clip(1 - 0.35 * dist / (scale * border + 1e-6), 0, 1)
    skin = np.array(lesion["skin"], dtype=np.float32)
    image = np.broadcast_to(skin, (size, size, 3)).copy()
    image += rng.normal(0, 4, (size, size, 1))
    tint = np.array(colour, dtype=np.float32) * lesion["tint"]
    grain = 1 + texture * lesion["texture"][:size, :size, None]
    image[inside] = (tint * grain[inside] * (0.7 + 0.3 * shade[inside, None]))
    image *= rng.uniform(0.85, 1.15)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic(lesions_per_class: int = 24, image_size: int = 64, max_images_per_lesion: int = 4,
                   duplicate_fraction: float = 0.03, seed: int = 0,
                   classes: tuple[str, ...] = HAM_CLASSES) -> DatasetTable:
    """Lesion-like images, several per lesion, with planted near-duplicates under new lesion ids.

    ``duplicate_of`` names the source image of each planted copy ('' otherwise) and ``copy_kind`` says
    whether it is exact, flipped, re-lit or label-conflicting, so tests can check detectors against truth.
    """
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for label in classes:
        style = _CLASS_STYLE.get(label, ((rng.integers(40, 200),) * 3, 1.1, 0.1, 0.2))
        for _ in range(lesions_per_class):
            lesion_id = f"SYN_L{len(rows):05d}"
            lesion = {
                "radius": image_size * rng.uniform(0.2, 0.32),
                "harmonics": [(k, rng.uniform(0.3, 1.0), rng.uniform(0, 2 * np.pi)) for k in range(2, 7)],
                "skin": rng.uniform([200, 150, 120], [240, 190, 160]),
                "tint": rng.uniform(0.8, 1.2, 3),
                "texture": rng.normal(0, 1, (image_size, image_size)).astype(np.float32),
            }
            for _ in range(rng.integers(1, max_images_per_lesion + 1)):
                images.append(_render_lesion(rng, image_size, style, lesion))
                rows.append({"image_id": f"SYN_{len(rows):06d}", "label": label, "group": lesion_id,
                             "duplicate_of": "", "copy_kind": ""})
    n_copies = max(2, int(round(duplicate_fraction * len(rows))))
    sources = rng.choice(len(rows), size=n_copies, replace=False)
    kinds = ["conflict"] + [("exact", "flip", "relit")[i % 3] for i in range(n_copies - 1)]
    for source, kind in zip(sources, kinds, strict=True):
        pixels = images[source]
        if kind == "flip":
            pixels = pixels[:, ::-1]
        elif kind == "relit":
            pixels = np.clip(pixels.astype(np.float32) * 1.06 + 3, 0, 255).astype(np.uint8)
        label = rows[source]["label"]
        if kind == "conflict":
            label = classes[(classes.index(label) + 1) % len(classes)]
        images.append(np.ascontiguousarray(pixels))
        rows.append({"image_id": f"SYN_{len(rows):06d}", "label": label, "group": f"SYN_D{len(rows):05d}",
                     "duplicate_of": rows[source]["image_id"], "copy_kind": kind})
    frame = pd.DataFrame(rows).assign(dataset="synthetic", index=np.arange(len(rows)))
    return DatasetTable(frame, np.stack(images))


def planted_pairs(table: DatasetTable) -> pd.DataFrame:
    """The synthetic set's planted duplicate pairs, in the pair-file format the splitter reads."""
    frame = table.frame
    copies = frame[frame["duplicate_of"] != ""]
    return pd.DataFrame({"from_img": copies["duplicate_of"].to_numpy(), "to_img": copies["image_id"].to_numpy(),
                         "distance": 0.0})
