"""Recall of planted near-duplicates per transform, and the pairs found among distinct lesions, for each
of dedup's searches (CNN embedding, pHash, and the two together), on real HAM10000 images.

    python experiments/dedup_recall.py --ham ../shared/data/ham10000 --out runs/dedup_recall

Originals: the 40 images of the published duplicate lists (pairs under different lesion ids), lesions with
two photographs (both taken) and lesions with one, from the 200x150 copy of the whole set (``small/``).
Every original gets ``--copies`` planted copies, each by another transform of :data:`TRANSFORMS` in turn
(each transform's share is equal), saved as JPEG at quality 95 (or the transform's own quality). The
descriptors are computed as ``dedup`` does (files read at ``--image-size``, the default descriptor) and
kept in ``--out`` (a second call with the same settings reuses them), and a pair counts as found when it
is within the method's threshold.

Pairs are sorted by what joins them: ``planted`` (an original and its copy), ``same source`` (two copies
of one original), ``same lesion`` (HAM10000's own photographs of one lesion, or their copies),
``published`` (a pair of the published lists, or their copies) and ``distinct`` (everything else: a
false pair). Writes ``recall.csv`` (method x transform), ``pairs.csv`` (method x kind of pair) and
``dedup_recall.md`` (both tables, the settings and the machine) to ``--out``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from siamese.data.images import FilePixels
from siamese.dedup.features import (
    cache_key,
    cached,
    centre_crop,
    normalise,
    phash_codes,
)
from siamese.dedup.find import DEFAULT_THRESHOLDS
from siamese.dedup.search import cosine_pairs, hamming_pairs
from siamese.models.frozen_features import cnn_features, descriptor_model


def _channel_gains(gains: tuple[float, float, float]) -> Callable[[Image.Image], Image.Image]:
    def apply(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, dtype=np.float64) * np.array(gains)
        return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return apply


def _rescaled(share: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.resize((round(image.width * share), round(image.height * share)),
                                      Image.Resampling.BICUBIC)


TRANSFORMS: dict[str, tuple[str, Callable[[Image.Image], Image.Image], int]] = {
    # name: (kind, edit, JPEG quality of the saved copy)
    "rescale x0.5": ("rescale", _rescaled(0.5), 95),
    "rescale x0.75": ("rescale", _rescaled(0.75), 95),
    "JPEG q60": ("jpeg", lambda image: image, 60),
    "JPEG q30": ("jpeg", lambda image: image, 30),
    "brightness -30%": ("brightness", lambda image: ImageEnhance.Brightness(image).enhance(0.7), 95),
    "brightness -15%": ("brightness", lambda image: ImageEnhance.Brightness(image).enhance(0.85), 95),
    "brightness +15%": ("brightness", lambda image: ImageEnhance.Brightness(image).enhance(1.15), 95),
    "brightness +30%": ("brightness", lambda image: ImageEnhance.Brightness(image).enhance(1.3), 95),
    "contrast -30%": ("contrast", lambda image: ImageEnhance.Contrast(image).enhance(0.7), 95),
    "contrast -15%": ("contrast", lambda image: ImageEnhance.Contrast(image).enhance(0.85), 95),
    "contrast +15%": ("contrast", lambda image: ImageEnhance.Contrast(image).enhance(1.15), 95),
    "contrast +30%": ("contrast", lambda image: ImageEnhance.Contrast(image).enhance(1.3), 95),
    "white balance warm 10%": ("white balance", _channel_gains((1.1, 1.0, 0.9)), 95),
    "white balance cool 10%": ("white balance", _channel_gains((0.9, 1.0, 1.1)), 95),
    "white balance warm 20%": ("white balance", _channel_gains((1.2, 1.0, 0.8)), 95),
    "white balance cool 20%": ("white balance", _channel_gains((0.8, 1.0, 1.2)), 95),
    "crop 3% a side": ("crop", lambda image: centre_crop(image, 0.03), 95),
    "crop 6% a side": ("crop", lambda image: centre_crop(image, 0.06), 95),
    "rotation 90": ("rotation", lambda image: image.transpose(Image.Transpose.ROTATE_90), 95),
    "rotation 180": ("rotation", lambda image: image.transpose(Image.Transpose.ROTATE_180), 95),
    "rotation 5 degrees": ("rotation", lambda image: image.rotate(5, Image.Resampling.BILINEAR), 95),
}


def _published_pairs(ham: Path) -> pd.DataFrame:
    lists = [pd.read_csv(ham / name) for name in ("newly_discovered_duplicates.csv",
                                                  "near_duplicates_different_times.csv")]
    pairs = pd.concat(lists, ignore_index=True)[["from_img", "to_img"]]
    return pairs.apply(lambda column: column.astype(str).str.removesuffix(".jpg"))


def sample_originals(ham: Path, lesions_with_two: int, lesions_with_one: int, seed: int) -> pd.DataFrame:
    """``image_id, lesion_id, dx, path, published`` of the originals (see the module docstring)."""
    small = ham / "small"
    meta = pd.read_csv(small / "HAM10000_metadata.csv")
    published = _published_pairs(ham)
    listed = set(published["from_img"]) | set(published["to_img"])
    listed_lesions = set(meta.loc[meta["image_id"].isin(listed), "lesion_id"])
    rest = meta[~meta["lesion_id"].isin(listed_lesions)]
    sizes = rest.groupby("lesion_id")["image_id"].transform("size")
    two = rest[sizes >= 2].drop_duplicates("lesion_id").sample(lesions_with_two, random_state=seed)["lesion_id"]
    one = rest[sizes == 1].sample(lesions_with_one, random_state=seed)
    both = rest[rest["lesion_id"].isin(two)].groupby("lesion_id").head(2)
    chosen = pd.concat([meta[meta["image_id"].isin(listed)], both, one], ignore_index=True)
    folders = {p.stem: p for part in ("HAM10000_images_part_1", "HAM10000_images_part_2")
               for p in (small / part).glob("*.jpg")}
    return chosen.assign(path=[str(folders[i]) for i in chosen["image_id"]],
                         published=chosen["image_id"].isin(listed))[["image_id", "lesion_id", "dx", "path",
                                                                     "published"]]


def plant_copies(originals: pd.DataFrame, copies: int, folder: Path) -> pd.DataFrame:
    """The originals and their copies as one table (``source``: the original's id; ``transform``: empty
    for an original)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(TRANSFORMS)
    rows = [dict(row, source=row["image_id"], transform="") for row in originals.to_dict("records")]
    for i, row in enumerate(originals.to_dict("records")):
        with Image.open(row["path"]) as opened:
            image = opened.convert("RGB")
        for k in range(copies):
            name = names[(i * copies + k) % len(names)]
            _, edit, quality = TRANSFORMS[name]
            copy_id = f"copy{k}_{row['image_id']}"
            buffer = io.BytesIO()
            edit(image).save(buffer, "JPEG", quality=quality)
            (folder / f"{copy_id}.jpg").write_bytes(buffer.getvalue())
            rows.append(dict(row, image_id=copy_id, path=str(folder / f"{copy_id}.jpg"), source=row["image_id"],
                             transform=name))
    return pd.DataFrame(rows)


def pair_kinds(table: pd.DataFrame, i: np.ndarray, j: np.ndarray, published: pd.DataFrame) -> np.ndarray:
    """What joins rows ``i`` and ``j`` of ``table`` (see the module docstring)."""
    source, lesion = table["source"].to_numpy(), table["lesion_id"].to_numpy()
    is_original = (table["transform"] == "").to_numpy()
    listed = {frozenset(p) for p in zip(published["from_img"], published["to_img"], strict=True)}
    kinds = np.full(len(i), "distinct", dtype=object)
    same_source = source[i] == source[j]
    kinds[same_source] = np.where(is_original[i][same_source] | is_original[j][same_source], "planted",
                                  "same source")
    other = ~same_source
    kinds[other & (lesion[i] == lesion[j])] = "same lesion"
    is_listed = np.array([frozenset((a, b)) in listed for a, b in zip(source[i], source[j], strict=True)],
                         dtype=bool)
    kinds[other & (lesion[i] != lesion[j]) & is_listed] = "published"
    return kinds


def found_pairs(embedding: np.ndarray, hashes: np.ndarray, methods: dict[str, dict[str, float]]
                ) -> dict[str, set[tuple[int, int]]]:
    """Each method's found pairs ``(i, j)``, ``i < j``: the union of its descriptors' pairs within their
    thresholds."""
    loosest = {"embedding": max(m.get("embedding", 0) for m in methods.values()),
               "phash": max(m.get("phash", 0) for m in methods.values())}
    candidates = {"embedding": cosine_pairs(embedding, threshold=loosest["embedding"]),
                  "phash": hamming_pairs(hashes, threshold=loosest["phash"])}
    found = {}
    for name, thresholds in methods.items():
        pairs: set[tuple[int, int]] = set()
        for descriptor, threshold in thresholds.items():
            within = candidates[descriptor][candidates[descriptor]["distance"] <= threshold]
            pairs |= set(zip(within["i"].tolist(), within["j"].tolist(), strict=True))
        found[name] = pairs
    return found


def all_pair_kinds(table: pd.DataFrame, published: pd.DataFrame) -> pd.Series:
    """How many pairs of each kind the table holds (the denominators)."""
    i, j = np.triu_indices(len(table), k=1)
    return pd.Series(pair_kinds(table, i, j, published)).value_counts()


def tables(table: pd.DataFrame, found: dict[str, set[tuple[int, int]]], published: pd.DataFrame
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall per transform and the count of found pairs per kind, for each method."""
    is_copy = (table["transform"] != "").to_numpy()
    position = pd.Series(np.arange(len(table)), index=table["image_id"])
    copies = table[is_copy]
    planted = [tuple(sorted((int(position[s]), int(c)))) for s, c in zip(copies["source"], np.flatnonzero(is_copy),
                                                                       strict=True)]
    totals = all_pair_kinds(table, published)
    recall_rows, pair_rows = [], []
    for method, pairs in found.items():
        hit = np.array([p in pairs for p in planted])
        for name, (kind, _, _) in TRANSFORMS.items():
            mine = (copies["transform"] == name).to_numpy()
            recall_rows.append({"method": method, "kind": kind, "transform": name, "planted": int(mine.sum()),
                                "found": int(hit[mine].sum()), "recall": float(hit[mine].mean())})
        ij = np.array(sorted(pairs), dtype=int).reshape(-1, 2)
        counts = pd.Series(pair_kinds(table, ij[:, 0], ij[:, 1], published)).value_counts()
        for kind in ("planted", "same source", "same lesion", "published", "distinct"):
            pair_rows.append({"method": method, "pairs": kind, "found": int(counts.get(kind, 0)),
                              "of": int(totals.get(kind, 0))})
    return pd.DataFrame(recall_rows), pd.DataFrame(pair_rows)


def markdown(recall: pd.DataFrame, pairs: pd.DataFrame, table: pd.DataFrame, methods: dict[str, dict[str, float]],
             settings: dict[str, object]) -> str:
    wide = recall.pivot_table(index=["kind", "transform"], columns="method", values="found", sort=False)
    planted = recall.drop_duplicates("transform").set_index(["kind", "transform"])["planted"]
    lines = ["# Planted near-duplicates found by each dedup search", "",
             f"{(table['transform'] == '').sum()} real HAM10000 originals (200x150), {len(table)} images with "
             f"their copies; {', '.join(f'{k}: {v}' for k, v in settings.items())}.", "",
             "Methods: " + "; ".join(f"`{name}` = " + " or ".join(f"{d} <= {t:g}" for d, t in th.items())
                                     for name, th in methods.items()) + ".", "",
             "## Copies found, per transform", "",
             "| kind | transform | planted | " + " | ".join(wide.columns) + " |",
             "|---|---|---:|" + "---:|" * len(wide.columns)]
    for (kind, name), row in wide.iterrows():
        lines.append(f"| {kind} | {name} | {planted[(kind, name)]} | "
                     + " | ".join(f"{int(v)}" for v in row) + " |")
    lines += ["", "## Pairs found, by what joins them", "",
              "`distinct` pairs join two different lesions that no list calls duplicates: false pairs. "
              "`same lesion`: HAM10000's own photographs of one lesion (or their copies), near-duplicates of "
              "another kind. `published`: the published pairs under different lesion ids.", "",
              "| pairs | of | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for kind, group in pairs.groupby("pairs", sort=False):
        lines.append(f"| {kind} | {group['of'].iloc[0]} | " + " | ".join(str(v) for v in group["found"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ham", required=True, help="the shared ham10000 folder (with small/ and the pair lists)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lesions-with-two", type=int, default=100)
    parser.add_argument("--lesions-with-one", type=int, default=60)
    parser.add_argument("--copies", type=int, default=7, help="planted copies per original")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out, ham = Path(args.out), Path(args.ham)
    start = time.perf_counter()
    published = _published_pairs(ham)
    originals = sample_originals(ham, args.lesions_with_two, args.lesions_with_one, args.seed)
    table = plant_copies(originals, args.copies, out / "copies")
    pixels = FilePixels(table["path"].tolist(), args.image_size)
    key = cache_key(*table["image_id"], args.image_size)
    embedding = cached(out / f"embedding_{key}.npy", lambda: normalise(cnn_features(descriptor_model(), pixels)))
    hashes = cached(out / f"phash_{key}.npy", lambda: phash_codes(pixels))
    methods = {"embedding": {"embedding": DEFAULT_THRESHOLDS["embedding"]},
               "phash": {"phash": DEFAULT_THRESHOLDS["phash"]},
               "embedding+phash": {"embedding": DEFAULT_THRESHOLDS["embedding"], "phash": DEFAULT_THRESHOLDS["phash"]},
               **{f"embedding {t:g}+phash": {"embedding": t, "phash": DEFAULT_THRESHOLDS["phash"]}
                  for t in (0.05, 0.03)}}
    recall, pairs = tables(table, found_pairs(embedding, hashes, methods), published)
    recall.to_csv(out / "recall.csv", index=False)
    pairs.to_csv(out / "pairs.csv", index=False)
    settings = {"copies per original": args.copies, "image size": args.image_size, "seed": args.seed,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                "wall": f"{time.perf_counter() - start:.0f} s"}
    (out / "dedup_recall.md").write_text(markdown(recall, pairs, table, methods, settings))
    print((out / "dedup_recall.md").read_text())


if __name__ == "__main__":
    main()
