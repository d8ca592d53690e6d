"""ISIC 2019 as people download it: one-hot ground truth, lesion ids in a separate metadata table."""

import warnings

import numpy as np
import pandas as pd
import pytest

from siamese.data import load_dataset
from siamese.data.readers import ISIC2019_CLASSES
from siamese.data.splits import split_table
from siamese.data.table import DataError
from siamese.inference.submission import Submission
from tests.conftest import random_jpegs

HAM_TO_2019 = {"akiec": "ak", "bcc": "bcc", "bkl": "bkl", "df": "df", "mel": "mel", "nv": "nv", "vasc": "vasc"}
OTHERS = pd.DataFrame({  # images of ISIC 2019's other sources: SCC, and images without a lesion id
    "image": ["ISIC_0060001", "ISIC_0060002", "ISIC_0060003", "ISIC_0060004", "ISIC_0060005", "ISIC_0060006"],
    "label": ["scc", "scc", "scc", "mel", "nv", "bcc"],
    "lesion_id": ["BCN_0000001", "BCN_0000001", None, None, None, "BCN_0000002"]})


def write_isic2019(root, ham: pd.DataFrame, metadata: bool = True):
    """The download's layout: ground truth and metadata tables beside ISIC_2019_Training_Input/."""
    rows = pd.concat([pd.DataFrame({"image": ham["image_id"], "label": ham["dx"].map(HAM_TO_2019),
                                    "lesion_id": ham["lesion_id"]}), OTHERS], ignore_index=True)
    truth = pd.DataFrame({"image": rows["image"]})
    for code in ISIC2019_CLASSES:
        truth[code.upper()] = (rows["label"] == code).astype(float)  # the official file writes 1.0 / 0.0
    root.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    if metadata:
        pd.DataFrame({"image": rows["image"], "age_approx": 55.0, "anatom_site_general": "anterior torso",
                      "lesion_id": rows["lesion_id"], "sex": "female"}).to_csv(
            root / "ISIC_2019_Training_Metadata.csv", index=False)
    return rows


def read(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_dataset("isic2019", *args, **kwargs)
    return table, [str(w.message) for w in caught]


def test_full_ham_table_plus_other_sources(shared_ham, tmp_path):
    ham = pd.read_csv(shared_ham / "HAM10000_metadata.csv")
    rows = write_isic2019(tmp_path, ham)
    table, said = read(metadata=tmp_path / "ISIC_2019_Training_GroundTruth.csv", require_images=False)
    frame = table.frame
    assert len(frame) == 10_015 + 6
    assert frame["label"].value_counts().to_dict() == (rows["label"].value_counts()).to_dict()
    assert frame["label"].value_counts()["ak"] == 327 and frame["label"].value_counts()["scc"] == 3
    assert frame["group"].nunique() == 7_470 + 2 + 3  # two BCN lesions, three images without a lesion id
    assert said == [f"{tmp_path / 'ISIC_2019_Training_Metadata.csv'}: 3 of 10021 images have no lesion_id (ISIC "
                    f"2019 groups only some of its sources' images by lesion); each of them is its own group"]
    ham_rows = frame["image_id"].isin(ham["image_id"])
    assert (frame.loc[ham_rows, "group"].to_numpy() == ham.set_index("image_id").loc[
        frame.loc[ham_rows, "image_id"], "lesion_id"].to_numpy()).all()


def test_images_binary_view_and_metadata_one_folder_up(shared_ham, tmp_path):
    ham = pd.read_csv(shared_ham / "images" / "HAM10000_metadata.csv")
    root = tmp_path / "isic2019"
    write_isic2019(root / "ISIC_2019_Training_GroundTruth", ham)  # as the official zip unpacks the table
    (root / "ISIC_2019_Training_GroundTruth" / "ISIC_2019_Training_Metadata.csv").rename(
        root / "ISIC_2019_Training_Metadata.csv")
    images = root / "ISIC_2019_Training_Input"
    images.mkdir()
    for path in (shared_ham / "images").rglob("ISIC_*.jpg"):
        (images / path.name).symlink_to(path)
    for path, name in zip(random_jpegs(tmp_path / "others", 6), OTHERS["image"], strict=True):
        path.rename(images / f"{name}.jpg")
    (images / "LICENSE.txt").write_text("CC BY-NC")
    truth = root / "ISIC_2019_Training_GroundTruth" / "ISIC_2019_Training_GroundTruth.csv"
    table, said = read(root, truth)
    assert len(table.frame) == 56 + 6 and table.frame["path"].str.endswith(".jpg").all()
    assert any("1 file(s) not used" in line and "LICENSE.txt" in line for line in said)
    manifest = split_table(table.frame, seed=0)
    assert manifest.groupby("group")["split"].nunique().max() == 1  # no lesion straddles the splits
    binary, _ = read(root, truth, binary=True)
    malignant = binary.frame.loc[binary.frame["label"] == "malignant", "dx"]
    assert set(malignant) == {"mel", "bcc", "ak", "scc"} and set(binary.frame["dx"]) - set(malignant) == {
        "nv", "bkl", "vasc"}


def test_without_metadata_every_image_is_its_own_group_and_it_is_said(tmp_path, shared_ham):
    write_isic2019(tmp_path, pd.read_csv(shared_ham / "images" / "HAM10000_metadata.csv"), metadata=False)
    table, said = read(metadata=tmp_path / "ISIC_2019_Training_GroundTruth.csv", require_images=False)
    assert table.frame["group"].nunique() == len(table.frame)
    assert any("every image becomes its own group" in line for line in said)


def test_an_isic2019_table_read_as_ham10000_or_malformed_is_named(tmp_path, shared_ham):
    write_isic2019(tmp_path, pd.read_csv(shared_ham / "images" / "HAM10000_metadata.csv"))
    truth = tmp_path / "ISIC_2019_Training_GroundTruth.csv"
    with pytest.raises(DataError, match="an ISIC 2019 ground truth .* read it with --dataset isic2019"):
        load_dataset("ham10000", metadata=truth, require_images=False)
    frame = pd.read_csv(truth)
    frame.loc[3, "SCC"] = 1.0
    frame.to_csv(truth, index=False)
    with pytest.raises(DataError, match=f"rows without exactly one class set: {frame.loc[3, 'image']}"):
        load_dataset("isic2019", metadata=truth, require_images=False)
    frame.drop(columns="UNK").to_csv(truth, index=False)
    with pytest.raises(DataError, match="UNK"):
        load_dataset("isic2019", metadata=truth, require_images=False)


def test_an_isic2019_run_writes_the_isic2019_submission_by_class_name():
    classes = ["nv", "scc", "mel", "ak", "vasc", "bcc", "df", "bkl"]  # a run's order, not the format's
    proba = np.eye(8)[[0, 1, 2]]
    table = Submission("isic2019", classes, "isic2019").table(["a", "b", "c"], proba)
    assert list(table.columns) == ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    assert table.loc[0, "NV"] == table.loc[1, "SCC"] == table.loc[2, "MEL"] == 1.0
    assert table["UNK"].eq(0).all()
