"""The real HAM10000 (all 10,015 images, 200 x 150) and ISIC 2020 (2,875 images) copies: readers on the full
tables, grouped splits over every row, and tiny runs on small subsets (skipped without ../shared)."""

import json

import pandas as pd
import pytest

from siamese.cli import main
from siamese.data import audit_manifest, load_dataset, split_table
from siamese.data.duplicates import read_pairs_for


def test_ham10000_reader_finds_all_10015_images_in_the_two_part_layout(shared_ham_small):
    table = load_dataset("ham10000", data_dir=shared_ham_small)
    frame = table.frame
    assert len(frame) == 10015 and frame["group"].nunique() == 7470
    assert frame["label"].value_counts().to_dict() == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514,
                                                       "akiec": 327, "vasc": 142, "df": 115}
    parts = frame["path"].map(lambda p: p.split("/")[-2]).value_counts().to_dict()
    assert parts == {"HAM10000_images_part_1": 5000, "HAM10000_images_part_2": 5015}


def test_lesion_grouped_split_of_all_10015_rows_keeps_lesions_and_published_duplicates_whole(shared_ham_small):
    frame = load_dataset("ham10000", data_dir=shared_ham_small, require_images=False).frame
    pairs = pd.concat([read_pairs_for(shared_ham_small.parent / name, frame["image_id"])
                       for name in ("newly_discovered_duplicates.csv", "near_duplicates_different_times.csv")])
    manifest = split_table(frame, pairs, seed=0)
    audit = audit_manifest(manifest, pairs)
    assert audit["leaking_groups"] == 0 and audit["straddling_duplicate_pairs"] == 0 and not audit["leaks"]
    assert manifest.groupby("group")["split"].nunique().max() == 1
    shares = manifest["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.02 and abs(shares["val"] - 0.1) < 0.02
    by_class = pd.crosstab(manifest["label"], manifest["split"], normalize="index")
    assert (by_class["test"] - 0.2).abs().max() < 0.06  # stratified: every class near its share
    naive = audit_manifest(split_table(frame, None, seed=0, strategy="random"), pairs)
    assert naive["leaking_groups"] > 500  # what an image-level split does to HAM10000


def test_tiny_seven_class_run_on_real_ham10000_images(shared_ham_small, tmp_path, capsys):
    table = pd.read_csv(shared_ham_small / "HAM10000_metadata.csv")
    subset = table.groupby("dx").head(16)
    metadata = tmp_path / "subset.csv"
    subset.to_csv(metadata, index=False)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "ham10000", "--data-dir", str(shared_ham_small), "--metadata", str(metadata),
                 "--full-dataset", "--backbone", "resnet18", "--weights", "none", "--image-size", "32",
                 "--epochs-embed", "1", "--epochs-classifier", "3", "--batch-size", "56", "--references",
                 "colour_baseline", "--no-onnx", "--wandb", "disabled", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    classes = metrics["classifier"]["classes"]
    assert classes == sorted(subset["dx"].unique()) and len(classes) == 7
    assert metrics["models"] == ["classifier", "knn", "colour_baseline"] and "top3_accuracy" in metrics["knn"]
    split = pd.read_csv(out / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1
    assert "test colour_baseline" in capsys.readouterr().out


def test_isic2020_reader_patient_grouping_and_duplicates_kept_together(shared_isic2020):
    table = load_dataset("isic2020", data_dir=shared_isic2020)
    frame = table.frame
    assert len(frame) == 2875 and frame["group"].nunique() == 672 and (frame["label"] == "malignant").sum() == 464
    pairs = read_pairs_for(shared_isic2020 / "ISIC_2020_Training_Duplicates.csv", frame["image_id"])
    ids = set(frame["image_id"])
    present = pairs[pairs["from_img"].isin(ids) & pairs["to_img"].isin(ids)]
    assert 0 < len(present) < len(pairs)  # the list covers the whole challenge set: most of its images are absent
    manifest = split_table(frame, pairs, seed=0)
    audit = audit_manifest(manifest, pairs)
    assert audit["leaking_groups"] == 0 and audit["straddling_duplicate_pairs"] == 0
    where = manifest.set_index("image_id")["split"]
    assert all(where[a] == where[b] for a, b in zip(present["from_img"], present["to_img"], strict=True))


@pytest.mark.parametrize("full_dataset", [False, True], ids=["balanced-stage1", "full-dataset"])
def test_tiny_isic2020_run_with_patient_context(shared_isic2020, tmp_path, full_dataset):
    table = pd.read_csv(shared_isic2020 / "train.csv")
    patients = table.groupby("patient_id")["target"].max()
    chosen = list(patients[patients == 1].index[:24]) + list(patients[patients == 0].index[:16])
    subset = table[table["patient_id"].isin(chosen)]
    metadata = tmp_path / "train.csv"
    subset.to_csv(metadata, index=False)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "isic2020", "--data-dir", str(shared_isic2020), "--metadata", str(metadata),
                 "--preset", "isic_cpu", "--duplicates", str(shared_isic2020 / "ISIC_2020_Training_Duplicates.csv"),
                 "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--frozen-epochs", "0",
                 "--epochs-embed", "1", "--epochs-classifier", "3", "--references", "colour_baseline", "--no-onnx",
                 "--wandb", "disabled", "--out", str(out), *(["--full-dataset"] if full_dataset else [])]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"] == ["classifier", "knn", "patient_context", "colour_baseline"]
    audit = json.loads((out / "split_audit.json").read_text())
    assert audit["leaking_groups"] == 0 and audit["straddling_duplicate_pairs"] == 0
    assert audit["duplicate_pairs_not_in_manifest"] > 400  # the official list covers all 33,126 images: counted
    assert metrics["patient_context_signal"]["test_images_with_context"] > 0
    for model in metrics["models"]:
        assert 0 <= metrics[model]["sensitivity_at_90_specificity"] <= metrics[model]["sensitivity_at_80_specificity"]
    split = pd.read_csv(out / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1  # no patient straddles
    sizes = metrics["split_sizes"]
    if full_dataset:
        assert sizes["stage1"] == sizes["train"]
    else:  # the study's 50/50 subset for stage 1, the whole training split for stage 2
        assert sizes["stage1"] == 2 * (split[split["split"] == "train"]["label"] == "malignant").sum() < sizes["train"]
