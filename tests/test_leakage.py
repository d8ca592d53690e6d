import json

import pandas as pd

from siamese.cli import main
from siamese.training.leakage import run_leakage_experiment

from .conftest import tiny_config


def test_leakage_experiment_writes_table_audits_and_matrices(tmp_path):
    config = tiny_config(tmp_path / "unused", epochs_embed=1)
    config.classifier.epochs = 5
    table = run_leakage_experiment(config, tmp_path / "leak")
    assert set(table["split"]) == {"naive", "grouped"} and set(table["model"]) == {"classifier", "knn"}
    assert {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc"} <= set(table.columns)
    naive = json.loads((tmp_path / "leak" / "audit_naive.json").read_text())
    grouped = json.loads((tmp_path / "leak" / "audit_grouped.json").read_text())
    assert naive["leaks"] and naive["leaking_groups"] > 0
    assert not grouped["leaks"] and grouped["duplicate_pairs"] > 0
    assert pd.read_csv(tmp_path / "leak" / "leakage_table.csv").shape[0] == 4
    assert (tmp_path / "leak" / "leakage_table.md").read_text().startswith("| split |")
    assert (tmp_path / "leak" / "confusion_matrices.png").stat().st_size > 1000
    for name in ("naive", "grouped"):
        assert (tmp_path / "leak" / name / "metrics.json").is_file()


def test_leakage_command_resumes_finished_runs(tmp_path, capsys):
    args = ["leakage", "--dataset", "synthetic", "--image-size", "32", "--epochs-embed", "1",
            "--epochs-classifier", "3", "--batch-size", "56", "--wandb", "disabled", "--out", str(tmp_path / "x")]
    assert main(args) == 0
    first = (tmp_path / "x" / "leakage_table.csv").read_text()
    assert main(args) == 0
    assert (tmp_path / "x" / "leakage_table.csv").read_text() == first
    assert "naive" in capsys.readouterr().out
