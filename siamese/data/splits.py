"""Leakage-free train/val/test splits and k-fold assignments.

Rows that share a group (lesion, patient) or are joined, even transitively, by a near-duplicate pair
form one connected component; components are assigned to splits whole, stratified by label with
scikit-learn's ``StratifiedGroupKFold``. The manifest CSV (``image_id,label,group,split``) is the only
thing training reads, and the same seed writes the same bytes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from siamese.data.decode import decode
from siamese.data.duplicates import known_pairs
from siamese.data.files import read_csv
from siamese.data.table import DataError, DatasetTable, first_offenders

MANIFEST_COLUMNS = ("image_id", "label", "group", "split")
SPLITS = ("train", "val", "test")


def linked_components(frame: pd.DataFrame, pairs: pd.DataFrame | None = None) -> np.ndarray:
    """Component id per row: rows sharing a group or linked by a duplicate pair get the same id."""
    n = len(frame)
    position = pd.Series(np.arange(n), index=frame["image_id"].to_numpy())
    group_first = frame.groupby("group", sort=False).cumcount() == 0
    first_of_group = pd.Series(np.arange(n)[group_first.to_numpy()],
                               index=frame["group"][group_first].to_numpy())
    rows = [np.arange(n)]
    cols = [first_of_group.loc[frame["group"].to_numpy()].to_numpy()]
    if pairs is not None and len(pairs):
        inside, _ = known_pairs(pairs, frame["image_id"])
        rows.append(position.loc[inside["from_img"]].to_numpy())
        cols.append(position.loc[inside["to_img"]].to_numpy())
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def grouped_parts(val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many stratified folds a grouped split draws its test split from, and its validation split from what
    the test split leaves: ``(test folds, val folds)``; 0 test folds for no test split. Each split is one fold,
    so each fraction must be close to 1/n. Raises ValueError naming the fraction (with its flags) that is not."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be at least 0 (0: no test split) and below 1; got {test_fraction}")
    test_folds = _folds_for(test_fraction, "the test fraction (--test-fraction, split --test)") if test_fraction else 0
    val_of_rest = val_fraction / (1 - test_fraction)
    name = "the val fraction (--val-fraction, split --val)"
    if test_fraction:
        name += f" over what the test split leaves ({val_fraction} / (1 - {test_fraction}))"
    return test_folds, _folds_for(val_of_rest, name)


def _folds_for(fraction: float, name: str) -> int:
    folds = int(round(1 / fraction)) if fraction > 0 else 0
    if folds < 2 or abs(1 / folds - fraction) > 0.011:
        raise ValueError(f"{name} must be close to 1/n for an integer n >= 2 (e.g. 0.2, 0.1), since a grouped "
                         f"split holds out one of n stratified folds; got {fraction:.3g}")
    return folds


def _held_out_folds(labels: np.ndarray, components: np.ndarray, folds: int, seed: int, what: str
                    ) -> list[np.ndarray]:
    """The held-out rows of each of ``folds`` stratified folds that keep every component in one fold; warns,
    in lesions (the unit that is split), about classes too scarce to be in every fold. Raises sklearn's
    ValueError when there are too few components."""
    groups = pd.DataFrame({"label": labels, "group": components}).groupby("label")["group"].nunique()
    scarce = groups[groups < folds]
    if len(scarce):
        listed = ", ".join(f"{label} ({n})" for label, n in scarce.items())
        warnings.warn(f"{what} {folds} stratified folds, and some classes have fewer lesions (groups of linked "
                      f"images) than that: {listed}; they cannot be in every fold", stacklevel=4)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # said above in lesions; sklearn counts images
        warnings.filterwarnings("ignore", message="The least populated class in y")
        return [held_out for _, held_out in splitter.split(np.zeros(len(labels)), labels, components)]


def _one_fold(labels: np.ndarray, components: np.ndarray, folds: int, seed: int, part: str) -> np.ndarray:
    try:
        held_out = _held_out_folds(labels, components, folds, seed, f"the {part} split is one of")[0]
    except ValueError as exc:
        counts = {str(label): int(n) for label, n in zip(*np.unique(labels, return_counts=True), strict=True)}
        raise DataError(f"too few images for a grouped split into {folds} parts (images per class: {counts}): "
                        f"{exc}") from exc
    mask = np.zeros(len(labels), dtype=bool)
    mask[held_out] = True
    return mask


def split_table(frame: pd.DataFrame, pairs: pd.DataFrame | None = None, val_fraction: float = 0.1,
                test_fraction: float = 0.2, seed: int = 0, strategy: str = "grouped") -> pd.DataFrame:
    """A train/val/test manifest, or a train/val one when ``test_fraction`` is 0 (a final model: every image
    trains except the validation slice that picks the best epoch).

    ``grouped`` (the default) keeps components whole: first ``test_fraction`` of the data is held out,
    then ``val_fraction`` of the whole is taken from the rest (the original 80/20 then 70/10).
    ``random`` is the naive image-level stratified split, kept only to show what leakage looks like.

    Args:
        frame: a dataset table's frame (``image_id``, ``label``, ``group``).
        pairs: near-duplicate pairs (``image_id_1``, ``image_id_2``), kept in one split with their groups.
        val_fraction: the validation share of the whole.
        test_fraction: the test share; 0 for no test split.
        seed: the draw of the folds.
        strategy: ``grouped`` or ``random``.

    Returns:
        The manifest: ``image_id``, ``label``, ``group`` and ``split`` per image.

    Raises:
        ValueError: a fraction outside [0, 1), one that is not 1/n (grouped), or an unknown strategy.
        DataError: a class has too few components for the split; first the ImageError of an image file in the
            table that cannot be read, when there is one (the likelier thing to fix).
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be at least 0 (0: no test split) and below 1; got {test_fraction}")
    try:
        return _split(frame, pairs, val_fraction, test_fraction, seed, strategy)
    except DataError:
        _refuse_unreadable_images(frame)
        raise


def _refuse_unreadable_images(frame: pd.DataFrame) -> None:
    """Decode every image file of a table whose split failed (too few images) and raise the ImageError of
    the first that cannot be read: an unreadable file, not the count, is then what the user has to fix
    first. Only on this error path, so a normal run decodes each image once, in training. A table read
    without its images (``--metadata`` alone) has empty paths: nothing to decode."""
    if "path" in frame.columns:
        for path in frame["path"]:
            if path:
                decode(path).close()


def _split(frame: pd.DataFrame, pairs: pd.DataFrame | None, val_fraction: float, test_fraction: float,
           seed: int, strategy: str) -> pd.DataFrame:
    labels = frame["label"].to_numpy()
    split = np.full(len(frame), "train", dtype=object)
    test = np.zeros(len(frame), dtype=bool)
    if strategy == "grouped":
        components = linked_components(frame, pairs)
        test_folds, val_folds = grouped_parts(val_fraction, test_fraction)
        if test_folds:
            test = _one_fold(labels, components, test_folds, seed, "test")
        rest = np.flatnonzero(~test)
        val = _one_fold(labels[rest], components[rest], val_folds, seed, "val")
        split[rest[val]] = "val"
    elif strategy == "random":
        rest = np.arange(len(frame))
        if test_fraction > 0:
            rest, held_out = train_test_split(rest, test_size=test_fraction, stratify=labels, random_state=seed)
            test[held_out] = True
        _, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest],
                                  random_state=seed)
        split[val] = "val"
    else:
        raise ValueError(f"unknown split strategy {strategy!r}; use 'grouped' or 'random'")
    split[test] = "test"
    return _manifest(frame, split)


def kfold_table(frame: pd.DataFrame, pairs: pd.DataFrame | None = None, folds: int = 5,
                seed: int = 0) -> pd.DataFrame:
    """A k-fold manifest: ``split`` is ``fold0`` .. ``fold{k-1}``, components never cross folds. Raises
    DataError when there are fewer components than folds (naming an unreadable image first, if any)."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2; got {folds}")
    components = linked_components(frame, pairs)
    split = np.empty(len(frame), dtype=object)
    try:
        for k, held_out in enumerate(_held_out_folds(frame["label"].to_numpy(), components, folds, seed,
                                                     "the manifest has")):
            split[held_out] = f"fold{k}"
    except ValueError as exc:
        _refuse_unreadable_images(frame)
        raise DataError(f"too few images or groups for {folds} folds ({len(frame)} images, "
                        f"{len(np.unique(components))} groups): {exc}") from exc
    return _manifest(frame, split)


def fold_manifest(folds: pd.DataFrame, fold: int, pairs: pd.DataFrame | None = None, val_fraction: float = 0.1,
                  seed: int = 0) -> pd.DataFrame:
    """A train/val/test manifest from a k-fold one: ``fold`` is the test split, and a grouped, stratified
    slice of the other folds (``val_fraction`` of them) is held back for choosing the best epoch."""
    held_out = (folds["split"] == f"fold{fold}").to_numpy()
    if not held_out.any():
        raise ValueError(f"no fold{fold} in the k-fold manifest (it has {sorted(folds['split'].unique())})")
    rest = np.flatnonzero(~held_out)
    others = folds.iloc[rest].reset_index(drop=True)
    val = _one_fold(others["label"].to_numpy(), linked_components(others, pairs),
                    _folds_for(val_fraction, "the val fraction (--val-fraction)"), seed, "val")
    split = np.full(len(folds), "train", dtype=object)
    split[held_out] = "test"
    split[rest[val]] = "val"
    return _manifest(folds, split)


def _manifest(frame: pd.DataFrame, split: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"image_id": frame["image_id"].astype(str).to_numpy(),
                         "label": frame["label"].astype(str).to_numpy(),
                         "group": frame["group"].astype(str).to_numpy(), "split": split.astype(str)})


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    manifest[list(MANIFEST_COLUMNS)].to_csv(path, index=False, lineterminator="\n")


def read_manifest(path: str | Path) -> pd.DataFrame:
    frame = read_csv(path, MANIFEST_COLUMNS)
    for column in MANIFEST_COLUMNS:
        frame[column] = frame[column].astype(str)
    return frame


def summarize(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per split and class, with each split's share of every class, for a person to read."""
    counts = pd.crosstab(manifest["label"], manifest["split"], margins=True, margins_name="all")
    return counts


def apply_manifest(table: DatasetTable, manifest: pd.DataFrame) -> DatasetTable:
    """Attach a manifest's split to a dataset; images it does not list are excluded and counted."""
    indexed = manifest.set_index("image_id")
    absent = indexed.index[~indexed.index.isin(table.frame["image_id"])]
    if len(absent):
        raise DataError(f"split manifest names {len(absent)} images not in the dataset: "
                        f"{first_offenders(absent)}")
    table = table.exclude(~table.frame["image_id"].isin(indexed.index), "not in the split manifest")
    frame = table.frame
    disagree = frame["label"].astype(str).to_numpy() != indexed.loc[frame["image_id"], "label"].to_numpy()
    if disagree.any():
        raise DataError(f"split manifest labels disagree with the dataset for "
                        f"{first_offenders(frame.loc[disagree, 'image_id'])}")
    frame = frame.assign(split=indexed.loc[frame["image_id"], "split"].to_numpy())
    return DatasetTable(frame, table.images, table.excluded)
