"""ISIC 2024 (SLICE-3D) as Kaggle serves it: metadata table + one HDF5 archive of JPEG bytes; its metric."""

import h5py
import numpy as np
import pandas as pd
import pytest

from siamese.data import ImageError, load_dataset, load_image, pixel_source
from siamese.data.hdf5 import member, read_member
from siamese.data.splits import split_table
from siamese.data.table import DataError
from siamese.evaluation.metrics import PARTIAL_AUC, classification_metrics, partial_auc
from siamese.inference.submission import Submission
from siamese.runtime.errors import SubmissionError


def write_isic2024(root, shared_isic2020, patients: int = 12, as_array: bool = False) -> pd.DataFrame:
    """ISIC 2020 images of a few patients in ISIC 2024's layout: ``train-metadata.csv`` and
    ``train-image.hdf5`` holding each JPEG's bytes under its ``isic_id`` (a scalar byte string, as the
    challenge's file; or a uint8 array, as some converters write)."""
    train = pd.read_csv(shared_isic2020 / "train.csv")
    chosen = train[train["patient_id"].isin(train["patient_id"].drop_duplicates().iloc[:patients])]
    rows = pd.DataFrame({"isic_id": chosen["image_name"], "patient_id": chosen["patient_id"],
                         "target": chosen["target"], "age_approx": chosen["age_approx"],
                         "tbp_lv_areaMM2": 3.5, "attribution": "Memorial Sloan Kettering Cancer Center"})
    root.mkdir(parents=True, exist_ok=True)
    rows.to_csv(root / "train-metadata.csv", index=False)
    with h5py.File(root / "train-image.hdf5", "w") as archive:
        for isic_id in rows["isic_id"]:
            data = (shared_isic2020 / "train" / f"{isic_id}.jpg").read_bytes()
            archive[isic_id] = np.frombuffer(data, np.uint8) if as_array else np.bytes_(data)
    return rows


@pytest.mark.parametrize("as_array", [False, True])
def test_images_are_read_from_the_archive_as_from_their_files(tmp_path, shared_isic2020, as_array):
    rows = write_isic2024(tmp_path, shared_isic2020, as_array=as_array)
    table = load_dataset("isic2024", tmp_path)
    frame = table.frame
    assert list(frame["image_id"]) == list(rows["isic_id"]) and "tbp_lv_areaMM2" in frame.columns
    assert set(frame["label"]) <= {"benign", "malignant"}
    assert (frame["label"] == "malignant").sum() == rows["target"].sum()
    assert frame["group"].nunique() == 12 and frame["group"].tolist() == rows["patient_id"].tolist()
    for path, isic_id in zip(frame["path"][:5], frame["image_id"][:5], strict=True):
        assert path == member(tmp_path / "train-image.hdf5", isic_id)
        np.testing.assert_array_equal(load_image(path, 64), load_image(shared_isic2020 / "train" / f"{isic_id}.jpg",
                                                                       64))
    cached = pixel_source(table, 32, cache_dir=tmp_path / "cache")  # the uint8 cache builds from the archive
    np.testing.assert_array_equal(cached[2], load_image(frame["path"][2], 32))
    manifest = split_table(frame, seed=0)
    assert manifest.groupby("group")["split"].nunique().max() == 1  # patients never straddle the splits


def test_a_dataloader_worker_opens_the_archive_itself(tmp_path, shared_isic2020):
    from torch.utils.data import DataLoader

    from siamese.data import ImageDataset, build_transform
    from siamese.data.images import FilePixels

    write_isic2024(tmp_path, shared_isic2020, 2)
    table = load_dataset("isic2024", tmp_path)
    paths = table.frame["path"].tolist()
    load_image(paths[0], 32)  # the parent holds the archive open before the workers fork
    dataset = ImageDataset(FilePixels(paths, 32), [0] * len(paths), build_transform("none"))
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert sum(len(images) for images, _ in batches) == len(paths)


def test_absent_and_unreadable_images_are_named(tmp_path, shared_isic2020):
    rows = write_isic2024(tmp_path, shared_isic2020, 2)
    with h5py.File(tmp_path / "train-image.hdf5", "a") as archive:
        del archive[rows["isic_id"].iloc[0]]
        del archive[rows["isic_id"].iloc[1]]
        archive[rows["isic_id"].iloc[1]] = np.bytes_(b"not a jpeg")
    with pytest.raises(DataError, match=f"1 of {len(rows)} images listed there are not in .*train-image.hdf5: "
                                        f"{rows['isic_id'].iloc[0]}; pass --only-present"):
        load_dataset("isic2024", tmp_path)
    table = load_dataset("isic2024", tmp_path, only_present=True)
    assert len(table.frame) == len(rows) - 1 and sum(table.excluded.values()) == 1
    bad = table.frame["path"].iloc[0]
    with pytest.raises(ImageError, match="unreadable image: not an image"):
        load_image(bad, 32)
    with pytest.raises(ImageError, match="no 'ISIC_none' in"):
        load_image(member(tmp_path / "train-image.hdf5", "ISIC_none"), 32)
    assert read_member(tmp_path / "train-image.hdf5", rows["isic_id"].iloc[1]) == b"not a jpeg"


def test_partial_auc_against_a_hand_computation():
    # ROC (fpr, tpr): (0, .5), (1/3, .5), (1/3, 1), (1, 1); above tpr 0.8 lies a 2/3 x 0.2 rectangle
    positive = np.array([True, True, False, False, False])
    assert partial_auc(positive, np.array([0.9, 0.4, 0.8, 0.3, 0.1])) == pytest.approx(2 / 15)
    assert partial_auc(positive, np.array([0.9, 0.8, 0.4, 0.3, 0.1])) == pytest.approx(0.2)  # perfect
    assert partial_auc(positive, np.array([0.1, 0.2, 0.4, 0.3, 0.9])) == pytest.approx(0.0)  # reversed
    # 5 positives: tpr reaches 0.8 at the 4th; a tie between the 5th positive and the 2nd negative makes
    # the last segment a diagonal from (0.25, 0.8) to (0.5, 1): 0.2 * 0.75 - (0.25 * 0.2) / 2 = 0.125
    positive = np.array([True] * 5 + [False] * 4)
    score = np.array([0.9, 0.85, 0.8, 0.75, 0.5, 0.95, 0.5, 0.3, 0.2])
    assert partial_auc(positive, score) == pytest.approx(0.2 * 0.5 + (0.2 * 0.25) / 2)


def test_the_metric_is_in_a_binary_runs_figures_only():
    y = np.array([0, 0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9], [0.6, 0.4]])
    summary, _ = classification_metrics(y, proba, ["benign", "malignant"])
    assert summary[PARTIAL_AUC] == pytest.approx(partial_auc(y == 1, proba[:, 1]))
    three, _ = classification_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"])
    assert PARTIAL_AUC not in three


def test_isic2024_submission_names_the_malignant_probability():
    proba = np.array([[0.7, 0.3], [0.1, 0.9]])
    table = Submission("isic2024", ["malignant", "benign"], "isic2024").table(["ISIC_1", "ISIC_2"], proba)
    assert list(table.columns) == ["isic_id", "target"] and table["target"].tolist() == [0.7, 0.1]
    with pytest.raises(SubmissionError, match="no 'malignant' class"):
        Submission("isic2024", ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], "ham10000")


def test_predict_reads_every_image_of_an_hdf5_archive(run_dir, tmp_path, shared_isic2020, capsys):
    import io

    from siamese.cli import main
    from siamese.inference.submission import image_id

    rows = write_isic2024(tmp_path, shared_isic2020, 2)
    assert main(["predict", "--run", str(run_dir), str(tmp_path / "train-image.hdf5"), "--format", "csv"]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert [image_id(path) for path in out["image"]] == sorted(rows["isic_id"])


def test_cv_tables_carry_the_partial_auc_of_a_binary_task_only():
    from siamese.workflows.crossval.summary import fold_rows, format_summary, paired_differences, summarize

    rng = np.random.default_rng(0)
    for classes in (["benign", "malignant"], ["a", "b", "c"]):
        rows = []
        for fold in range(3):
            y = np.arange(12) % len(classes)
            proba = {model: rng.dirichlet(np.ones(len(classes)), 12) for model in ("classifier", "colour_baseline")}
            rows += fold_rows(0, fold, y, proba, classes, 1.0)
        folds = pd.DataFrame(rows)
        summary = summarize(folds)
        binary = len(classes) == 2
        assert (PARTIAL_AUC in set(summary["metric"])) == binary
        assert (PARTIAL_AUC in format_summary(summary).columns) == binary
        assert (PARTIAL_AUC in set(paired_differences(folds)["metric"])) == binary
        assert summary["mean"].notna().all()
