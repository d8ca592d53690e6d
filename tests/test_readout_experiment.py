"""experiments/readout.py's pairing of refitted read-outs with the reference models of the compare that
trained the runs (pure tables: no run is refitted here)."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "readout.py"


@pytest.fixture(scope="module")
def readout():
    spec = importlib.util.spec_from_file_location("readout_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize(("run", "key"), [("runs/cmp/triplet-semihard/seed2/fold4", ("triplet-semihard", 2, 4)),
                                          ("/abs/out/supcon-none/seed1", ("supcon-none", 1, 0)),
                                          ("cmp/arcface-none-ce0.5/seed0/fold0", ("arcface-none-ce0.5", 0, 0))])
def test_compare_run_folders_name_their_recipe_seed_and_fold(readout, run, key):
    assert readout.compare_key(run) == key


@pytest.mark.parametrize("run", ["runs/digits-20261205", "runs/cmp/triplet/fold0", "seed0x",
                                 "runs/cmp/triplet/seed0x", "runs/cmp/triplet/seed1/fold"])
def test_other_folders_are_refused_by_name(readout, run):
    with pytest.raises(ValueError, match="not a run folder of `compare`"):
        readout.compare_key(run)


def test_read_outs_pair_with_the_references_of_the_same_seed_and_fold_only(readout):
    runs = [f"out/{recipe}/seed{seed}/fold{fold}" for recipe in ("a-none", "b-none") for seed in (0, 1)
            for fold in (0, 1)]
    table = pd.DataFrame({"run": runs, "seed": [int(r.split("seed")[1][0]) for r in runs], "variant": "dense_colour",
                          "roc_auc": [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5],
                          "balanced_accuracy": 0.5})
    # a second stage-2 seed of one run is not a pair with the references
    table = pd.concat([table, table.iloc[[0]].assign(seed=5, roc_auc=0.0)], ignore_index=True)
    compare_runs = pd.DataFrame({"seed": [0, 0, 1, 1, 0, 0, 0, 1, 1], "fold": [0, 1, 0, 1, 0, 0, 1, 0, 1],
                                 "model": ["finetune"] * 4 + ["classifier"] + ["colour_baseline"] * 4,
                                 "roc_auc": [0.5, 0.9, 0.6, 0.6, 0.0, 0.5, 0.5, 0.5, 0.5],
                                 "balanced_accuracy": 0.5})
    # a probe is scored in every recipe's runs: its rows repeat, once per recipe
    compare_runs = pd.concat([compare_runs, compare_runs[compare_runs["model"] == "colour_baseline"]])
    paired = readout.versus_references(table, compare_runs)
    assert set(paired["reference"]) == {"finetune", "colour_baseline"}  # not the compare's own models
    probe = paired[(paired["recipe"] == "a-none") & (paired["reference"] == "colour_baseline")
                   & (paired["metric"] == "roc_auc")].iloc[0]
    assert probe["runs"] == 4 and probe["mean_difference"] == pytest.approx(0.75 - 0.5)
    a = paired[(paired["recipe"] == "a-none") & (paired["reference"] == "finetune")
               & (paired["metric"] == "roc_auc")].iloc[0]
    assert a["runs"] == 4 and a["runs_ahead"] == 2
    assert a["mean_difference"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.9) + (0.7 - 0.6) + (0.6 - 0.6)) / 4)
    assert a["variant_mean"] == pytest.approx(0.75) and a["sd"] == pytest.approx(pd.Series([0.4, -0.1, 0.1, 0.0]).std())
    b = paired[(paired["recipe"] == "b-none") & (paired["reference"] == "finetune")
               & (paired["metric"] == "roc_auc")].iloc[0]
    assert b["mean_difference"] == pytest.approx((0.0 - 0.4 - 0.1 - 0.1) / 4) and b["runs_ahead"] == 0


def test_a_missing_references_table_or_a_foreign_run_is_one_clear_error(readout, tmp_path, capsys):
    with pytest.raises(SystemExit):
        readout.main(["out/a-none/seed0", "--out", str(tmp_path), "--references", str(tmp_path / "none.csv")])
    assert "none.csv: no such file" in capsys.readouterr().err
    table = tmp_path / "compare_runs.csv"
    table.write_text("seed,fold,model,roc_auc,balanced_accuracy\n")
    with pytest.raises(SystemExit):
        readout.main(["runs/digits-1", "--out", str(tmp_path), "--references", str(table)])
    assert "runs/digits-1: not a run folder of `compare`" in capsys.readouterr().err


@pytest.mark.parametrize(("variants", "heading"), [(["dense", "dense_colour", "shipped"], "`dense`"),
                                                   (["dense_colour", "dense_colour+la", "shipped"], "`shipped`"),
                                                   (["dense_colour", "dense_colour+la"], None)])
def test_the_side_by_side_section_pairs_with_the_first_baseline_that_was_run(readout, tmp_path, variants, heading):
    rows = [{"run": f"runs/r{run}", "seed": seed, "variant": variant, "roc_auc": 0.8 + 0.01 * i + 0.001 * seed,
             "balanced_accuracy": 0.6 + 0.02 * i - 0.001 * run}
            for run in range(2) for seed in range(2) for i, variant in enumerate(variants)]
    readout.write(pd.DataFrame(rows), tmp_path)
    page = (tmp_path / "readout.md").read_text()
    sections = [line for line in page.splitlines() if line.startswith("## Paired differences from")]
    assert sections == ([f"## Paired differences from {heading}"] if heading else [])
    if heading:
        table = page.split(sections[0])[1].split("## All")[0]
        assert table.count("\n| ") >= len(variants) - 1 and "roc_auc mean_difference" in table
