"""Runs repeated over seeds, summarised: mean and spread of every test figure, and each model paired with
the reference models run by run.

A single seeded figure does not repeat on another machine or split; the split, the training draw and the
references all follow the seed, so the paired difference (model minus reference on the very same test
images) removes the spread the two share. Intervals are Student-t over the seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from siamese.config import RunConfig
from siamese.evaluation.tables import markdown_table
from siamese.runtime.json_files import read_json

PAIRED_METRICS = ("balanced_accuracy", "roc_auc", "accuracy", "macro_f1")


def seed_table(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (run, model) with the run's seed, every scalar test metric of ``metrics.json``, each
    class's recall (``recall_CLASS``, from ``per_class.csv``) and ``wall_seconds``: the two stages' training
    time for ``classifier`` and ``knn``, a trained reference's own (``finetune``), absent for the probes.

    Raises FileNotFoundError naming a folder without ``metrics.json`` (an unfinished run), ValueError when
    two runs share a seed, the runs differ in dataset or classes (they would not pair) or one is a final
    model (no test split)."""
    rows, seen = [], {}
    for run_dir in map(Path, run_dirs):
        path = run_dir / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: no metrics.json; is it a finished run folder?")
        metrics = read_json(path)
        if metrics.get("scored_on", "test") != "test":
            raise ValueError(f"{run_dir} is a final model scored on its {metrics['scored_on']} split (optimistic "
                             f"figures): summarise runs with a test split")
        config = RunConfig.load(run_dir / "config.json")
        task = (config.data.dataset, tuple(metrics["classifier"]["classes"]))
        if metrics["seed"] in seen:
            raise ValueError(f"{run_dir} and {seen[metrics['seed']][0]} both have seed {metrics['seed']}: "
                             f"summarise one run per seed")
        if seen and task != next(iter(seen.values()))[1]:
            raise ValueError(f"{run_dir} is a run on {task[0]} with classes {list(task[1])}, unlike "
                             f"{next(iter(seen.values()))[0]}: summarise runs of one task")
        settings = _training_settings(config.to_dict())
        if seen:
            first_dir, _, first_settings = next(iter(seen.values()))
            differ = sorted(k for k in set(settings) | set(first_settings) if settings.get(k) != first_settings.get(k))
            if differ:
                raise ValueError(f"{run_dir} and {first_dir} differ in more than the seed ({', '.join(differ[:6])}): "
                                 f"summarise repeats of one experiment")
        seen[metrics["seed"]] = (run_dir, task, settings)
        per_class = pd.read_csv(run_dir / "per_class.csv")
        seconds = {"classifier": metrics.get("wall_seconds"), "knn": metrics.get("wall_seconds"),
                   **metrics.get("reference_seconds", {})}
        for model in metrics.get("models", ("classifier", "knn")):
            recalls = per_class[per_class["model"] == model].set_index("class")["recall"]
            rows.append({"run": str(run_dir), "seed": metrics["seed"], "model": model,
                         **{k: v for k, v in metrics[model].items() if isinstance(v, float | int) and k != "n"},
                         **{f"recall_{c}": float(r) for c, r in recalls.items()},
                         "wall_seconds": seconds.get(model)})
    return pd.DataFrame(rows)


NOT_TRAINING = {"seed", "out", "preset", "device", "wandb", "references", "compile", "export_onnx", "deterministic"}
"""Settings that do not change what a run trains (or, like ``preset``, only name where the others came from)."""
NOT_TRAINING_DATA = {"data_dir", "metadata", "cache_dir", "num_workers", "split", "synthetic_seed"}


def _training_settings(config: dict) -> dict[str, object]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()
                         if not (key == "data" and k in NOT_TRAINING_DATA)})
        elif key not in NOT_TRAINING:
            flat[key] = value
    return flat


def summarize_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """``model, metric, mean, sd, runs``: the sample standard deviation over the runs."""
    metrics = [c for c in table.columns if c not in ("run", "seed", "model")]
    long = table.melt(id_vars=["model"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    out = long.groupby(["model", "metric"], sort=False)["value"].agg(mean="mean", sd="std", runs="count")
    return out.reset_index()


def paired_interval(differences: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, sample sd and a 95 % Student-t interval of paired differences (NaN spread below two pairs)."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    mean = float(differences.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(differences.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n))
    return mean, sd, mean - half, mean + half


def paired_with_references(table: pd.DataFrame, models: Sequence[str] = ("classifier", "knn", "patient_context"),
                           metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
    """Each of ``models`` minus every other model of the runs that is not one of them, run by run (paired by
    seed): mean difference, sd, 95 % interval and in how many runs the model is ahead."""
    present = list(dict.fromkeys(table["model"]))
    rows = []
    for model in (m for m in models if m in present):
        mine = table[table["model"] == model].set_index("seed")
        for reference in (r for r in present if r not in models):
            theirs = table[table["model"] == reference].set_index("seed")
            for metric in (m for m in metrics if m in table.columns):
                rows.append({"model": model, "reference": reference, "metric": metric,
                             **paired_difference(mine[metric], theirs[metric])})
    return pd.DataFrame(rows)


def paired_difference(mine: pd.Series, theirs: pd.Series) -> dict[str, float | int]:
    """``mine - theirs`` paired by index (a pair missing on either side is dropped): ``mean_difference``,
    ``sd``, ``ci95_low``, ``ci95_high`` (:func:`paired_interval`), ``runs_ahead`` and ``runs``."""
    difference = (mine - theirs).dropna()
    mean, sd, low, high = paired_interval(difference.to_numpy())
    return {"mean_difference": mean, "sd": sd, "ci95_low": low, "ci95_high": high,
            "runs_ahead": int((difference > 0).sum()), "runs": len(difference)}


def write_seed_summary(run_dirs: Sequence[str | Path], out: str | Path) -> list[Path]:
    """``seeds_table.csv``, ``seeds_summary.csv``, ``seeds_paired.csv`` and ``seeds_summary.md`` in ``out``."""
    table = seed_table(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, paired = summarize_seeds(table), paired_with_references(table)
    paths = [out / "seeds_table.csv", out / "seeds_summary.csv", out / "seeds_paired.csv", out / "seeds_summary.md"]
    table.to_csv(paths[0], index=False)
    summary.to_csv(paths[1], index=False)
    paired.to_csv(paths[2], index=False)
    runs = len(run_dirs)
    cells = [(f"{m:.3f} ± {s:.3f}" if s == s else f"{m:.3f}") + ("" if n == runs else f" ({n} runs)")
             for m, s, n in zip(summary["mean"], summary["sd"], summary["runs"], strict=True)]
    wide = summary.assign(value=cells)
    wide = wide.pivot(index="metric", columns="model", values="value")[list(dict.fromkeys(table["model"]))]
    lines = [f"# {len(run_dirs)} runs (seeds {sorted(set(table['seed']))}): test figures, mean ± sd", "",
             markdown_table(wide.reset_index()), "", "## Paired differences (run by run)", "",
             markdown_table(paired), ""]
    paths[3].write_text("\n".join(lines))
    return paths
