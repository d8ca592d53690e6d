import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from siamese.cli import main
from siamese.config import CVConfig
from siamese.data import DataError, load_dataset
from siamese.data.splits import fold_manifest, kfold_table
from siamese.evaluation.reference_features import colour_embedding_proba, logistic_probe_proba, majority_proba
from siamese.models import backbones
from siamese.runtime.errors import WeightsUnavailableError
from siamese.workflows.crossval import colour_features, run_cv
from siamese.workflows.crossval.runner import fold_embeddings
from tests.conftest import tiny_config


def test_fold_manifest_holds_out_exactly_one_fold_and_keeps_groups_whole(synthetic):
    frame = synthetic.frame
    folds = kfold_table(frame, folds=3, seed=1)
    for k in range(3):
        manifest = fold_manifest(folds, k, val_fraction=0.25, seed=1)
        assert set(manifest.loc[manifest["split"] == "test", "image_id"]) == \
            set(folds.loc[folds["split"] == f"fold{k}", "image_id"])
        assert (manifest["split"] == "val").sum() > 0
        assert manifest.groupby("group")["split"].nunique().max() == 1
    with pytest.raises(ValueError, match="no fold7"):
        fold_manifest(folds, 7)


def test_colour_features_separate_colours_and_the_baseline_learns_them():
    rng = np.random.default_rng(0)
    reds = [np.clip(rng.normal((170, 60, 50), 25, (24, 24, 3)), 0, 255).astype(np.uint8) for _ in range(20)]
    blues = [np.clip(rng.normal((60, 70, 160), 25, (24, 24, 3)), 0, 255).astype(np.uint8) for _ in range(20)]
    x = np.stack([colour_features(p) for p in reds + blues])
    y = np.repeat([0, 1], 20)
    assert x.shape == (40, 66) and np.isfinite(x).all()
    train = np.r_[0:15, 20:35]
    proba = logistic_probe_proba(x[train], y[train], x[np.r_[15:20, 35:40]], n_classes=3)
    assert proba.shape == (10, 3) and np.allclose(proba.sum(axis=1), 1) and (proba[:, 2] == 0).all()
    assert (proba[:, :2].argmax(axis=1) == np.repeat([0, 1], 5)).all()
    assert np.allclose(majority_proba(np.array([0, 0, 1]), 2, 3), [[2 / 3, 1 / 3, 0]] * 2)


def test_colour_embedding_probe_is_ahead_only_when_the_embedding_adds_information():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 60)
    colour = rng.normal(size=(120, 66))  # colour says nothing here
    informative = rng.normal(size=(120, 8)) + 2.5 * y[:, None]
    noise = rng.normal(size=(120, 8))
    train, test = np.r_[0:45, 60:105], np.r_[45:60, 105:120]

    def accuracy(embedding):
        proba = colour_embedding_proba(colour[train], embedding[train], y[train], colour[test], embedding[test], 2)
        assert proba.shape == (30, 2) and np.allclose(proba.sum(axis=1), 1)
        return (proba.argmax(axis=1) == y[test]).mean()

    colour_only = (logistic_probe_proba(colour[train], y[train], colour[test], 2).argmax(axis=1) == y[test]).mean()
    assert accuracy(informative) >= 0.95 > colour_only + 0.2
    assert accuracy(noise) < 0.8


def no_torchvision_weights(name):
    raise WeightsUnavailableError(f"no ImageNet weights for {name} in this test")


@pytest.fixture(scope="module")
def cv_out(tmp_path_factory):
    """One finished 2-fold, 2-seed CV, read (never changed) by the tests; whether torchvision's ResNet18
    weights are downloadable or cached here must not matter, so the probe always falls back to the packaged
    EfficientNet-Lite0, as offline."""
    out = tmp_path_factory.mktemp("cv") / "cv"
    config = tiny_config(out / "unused", epochs_embed=2)
    config.classifier.epochs = 5
    config.out = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbones, "_download", no_torchvision_weights)
        result = run_cv(config, CVConfig(folds=2, seeds=(0, 1)), out)
    return out, config, result


@pytest.fixture
def cv_copy(cv_out, tmp_path):
    """A copy of the finished CV folder and of its settings, for a test that changes them."""
    out, config, _ = cv_out
    shutil.copytree(out, tmp_path / "cv")
    return tmp_path / "cv", copy.deepcopy(config)


def test_cv_writes_folds_summary_oof_figures_and_report(cv_out):
    out, _, result = cv_out
    folds = pd.read_csv(out / "cv_folds.csv")
    assert len(folds) == 2 * 2 * 7
    assert set(folds["model"]) == {"classifier", "knn", "colour_baseline", "imagenet_probe", "majority",
                                   "colour_embedding", "finetune"}
    assert folds[["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"]].notna().all().all()
    assert np.allclose(folds.loc[folds["model"] == "majority", "roc_auc"], 0.5)
    summary = pd.read_csv(out / "cv_summary.csv")
    assert list(summary.columns) == ["model", "metric", "mean", "std"] and len(summary) == 28
    knn_acc = folds.loc[folds["model"] == "knn", "accuracy"]
    row = summary[(summary["model"] == "knn") & (summary["metric"] == "accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(knn_acc.mean()) and row["std"] == pytest.approx(knn_acc.std())
    oof = pd.read_csv(out / "oof_predictions.csv")
    n_images = len(load_dataset("synthetic", lesions_per_class=10, seed=0).frame)
    assert len(oof) == 2 * n_images
    assert oof.groupby("seed")["image_id"].nunique().eq(n_images).all()
    for name in ("cv_confusion_matrices.png", "cv_roc.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = (out / "cv_report.md").read_text()
    assert "colour_baseline" in report and "±" in report and "CPU cores" in report and "ahead in" in report
    paired = pd.read_csv(out / "cv_paired.csv")
    knn = folds[folds["model"] == "knn"].set_index(["seed", "fold"])["accuracy"]
    base = folds[folds["model"] == "colour_baseline"].set_index(["seed", "fold"])["accuracy"]
    by_colour = paired[paired["reference"] == "colour_baseline"]
    row = by_colour[(by_colour["model"] == "knn") & (by_colour["metric"] == "accuracy")].iloc[0]
    assert row["mean_difference"] == pytest.approx((knn - base).mean()) and row["folds"] == 4
    assert row["folds_ahead"] == int((knn > base).sum())
    assert "colour_embedding" in set(paired["model"]) and "| colour_embedding |" in report
    assert {"knn", "classifier", "colour_baseline"} <= set(paired.loc[paired["reference"] == "imagenet_probe", "model"])
    probe_backbone = str(np.load(out / "imagenet_features.npz")["backbone"])
    assert "Paired with `imagenet_probe`" in report and f"frozen ImageNet {probe_backbone} features" in report


def test_imagenet_probe_is_refitted_on_each_folds_training_images(cv_out):
    out = cv_out[0]
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"image_id": str})
    stored = np.load(out / "imagenet_features.npz")
    # the run's ResNet18 has no ImageNet weights here (cv_out), and the packaged Lite0 stands in
    assert str(stored["backbone"]) == "efficientnet_lite0"
    assert stored["features"].shape == (len(stored["image_id"]), 1280)
    position = pd.Series(np.arange(len(stored["image_id"])), index=stored["image_id"])
    manifest = pd.read_csv(out / "seed0" / "fold1_split.csv", dtype={"image_id": str})
    fit, held_out = manifest[manifest["split"] != "test"], oof[(oof["seed"] == 0) & (oof["fold"] == 1)]
    classes = sorted(manifest["label"].unique())
    y_fit = fit["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    expected = logistic_probe_proba(stored["features"][position[fit["image_id"]]], y_fit,
                                    stored["features"][position[held_out["image_id"]]], len(classes), seed=0)
    assert np.allclose(held_out[[f"imagenet_probe_p_{c}" for c in classes]].to_numpy(), expected, atol=1e-6)


def test_colour_embedding_probe_reads_each_folds_own_embeddings(cv_out):
    out = cv_out[0]
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"image_id": str})
    colour = np.load(out / "colour_features.npz")
    position = pd.Series(np.arange(len(colour["image_id"])), index=colour["image_id"])
    manifest = pd.read_csv(out / "seed1" / "fold0_split.csv", dtype={"image_id": str})
    fit, held_out = manifest[manifest["split"] != "test"], oof[(oof["seed"] == 1) & (oof["fold"] == 0)]
    classes = sorted(manifest["label"].unique())
    y_fit = fit["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    fold_dir = out / "seed1" / "fold0"
    expected = colour_embedding_proba(
        colour["features"][position[fit["image_id"]]], fold_embeddings(fold_dir, fit["image_id"].to_numpy()), y_fit,
        colour["features"][position[held_out["image_id"]]], fold_embeddings(fold_dir, held_out["image_id"].to_numpy()),
        len(classes), seed=1)
    assert np.allclose(held_out[[f"colour_embedding_p_{c}" for c in classes]].to_numpy(), expected, atol=1e-6)
    with pytest.raises(DataError, match="no embedding for 1 of the fold's images.*unknown"):
        fold_embeddings(fold_dir, np.array(["unknown"]))


def test_cv_test_folds_never_share_a_group_with_their_training_folds(cv_out):
    out = cv_out[0]
    for split_file in out.glob("seed*/fold*_split.csv"):
        manifest = pd.read_csv(split_file)
        assert manifest.groupby("group")["split"].nunique().max() == 1


def test_cv_reads_the_finetune_reference_from_each_folds_own_run(cv_out):
    out = cv_out[0]
    fold_dir = out / "seed0" / "fold1"
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert metrics["models"] == ["classifier", "knn", "finetune"]  # the probes are the CV's to fit, not the fold's
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"image_id": str})
    held_out = oof[(oof["seed"] == 0) & (oof["fold"] == 1)]
    fold = pd.read_csv(fold_dir / "test_predictions.csv", dtype={"image_id": str})
    assert list(held_out["image_id"]) == list(fold["image_id"])
    assert np.allclose(held_out.filter(like="finetune_p_").to_numpy(), fold.filter(like="finetune_p_").to_numpy())
    folds = pd.read_csv(out / "cv_folds.csv").set_index(["seed", "fold", "model"])
    assert folds.loc[(0, 1, "finetune"), "model_seconds"] == pytest.approx(metrics["reference_seconds"]["finetune"])
    assert folds.loc[(0, 1, "classifier"), "model_seconds"] == pytest.approx(metrics["wall_seconds"])
    assert np.isnan(folds.loc[(0, 1, "colour_baseline"), "model_seconds"])
    assert "Of it, `finetune`:" in (out / "cv_report.md").read_text()


def test_cv_resumes_fold_by_fold_and_refuses_other_settings(cv_copy):
    out, config = cv_copy
    checkpoint = out / "seed1" / "fold1" / "embedder.pt"
    before = checkpoint.stat().st_mtime_ns
    (out / "seed1" / "fold1" / "metrics.json").unlink()
    (out / "seed0" / "fold1" / "cv_seconds.json").unlink()
    first = pd.read_csv(out / "cv_folds.csv")
    run_cv(config, CVConfig(folds=2, seeds=(0, 1)), out)
    assert checkpoint.stat().st_mtime_ns == before  # the unfinished fold resumed: stage 1 was done
    again = pd.read_csv(out / "cv_folds.csv")
    timing = ["train_seconds", "model_seconds"]  # a resumed fold times what it did this call
    pd.testing.assert_frame_equal(first.drop(columns=timing), again.drop(columns=timing))
    more = run_cv(config, CVConfig(folds=2, seeds=(2,)), out)  # a seed added: the others' folds are reused
    assert sorted(more.folds["seed"].unique()) == [0, 1, 2]
    assert checkpoint.stat().st_mtime_ns == before
    assert json.loads((out / "cv_config.json").read_text())["cv"]["seeds"] == [0, 1, 2]
    fewer = run_cv(config, CVConfig(folds=2, seeds=(0,), references=("majority",)), out)  # refitted, not trained
    assert set(fewer.folds["model"]) == {"classifier", "knn", "majority"}
    assert checkpoint.stat().st_mtime_ns == before
    config.classifier.epochs = 6
    with pytest.raises(DataError, match="other settings.*classifier.epochs"):
        run_cv(config, CVConfig(folds=2, seeds=(0, 1)), out)


def test_a_failed_cv_start_blocks_neither_the_folder_nor_the_fix(tmp_path):
    out = tmp_path / "cv"
    config = tiny_config(out / "unused", epochs_embed=1)
    config.out, config.data.image_size = None, 0
    with pytest.raises(ValueError, match="at least 32 px; got --image-size 0"):
        run_cv(config, CVConfig(folds=2, seeds=(0,)), out)
    assert not out.exists()  # refused before the folder was claimed
    out.mkdir()
    (out / "cv_config.json").write_text(json.dumps({"run": {"data": {"image_size": 7}}, "cv": {"seeds": [0]}}))
    config.data.image_size, config.classifier.epochs = 32, 2
    result = run_cv(config, CVConfig(folds=2, seeds=(0,), references=("majority",)), out)  # no fold started
    assert len(result.folds) and json.loads((out / "cv_config.json").read_text())["run"]["data"]["image_size"] == 32


def test_cv_refuses_a_folder_that_holds_a_train_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    config = tiny_config(tmp_path / "unused", epochs_embed=1)
    config.out = None
    config.save(out / "config.json")
    with pytest.raises(DataError, match="holds a train run"):
        run_cv(config, CVConfig(folds=2, seeds=(0,)), out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # nothing written among its files
    assert main(["cv", "--dataset", "synthetic", "--out", str(out)]) == 2
    assert "holds a train run" in capsys.readouterr().err


def test_cv_command_needs_out(capsys):
    assert main(["cv", "--dataset", "synthetic"]) == 2
    assert "cv needs --out" in capsys.readouterr().err


def test_cv_command_on_ph2_layout(ph2_dir, tmp_path, capsys):
    out = tmp_path / "cv"
    code = main(["cv", "--dataset", "ph2", "--data-dir", str(ph2_dir), "--binary", "--folds", "2", "--seeds", "0",
                 "--image-size", "32", "--epochs-embed", "1", "--epochs-classifier", "2", "--batch-size", "8",
                 "--val-fraction", "0.5", "--crop", "lesion-mask", "--backbone", "resnet18", "--weights", "none",
                 "--pooling", "stages", "--tta", "2",
                 "--colour-stats", "--colour-noise", "0.3", "--out", str(out)])
    assert code == 0
    fold = json.loads((out / "seed0" / "fold0" / "metrics.json").read_text())
    assert fold["crop"] == {"mode": "lesion-mask", "margin": 0.15, "kept_whole": 0}
    arch = torch.load(out / "seed0" / "fold0" / "embedder.pt", weights_only=True)["arch"]
    assert arch["pooling"] == "stages" and arch["tta"] == 2 and arch["colour_stats"] is True
    printed = capsys.readouterr().out
    assert "colour_baseline" in printed and "balanced_accuracy" in printed
    saved = json.loads((out / "cv_config.json").read_text())
    assert saved["run"]["data"]["dataset"] == "ph2" and saved["run"]["data"]["binary"] is True
    assert saved["run"]["export_onnx"] is False and saved["cv"]["folds"] == 2
    assert saved["run"]["model"]["colour_noise"] == 0.3
    assert set(pd.read_csv(out / "oof_predictions.csv")["label"]) == {"nevus", "melanoma"}
