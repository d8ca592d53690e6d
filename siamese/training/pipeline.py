"""The whole two-stage run, from a :class:`RunConfig` to a folder of results.

The run folder is the unit of work: config, split, checkpoints, history, metrics and plots all live
there, and ``resume`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from siamese.config import RunConfig, check_numbers, resumed
from siamese.data import DatasetTable, load_dataset
from siamese.data.audit import audit_manifest
from siamese.data.balance import balanced_subset, check_batches, oversample
from siamese.data.duplicates import drop_conflicts, read_pairs_for
from siamese.data.images import (
    LESION_NOISE,
    ImageDataset,
    PixelRows,
    build_transform,
    channel_stats,
    crop_boxes,
    pixel_source,
)
from siamese.data.splits import SPLITS, apply_manifest, read_manifest, split_table, write_manifest
from siamese.data.table import DataError
from siamese.diagnostics.plots import training_curves
from siamese.diagnostics.report import FINAL_MODEL_NOTE, predictions_path, write_evaluation_plots, write_report
from siamese.inference.export import export_onnx
from siamese.inference.preprocess import Preprocessing
from siamese.models import DenseClassifier, EmbeddingNet, check_input_size, load_checkpoint
from siamese.models.backbones import imagenet_statistics
from siamese.models.colour import check_colour_settings
from siamese.robustness.artefacts import ArtefactLibrary, ArtefactPixels
from siamese.runtime.device import (
    configure_threads,
    machine_description,
    resolve_compute,
    resolve_device,
    seed_everything,
)
from siamese.runtime.distributed import DistContext, init_distributed
from siamese.runtime.errors import ExportError
from siamese.training.classify import (
    ClassifierTrainer,
    check_classifier_settings,
    classifier_choice,
    knn_proba,
    predict_proba,
)
from siamese.training.embeddings import cached_embeddings, compute_embeddings
from siamese.training.evaluate import classification_metrics, positive_index
from siamese.training.finetune import finetune_reference
from siamese.training.losses import resolve_objective
from siamese.training.metric import MetricData, MetricTrainer
from siamese.training.patient_context import check_patient_context, patient_context_proba, ugly_duckling_features
from siamese.training.reference_models import check_references
from siamese.training.references import reference_probabilities
from siamese.training.selfsup import SelfSupervisedTrainer
from siamese.training.tracking import Tracker


def load_run_table(config: RunConfig) -> DatasetTable:
    """The dataset, with duplicate pairs' label conflicts dropped when asked."""
    data = config.data
    seed = config.seed if data.synthetic_seed is None else data.synthetic_seed
    table = load_dataset(data.dataset, data.data_dir, data.metadata, binary=data.binary, seed=seed,
                         lesions_per_class=data.synthetic_lesions_per_class, only_present=data.only_present)
    if data.duplicates and data.drop_conflicts:
        table = drop_conflicts(table, read_pairs_for(data.duplicates, table.frame["image_id"]))
    return table


def resolve_split(table: DatasetTable, config: RunConfig, run_dir: Path) -> DatasetTable:
    """Use the run's own split.csv (resume), a given manifest, the source's split, or make one.

    A split without test rows (``data.test_fraction`` 0, or such a manifest) makes a final model.
    Raises DataError when the split has no training or no validation images."""
    own = run_dir / "split.csv"
    data = config.data
    pairs = _pairs(config, table)
    if own.is_file():
        manifest = read_manifest(own)
    elif data.split:
        manifest = read_manifest(data.split)
    elif "split" in table.frame.columns:
        manifest = table.frame[["image_id", "label", "group", "split"]].astype(str)
    else:
        manifest = split_table(table.frame, pairs, data.val_fraction, data.test_fraction, seed=config.seed)
    write_manifest(manifest, own)
    _audit_split(manifest, pairs, run_dir)
    table = apply_manifest(table, manifest)
    missing = [s for s in ("train", "val") if not (table.frame["split"] == s).any()]
    if missing:
        raise DataError(f"the split has no {missing} images; stage 1 needs train and val (test is optional: "
                        f"without it the run is a final model, scored on val)")
    return table


def _pairs(config: RunConfig, table: DatasetTable) -> pd.DataFrame | None:
    return read_pairs_for(config.data.duplicates, table.frame["image_id"]) if config.data.duplicates else None


def _audit_split(manifest: pd.DataFrame, pairs: pd.DataFrame | None, run_dir: Path) -> None:
    """``split_audit.json`` beside ``split.csv`` (what ``python -m siamese audit`` reports), and warnings for
    what a reader of the results must know: a split that leaks, duplicate pairs with two labels, pairs the
    list names that are not here (counted, not an error: a list for a whole challenge set names many)."""
    audit = audit_manifest(manifest, pairs)
    (run_dir / "split_audit.json").write_text(json.dumps(audit, indent=2) + "\n")
    if audit["leaks"]:
        warnings.warn(f"the split leaks: {audit['leaking_groups']} group(s) and {audit['straddling_duplicate_pairs']} "
                      f"duplicate pair(s) straddle splits (see {run_dir / 'split_audit.json'})", stacklevel=3)
    if audit["label_conflict_pairs"]:
        warnings.warn(f"{audit['label_conflict_pairs']} near-duplicate pair(s) carry two labels (examples in "
                      f"split_audit.json; --drop-conflicts drops both images)", stacklevel=3)
    if pairs is not None:
        print(f"duplicates: {audit['duplicate_pairs']} pair(s) with both images here, kept in one split; "
              f"{audit['duplicate_pairs_not_in_manifest']} of the list's {len(pairs)} name an image not here",
              file=sys.stderr)


def training_rows(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Stage 1's images: the balanced subset by default (binary data 50/50, as the original ISIC 2020 study
    trained its embedding), the whole training split with ``--full-dataset``. Stage 2 always learns from
    the whole training split, oversampled to balance."""
    train = frame[frame["split"] == "train"]
    if config.data.full_dataset:
        return train.reset_index(drop=True)
    cap = None if train["label"].nunique() == 2 else config.data.per_class_cap
    return balanced_subset(train, cap, seed=config.seed)


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{config.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(config: RunConfig, resume: str | Path | None, changes: dict[str, Any] | None = None
                    ) -> tuple[RunConfig, Path, list[Path]]:
    """The run folder and its config; for a new run also what it created, to undo if setup fails.

    A resumed run keeps its saved config; ``changes`` (dotted settings asked for with ``--resume``) are made
    and saved where they are safe (:data:`siamese.config.RESUMABLE`), and refused by name otherwise."""
    if resume is not None:
        run_dir = Path(resume)
        saved_path = run_dir / "config.json"
        if not saved_path.is_file():
            raise DataError(f"{run_dir}: no config.json, so nothing to resume")
        saved = RunConfig.load(saved_path)
        config = resumed(saved, changes or {}, saved_path)
        if config != saved:
            config.save(saved_path)
        return config, run_dir, []
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if (run_dir / "config.json").is_file():
        raise DataError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")
    created = [] if run_dir.is_dir() else [run_dir]
    run_dir.mkdir(parents=True, exist_ok=True)
    config.out = str(run_dir)
    config.save(run_dir / "config.json")
    return config, run_dir, created or [run_dir / name for name in SETUP_FILES]


SETUP_FILES = ("config.json", "split.csv", "split_audit.json", "preprocess.json")
"""What a new run writes before training starts; removed again when setup fails, so that the same
command can be run again once the cause (a missing image, a bad CSV) is fixed."""


def discard_setup(created: list[Path]) -> None:
    for path in created:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass
class RunData:
    """A run's images per split (``train``, ``val``, ``test`` unless the run is a final model, and ``stage1``:
    the training rows stage 1 learns from), targets and preprocessing."""

    parts: dict[str, pd.DataFrame]
    sources: dict[str, Any]
    targets: dict[str, np.ndarray]
    prep: Preprocessing
    excluded: dict[str, int]
    cropping: dict[str, Any]

    @property
    def splits(self) -> tuple[str, ...]:
        """The run's splits in order: ``train``, ``val`` and, unless it is a final model, ``test``."""
        return tuple(s for s in SPLITS if s in self.parts)

    @property
    def scored(self) -> str:
        """The split the evaluation scores: ``test``, or ``val`` for a final model (no test split)."""
        return "test" if "test" in self.parts else "val"

    def dataset(self, split: str, augment: str = "none", artefacts: ArtefactPixels | None = None) -> ImageDataset:
        source = self.sources[split] if artefacts is None else artefacts.over(self.sources[split])
        return ImageDataset(source, self.targets[split], build_transform(augment, self.prep.image_size))


def build_run_data(config: RunConfig, run_dir: Path) -> RunData:
    """Dataset, split and pixel sources of a run; the same call serves training and later diagnostics."""
    table = resolve_split(load_run_table(config), config, run_dir)
    classes = table.classes
    code = {c: i for i, c in enumerate(classes)}
    frame = table.frame
    splits = [s for s in SPLITS if (frame["split"] == s).any()]
    parts = {**{s: frame[frame["split"] == s].reset_index(drop=True) for s in splits},
             "stage1": training_rows(frame, config)}
    size, crop, margin, seg_run = (config.data.image_size, config.data.crop, config.data.crop_margin,
                                   config.data.seg_run)
    used = frame[frame["split"].isin(splits)]
    boxes = crop_boxes(DatasetTable(used, table.images), crop, margin, seg_run)  # once: may run the segmenter
    box_of = None if boxes is None else dict(zip(used["image_id"], boxes, strict=True))
    sources: dict[str, Any] = {
        s: pixel_source(DatasetTable(parts[s], table.images), size, config.data.cache_dir,
                        None if box_of is None else [box_of[i] for i in parts[s]["image_id"]])
        for s in splits}
    position = pd.Series(np.arange(len(parts["train"])), index=parts["train"]["image_id"])
    sources["stage1"] = PixelRows(sources["train"], position[parts["stage1"]["image_id"]].to_numpy())
    cropping: dict[str, Any] = {"mode": crop}
    if boxes is not None:
        cropping.update(margin=margin, kept_whole=sum(box is None for box in boxes),
                        **({"seg_run": seg_run} if seg_run else {}))
        if cropping["kept_whole"]:
            warnings.warn(f"{cropping['kept_whole']} image(s) have no usable lesion mask and stay whole",
                          stacklevel=2)
    saved = run_dir / "preprocess.json"
    if saved.is_file():
        prep = Preprocessing.load(saved)
    else:
        if config.data.normalization == "train":
            mean, std = channel_stats(sources["train"], seed=config.seed)
        else:
            mean, std = imagenet_statistics(config.model.backbone)
        prep = Preprocessing(size, tuple(mean), tuple(std), classes, crop, margin,
                             str(Path(seg_run).resolve()) if seg_run else None)
        prep.save(saved)
    targets = {s: rows["label"].map(code).to_numpy() for s, rows in parts.items()}
    return RunData(parts, sources, targets, prep, table.excluded, cropping)


def run_training(config: RunConfig, resume: str | Path | None = None,
                 changes: dict[str, Any] | None = None) -> Path:
    """Train both stages and evaluate; returns the run folder. Safe to interrupt and resume: ``resume`` names
    the folder (its saved config is used, not ``config``), ``changes`` the settings asked to differ from it
    (see :func:`prepare_run_dir`).

    Under torchrun every rank trains stage 1; rank 0 alone prepares the folder, writes, and runs
    stage 2 and the evaluation (cheap, on cached embeddings). A new run that fails before stage 1 starts
    (bad data, settings that cannot train, weights that cannot be had) removes what it wrote.
    """
    device = resolve_device(config.device)
    configure_threads()
    config, changes = _resolved_compute(config, changes, device)
    dist = init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(config, resume, changes, device, dist)
    finally:
        dist.close()


def _resolved_compute(config: RunConfig, changes: dict[str, Any] | None, device: torch.device
                      ) -> tuple[RunConfig, dict[str, Any] | None]:
    """``compute: auto`` made concrete for this device, so ``config.json`` records what the run used."""
    config = dataclasses.replace(config, compute=resolve_compute(config.compute, device, warn=True).name)
    if changes and "compute" in changes:
        changes = {**changes, "compute": resolve_compute(changes["compute"], device, warn=True).name}
    return config, changes


def _train(config: RunConfig, resume: str | Path | None, changes: dict[str, Any] | None, device: torch.device,
           dist: DistContext) -> Path:
    started = time.perf_counter()
    check_numbers(config)
    check_classifier_settings(config.classifier)
    resolve_objective(config.embed)  # before a folder is claimed, and config.json names the miner
    prepared = prepare_run_dir(config, resume, changes) if dist.is_main else None
    config_dict, run_dir = dist.broadcast(None if prepared is None else (prepared[0].to_dict(), str(prepared[1])))
    config, run_dir = RunConfig.from_dict(config_dict), Path(run_dir)
    try:
        seed_everything(config.seed, config.deterministic)
        check_input_size(config.model.backbone, config.data.image_size)
        check_colour_settings(config.model.colour_stats, config.model.colour_noise)
        check_references(config.references)
        if config.embed.frozen_epochs and config.embed.frozen_epochs >= config.embed.epochs:
            warnings.warn(f"{config.embed.epochs} stage-1 epoch(s) with {config.embed.frozen_epochs} warm-up "
                          "epoch(s) on a frozen backbone: the backbone is never fine-tuned (raise --epochs-embed)",
                          stacklevel=2)
        if config.classifier.patient_context:
            check_patient_context(config.data.dataset)
        if not dist.is_main:
            dist.barrier()
        data = build_run_data(config, run_dir)
        if config.classifier.patient_context and data.scored != "test":
            raise ValueError("--patient-context needs a test split: its signal is fitted on the validation split")
        artefacts = _artefacts(config)
        check_batches(data.targets["train"], config.embed.batch_size, config.embed.m_per_class, dist.world_size)
        if dist.is_main:
            dist.barrier()
        model = EmbeddingNet(config.model.backbone, config.model.weights, config.model.embedding_dim,
                             config.model.head_hidden, config.model.dropout, data.prep.mean, data.prep.std,
                             LESION_NOISE if config.data.augment == "lesion" else 0.0, config.model.pooling,
                             config.model.tta, config.model.colour_stats, config.model.colour_noise)
    except Exception:
        if prepared is not None:
            discard_setup(prepared[2])
        raise
    classes, targets = data.prep.classes, data.targets
    datasets = {s: data.dataset(s) for s in data.splits}
    reference = _reference_subset(data.dataset("stage1"), config.embed.max_reference, config.seed)

    tracker = Tracker(run_dir, config.to_dict(), config.wandb if dist.is_main else "disabled")
    try:
        compute = resolve_compute(config.compute, device)
        ssl_history = _self_supervised(model, data, config, device, run_dir, tracker, dist)
        stage1 = MetricTrainer(model, MetricData(data.dataset("stage1", config.data.augment, artefacts),
                                                 datasets["val"], reference),
                               config.embed, device, run_dir, tracker, compute.bf16, compute.channels_last,
                               config.data.num_workers, config.seed, dist, config.compile)
        stage1.resume()
        embed_history = stage1.fit()
        if not dist.is_main:
            return run_dir
        best = load_checkpoint(run_dir / "embedder.pt", model.arch)
        model.load_state_dict(best["state"])
        embeddings = {s: split_embeddings(model, datasets[s], data.parts[s], run_dir, config, device)
                      for s in datasets}

        stage2 = ClassifierTrainer(len(classes), config.model.embedding_dim, config.classifier, device, run_dir,
                                   tracker, config.seed)
        stage2.resume()
        picks = oversample(pd.DataFrame({"row": np.arange(len(targets["train"])), "label": targets["train"]}),
                           config.seed)["row"].to_numpy()
        x_train, y_train = embeddings["train"][picks], targets["train"][picks]
        classifier_history = stage2.fit(x_train, y_train, embeddings["val"], targets["val"])
        classifier = stage2.load_best()
        if config.classifier.logit_adjustment:
            stage2.adjust_logits(classifier, embeddings["val"], targets["val"], targets["train"])

        history = pd.DataFrame(ssl_history + embed_history + classifier_history)
        history.to_csv(run_dir / "history.csv", index=False)
        figures = {f"curves_{s}": training_curves(history, s, run_dir / f"curves_{s}.png")
                   for s in ("selfsup", "embed", "classifier")}
        results = evaluate_run(run_dir, data, embeddings, classifier, config, device,
                               best_epochs={"embed": best["epoch"], "classifier": stage2.state["best_epoch"]},
                               wall_seconds=time.perf_counter() - started)
        figures.update(write_evaluation_plots(run_dir, data.sources[data.scored], data.scored))
        if config.export_onnx:
            _export(run_dir)
        write_report(run_dir)
        tracker.log_images({k: v for k, v in figures.items() if v is not None})
        tracker.log_table(f"{data.scored}/per_class", pd.read_csv(run_dir / "per_class.csv"))
        tracker.log_table(f"{data.scored}/metrics", pd.DataFrame(
            [{"model": m, **{k: v for k, v in results[m].items() if isinstance(v, float)}}
             for m in ("classifier", "knn")]))
        tracker.summary({f"{data.scored}/{k}": v for k, v in results["classifier"].items() if isinstance(v, float)})
    finally:
        tracker.finish()
    return run_dir


def rescore_run(run_dir: str | Path, references: tuple[str, ...] | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a finished run again from its cached embeddings and best checkpoints, without training:
    the metrics (of the test split, or the validation split of a final model), predictions, plots and
    report are rewritten, with ``references`` (default: the run's own ``config.references``) fitted anew.
    Returns the new ``metrics.json`` contents.

    Raises FileNotFoundError when the run has not finished stage 2 (no ``classifier.pt``).
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
    classifier = DenseClassifier.from_checkpoint(run_dir / "classifier.pt").to(torch_device).eval()
    best_epochs = {"embed": load_checkpoint(run_dir / "embedder.pt")["epoch"],
                   "classifier": load_checkpoint(run_dir / "classifier.pt")["epoch"]}
    trained = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    results = evaluate_run(run_dir, data, embeddings, classifier, config, torch_device, best_epochs,
                           trained.get("wall_seconds"), trained.get("machine"))
    write_evaluation_plots(run_dir, data.sources[data.scored], data.scored)
    write_report(run_dir)
    return results


def _self_supervised(model: EmbeddingNet, data: RunData, config: RunConfig, device: torch.device, run_dir: Path,
                     tracker: Tracker, dist: DistContext) -> list[dict[str, Any]]:
    """Stage 0 when ``ssl_epochs`` asks for it; its two views are drawn with the run's augmentation."""
    if config.embed.ssl_epochs <= 0:
        return []
    compute = resolve_compute(config.compute, device)
    if dist.enabled:
        raise ValueError("self-supervised pre-training (--ssl-epochs) runs in a single process, not under torchrun")
    if config.data.augment == "none":
        raise ValueError("--ssl-epochs needs an augmentation (--augment): two identical views teach nothing")
    trainer = SelfSupervisedTrainer(model, data.dataset("train", config.data.augment), config.embed, device,
                                    run_dir, tracker, compute.bf16, compute.channels_last, config.data.num_workers,
                                    config.seed)
    trainer.resume()
    return trainer.fit()


def _artefacts(config: RunConfig) -> ArtefactPixels | None:
    """Stage 1's artefact augmentation (``--augment-artefacts P``): real bubbles, ink and rulers inserted
    into a share P of the training images, so the metric space learns to ignore them."""
    if config.data.augment_artefacts <= 0:
        return None
    if not config.data.artefacts:
        raise ValueError("--augment-artefacts needs --artefacts DIR (the templates folder)")
    return ArtefactPixels(ArtefactLibrary.load(config.data.artefacts), config.data.augment_artefacts)


def _export(run_dir: Path) -> None:
    """The ONNX copy is a convenience: a run whose export fails keeps its results and predicts with torch."""
    try:
        export_onnx(run_dir)
    except ExportError as exc:
        warnings.warn(str(exc), stacklevel=2)


def _reference_subset(dataset: ImageDataset, limit: int, seed: int) -> ImageDataset:
    if len(dataset) <= limit:
        return dataset
    picks = np.sort(np.random.default_rng(seed).choice(len(dataset), limit, replace=False))
    source = dataset.source
    return ImageDataset(PixelRows(source, picks), dataset.targets[picks], dataset.transform)


def split_embeddings(model: EmbeddingNet, dataset: ImageDataset, rows: pd.DataFrame, run_dir: Path,
                      config: RunConfig, device: Any) -> np.ndarray:
    path = run_dir / "embeddings" / f"{rows['split'].iloc[0]}.npz"
    compute = resolve_compute(config.compute, torch.device(device))
    path.parent.mkdir(exist_ok=True)
    ids = rows["image_id"].astype(str).to_numpy()
    return cached_embeddings(path, ids, lambda: compute_embeddings(
        model, dataset, device, config.embed.batch_size, config.data.num_workers, path.stem, compute.bf16,
        compute.channels_last))


def evaluate_run(run_dir: Path, data: RunData, embeddings: dict[str, np.ndarray], classifier: Any,
                 config: RunConfig, device: Any, best_epochs: dict[str, int],
                 wall_seconds: float | None = None, machine: str | None = None) -> dict[str, Any]:
    """Metrics of the dense classifier, the k-NN vote, the reference models (``config.references``: the
    probes, and ``finetune``, trained here unless cached, its wall time in ``reference_seconds``) and, with
    ``classifier.patient_context``, the classifier with each lesion's patient context, on the run's test
    split: ``metrics.json`` (``scored_on``: the split scored), ``per_class.csv``, ``test_predictions.csv``
    (:func:`~siamese.diagnostics.report.predictions_path`).

    A final model (no test split) is scored on its validation split instead, with a warning
    (:data:`FINAL_MODEL_NOTE`): the two stages' figures are optimistic there, since that split picked their
    best epochs; the references are then fitted on the training split alone, so theirs stay held out.
    ``wall_seconds``: the training call's wall time before evaluation (since resuming, for a resumed run);
    ``machine``: where it trained (default: this machine)."""
    classes, targets, scored = data.prep.classes, data.targets, data.scored
    if scored != "test":
        warnings.warn(FINAL_MODEL_NOTE, stacklevel=2)
    proba = {"classifier": predict_proba(classifier, embeddings[scored], device),
             "knn": knn_proba(embeddings["train"], targets["train"], embeddings[scored], len(classes),
                              config.classifier.knn_k)}
    extra: dict[str, Any] = {}
    if config.classifier.patient_context:
        proba["patient_context"], extra["patient_context_signal"] = _patient_context(data, embeddings, classifier,
                                                                              proba["classifier"], device, config)
    ids = {s: data.parts[s]["image_id"].to_numpy() for s in data.splits}
    references, notes = reference_probabilities(run_dir, data.sources, ids, targets, embeddings, len(classes),
                                                config.references, config.model.backbone, config.seed, scored,
                                                _shared_features(config, data))
    reference_seconds = {}
    if "finetune" in config.references:
        datasets = {"train": data.dataset("train", config.data.augment), "val": data.dataset("val"),
                    scored: data.dataset(scored)}
        tuned = finetune_reference(run_dir, datasets, scored, len(classes), data.prep.mean, data.prep.std,
                                   ids[scored], config, device)
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


def _shared_features(config: RunConfig, data: RunData) -> tuple[str, str, dict[str, np.ndarray]] | None:
    """Where the reference features of this run's images are kept for other runs (its ``--cache-dir``), what
    their pixels depend on, and each split's image keys (resolved file paths; ids for in-memory data)."""
    d = config.data
    if not d.cache_dir:
        return None
    pixels = f"{d.dataset}|{d.image_size}px|{d.crop}|{d.crop_margin}|{d.seg_run}"
    keys = {s: (data.parts[s]["path"].map(lambda p: str(Path(p).resolve())) if "path" in data.parts[s].columns
                else data.parts[s]["image_id"].astype(str)).to_numpy() for s in data.splits}
    return d.cache_dir, pixels, keys


def _patient_context(data: RunData, embeddings: dict[str, np.ndarray], classifier: Any, test_proba: np.ndarray,
                     device: Any, config: RunConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The classifier with the ugly-duckling signal (fitted on the validation split), and what the signal
    says on its own: the test ROC-AUC of each distance among lesions with context (binary tasks), and the
    control (the same refit on the classifier's output alone), so a gain can be told from a recalibration."""
    patients = {s: data.parts[s]["group"].astype(str).to_numpy() for s in ("val", "test")}
    val = (predict_proba(classifier, embeddings["val"], device), embeddings["val"], patients["val"],
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
