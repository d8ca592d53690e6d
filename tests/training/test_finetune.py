"""The finetune reference: trained beside the two stages, scored on the same test split, reported with its time."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from siamese.evaluation.seeds import write_seed_summary
from siamese.training import finetune
from siamese.training.finetune import balanced_sampler
from siamese.workflows.scoring import rescore_run
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("finetune") / "run", epochs_embed=2)
    config.classifier.epochs = 3
    config.references = ("colour_baseline", "finetune")
    return run_training(config)


def test_finetune_reference_appears_in_metrics_json_with_its_figures_and_wall_time(tuned_run):
    metrics = json.loads((tuned_run / "metrics.json").read_text())
    assert metrics["models"] == ["classifier", "knn", "colour_baseline", "finetune"]
    figures = metrics["finetune"]
    assert 0 <= figures["balanced_accuracy"] <= 1 and 0 <= figures["roc_auc"] <= 1 and "top3_accuracy" in figures
    assert metrics["reference_seconds"]["finetune"] > 0
    assert metrics["reference_notes"]["finetune"].startswith("fine-tuned end to end for 2 epoch(s)")
    predictions = pd.read_csv(tuned_run / "test_predictions.csv")
    proba = predictions.filter(like="finetune_p_").to_numpy()
    assert proba.shape == (metrics["split_sizes"]["test"], 7) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    report = (tuned_run / "report.md").read_text()
    assert "| finetune |" in report and "- `finetune`: fine-tuned end to end" in report


def test_a_rescore_reuses_the_fine_tuned_predictions(tuned_run, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(tuned_run, copy)
    before = json.loads((copy / "metrics.json").read_text())

    def refuse(*_, **__):
        raise AssertionError("fine-tuned again")

    monkeypatch.setattr(finetune, "train_finetune", refuse)
    after = rescore_run(copy, device="cpu")
    assert after["finetune"] == before["finetune"]
    assert after["reference_seconds"] == before["reference_seconds"]


def test_summarize_pairs_the_classifier_with_finetune_and_reports_its_wall_time(tuned_run, tmp_path):
    other = tmp_path / "seed7"
    shutil.copytree(tuned_run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["seed"] = 7
    (other / "metrics.json").write_text(json.dumps(metrics))
    write_seed_summary([tuned_run, other], tmp_path / "summary")
    table = pd.read_csv(tmp_path / "summary" / "seeds_table.csv")
    seconds = table.set_index("model")["wall_seconds"]
    assert seconds["finetune"].iloc[0] == pytest.approx(metrics["reference_seconds"]["finetune"])
    assert seconds["classifier"].iloc[0] == pytest.approx(metrics["wall_seconds"])
    paired = pd.read_csv(tmp_path / "summary" / "seeds_paired.csv")
    assert ((paired["model"] == "classifier") & (paired["reference"] == "finetune")).any()


def test_balanced_sampling_draws_each_class_about_equally():
    targets = np.array([0] * 90 + [1] * 10)
    drawn = targets[list(balanced_sampler(targets, seed=0))]
    assert len(drawn) == 100 and 35 <= (drawn == 1).sum() <= 65
