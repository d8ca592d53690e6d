"""The evaluation figures and the one-page ``report.md`` of a run, readable without any dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese.data.images import PixelSource
from siamese.evaluation.figures import confusion_matrices, image_grid, per_class_bars, roc_curves
from siamese.evaluation.tables import markdown_table
from siamese.runtime.json_files import read_json

EVALUATION_PLOTS = ("confusion_matrix.png", "roc.png", "per_class.png", "confident_errors.png")
FINAL_MODEL_NOTE = ("no test split (a final model): the figures are on the validation split, which picked both "
                    "stages' best epochs, so the classifier's and k-NN's are optimistic; the reference models "
                    "were fitted on the training split alone and did not choose on it. For an estimate of "
                    "performance train with a test split, or run `python -m siamese cv`")
"""What a final model's scores mean, said where they are shown (training's warning, ``report.md``)."""


def _listed(counts: dict[str, Any]) -> str:
    """``{'embed': 5, 'classifier': 36}`` as ``embed 5, classifier 36``."""
    return ", ".join(f"{key} {value}" for key, value in counts.items())


def _machine_lines(metrics: dict[str, Any]) -> list[str]:
    """Where and how long the run trained, for runs that recorded it."""
    if "machine" not in metrics:
        return []
    wall = metrics.get("wall_seconds")
    tuned = (metrics.get("reference_seconds") or {}).get("finetune")
    fitted = f", and the `finetune` reference {tuned / 60:.1f} min more" if tuned else ""
    took = (f"; training its two stages took {wall / 60:.1f} min of wall time{fitted} (a resumed run counts from "
            "its resumption)") if wall else ""
    return [f"Trained on {metrics['machine']}{took}.", ""]


def _stage_one_text(embed: dict[str, Any]) -> str:
    """Stage 1's recipe in one line (configs written before the schedule was a choice trained at a constant
    rate)."""
    miner = f", miner `{embed['miner']}`" if embed.get("miner") not in (None, "none") else ""
    return (f"Stage 1: `{embed['loss']}` loss{miner}, {embed['epochs']} epochs, learning rate {embed['lr']:g} "
            f"({embed.get('lr_schedule', 'constant')}; the backbone's x {embed['backbone_lr_scale']:g}), batch "
            f"{embed['batch_size']}.")


def _crop_text(crop: dict[str, Any] | None) -> str:
    """A run's lesion-crop settings in words: ``none``, or its settings listed."""
    return "none" if not crop or crop.get("mode") == "none" else _listed(crop)


def predictions_path(run_dir: Path, split: str) -> Path:
    """The per-image predictions of the split a run is scored on: ``test_predictions.csv``, or
    ``val_predictions.csv`` for a final model (no test split)."""
    return run_dir / f"{split}_predictions.csv"


def scored_predictions(run_dir: Path, split: str) -> tuple[pd.DataFrame, list[str]]:
    classes = read_json(run_dir / "preprocess.json")["classes"]
    return pd.read_csv(predictions_path(run_dir, split), dtype={"image_id": str, "label": str,
                                                                 "classifier_pred": str, "knn_pred": str}), classes


def write_evaluation_plots(run_dir: Path, pixels: PixelSource, split: str = "test",
                           errors: int = 12) -> dict[str, Path]:
    """Confusion matrices, ROC, per-class bars and the most confident errors with their images, of the
    split the run is scored on (``pixels``: that split's; ``val`` for a final model, named in the titles)."""
    frame, classes = scored_predictions(run_dir, split)
    code = {c: i for i, c in enumerate(classes)}
    y_true = frame["label"].map(code).to_numpy()
    proba = frame[[f"classifier_p_{c}" for c in classes]].to_numpy()
    y_pred = proba.argmax(axis=1)
    per_class = pd.read_csv(run_dir / "per_class.csv")
    out = {
        "confusion_matrix": confusion_matrices(y_true, y_pred, classes, run_dir / "confusion_matrix.png"),
        "roc": roc_curves(y_true, proba, classes, run_dir / "roc.png", split),
        "per_class": per_class_bars(per_class[per_class["model"] == "classifier"], run_dir / "per_class.png",
                                    split),
    }
    confidence = proba.max(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    worst = wrong[np.argsort(-confidence[wrong])][:errors]
    captions = [f"{frame['image_id'].iloc[i]}\ntrue {classes[y_true[i]]}, said {classes[y_pred[i]]} "
                f"({confidence[i]:.2f})" for i in worst]
    out["confident_errors"] = image_grid([pixels[int(i)] for i in worst], captions,
                                         run_dir / "confident_errors.png", f"most confident {split} errors")
    return out


def _metrics_table(metrics: dict) -> str:
    columns = ["accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "roc_auc"]
    columns += [k for k in metrics["classifier"] if k.startswith("top") and k.endswith("_accuracy")]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in metrics.get("models", ("classifier", "knn")):
        values = [metrics[name].get(c) for c in columns]
        lines.append(f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def _patient_context_lines(metrics: dict) -> list[str]:
    """What the ugly-duckling signal says beside the model that uses it (``--patient-context``)."""
    signal = metrics.get("patient_context_signal")
    if not signal:
        return []
    return ["Patient context: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else
                                            f"{k.replace('_', ' ')} {v}" for k, v in signal.items()) +
            " (control: the same refit without the context).", ""]


def _reference_lines(metrics: dict) -> list[str]:
    """How each reference model was made (``reference_notes``) and the wall time of the trained ones beside the
    two stages', so a figure can be weighed against what it cost."""
    notes = metrics.get("reference_notes") or {}
    if not notes:
        return []
    lines = [f"- `{name}`: {note}" for name, note in notes.items()]
    if metrics.get("wall_seconds") is not None and metrics.get("reference_seconds"):
        lines.append(f"- the two stages trained in {metrics['wall_seconds']:.0f} s")
    return ["Reference models:", "", *lines, ""]


def _robustness_lines(run_dir: Path) -> list[str]:
    """The latest ``robustness`` audit of this run, when there is one whose folder still exists."""
    pointer = run_dir / "robustness.json"
    if not pointer.is_file():
        return []
    info = read_json(pointer)
    out = Path(info["out"])
    if not (out / "robustness_summary.csv").is_file():
        return []
    from siamese.robustness.audit import robustness_section

    figures = tuple(str(out / name) for name in ("robustness_by_type.png", "robustness_pairs.png"))
    return [*robustness_section(pd.read_csv(out / "robustness_summary.csv"), info, figures), ""]


def write_report(run_dir: Path) -> Path:
    """``report.md``: metrics, per-class table, data summary and every figure the run folder holds; a final
    model's validation figures are headed as such, with :data:`FINAL_MODEL_NOTE`."""
    metrics = read_json(run_dir / "metrics.json")
    scored = metrics.get("scored_on", "test")  # runs written before final models were scored on test
    heading = ["## Test metrics", ""] if scored == "test" else [
        "## Validation metrics (a final model)", "", f"Warning: {FINAL_MODEL_NOTE}.", ""]
    config = read_json(run_dir / "config.json")
    per_class = pd.read_csv(run_dir / "per_class.csv")
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Dataset `{config['data']['dataset']}`, backbone `{config['model']['backbone']}` "
        f"(weights `{config['model']['weights']}`), {config['data']['image_size']} px, "
        f"embedding {config['model']['embedding_dim']}-d, seed {config['seed']}. "
        f"Best epochs: {_listed(metrics['best_epochs'])}. Split sizes: {_listed(metrics['split_sizes'])}.",
        "",
        _stage_one_text(config["embed"]),
        "",
        f"Excluded images: {metrics['excluded'] or 'none'}. Lesion crop: {_crop_text(metrics.get('crop'))}.",
        "",
        *_machine_lines(metrics),
        *heading,
        _metrics_table(metrics),
        "",
        *_patient_context_lines(metrics),
        *_reference_lines(metrics),
        f"## Per class ({scored})",
        "",
        markdown_table(per_class),
        "",
        "## Figures",
        "",
    ]
    figures = sorted(p.relative_to(run_dir) for p in run_dir.glob("*.png"))
    figures += sorted(p.relative_to(run_dir) for p in (run_dir / "projections").glob("*.png"))
    figures += sorted(p.relative_to(run_dir) for p in (run_dir / "saliency").glob("*.png"))
    for figure in figures:
        lines += [f"### {figure.stem.replace('_', ' ')}", "", f"![{figure.stem}]({figure.as_posix()})", ""]
    lines += _robustness_lines(run_dir)
    files = ["metrics.json", "per_class.csv", f"{scored}_predictions.csv", "history.csv", "split.csv",
             "split_audit.json", "config.json", "preprocess.json", "embedder.pt", "classifier.pt", "model.onnx",
             "embeddings", "references"]
    lines += ["## Files", "", ", ".join(f"`{name}`" for name in files if (run_dir / name).exists()) + "."]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
