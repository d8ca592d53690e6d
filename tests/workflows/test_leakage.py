import json

import pandas as pd

from siamese.cli import main
from siamese.workflows.leakage import run_leakage_experiment
from tests.conftest import tiny_config


def test_leakage_experiment_writes_table_audits_and_matrices(tmp_path):
    config = tiny_config(tmp_path / "unused", epochs_embed=1)
    config.classifier.epochs = 5
    table = run_leakage_experiment(config, tmp_path / "leak")
    assert set(table["split"]) == {"naive", "grouped"} and set(table["model"]) == {"classifier", "knn"}
    assert {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc"} <= set(table.columns)
    naive = json.loads((tmp_path / "leak" / "seed0" / "audit_naive.json").read_text())
    grouped = json.loads((tmp_path / "leak" / "seed0" / "audit_grouped.json").read_text())
    assert naive["leaks"] and naive["leaking_groups"] > 0
    assert not grouped["leaks"] and grouped["duplicate_pairs"] > 0
    assert pd.read_csv(tmp_path / "leak" / "leakage_table.csv").shape[0] == 4
    assert (tmp_path / "leak" / "leakage_table.md").read_text().startswith("| seed | split |")
    assert (tmp_path / "leak" / "confusion_matrices.png").stat().st_size > 1000
    for name in ("naive", "grouped"):
        assert (tmp_path / "leak" / "seed0" / name / "metrics.json").is_file()


def test_leakage_command_resumes_finished_runs(tmp_path, capsys):
    args = ["leakage", "--dataset", "synthetic", "--image-size", "32", "--epochs-embed", "1",
            "--epochs-classifier", "3", "--batch-size", "56", "--wandb", "disabled", "--out", str(tmp_path / "x")]
    assert main(args) == 0
    first = (tmp_path / "x" / "leakage_table.csv").read_text()
    assert main(args) == 0
    assert (tmp_path / "x" / "leakage_table.csv").read_text() == first
    assert "naive" in capsys.readouterr().out


def test_leakage_over_seeds_pairs_the_naive_and_grouped_scores(tmp_path):
    config = tiny_config(tmp_path / "unused", epochs_embed=1)
    config.classifier.epochs = 3
    table = run_leakage_experiment(config, tmp_path / "leak", seeds=(0, 1))
    assert sorted(set(table["seed"])) == [0, 1] and len(table) == 8
    paired = pd.read_csv(tmp_path / "leak" / "leakage_paired.csv")
    row = paired[(paired["model"] == "classifier") & (paired["metric"] == "accuracy")].iloc[0]
    runs = table[table["model"] == "classifier"].set_index(["seed", "split"])["accuracy"]
    by_hand = [runs[(s, "naive")] - runs[(s, "grouped")] for s in (0, 1)]
    assert row["seeds"] == 2 and abs(row["naive_minus_grouped"] - sum(by_hand) / 2) < 1e-12
    assert row["ci95_low"] <= row["naive_minus_grouped"] <= row["ci95_high"]
    splits = {s: pd.read_csv(tmp_path / "leak" / f"seed{s}" / "split_grouped.csv") for s in (0, 1)}
    assert not splits[0]["split"].equals(splits[1]["split"])


def test_ham_leakage_preset_is_the_main_model_on_a_smaller_stage_one_budget():
    from siamese.config import preset

    main_job, leak = preset("ham_cpu").to_dict(), preset("ham_leakage").to_dict()
    assert not leak["data"].pop("full_dataset") and main_job["data"].pop("full_dataset")
    assert leak["embed"].pop("epochs") < main_job["embed"].pop("epochs")
    assert leak.pop("preset") == "ham_leakage" and main_job.pop("preset") == "ham_cpu"
    # the experiment keeps the stage-1 loss it was measured with when ham_cpu moved to supervised contrastive
    assert (leak["embed"].pop("loss"), leak["embed"].pop("miner")) == ("triplet", "semihard")
    assert (main_job["embed"].pop("loss"), main_job["embed"].pop("miner")) == ("supcon", None)
    assert (leak["data"].pop("image_size"), main_job["data"].pop("image_size")) == (128, 192)  # likewise its size
    assert leak == main_job
