"""Readers for the datasets as they are distributed, each returning a :class:`DatasetTable`.

The group column is what must never straddle splits: HAM10000's ``lesion_id`` (several images of one
lesion), ISIC 2020's ``patient_id``. Readers fail loudly on missing files or columns instead of
dropping rows, because a silently shrunken test set is the kind of error nobody notices.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from siamese.data.decode import load_image
from siamese.data.files import find_entries, image_suffixes, index_images, read_csv, strip_suffix, the_image
from siamese.data.formats import warn_unused
from siamese.data.hdf5 import member, member_keys
from siamese.data.table import DataError, DatasetTable, first_offenders, require_columns, require_values

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM_MALIGNANT = frozenset({"mel", "bcc", "akiec"})

HAM_IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images", ".")
ISIC2018_IMAGE_DIRS = ("ISIC2018_Task3_Training_Input", "images", ".")
ISIC2020_IMAGE_DIRS = ("train", "jpeg/train", "ISIC_2020_Training_JPEG", "ISIC_2020_Training_JPEG/train",
                       "images", ".")


MISSING_IMAGES = "listed but image file absent (--only-present)"


def attach_paths(frame: pd.DataFrame, data_dir: str | Path, subdirs: Iterable[str], source: str,
                 only_present: bool = False) -> tuple[pd.DataFrame, int]:
    """Paths for the listed images, and how many were absent.

    Absent images are an error unless ``only_present`` says the user holds part of the download on
    purpose (HAM10000's ``part_1`` alone, say); then they are dropped and counted, never silently. Files
    in the image folders that no row uses (``source`` itself aside) are counted in a warning naming the
    first few.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    index, searched, files = index_images(root, subdirs)
    paths = frame["image_id"].map(index)
    missing = frame.loc[paths.isna(), "image_id"]
    if len(missing) == len(frame) or (len(missing) and not only_present):
        # --only-present helps only where some listed images are there to use
        hint = "; pass --only-present to use the images that are there" if len(missing) < len(frame) else ""
        raise DataError(
            f"{source}: {len(missing)} of {len(frame)} images listed there are missing under {root}: "
            f"{first_offenders(missing)} (looked in {', '.join(searched)}){hint}"
        )
    present = paths.notna()
    used = set(paths[present])
    unused = [path for path in files
              if path not in used and (path.parent != root or path.suffix.lower() in image_suffixes())]
    warn_unused(root, [str(path.relative_to(root)) for path in unused], f"not listed in {Path(source).name}")
    return frame[present].assign(path=paths[present].map(str)), len(missing)


def check_labels(labels: pd.Series, allowed: Iterable[str], source: str) -> None:
    unknown = sorted(set(labels.dropna()) - set(allowed))
    if unknown:
        raise DataError(f"{source}: unknown label(s) {first_offenders(unknown)}; expected {sorted(allowed)}")
    if labels.isna().any():
        raise DataError(f"{source}: {int(labels.isna().sum())} rows have no label")


def _finish(frame: pd.DataFrame, name: str, data_dir: str | Path | None, subdirs: Iterable[str],
            source: str, only_present: bool = False) -> DatasetTable:
    frame = frame.assign(dataset=name)
    missing = 0
    if data_dir is None:
        frame = frame.assign(path="")
    else:
        frame, missing = attach_paths(frame, data_dir, subdirs, source, only_present)
    return _table(frame, {MISSING_IMAGES: missing} if missing else {})


def _table(frame: pd.DataFrame, excluded: dict[str, int] | None = None) -> DatasetTable:
    columns = ["image_id", "label", "group", "dataset", "path"]
    extra = [c for c in frame.columns if c not in columns]
    return DatasetTable(frame[columns + extra].reset_index(drop=True), excluded=dict(excluded or {}))


def _locate(data_dir: str | Path | None, metadata: str | Path | None, names: Iterable[str],
            dataset: str) -> Path:
    if metadata is not None:
        return Path(metadata)
    if data_dir is None:
        raise DataError(f"{dataset}: give --data-dir (images and metadata) or --metadata (table only)")
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: folder not found")
    for name in names:
        found = find_entries(Path(data_dir), name, folders=False)
        if found:
            return found[0]
    raise DataError(f"{dataset}: none of {list(names)} found in {data_dir}")


HAM_TABLES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata",
              "ISIC2018_Task3_Training_GroundTruth.csv", "GroundTruth.csv")
"""HAM10000's metadata as the ISIC archive (``.csv``) and Dataverse (``.tab``, tab-separated) serve it, or the
ISIC 2018 Task 3 one-hot ground truth."""
GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
NO_LESION_IDS = ("{table}: no lesion ids ({groupings} is not beside it or one folder up), so every image becomes "
                 "its own group and images of one lesion may straddle the splits")


def read_ham10000(data_dir: str | Path | None = None, metadata: str | Path | None = None,
                  require_images: bool = True, only_present: bool = False) -> DatasetTable:
    """HAM10000 as distributed (metadata CSV + image folders) or the ISIC 2018 Task 3 one-hot layout.

    With ``require_images=False`` only the table is read, so a split can be planned before download;
    with ``only_present`` the images of a partial download are used and the absent ones counted.
    """
    table_path = _locate(data_dir, metadata, HAM_TABLES, "ham10000")
    head = read_csv(table_path)
    if "dx" in head.columns:
        require_columns(head, ("lesion_id", "image_id", "dx"), str(table_path))
        require_values(head, ("lesion_id", "image_id"), str(table_path))
        frame = head.rename(columns={"dx": "label"}).assign(group=head["lesion_id"])
        subdirs = HAM_IMAGE_DIRS
    elif {"AK", "SCC", "UNK"} <= set(head.columns):
        raise DataError(f"{table_path}: an ISIC 2019 ground truth (AK, SCC, UNK columns), not HAM10000's; "
                        f"read it with --dataset isic2019")
    elif "image" in head.columns:
        frame = _ham_from_one_hot(head, table_path)
        subdirs = ISIC2018_IMAGE_DIRS
    else:
        raise DataError(f"{table_path}: neither HAM10000 metadata (lesion_id, image_id, dx, ...) nor an ISIC 2018 "
                        f"Task 3 ground truth (image, MEL, NV, ...); its columns are {list(head.columns)}")
    frame["image_id"] = frame["image_id"].map(strip_suffix)
    check_labels(frame["label"], HAM_CLASSES, str(table_path))
    images = data_dir if require_images else None
    return _finish(frame, "ham10000", images, subdirs, str(table_path), only_present)


def _ham_from_one_hot(frame: pd.DataFrame, table_path: Path) -> pd.DataFrame:
    one_hot = [c.upper() for c in HAM_CLASSES]
    require_columns(frame, ("image", *one_hot), str(table_path))
    values = frame[one_hot].to_numpy()
    bad = frame.loc[values.sum(axis=1) != 1, "image"]
    if len(bad):
        raise DataError(f"{table_path}: rows without exactly one class set: {first_offenders(bad)}")
    labels = np.array(HAM_CLASSES)[values.argmax(axis=1)]
    out = pd.DataFrame({"image_id": frame["image"], "label": labels})
    groupings = _groupings(table_path)
    if groupings is not None:
        lesions = read_csv(groupings, ("image", "lesion_id")).set_index("image")["lesion_id"]
        out["group"] = out["image_id"].map(lesions)
        orphans = out.loc[out["group"].isna(), "image_id"]
        if len(orphans):
            raise DataError(f"{groupings}: no lesion_id for {first_offenders(orphans)}")
    else:
        warnings.warn(NO_LESION_IDS.format(table=table_path, groupings=GROUPINGS), stacklevel=3)
        out["group"] = out["image_id"]
    return out


def _groupings(table_path: Path) -> Path | None:
    """The lesion groupings of an ISIC 2018 ground truth: beside it, or one folder up, where the official
    download unpacks them (the ground truth in its own ``ISIC2018_Task3_Training_GroundTruth/`` folder)."""
    for folder in (table_path.parent, table_path.parent.parent):
        found = find_entries(folder, GROUPINGS, folders=False)
        if found:
            return found[0]
    return None


def read_isic2020(data_dir: str | Path | None = None, metadata: str | Path | None = None,
                  require_images: bool = True, only_present: bool = False) -> DatasetTable:
    """ISIC 2020 (Kaggle ``train.csv`` or the official ground-truth CSV); group = ``patient_id``."""
    table_path = _locate(data_dir, metadata, ("train.csv", "ISIC_2020_Training_GroundTruth.csv",
                                              "ISIC_2020_Training_GroundTruth_v2.csv"), "isic2020")
    frame = read_csv(table_path, ("image_name", "patient_id"))
    if "target" in frame.columns:
        bad = frame.loc[~frame["target"].isin([0, 1]), "image_name"]
        if len(bad):
            raise DataError(f"{table_path}: target must be 0 or 1; offenders: {first_offenders(bad)}")
        labels = frame["target"].map({0: "benign", 1: "malignant"})
    elif "benign_malignant" in frame.columns:
        labels = frame["benign_malignant"]
    else:
        raise DataError(f"{table_path}: needs a 'target' or 'benign_malignant' column; found {list(frame.columns)}")
    check_labels(labels, ("benign", "malignant"), str(table_path))
    missing_patient = frame.loc[frame["patient_id"].isna(), "image_name"]
    if len(missing_patient):
        raise DataError(f"{table_path}: rows without patient_id: {first_offenders(missing_patient)}")
    out = frame.drop(columns=[c for c in ("target", "benign_malignant") if c in frame.columns]).rename(
        columns={"image_name": "image_id"}
    )
    out = out.assign(image_id=out["image_id"].map(strip_suffix), label=labels.to_numpy(),
                     group=frame["patient_id"].to_numpy())
    images = data_dir if require_images else None
    return _finish(out, "isic2020", images, ISIC2020_IMAGE_DIRS, str(table_path), only_present)


ISIC2019_CLASSES = ("mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc", "unk")
"""The ground truth's one-hot columns (``MEL`` ... ``UNK``), lower-cased as HAM10000's codes are; the training
set has no ``UNK`` image, so a run trained on it has the first eight."""
ISIC2019_MALIGNANT = frozenset({"mel", "bcc", "ak", "scc"})
ISIC2019_TABLES = ("ISIC_2019_Training_GroundTruth.csv",)
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGE_DIRS = ("ISIC_2019_Training_Input", "ISIC_2019_Training_Input/ISIC_2019_Training_Input", "images",
                       ".")
NO_ISIC2019_LESION = ("{metadata}: {count} of {total} images have no lesion_id (ISIC 2019 groups only some of its "
                      "sources' images by lesion); each of them is its own group")


def read_isic2019(data_dir: str | Path | None = None, metadata: str | Path | None = None,
                  require_images: bool = True, only_present: bool = False) -> DatasetTable:
    """ISIC 2019 as distributed: ``ISIC_2019_Training_GroundTruth.csv`` (one-hot ``MEL, NV, BCC, AK, BKL, DF,
    VASC, SCC, UNK``) and images in ``ISIC_2019_Training_Input/``; ``metadata`` names the ground truth.

    Groups are the ``lesion_id`` of ``ISIC_2019_Training_Metadata.csv`` (beside the ground truth or one folder
    up). An image without one (blank there, or not listed) is its own group, and how many are is said in a
    warning; without the metadata file every image is its own group, with a warning that lesions may leak.

    Raises :class:`DataError` naming the file for a missing column or a row without exactly one class.
    """
    table_path = _locate(data_dir, metadata, ISIC2019_TABLES, "isic2019")
    columns = [c.upper() for c in ISIC2019_CLASSES]
    frame = read_csv(table_path, ("image", *columns))
    values = frame[columns].to_numpy()
    bad = frame.loc[values.sum(axis=1) != 1, "image"]
    if len(bad):
        raise DataError(f"{table_path}: rows without exactly one class set: {first_offenders(bad)}")
    out = pd.DataFrame({"image_id": frame["image"].astype(str).map(strip_suffix),
                        "label": np.array(ISIC2019_CLASSES)[values.argmax(axis=1)]})
    lesions = _isic2019_lesions(table_path)
    if lesions is None:
        warnings.warn(NO_LESION_IDS.format(table=table_path, groupings=ISIC2019_METADATA), stacklevel=2)
        out["group"] = out["image_id"]
    else:
        metadata_path, lesion_ids = lesions
        group = out["image_id"].map(lesion_ids)
        alone = group.isna()
        if alone.any():
            warnings.warn(NO_ISIC2019_LESION.format(metadata=metadata_path, count=int(alone.sum()), total=len(out)),
                          stacklevel=2)
        out["group"] = group.where(~alone, out["image_id"])
    images = data_dir if require_images else None
    return _finish(out, "isic2019", images, ISIC2019_IMAGE_DIRS, str(table_path), only_present)


def _isic2019_lesions(table_path: Path) -> tuple[Path, pd.Series] | None:
    """The metadata file beside the ground truth (or one folder up) and its image -> lesion_id map, blanks
    dropped; None when there is no such file."""
    for folder in (table_path.parent, table_path.parent.parent):
        found = find_entries(folder, ISIC2019_METADATA, folders=False)
        if found:
            table = read_csv(found[0], ("image",))
            require_columns(table, ("lesion_id",), str(found[0]))
            ids = table.assign(image=table["image"].astype(str).map(strip_suffix)).dropna(subset=["lesion_id"])
            return found[0], ids.set_index("image")["lesion_id"].astype(str)
    return None


ISIC2024_TABLES = ("train-metadata.csv",)
ISIC2024_IMAGES = "train-image.hdf5"
ISIC2024_COLUMNS = ("isic_id", "patient_id", "target")


def read_isic2024(data_dir: str | Path | None = None, metadata: str | Path | None = None,
                  require_images: bool = True, only_present: bool = False) -> DatasetTable:
    """ISIC 2024 (SLICE-3D) as Kaggle serves it: ``train-metadata.csv`` (``isic_id``, ``patient_id``,
    ``target`` and many lesion measurements, kept as columns) and ``train-image.hdf5``, one JPEG's bytes per
    ``isic_id``, read image by image from the archive (never unpacked, never all in memory). Group =
    ``patient_id``; labels benign/malignant from ``target``.

    Raises :class:`DataError` naming the file for a missing column, a target other than 0/1, a row without a
    patient, or images listed but absent from the archive (unless ``only_present``).
    """
    table_path = _locate(data_dir, metadata, ISIC2024_TABLES, "isic2024")
    frame = read_csv(table_path, ISIC2024_COLUMNS)
    bad = frame.loc[~frame["target"].isin([0, 1]), "isic_id"]
    if len(bad):
        raise DataError(f"{table_path}: target must be 0 or 1; offenders: {first_offenders(bad)}")
    out = frame.drop(columns="target").rename(columns={"isic_id": "image_id"})
    out = out.assign(image_id=out["image_id"].astype(str), label=np.where(frame["target"] == 1, "malignant", "benign"),
                     group=frame["patient_id"].astype(str), dataset="isic2024")
    missing = 0
    if data_dir is None or not require_images:
        out = out.assign(path="")
    else:
        out, missing = _attach_members(out, Path(data_dir), table_path, only_present)
    return _table(out, {MISSING_IMAGES: missing} if missing else {})


def _attach_members(frame: pd.DataFrame, root: Path, table_path: Path, only_present: bool
                    ) -> tuple[pd.DataFrame, int]:
    """``path`` = the image's name inside ``train-image.hdf5`` (:func:`siamese.data.hdf5.member`)."""
    archive = next(iter(find_entries(root, ISIC2024_IMAGES, folders=False)), None)
    if archive is None:
        raise DataError(f"{root}: no {ISIC2024_IMAGES} (the images of ISIC 2024, one JPEG per isic_id)")
    try:
        stored = member_keys(archive)
    except OSError as exc:
        raise DataError(f"{archive}: not a readable HDF5 file ({exc})") from exc
    present = frame["image_id"].isin(stored)
    missing = frame.loc[~present, "image_id"]
    if len(missing) == len(frame) or (len(missing) and not only_present):
        hint = "; pass --only-present to use the images that are there" if len(missing) < len(frame) else ""
        raise DataError(f"{table_path}: {len(missing)} of {len(frame)} images listed there are not in "
                        f"{archive}: {first_offenders(missing)}{hint}")
    unused = len(stored) - int(present.sum())
    if unused:
        warnings.warn(f"{archive}: {unused} stored image(s) not listed in {table_path.name}", stacklevel=3)
    frame = frame[present]
    return frame.assign(path=[member(archive, key) for key in frame["image_id"]]), len(missing)


PH2_DIAGNOSES = {"Common Nevus": "common_nevus", "Atypical Nevus": "atypical_nevus", "Melanoma": "melanoma"}
PH2_CLASSES = tuple(PH2_DIAGNOSES.values())
PH2_MALIGNANT = frozenset({"melanoma"})
PH2_WORKBOOK = "PH2_dataset.xlsx"
PH2_IMAGES = "PH2 Dataset images"


def read_ph2(data_dir: str | Path | None, require_images: bool = True) -> DatasetTable:
    """PH2 as distributed: the workbook's "X" columns give the diagnosis, one folder per case.

    ``data_dir`` may name ``PH2Dataset/`` or its parent. The image may have any image extension (the
    original download is BMP); the lesion mask's path is kept in ``mask`` for segmentation and
    lesion-centred crops. PH2 has one image per lesion and no patient ids, so each image is its own
    group. Every image is decoded once here (a few seconds for 200 cases) so a corrupt file is
    named before training rather than failing mid-epoch.
    """
    if data_dir is None:
        raise DataError("ph2: give --data-dir (the PH2Dataset folder or its parent)")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (--data-dir should be the PH2Dataset folder or its parent)")
    root = next(iter(find_entries(root, "PH2Dataset")), root)
    workbook = next(iter(find_entries(root, PH2_WORKBOOK, folders=False)), root / PH2_WORKBOOK)
    if not workbook.is_file():
        raise DataError(f"{workbook}: PH2 workbook not found (is --data-dir the PH2Dataset folder or its parent?)")
    frame = _ph2_cases(workbook)
    if not require_images:
        return _table(frame.assign(dataset="ph2", path="", mask=""))
    folders = next(iter(find_entries(root, PH2_IMAGES)), root / PH2_IMAGES)
    images, masks = [], []
    for case in frame["image_id"]:
        image = _case_file(folders, f"{case}/{case}_Dermoscopic_Image", case)
        if image is None:
            raise DataError(f"{workbook}: case {case} is listed but has no image in "
                            f"{folders / case / f'{case}_Dermoscopic_Image'}")
        load_image(image, 32)
        images.append(str(image))
        mask = _case_file(folders, f"{case}/{case}_lesion", f"{case}_lesion")
        masks.append("" if mask is None else str(mask))
    return _table(frame.assign(dataset="ph2", path=images, mask=masks))


def _ph2_cases(workbook: Path) -> pd.DataFrame:
    try:
        raw = pd.read_excel(workbook, header=None, dtype=str, engine="openpyxl")
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{workbook}: not a readable .xlsx workbook ({exc})") from exc
    cells = raw.apply(lambda column: column.str.strip())
    header_rows = np.flatnonzero((cells == "Image Name").any(axis=1).to_numpy())
    if not len(header_rows):
        raise DataError(f"{workbook}: no header row with 'Image Name' (the PH2 legend is followed by one)")
    header = cells.iloc[header_rows[0]].fillna("").tolist()
    table = cells.iloc[header_rows[0] + 1:].set_axis(header, axis=1)
    require_columns(table, ("Image Name", *PH2_DIAGNOSES), str(workbook))
    table = table[table["Image Name"].notna() & (table["Image Name"] != "")]
    marks = table[list(PH2_DIAGNOSES)].fillna("").apply(lambda column: column.str.upper() == "X")
    counts = marks.sum(axis=1)
    for count, problem in ((0, "no 'X' in"), (2, "more than one 'X' among")):
        bad = table.loc[(counts == 0) if count == 0 else (counts > 1), "Image Name"]
        if len(bad):
            raise DataError(f"{workbook}: case(s) with {problem} {list(PH2_DIAGNOSES)}: {first_offenders(bad)}")
    labels = marks.idxmax(axis=1).map(PH2_DIAGNOSES)
    ids = table["Image Name"].astype(str)
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise DataError(f"{workbook}: case(s) listed twice: {first_offenders(repeated.unique())}")
    histology = table.get("Histological Diagnosis", pd.Series("", index=table.index)).fillna("")
    return pd.DataFrame({"image_id": ids.to_numpy(), "label": labels.to_numpy(), "group": ids.to_numpy(),
                         "histology": histology.to_numpy()})


def _case_file(root: Path, folder: str, stem: str) -> Path | None:
    """``root/folder/stem.*`` (any extension, or none), names matched ignoring case; of several, the image."""
    for base in find_entries(root, folder):
        with os.scandir(base) as entries:
            files = [base / entry.name for entry in entries
                     if entry.is_file() and os.path.splitext(entry.name)[0].lower() == stem.lower()]
        if files:
            return the_image(files)
    return None


DERMAMNIST_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def read_npz(path: str | Path, class_names: Iterable[str] | None = DERMAMNIST_CLASSES,
             name: str = "dermamnist") -> DatasetTable:
    """A MedMNIST-style ``.npz`` with ``{train,val,test}_{images,labels}``; its split is kept.

    Each image is its own group: the format carries no lesion ids, which is exactly why the published
    DermaMNIST split leaks; pair it with a duplicate list to repair that.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:  # every member read here: an .npz decompresses each one only when asked for it
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from exc
    images, labels, splits = [], [], []
    for split in ("train", "val", "test"):
        if f"{split}_images" not in arrays:
            continue
        if f"{split}_labels" not in arrays:
            raise DataError(f"{path}: has {split}_images but no {split}_labels")
        x = arrays[f"{split}_images"]
        y = arrays[f"{split}_labels"].reshape(-1)
        if len(x) != len(y):
            raise DataError(f"{path}: {split} has {len(x)} images but {len(y)} labels")
        images.append(x)
        labels.append(y)
        splits += [split] * len(x)
    if not images:
        raise DataError(f"{path}: no '<split>_images' arrays; found {list(arrays.keys())}")
    pixels = np.concatenate(images)
    if pixels.ndim == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    codes = np.concatenate(labels).astype(int)
    names = list(class_names) if class_names is not None else [str(i) for i in range(codes.max() + 1)]
    if codes.min() < 0 or codes.max() >= len(names):
        raise DataError(f"{path}: label codes {sorted(set(codes) - set(range(len(names))))} outside {names}")
    ids = [f"{name}_{i:06d}" for i in range(len(codes))]
    frame = pd.DataFrame({"image_id": ids, "label": np.array(names)[codes], "group": ids, "dataset": name,
                          "index": np.arange(len(codes)), "split": splits})
    return DatasetTable(frame, pixels.astype(np.uint8))


def read_image_csv(path: str | Path, name: str = "csv") -> DatasetTable:
    """A generic ``path,label[,group]`` CSV; relative paths are read from the CSV's folder."""
    path = Path(path)
    frame = read_csv(path, ("path", "label"))
    root = path.parent
    full = frame["path"].map(lambda p: str(p if Path(p).is_absolute() else (root / p)))
    missing = frame.loc[~full.map(os.path.isfile), "path"]
    if len(missing):
        raise DataError(f"{path}: {len(missing)} image file(s) missing: {first_offenders(missing)}")
    require_values(frame, [c for c in ("image_id", "group") if c in frame.columns], str(path))
    ids = (frame["image_id"] if "image_id" in frame.columns else frame["path"].map(lambda p: Path(p).stem)).astype(str)
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        lines = (np.flatnonzero(repeated) + 2).tolist()
        raise DataError(f"{path}: image id(s) {first_offenders(sorted(set(ids[repeated])))} listed more "
                        f"than once (line(s) {first_offenders(lines)}); each image may appear once")
    groups = frame["group"] if "group" in frame.columns else ids
    out = pd.DataFrame({"image_id": ids, "label": frame["label"].astype(str),
                        "group": groups.astype(str), "dataset": name, "path": full})
    return DatasetTable(out)


def to_binary(table: DatasetTable, malignant: Iterable[str] = HAM_MALIGNANT,
              names: tuple[str, str] = ("benign", "malignant")) -> DatasetTable:
    """Two-class view (HAM: mel, bcc, akiec are malignant; PH2: melanoma vs nevus, ``names``), keeping the
    original label as ``dx``."""
    malignant = set(malignant)
    frame = table.frame.assign(
        dx=table.frame["label"],
        label=np.where(table.frame["label"].isin(malignant), names[1], names[0]),
    )
    return DatasetTable(frame, table.images, dict(table.excluded))
