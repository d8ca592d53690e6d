"""ISIC 2024 at the real set's scale, on this machine: the reader's and the split's time and peak memory on a
synthetic ``train-metadata.csv`` of SLICE-3D's size, and images per second read from ``train-image.hdf5``.

    python experiments/isic2024_scale.py --out runs/isic2024-scale [--images DIR_OF_JPEGS]

The table has SLICE-3D's shape (401,059 rows, 1,042 patients, 393 malignant, 55 columns: ids, 40 numeric
lesion measurements, strings); ``--images`` builds an HDF5 archive from a folder of JPEGs (e.g. the shared
ISIC 2020 images) to time reading. Writes ``scale.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from siamese.data import load_dataset, load_image
from siamese.data.hdf5 import member
from siamese.data.splits import split_table


def synthetic_metadata(path: Path, rows: int = 401_059, patients: int = 1_042, malignant: int = 393,
                       seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    target = np.zeros(rows, dtype=int)
    target[rng.choice(rows, malignant, replace=False)] = 1
    frame = pd.DataFrame({"isic_id": [f"ISIC_{i:07d}" for i in range(rows)], "target": target,
                          "patient_id": [f"IP_{p:07d}" for p in rng.integers(0, patients, rows)],
                          "age_approx": rng.integers(4, 17, rows) * 5.0,
                          "sex": rng.choice(["male", "female"], rows),
                          "anatom_site_general": rng.choice(["posterior torso", "lower extremity", "head/neck"], rows),
                          "image_type": "TBP tile: close-up", "tbp_tile_type": "3D: XP",
                          "attribution": "Memorial Sloan Kettering Cancer Center", "copyright_license": "CC-BY",
                          "tbp_lv_location": rng.choice(["Torso Back", "Left Leg", "Right Arm"], rows),
                          "tbp_lv_location_simple": rng.choice(["Torso Back", "Left Leg"], rows),
                          "lesion_id": np.where(rng.random(rows) < 0.05, "IL_0000001", ""),
                          "iddx_full": "Benign", "iddx_1": "Benign", "mel_mitotic_index": ""})
    for i in range(40):
        frame[f"tbp_lv_measure_{i:02d}"] = rng.normal(10, 3, rows).round(6)
    frame.to_csv(path, index=False)


def timed(step, repeat_for_memory: bool = True) -> tuple[object, float, float]:
    """The step's result, its wall time, and its peak traced allocation in MiB (from a second, traced run:
    numpy's buffers and Python objects; the process's peak resident size is reported beside it)."""
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    peak = float("nan")
    if repeat_for_memory:
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, seconds, peak


def images_per_second(folder: Path, out: Path, size: int = 128) -> dict[str, float]:
    import h5py

    jpegs = sorted(folder.glob("*.jpg"))
    archive = out / "train-image.hdf5"
    with h5py.File(archive, "w") as stored:
        for path in jpegs:
            stored[path.stem] = np.bytes_(path.read_bytes())
    start = time.perf_counter()
    for path in jpegs:
        load_image(member(archive, path.stem), size)
    from_archive = len(jpegs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for path in jpegs:
        load_image(path, size)
    return {"images": len(jpegs), "size": size, "archive_images_per_second": from_archive,
            "files_images_per_second": len(jpegs) / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=401_059)
    parser.add_argument("--images", help="a folder of JPEGs to pack into an HDF5 archive and read back")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "train-metadata.csv"
    synthetic_metadata(table_path, args.rows)
    table, read_seconds, read_peak = timed(lambda: load_dataset("isic2024", metadata=table_path,
                                                                require_images=False))
    _, split_seconds, split_peak = timed(lambda: split_table(table.frame, seed=0))
    report = {"rows": args.rows, "csv_mib": table_path.stat().st_size / 2**20,
              "table_mib": table.frame.memory_usage(deep=True).sum() / 2**20,
              "read_seconds": read_seconds, "read_peak_mib": read_peak,
              "split_seconds": split_seconds, "split_peak_mib": split_peak,
              "process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.images:
        report |= images_per_second(Path(args.images), out)
    (out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
