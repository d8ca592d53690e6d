"""Cross-validation tables, pooled figures and the one-page report.

Quality is reported as mean and standard deviation over every (seed, fold): a single seeded figure
does not repeat on another machine, and on 160 images one split says little.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from siamese.config import CVConfig, RunConfig
from siamese.evaluation.figures import confusion_matrix_panels, model_roc_curves
from siamese.evaluation.metrics import PARTIAL_AUC, classification_metrics
from siamese.evaluation.tables import markdown_table

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
BINARY_METRICS = (PARTIAL_AUC,)
"""Reported beside :data:`METRICS` for a two-class task: ISIC 2024's partial AUC above 80 % sensitivity."""


def metrics_in(folds: pd.DataFrame) -> list[str]:
    """The metrics the fold rows hold: :data:`METRICS`, and :data:`BINARY_METRICS` for a two-class task."""
    return [*METRICS, *(m for m in BINARY_METRICS if m in folds.columns and folds[m].notna().any())]


def fold_rows(seed: int, fold: int, y_true: np.ndarray, proba: dict[str, np.ndarray], classes: list[str],
              train_seconds: float, model_seconds: dict[str, float] | None = None) -> list[dict]:
    """One row per model: the four headline metrics on this fold's held-out images (AUC is binary ROC-AUC,
    or the macro one-vs-rest AUC for more classes), the fold's training time (``train_seconds``: its whole
    run) and the model's own (``model_seconds``: the two stages', a trained reference's; NaN for a probe)."""
    rows = []
    for model, p in proba.items():
        summary, _ = classification_metrics(y_true, p, classes)
        rows.append({"seed": seed, "fold": fold, "model": model, "n": len(y_true),
                     **{m: summary[m] for m in METRICS}, **{m: summary[m] for m in BINARY_METRICS if m in summary},
                     "train_seconds": train_seconds, "model_seconds": (model_seconds or {}).get(model, np.nan)})
    return rows


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """``model,metric,mean,std`` over all (seed, fold) rows, with the sample standard deviation."""
    metrics = metrics_in(folds)
    long = folds.melt(id_vars=["model"], value_vars=metrics, var_name="metric")
    order = {m: i for i, m in enumerate(dict.fromkeys(folds["model"]))}
    table = long.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    table["metric"] = pd.Categorical(table["metric"], metrics)
    return table.sort_values(["model", "metric"], key=lambda c: c.map(order) if c.name == "model" else c,
                             ignore_index=True).astype({"metric": str})


PAIRED_REFERENCES = ("colour_baseline", "imagenet_probe")


def paired_differences(folds: pd.DataFrame, references: tuple[str, ...] = PAIRED_REFERENCES) -> pd.DataFrame:
    """Each model minus each of ``references`` present, on the same held-out images, fold by fold: the mean
    difference, its standard deviation and in how many folds the model is ahead. Pairing removes the
    fold-to-fold spread the two share (an easy fold is easy for both), which the marginal means and sds hide."""
    columns = ["reference", "model", "metric", "mean_difference", "std", "folds_ahead", "folds"]
    tables = [_paired_with(folds, r) for r in references if r in set(folds["model"])]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


def _paired_with(folds: pd.DataFrame, reference: str) -> pd.DataFrame:
    base = folds[folds["model"] == reference].set_index(["seed", "fold"])
    rows = []
    for model in dict.fromkeys(folds["model"]):
        if model == reference:
            continue
        other = folds[folds["model"] == model].set_index(["seed", "fold"])
        for metric in metrics_in(folds):
            diff = (other[metric] - base[metric]).dropna()
            rows.append({"reference": reference, "model": model, "metric": metric,
                         "mean_difference": diff.mean(), "std": diff.std(),
                         "folds_ahead": int((diff > 0).sum()), "folds": len(diff)})
    return pd.DataFrame(rows)


def pooled(oof: pd.DataFrame, model: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """True class indices and one model's probabilities over every out-of-fold prediction of every seed."""
    y = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y, oof[[f"{model}_p_{c}" for c in classes]].to_numpy()


def models_in(oof: pd.DataFrame, classes: list[str]) -> list[str]:
    suffix = f"_p_{classes[0]}"
    return [c.removesuffix(suffix) for c in oof.columns if c.endswith(suffix)]


def write_cv_figures(oof: pd.DataFrame, classes: list[str], out: Path) -> list[Path]:
    """Pooled row-normalised confusion matrices and ROC curves, one per model, over all seeds."""
    matrices, probas = {}, {}
    for model in models_in(oof, classes):
        y, proba = pooled(oof, model, classes)
        summary, _ = classification_metrics(y, proba, classes)
        matrices[model] = summary["confusion_matrix"]
        probas[model] = proba
    y = pooled(oof, models_in(oof, classes)[0], classes)[0]
    return [confusion_matrix_panels(matrices, classes, out / "cv_confusion_matrices.png"),
            model_roc_curves(y, probas, classes, out / "cv_roc.png")]


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Models as rows, metrics as ``mean ± sd`` columns, for the report and the README."""
    cells = summary.assign(cell=[f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
                                 for m, s in zip(summary["mean"], summary["std"], strict=True)])
    wide = cells.pivot(index="model", columns="metric", values="cell")
    order = list(dict.fromkeys(summary["model"]))
    return wide.loc[order, [m for m in (*METRICS, *BINARY_METRICS) if m in wide.columns]].reset_index()


def _trained_seconds(folds: pd.DataFrame) -> dict[str, float]:
    """Seconds each trained reference (``finetune``) took over all folds: ``model_seconds`` of the models that
    are neither the two stages nor a probe."""
    if "model_seconds" not in folds.columns:
        return {}
    own = folds[~folds["model"].isin(("classifier", "knn"))].dropna(subset=["model_seconds"])
    return own.groupby("model", sort=False)["model_seconds"].sum().to_dict()


def write_cv_report(out: Path, config: RunConfig, cv: CVConfig, summary: pd.DataFrame, folds: pd.DataFrame,
                    classes: list[str], timing: dict[str, float], machine: str, notes: list[str] | None = None
                    ) -> Path:
    n_runs = folds[["seed", "fold"]].drop_duplicates().shape[0]
    paired = paired_differences(folds)
    paired.to_csv(out / "cv_paired.csv", index=False)
    paired_lines = []
    for reference, group in paired.groupby("reference", sort=False):
        cells = group[group["model"] != "majority"].assign(
            cell=lambda t: [f"{m:+.3f} ± {s:.3f} (ahead in {a} of {n})" for m, s, a, n in
                            zip(t["mean_difference"], t["std"], t["folds_ahead"], t["folds"], strict=True)])
        if cells.empty:
            continue
        table = cells.pivot(index="model", columns="metric", values="cell")[metrics_in(folds)].reset_index()
        paired_lines += [f"Paired with `{reference}` on the same held-out images (model minus reference, "
                         "mean ± sd over folds; `cv_paired.csv`):", "", markdown_table(table), ""]
    lines = [
        f"# Cross-validation: {config.data.dataset}{' (binary)' if config.data.binary else ''}",
        "",
        f"{cv.folds} grouped, stratified folds x seeds {list(cv.seeds)} ({n_runs} trainings); classes "
        f"{classes}. Mean ± sample standard deviation over all (seed, fold) pairs; AUC is the ROC-AUC "
        f"(binary) or the macro one-vs-rest AUC. The reference models are fitted on the same training folds.",
        "",
        markdown_table(format_summary(summary)),
        "",
        *paired_lines,
        *[f"{note}\n" for note in notes or []],
        f"Training time of the {n_runs} folds: {timing['training_seconds'] / 60:.1f} min "
        f"(this call: {timing['this_call_seconds'] / 60:.1f} min); machine: {machine}."
        + "".join(f" Of it, `{m}`: {t / 60:.1f} min." for m, t in _trained_seconds(folds).items()),
        "",
        "![pooled confusion matrices](cv_confusion_matrices.png)",
        "",
        "![pooled ROC](cv_roc.png)",
        "",
        "Per fold: `cv_folds.csv`; out-of-fold probabilities: `oof_predictions.csv`; each fold's run folder: "
        "`seed*/fold*/`.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps({"run": config.to_dict(), "cv": asdict(cv)}, indent=2),
        "```",
    ]
    path = out / "cv_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
