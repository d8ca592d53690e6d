"""``python -m siamese compare``: stage-1 recipes (loss, miner, cross-entropy weight) side by side.

Every recipe trains on the same folds (``cv``, :func:`~siamese.workflows.crossval.runner.run_cv`) or the same seeded
train/val/test splits (``train`` runs, read back as ``summarize`` reads them,
:func:`~siamese.evaluation.seeds.seed_table`), under ``OUT/RECIPE/``; a finished fold or run is reused when
the command is run again. The references are scored on the very same held-out images: the probes (such as
``colour_baseline``) in every recipe's runs, a trained reference (``finetune``, which does not depend on the
recipe) in the first recipe's only. Each recipe's model is paired with each reference run by run (the same
(seed, fold)), as ``summarize`` pairs them: mean difference, Student-t 95 % interval, runs ahead. Written to
``compare.csv`` (one row per recipe and model), ``compare.md`` and ``compare.png``; the command adds the page
``compare.html`` (:func:`siamese.diagnostics.compare_page.write_compare_page`, which a notebook calls on ``out``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siamese.config import RESUMABLE, CVConfig, RunConfig, differing_settings
from siamese.data.table import DataError
from siamese.evaluation.reference_models import REFERENCE_MODELS, check_references
from siamese.evaluation.seeds import paired_interval, seed_table
from siamese.evaluation.tables import markdown_table
from siamese.runtime.json_files import read_json
from siamese.training.losses import check_objective, default_miner
from siamese.workflows.crossval.runner import FREE_SETTINGS, run_cv
from siamese.workflows.training_run import run_training

METRICS = ("balanced_accuracy", "roc_auc")
MODELS = ("classifier", "knn")
"""The two-stage model's read-outs compared; every other model of the runs is a reference."""


@dataclass(frozen=True)
class Recipe:
    """One stage-1 objective: a loss, its miner and the cross-entropy head's weight (0: none)."""

    loss: str
    miner: str
    ce_weight: float = 0.0

    @property
    def name(self) -> str:
        """A folder-safe name: ``LOSS-MINER`` and ``-ceW`` with a head."""
        return f"{self.loss}-{self.miner}" + (f"-ce{self.ce_weight:g}" if self.ce_weight else "")


def parse_recipe(text: str) -> Recipe:
    """``LOSS[:MINER[:CE_WEIGHT]]`` (e.g. ``triplet``, ``contrastive:hard``, ``supcon:none:0.5``, ``arcface::0.2``);
    the miner defaults to the loss's own. Raises ValueError as ``train`` would, naming the recipe."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"recipe {text!r}: expected LOSS[:MINER[:CE_WEIGHT]]")
    try:
        weight = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        raise ValueError(f"recipe {text!r}: the cross-entropy weight {parts[2]!r} is not a number") from None
    recipe = Recipe(parts[0], parts[1] if len(parts) > 1 and parts[1] else default_miner(parts[0]), weight)
    probe = RunConfig().embed
    probe.loss, probe.miner, probe.ce_weight = recipe.loss, recipe.miner, recipe.ce_weight
    try:
        check_objective(probe)
    except ValueError as exc:
        raise ValueError(f"recipe {text!r}: {exc}") from None
    return recipe


def recipe_config(config: RunConfig, recipe: Recipe, references: tuple[str, ...]) -> RunConfig:
    """A copy of ``config`` training with ``recipe``, scored beside ``references``."""
    config = copy.deepcopy(config)
    config.embed.loss, config.embed.miner, config.embed.ce_weight = recipe.loss, recipe.miner, recipe.ce_weight
    config.references = references
    return config


def run_recipes(config: RunConfig, recipes: Sequence[Recipe], out: str | Path, folds: int, seeds: Sequence[int],
                references: Sequence[str] = ("finetune", "colour_baseline")) -> pd.DataFrame:
    """Train every recipe on the same ``folds`` (>= 2: a CV per recipe) or, with ``folds`` 0, one train/val/test
    run per seed; returns the long table ``recipe, seed, fold, model, METRICS..., seconds`` (``seconds``: the
    model's own training time). Raises ValueError for an unknown reference or no recipe."""
    if not recipes:
        raise ValueError("compare needs at least one recipe (--recipes)")
    if folds == 1 or folds < 0:
        raise ValueError(f"--folds must be 0 (one train/val/test run per seed) or at least 2; got {folds}")
    check_references(references)
    out = Path(out)
    trained = tuple(r for r in references if REFERENCE_MODELS[r].trained)
    probes = tuple(r for r in references if r not in trained)
    tables = []
    for i, recipe in enumerate(recipes):
        carried = (*trained, *probes) if i == 0 else probes  # a trained reference does not depend on the recipe
        run_config = recipe_config(config, recipe, carried)
        if folds:
            result = run_cv(run_config, CVConfig(folds=folds, seeds=tuple(seeds), references=carried),
                            out / recipe.name)
            table = result.folds.rename(columns={"model_seconds": "seconds"})
        else:
            table = seed_table([_seed_run(run_config, out / recipe.name / f"seed{seed}", seed) for seed in seeds])
            table = table.assign(fold=0).rename(columns={"wall_seconds": "seconds"})
        tables.append(table[["seed", "fold", "model", *METRICS, "seconds"]].assign(recipe=recipe.name))
    return pd.concat(tables, ignore_index=True)


def _seed_run(config: RunConfig, run_dir: Path, seed: int) -> Path:
    """One recipe's run at ``seed``: reused when finished, resumed when started. Raises DataError when the
    folder holds a run with other settings (``FREE_SETTINGS`` and what a resumed run may change aside): its
    figures would not be this recipe's."""
    config = copy.deepcopy(config)
    config.seed, config.out = seed, str(run_dir)
    saved = run_dir / "config.json"
    if not saved.is_file():
        return run_training(config)
    # both through RunConfig and JSON: a saved config names the compute it resolved ``auto`` to, holds lists
    # for tuples and lacks settings added since; none of that makes its figures another recipe's
    ran = json.loads(json.dumps(RunConfig.from_dict(read_json(saved)).to_dict()))
    asked = json.loads(json.dumps(config.to_dict()))
    free = {name.removeprefix("run.") for name in FREE_SETTINGS} | {"out"}  # the folder read, however spelled
    changed = sorted(name for name in differing_settings(ran, asked)
                     if name not in free and name.rpartition(".")[2] not in RESUMABLE)
    if changed:
        raise DataError(f"{run_dir} holds a run with other settings ({', '.join(changed[:6])}); run compare with "
                        f"the same options or choose another --out")
    return run_dir if (run_dir / "metrics.json").is_file() else run_training(config, resume=run_dir)


def comparison_table(long: pd.DataFrame, recipes: Sequence[Recipe], references: Sequence[str]) -> pd.DataFrame:
    """One row per (recipe, model): mean and sd of each of :data:`METRICS` over the runs, the paired
    difference from each reference (``{metric}_vs_{reference}``: mean, 95 % interval low and high, runs ahead
    of runs) and the mean training seconds. A trained reference is taken from whichever recipe's runs hold it."""
    keyed = long.set_index(["seed", "fold"])
    held = {r: keyed[keyed["model"] == r].groupby(level=[0, 1]).first() for r in references}
    rows = []
    for recipe in recipes:
        mine = keyed[keyed["recipe"] == recipe.name]
        for model in MODELS:
            own = mine[mine["model"] == model]
            row = {"recipe": recipe.name, "loss": recipe.loss, "miner": recipe.miner, "ce_weight": recipe.ce_weight,
                   "model": model, "runs": len(own), "seconds": own["seconds"].mean()}
            for metric in METRICS:
                row[f"{metric}_mean"], row[f"{metric}_sd"] = own[metric].mean(), own[metric].std()
                for reference in references:
                    difference = (own[metric] - held[reference][metric]).dropna()
                    mean, _, low, high = paired_interval(difference.to_numpy())
                    prefix = f"{metric}_vs_{reference}"
                    row |= {prefix: mean, f"{prefix}_low": low, f"{prefix}_high": high,
                            f"{prefix}_ahead": int((difference > 0).sum()), f"{prefix}_runs": len(difference)}
            rows.append(row)
    for reference in references:
        own = held[reference]
        row = {"recipe": f"({reference})", "model": reference, "runs": len(own),
               "seconds": long.loc[long["model"] == reference, "seconds"].mean()}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = own[metric].mean(), own[metric].std()
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, references: Sequence[str]) -> str:
    """The table as Markdown: ``mean ± sd`` per metric, ``+diff [low, high] (ahead/runs)`` per reference."""
    def cell(row: pd.Series, prefix: str) -> str:
        if pd.isna(row.get(prefix)):
            return ""
        interval = (f" [{row[prefix + '_low']:+.3f}, {row[prefix + '_high']:+.3f}]"
                    if pd.notna(row[prefix + "_low"]) else "")
        return f"{row[prefix]:+.3f}{interval} ({int(row[prefix + '_ahead'])}/{int(row[prefix + '_runs'])})"

    frame = pd.DataFrame({"recipe": table["recipe"], "model": table["model"], "runs": table["runs"]})
    for metric in METRICS:
        frame[metric] = [f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
                         for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_sd"], strict=True)]
        for reference in references:
            frame[f"{metric} vs {reference}"] = [cell(row, f"{metric}_vs_{reference}") for _, row in table.iterrows()]
    frame["train s"] = [f"{s:.0f}" if pd.notna(s) else "" for s in table["seconds"]]
    return markdown_table(frame)


def plot(table: pd.DataFrame, references: Sequence[str], path: Path) -> Path:
    """Each recipe's classifier minus each reference (one panel per reference), per metric, with 95 % intervals."""
    from siamese.evaluation.figures import new_figure

    rows = table[table["model"] == "classifier"].reset_index(drop=True)
    fig, axes = new_figure(1, len(references), figsize=(5 * len(references), 1.2 + 0.5 * len(rows)), squeeze=False,
                           sharey=True)
    y = np.arange(len(rows))
    for ax, reference in zip(axes[0], references, strict=True):
        for k, metric in enumerate(METRICS):
            prefix = f"{metric}_vs_{reference}"
            mean = rows[prefix].to_numpy(dtype=float)
            error = np.abs(np.vstack([mean - rows[prefix + "_low"], rows[prefix + "_high"] - mean]).astype(float))
            ax.errorbar(mean, y + 0.15 * (k - 0.5), xerr=np.nan_to_num(error), fmt="os"[k], capsize=3,
                        label=metric.replace("_", " "))
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(f"classifier minus {reference}")
        ax.set_xlabel("paired difference (95 % interval)")
    axes[0][0].set_yticks(y, rows["recipe"])
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def compare_recipes(config: RunConfig, recipes: Sequence[Recipe], out: str | Path, folds: int = 5,
                    seeds: Sequence[int] = (0, 1, 2), references: Sequence[str] = ("finetune", "colour_baseline")
                    ) -> list[Path]:
    """Train (:func:`run_recipes`) and write ``compare_runs.csv`` (every run's figures), ``compare.csv``,
    ``compare.md`` and ``compare.png`` in ``out``; returns their paths."""
    out = Path(out)
    long = run_recipes(config, recipes, out, folds, seeds, references)
    table = comparison_table(long, recipes, references)
    paths = [out / "compare_runs.csv", out / "compare.csv", out / "compare.md", out / "compare.png"]
    long.to_csv(paths[0], index=False)
    table.to_csv(paths[1], index=False)
    design = f"{folds} grouped folds x seeds {list(seeds)}" if folds else f"train/val/test runs, seeds {list(seeds)}"
    paths[2].write_text("\n".join([
        f"# Stage-1 recipes on {config.data.dataset}: {design}", "",
        "Mean ± sd over the runs; each reference column is the recipe's model minus the reference on the same "
        "held-out images, run by run: mean [95 % Student-t interval] (runs ahead / runs). `train s`: the two "
        "stages' (or the trained reference's) training seconds per run.", "",
        markdown(table, references), "", "![paired differences](compare.png)", ""]))
    plot(table, references, paths[3])
    return paths
