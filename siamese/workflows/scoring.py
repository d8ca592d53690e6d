"""A trained run scored: the dense classifier, the k-NN vote, the reference models and the patient context
on the run's test split (its validation split for a final model), written as ``metrics.json``,
``per_class.csv`` and the predictions; and a finished run scored again without training.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from siamese.config import RunConfig
from siamese.evaluation.metrics import classification_metrics, positive_index
from siamese.evaluation.patient_context import patient_context_proba, ugly_duckling_features
from siamese.evaluation.reference_models import check_references
from siamese.evaluation.reference_scores import reference_probabilities
from siamese.models import DenseClassifier, EmbeddingNet, check_trained_on, load_checkpoint
from siamese.runtime.device import machine_description, resolve_device
from siamese.runtime.json_files import read_json
from siamese.training.classify import classifier_choice, knn_proba, predict_proba
from siamese.training.finetune import finetune_reference
from siamese.workflows.run_data import RunData, build_run_data, classifier_inputs, shared_features, split_embeddings
from siamese.workflows.run_report import FINAL_MODEL_NOTE, predictions_path, write_evaluation_plots, write_report


def rescore_run(run_dir: str | Path, references: tuple[str, ...] | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a finished run again from its cached embeddings and best checkpoints, without training:
    the metrics (of the test split, or the validation split of a final model), predictions, plots and
    report are rewritten, with the reference models fitted anew.

    Args:
        run_dir: the run folder.
        references: the reference models to score beside it (default: the run's own ``config.references``);
            saved into its ``config.json``.
        device: where the networks run (``auto``, ``cpu``, ``cuda``).

    Returns:
        The new ``metrics.json`` contents.

    Raises:
        FileNotFoundError: the run has not finished stage 2 (no ``classifier.pt``).
        ValueError: an unknown reference model.
        CheckpointError: ``embedder.pt`` is not the embedder ``classifier.pt`` was trained on.
    """
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / "config.json")
    if not (run_dir / "classifier.pt").is_file():
        raise FileNotFoundError(f"{run_dir}: no classifier.pt; finish the run first (train.py --resume {run_dir})")
    if references is not None:
        check_references(references)
        config.references = tuple(references)
        config.save(run_dir / "config.json")
    torch_device = resolve_device(device)
    data = build_run_data(config, run_dir)
    model = EmbeddingNet.from_checkpoint(run_dir / "embedder.pt").to(torch_device)
    embeddings = {s: split_embeddings(model, data.dataset(s), data.parts[s], run_dir, config, torch_device)
                  for s in data.splits}
    check_trained_on(run_dir / "classifier.pt", model, run_dir / "embedder.pt")
    classifier = DenseClassifier.from_checkpoint(run_dir / "classifier.pt").to(torch_device).eval()
    best_epochs = {"embed": load_checkpoint(run_dir / "embedder.pt")["epoch"],
                   "classifier": load_checkpoint(run_dir / "classifier.pt")["epoch"]}
    trained = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    results = evaluate_run(run_dir, data, embeddings, classifier, config, torch_device, best_epochs,
                           trained.get("wall_seconds"), trained.get("machine"))
    write_evaluation_plots(run_dir, data.sources[data.scored], data.scored)
    write_report(run_dir)
    return results


def evaluate_run(run_dir: Path, data: RunData, embeddings: dict[str, np.ndarray], classifier: Any,
                 config: RunConfig, device: Any, best_epochs: dict[str, int],
                 wall_seconds: float | None = None, machine: str | None = None) -> dict[str, Any]:
    """Metrics of the dense classifier, the k-NN vote, the reference models (``config.references``: the
    probes, and ``finetune``, trained here unless cached, its wall time in ``reference_seconds``) and, with
    ``classifier.patient_context``, the classifier with each lesion's patient context, on the run's test
    split: ``metrics.json`` (``scored_on``: the split scored), ``per_class.csv``, ``test_predictions.csv``
    (:func:`~siamese.workflows.run_report.predictions_path`).

    A final model (no test split) is scored on its validation split instead, with a warning
    (:data:`FINAL_MODEL_NOTE`): the two stages' figures are optimistic there, since that split picked their
    best epochs; the references are then fitted on the training split alone, so theirs stay held out.
    ``wall_seconds``: the training call's wall time before evaluation (since resuming, for a resumed run);
    ``machine``: where it trained (default: this machine)."""
    classes, targets, scored = data.prep.classes, data.targets, data.scored
    if scored != "test":
        warnings.warn(FINAL_MODEL_NOTE, stacklevel=2)
    inputs = classifier_inputs(run_dir, data, embeddings, config)
    proba = {"classifier": predict_proba(classifier, inputs[scored], device),
             "knn": knn_proba(embeddings["train"], targets["train"], embeddings[scored], len(classes),
                              config.classifier.knn_k)}
    extra: dict[str, Any] = {}
    if config.classifier.patient_context:
        proba["patient_context"], extra["patient_context_signal"] = _patient_context(
            data, embeddings, predict_proba(classifier, inputs["val"], device), proba["classifier"], config)
    ids = {s: data.parts[s]["image_id"].to_numpy() for s in data.splits}
    references, notes = reference_probabilities(run_dir, sources=data.sources, ids=ids, targets=targets,
                                                embeddings=embeddings, n_classes=len(classes),
                                                names=config.references, backbone=config.model.backbone,
                                                seed=config.seed, scored=scored,
                                                shared=shared_features(config, data))
    reference_seconds = {}
    if "finetune" in config.references:
        datasets = {"train": data.dataset("train", config.data.augment), "val": data.dataset("val"),
                    scored: data.dataset(scored)}
        tuned = finetune_reference(run_dir, datasets, scored=scored, n_classes=len(classes), mean=data.prep.mean,
                                   std=data.prep.std, image_ids=ids[scored], config=config, device=device)
        references["finetune"], notes["finetune"] = tuned.proba, tuned.note()
        reference_seconds["finetune"] = tuned.seconds
    proba.update({name: references[name] for name in config.references})
    results: dict[str, Any] = {"scored_on": scored}
    tables = []
    for name, p in proba.items():
        summary, per_class = classification_metrics(targets[scored], p, classes)
        results[name] = summary
        tables.append(per_class.assign(model=name))
    results.update(best_epochs=best_epochs, excluded=data.excluded, crop=data.cropping,
                   split_sizes={s: int(len(t)) for s, t in targets.items()},
                   seed=config.seed, models=list(proba), reference_notes=notes, reference_seconds=reference_seconds,
                   classifier_choice=classifier_choice(run_dir / "classifier.pt"),
                   **extra,
                   machine=machine or machine_description(), wall_seconds=wall_seconds)
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    pd.concat(tables)[["model", "class", "precision", "recall", "f1", "support"]].to_csv(
        run_dir / "per_class.csv", index=False)
    _write_predictions(run_dir, scored, targets[scored], proba, classes)
    return results


def _patient_context(data: RunData, embeddings: dict[str, np.ndarray], val_proba: np.ndarray, test_proba: np.ndarray,
                     config: RunConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The classifier with the ugly-duckling signal (fitted on the validation split), and what the signal
    says on its own: the test ROC-AUC of each distance among lesions with context (binary tasks), and the
    control (the same refit on the classifier's output alone), so a gain can be told from a recalibration."""
    patients = {s: data.parts[s]["group"].astype(str).to_numpy() for s in ("val", "test")}
    val = (val_proba, embeddings["val"], patients["val"],
           data.targets["val"])
    test = (test_proba, embeddings["test"], patients["test"])
    n_classes = len(data.prep.classes)
    proba = patient_context_proba(val, test, n_classes, config.seed)
    control = patient_context_proba(val, test, n_classes, config.seed, use_context=False)
    control_summary, _ = classification_metrics(data.targets["test"], control, data.prep.classes)
    signal = ugly_duckling_features(embeddings["test"], patients["test"])
    with_context = signal[:, 2] == 1
    info: dict[str, Any] = {"test_images_with_context": int(with_context.sum()),
                            "test_patients": int(len(np.unique(patients["test"]))),
                            "control_roc_auc": control_summary["roc_auc"],
                            "control_balanced_accuracy": control_summary["balanced_accuracy"]}
    if n_classes == 2:
        positive = data.targets["test"][with_context] == positive_index(data.prep.classes)
        both = 0 < positive.sum() < len(positive)
        for name, column in (("distance", 0), ("odd_one_out_ratio", 1)):
            info[f"{name}_roc_auc"] = float(roc_auc_score(positive, signal[with_context, column])) if both else None
    return proba, info


def _write_predictions(run_dir: Path, split: str, y_true: np.ndarray, proba: dict[str, np.ndarray],
                       classes: list[str]) -> None:
    ids = np.load(run_dir / "embeddings" / f"{split}.npz")["image_id"]
    frame = pd.DataFrame({"image_id": ids, "label": np.array(classes)[y_true]})
    for name, p in proba.items():
        frame[f"{name}_pred"] = np.array(classes)[p.argmax(axis=1)]
        for i, c in enumerate(classes):
            frame[f"{name}_p_{c}"] = p[:, i]
    frame.to_csv(predictions_path(run_dir, split), index=False)
