"""A final model (``--test-fraction 0``): every image trains but the validation slice, scored honestly."""

import json

import numpy as np
import pandas as pd
import pytest

from siamese.cli import build_parser, config_from_args, main
from siamese.data import load_dataset, split_table, write_manifest
from siamese.evaluation.reference_features import logistic_probe_proba
from siamese.evaluation.seeds import seed_table
from siamese.inference.predictor import Predictor, expand_inputs
from siamese.workflows.training_run import run_training
from tests.conftest import REPO, tiny_config

PH2_FINAL = ["train", "--dataset", "ph2", "--binary", "--preset", "ph2", "--test-fraction", "0"]
"""The docs' command for the single PH2 model (docs/training.md), less ``--data-dir``."""


def _train_final(config):
    with pytest.warns(UserWarning, match="optimistic"):
        return run_training(config)


def _cached_colour(run_dir, split):
    stored = np.load(run_dir / "references" / f"colour_{split}.npz")
    return stored["image_id"], stored["features"]


def test_final_model_trains_on_train_and_val_scores_val_and_predicts(tmp_path, capsys):
    config = tiny_config(tmp_path / "final", epochs_embed=1, test_fraction=0.0)
    config.classifier.epochs = 5
    config.export_onnx = True
    run_dir = _train_final(config)
    split = pd.read_csv(run_dir / "split.csv", dtype={"image_id": str})
    assert set(split["split"]) == {"train", "val"}
    assert (split.groupby("group")["split"].nunique() == 1).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scored_on"] == "val"
    assert "test" not in metrics["split_sizes"]
    assert metrics["classifier"]["n"] == metrics["split_sizes"]["val"] == (split["split"] == "val").sum()
    assert not (run_dir / "test_predictions.csv").exists() and not (run_dir / "embeddings" / "test.npz").exists()
    predictions = pd.read_csv(run_dir / "val_predictions.csv", dtype={"image_id": str})
    assert list(predictions["image_id"]) == list(split.loc[split["split"] == "val", "image_id"])
    # the references learn from the training split alone, so that their validation figures stay held out
    ids, fit_x = _cached_colour(run_dir, "train")
    classes = metrics["classifier"]["classes"]
    fit_y = split.set_index("image_id").loc[ids, "label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    colour = logistic_probe_proba(fit_x, fit_y, _cached_colour(run_dir, "val")[1], len(classes), seed=0)
    assert np.allclose(predictions[[f"colour_baseline_p_{c}" for c in classes]].to_numpy(), colour, atol=1e-6)
    report = (run_dir / "report.md").read_text()
    assert "## Validation metrics (a final model)" in report and "optimistic" in report
    assert "Test metrics" not in report and (run_dir / "confident_errors.png").is_file()

    samples = expand_inputs([str(REPO / "assets" / "samples")])
    by_onnx = Predictor(run_dir, engine="onnx").predict(samples, top_k=2)
    by_torch = Predictor(run_dir, engine="torch").predict(samples, top_k=2)
    assert [p.label for p in by_onnx] == [p.label for p in by_torch]
    capsys.readouterr()
    assert main(["predict", "--run", str(run_dir), str(samples[0]), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prediction"] in classes
    with pytest.warns(UserWarning, match="optimistic"):
        assert main(["rescore", str(run_dir)]) == 0
    assert "val classifier" in capsys.readouterr().out
    with pytest.raises(ValueError, match="final model"):  # seed summaries pair test figures only
        seed_table([run_dir])
    assert main(["visualize", str(run_dir), "--method", "tsne", "--thumbnails", "0"]) == 0
    assert set(pd.read_csv(run_dir / "projections" / "tsne_all.csv")["split"]) == {"train", "val"}
    assert main(["visualize", str(run_dir), "--split", "test"]) == 2
    assert "has no ['test'] split" in capsys.readouterr().err


def test_a_given_manifest_without_test_rows_makes_a_final_model(tmp_path):
    table = load_dataset("synthetic", lesions_per_class=10, seed=0)
    manifest = split_table(table.frame, val_fraction=0.2, test_fraction=0, seed=0)
    write_manifest(manifest, tmp_path / "split.csv")
    config = tiny_config(tmp_path / "run", epochs_embed=1, split=str(tmp_path / "split.csv"))
    config.classifier.epochs = 3
    config.references = ()
    run_dir = _train_final(config)
    assert json.loads((run_dir / "metrics.json").read_text())["scored_on"] == "val"
    assert (pd.read_csv(run_dir / "split.csv", dtype=str) == manifest).all().all()


def test_test_fraction_on_the_command_line_keeps_the_ph2_preset_and_cv_and_leakage_refuse_zero(tmp_path, capsys):
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--dataset", "ph2", "--preset", "ph2"])).data.test_fraction == 0.2
    assert config_from_args(parse([*PH2_FINAL, "--data-dir", "DIR"])).data.test_fraction == 0
    assert main(["cv", "--dataset", "synthetic", "--test-fraction", "0", "--out", str(tmp_path / "cv")]) == 2
    assert "--test-fraction is for train" in capsys.readouterr().err
    assert main(["leakage", "--test-fraction", "0", "--out", str(tmp_path / "leak")]) == 2
    assert "compares test scores" in capsys.readouterr().err


def test_the_docs_give_the_final_ph2_command():
    training_page = (REPO / "docs" / "training.md").read_text()
    assert "python train.py --dataset ph2 --data-dir DIR --binary --preset ph2 --test-fraction 0" in training_page


def test_shared_ph2_final_model_trains_on_every_image(shared_ph2, tmp_path, capsys):
    """The docs' PH2 command at tiny settings: all 160 images are in train or val, none held out."""
    out = tmp_path / "ph2-final"
    tiny = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--epochs-embed", "1",
            "--epochs-classifier", "2", "--frozen-epochs", "0", "--references", "colour_baseline",
            "--wandb", "disabled"]
    with pytest.warns(UserWarning, match="optimistic"):
        assert main([*PH2_FINAL, "--data-dir", str(shared_ph2), *tiny, "--out", str(out)]) == 0
    assert "val classifier" in capsys.readouterr().out
    split = pd.read_csv(out / "split.csv", dtype=str)
    assert len(split) == split["image_id"].nunique() == 160
    assert set(split["split"]) == {"train", "val"}
    assert set(split.groupby("split")["label"].unique().map(frozenset)) == {frozenset({"melanoma", "nevus"})}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored_on"] == "val" and not metrics["excluded"]
    assert metrics["split_sizes"]["train"] + metrics["split_sizes"]["val"] == 160
    image = load_dataset("ph2", shared_ph2).frame["path"].iloc[0]
    assert main(["predict", "--run", str(out), image]) == 0
