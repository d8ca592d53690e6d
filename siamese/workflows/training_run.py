"""The whole two-stage run, from a :class:`~siamese.config.RunConfig` to a folder of results: stage 0 (self-
supervised, when asked), stage 1 (metric learning), stage 2 (the dense classifier), then the scoring, plots,
report and ONNX export.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from siamese.config import RunConfig
from siamese.data.balance import check_batches, oversample
from siamese.data.images import LESION_NOISE, ImageDataset, PixelRows
from siamese.data.splits import grouped_parts
from siamese.evaluation.figures import training_curves
from siamese.evaluation.patient_context import check_patient_context
from siamese.evaluation.reference_models import check_references
from siamese.inference.export import export_onnx
from siamese.models import EmbeddingNet, check_input_size, load_checkpoint, state_digest
from siamese.models.colour import check_colour_settings
from siamese.robustness.artefacts import ArtefactLibrary, ArtefactPixels
from siamese.runtime.device import configure_threads, resolve_compute, resolve_device, seed_everything
from siamese.runtime.distributed import DistContext, init_distributed
from siamese.runtime.errors import ExportError
from siamese.runtime.tracking import Tracker
from siamese.training.classify import ClassifierTrainer, check_classifier_settings
from siamese.training.losses import resolve_objective
from siamese.training.metric_learning import MetricData, MetricTrainer
from siamese.training.selfsup import SelfSupervisedTrainer
from siamese.workflows.run_data import RunData, build_run_data, classifier_inputs, split_embeddings
from siamese.workflows.run_folder import discard_setup, prepare_run_dir
from siamese.workflows.run_report import write_evaluation_plots, write_report
from siamese.workflows.scoring import evaluate_run


def run_training(config: RunConfig, resume: str | Path | None = None,
                 changes: dict[str, Any] | None = None) -> Path:
    """Train both stages and evaluate. Safe to interrupt and resume.

    Under torchrun every rank trains stage 1; rank 0 alone prepares the folder, writes, and runs
    stage 2 and the evaluation (cheap, on cached embeddings). A new run that fails before stage 1 starts
    (bad data, settings that cannot train, weights that cannot be had) removes what it wrote.

    Args:
        config: the run's settings (``config.out`` names the folder; None: ``runs/DATASET-TIME``).
        resume: a run folder to continue; its saved config is used, not ``config``.
        changes: dotted settings asked to differ from the resumed run's, made where safe
            (:func:`~siamese.workflows.run_folder.prepare_run_dir`).

    Returns:
        The run folder (config, split, checkpoints, metrics, plots, report).

    Raises:
        DataError: the dataset or split cannot serve the run, or the folder already holds a run.
        ValueError: a setting out of range or a combination that cannot train.
        WeightsUnavailableError: the backbone's weights cannot be had.
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


def checked_config(config: RunConfig) -> RunConfig:
    """``config`` checked the way a run checks it before it claims a folder, with the miner its loss implies
    named (so ``config.json`` records it). Raises ValueError naming the setting at fault."""
    config.validate()
    if config.data.split is None:
        grouped_parts(config.data.val_fraction, config.data.test_fraction)
    check_references(config.references)
    check_classifier_settings(config.classifier)
    resolve_objective(config.embed)
    return config


def _train(config: RunConfig, resume: str | Path | None, changes: dict[str, Any] | None, device: torch.device,
           dist: DistContext) -> Path:
    started = time.perf_counter()
    config = checked_config(config)
    prepared = prepare_run_dir(config, resume, changes) if dist.is_main else None
    config_dict, run_dir = dist.broadcast(None if prepared is None else (prepared[0].to_dict(), str(prepared[1])))
    config, run_dir = RunConfig.from_dict(config_dict), Path(run_dir)
    try:
        seed_everything(config.seed, config.deterministic)
        check_input_size(config.model.backbone, config.data.image_size)
        check_colour_settings(config.model.colour_stats, config.model.colour_noise)
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
        model = EmbeddingNet(config.model.backbone, config.model.weights, embedding_dim=config.model.embedding_dim,
                             head_hidden=config.model.head_hidden, dropout=config.model.dropout,
                             mean=data.prep.mean, std=data.prep.std,
                             input_noise=LESION_NOISE if config.data.augment == "lesion" else 0.0,
                             pooling=config.model.pooling, tta=config.model.tta,
                             colour_stats=config.model.colour_stats, colour_noise=config.model.colour_noise)
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
                               config.embed, device=device, run_dir=run_dir, tracker=tracker, amp=compute.bf16,
                               channels_last=compute.channels_last, num_workers=config.data.num_workers,
                               seed=config.seed, dist=dist, compile_model=config.compile)
        stage1.resume()
        embed_history = stage1.fit()
        if not dist.is_main:
            return run_dir
        best = load_checkpoint(run_dir / "embedder.pt", model.arch)
        model.load_state_dict(best["state"])
        embeddings = {s: split_embeddings(model, datasets[s], data.parts[s], run_dir, config, device)
                      for s in datasets}

        stage2 = ClassifierTrainer(len(classes), config.model.embedding_dim, cfg=config.classifier, device=device,
                                   run_dir=run_dir, tracker=tracker, seed=config.seed,
                                   embedder_digest=state_digest(best["state"]))
        stage2.resume()
        picks = oversample(pd.DataFrame({"row": np.arange(len(targets["train"])), "label": targets["train"]}),
                           config.seed)["row"].to_numpy()
        inputs = classifier_inputs(run_dir, data, embeddings, config)
        x_train, y_train = inputs["train"][picks], targets["train"][picks]
        classifier_history = stage2.fit(x_train, y_train, inputs["val"], targets["val"])
        classifier = stage2.load_best()
        if config.classifier.logit_adjustment:
            stage2.adjust_logits(classifier, inputs["val"], targets["val"], targets["train"])

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
    trainer = SelfSupervisedTrainer(model, data.dataset("train", config.data.augment), config.embed, device=device,
                                    run_dir=run_dir, tracker=tracker, amp=compute.bf16,
                                    channels_last=compute.channels_last, num_workers=config.data.num_workers,
                                    seed=config.seed)
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
