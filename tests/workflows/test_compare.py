"""``compare``: recipes on the same seeds or folds, each paired with finetune and colour_baseline."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from siamese.cli import main
from siamese.data import DataError
from siamese.workflows.crossval.compare import Recipe, compare_recipes, comparison_table, parse_recipe
from tests.conftest import tiny_config


def test_recipes_parse_with_the_losss_own_miner_and_bad_ones_fail_by_name():
    assert parse_recipe("triplet") == Recipe("triplet", "semihard", 0.0)
    assert parse_recipe("supcon:none:0.5") == Recipe("supcon", "none", 0.5)
    assert parse_recipe("contrastive:hard").name == "contrastive-hard"
    assert parse_recipe("supcon:none:0.5").name == "supcon-none-ce0.5"
    with pytest.raises(ValueError, match="recipe 'arcface:semihard': loss arcface .* takes no miner"):
        parse_recipe("arcface:semihard")
    with pytest.raises(ValueError, match="recipe 'triplet:semihard:x'"):
        parse_recipe("triplet:semihard:x")


def test_each_recipe_is_paired_run_by_run_with_references_held_by_any_recipe():
    rows = []
    rng = np.random.default_rng(0)
    for seed in range(4):
        tuned, colour = 0.7 + 0.05 * seed, 0.6 + rng.normal(0, 0.01)
        run = {"recipe": "a-semihard", "seed": seed, "fold": 0}
        rows += [{**run, "model": "finetune", "balanced_accuracy": tuned, "roc_auc": tuned, "seconds": 10.0},
                 {**run, "model": "colour_baseline", "balanced_accuracy": colour, "roc_auc": colour, "seconds": np.nan}]
        for recipe, offset in (("a-semihard", 0.02), ("b-none", -0.01 * seed)):
            for model in ("classifier", "knn"):
                rows.append({"recipe": recipe, "seed": seed, "fold": 0, "model": model,
                             "balanced_accuracy": tuned + offset, "roc_auc": tuned, "seconds": 20.0})
    long = pd.DataFrame(rows)
    table = comparison_table(long, [Recipe("a", "semihard"), Recipe("b", "none")], ("finetune", "colour_baseline"))
    a = table[(table["recipe"] == "a-semihard") & (table["model"] == "classifier")].iloc[0]
    assert a["balanced_accuracy_vs_finetune"] == pytest.approx(0.02)
    assert a["balanced_accuracy_vs_finetune_ahead"] == 4 and a["balanced_accuracy_vs_finetune_runs"] == 4
    b = table[(table["recipe"] == "b-none") & (table["model"] == "classifier")].iloc[0]
    differences = -0.01 * np.arange(4)
    half = stats.t.ppf(0.975, 3) * differences.std(ddof=1) / 2
    assert b["balanced_accuracy_vs_finetune"] == pytest.approx(differences.mean())  # finetune from recipe a's runs
    assert b["balanced_accuracy_vs_finetune_low"] == pytest.approx(differences.mean() - half)
    assert b["balanced_accuracy_vs_finetune_ahead"] == 0 and b["seconds"] == 20.0
    assert list(table.loc[table["model"] == "finetune", "seconds"]) == [10.0]


def test_compare_trains_recipes_on_the_same_seeds_and_writes_one_table(tmp_path):
    config = tiny_config(tmp_path / "unused", epochs_embed=1)
    config.out, config.classifier.epochs = None, 2
    recipes = [parse_recipe("triplet"), parse_recipe("supcon:none:0.5")]
    out = tmp_path / "compare"
    compare_recipes(config, recipes, out, folds=0, seeds=(0, 1))
    table = pd.read_csv(out / "compare.csv")
    assert list(table["recipe"]) == ["triplet-semihard"] * 2 + ["supcon-none-ce0.5"] * 2 + [
        "(finetune)", "(colour_baseline)"]
    assert (table.loc[:3, "runs"] == 2).all() and table.loc[:3, "balanced_accuracy_vs_finetune_runs"].eq(2).all()
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "| supcon-none-ce0.5 | classifier |" in (out / "compare.md").read_text()
    first = json.loads((out / "triplet-semihard" / "seed1" / "metrics.json").read_text())
    second = json.loads((out / "supcon-none-ce0.5" / "seed1" / "metrics.json").read_text())
    assert first["models"] == ["classifier", "knn", "finetune", "colour_baseline"]
    assert second["models"] == ["classifier", "knn", "colour_baseline"]  # finetune is trained once per seed
    saved = json.loads((out / "supcon-none-ce0.5" / "seed1" / "config.json").read_text())["embed"]
    assert (saved["loss"], saved["miner"], saved["ce_weight"]) == ("supcon", "none", 0.5)
    finished = (out / "triplet-semihard" / "seed0" / "metrics.json").stat().st_mtime_ns
    compare_recipes(config, recipes, out, folds=0, seeds=(0, 1))  # run again: every finished run is reused
    assert (out / "triplet-semihard" / "seed0" / "metrics.json").stat().st_mtime_ns == finished
    config.classifier.epochs = 3
    with pytest.raises(DataError, match="other settings.*classifier.epochs"):
        compare_recipes(config, recipes, out, folds=0, seeds=(0, 1))


def test_the_compare_command_passes_recipes_references_and_design(monkeypatch, tmp_path, capsys):
    from siamese.diagnostics import compare_page
    from siamese.workflows.crossval import compare

    asked = {}

    def record(config, recipes, out, folds, seeds, references):
        asked.update(config=config, recipes=recipes, folds=folds, seeds=seeds, references=references)
        (tmp_path / "compare.md").write_text("table")
        return [tmp_path / "compare.md"] * 3

    monkeypatch.setattr(compare, "compare_recipes", record)
    monkeypatch.setattr(compare_page, "write_compare_page", lambda out: Path(out) / "compare.html")
    assert main(["compare", "--dataset", "synthetic", "--recipes", "triplet", "arcface::0.2", "--folds", "2",
                 "--seeds", "3", "--out", str(tmp_path)]) == 0
    assert asked["recipes"] == [Recipe("triplet", "semihard"), Recipe("arcface", "none", 0.2)]
    assert (asked["folds"], asked["seeds"], asked["references"]) == (2, [3], ("finetune", "colour_baseline"))
    assert asked["config"].wandb == "disabled" and not asked["config"].export_onnx
    assert main(["compare", "--recipes", "arcface:hard", "--out", str(tmp_path)]) == 2
    assert "recipe 'arcface:hard'" in capsys.readouterr().err
