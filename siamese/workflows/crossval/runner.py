"""Grouped, stratified k-fold cross-validation of the two-stage model, repeated over seeds.

Each (seed, fold) is an ordinary run folder under ``OUT/seed{s}/fold{k}`` trained on a manifest whose
test split is the held-out fold, so an interrupted CV resumes fold by fold (finished folds are read
back, a half-trained one continues from its last epoch) and any fold can be opened with ``predict``,
``visualize`` or ``saliency`` like any other run. The reference models are the single run's
(:mod:`siamese.evaluation.reference_models`): the probes are fitted on the same training folds (train and val),
from features computed once per CV folder, and scored on the same held-out images; a trained reference
(``finetune``) is trained by each fold's run and read from its predictions, like the two stages.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from siamese.config import CVConfig, RunConfig, differing_settings
from siamese.data.duplicates import read_pairs_for
from siamese.data.images import PixelSource, pixel_source
from siamese.data.splits import fold_manifest, kfold_table, write_manifest
from siamese.data.table import DataError, DatasetTable
from siamese.evaluation.reference_features import colour_feature_matrix, imagenet_feature_matrix
from siamese.evaluation.reference_models import REFERENCE_MODELS, check_references, probe_scores
from siamese.inference.lesion_masks import crop_boxes
from siamese.models import check_input_size
from siamese.runtime.device import machine_description
from siamese.runtime.json_files import read_json
from siamese.training.embeddings import cached_arrays
from siamese.training.losses import resolve_objective
from siamese.workflows.crossval.summary import fold_rows, summarize, write_cv_figures, write_cv_report
from siamese.workflows.run_data import load_run_table
from siamese.workflows.training_run import run_training

DEEP_MODELS = ("classifier", "knn")
FREE_SETTINGS = {"cv.seeds", "cv.references", "cv.baselines", "run.references", "run.data.cache_dir",
                 "run.data.num_workers"}
"""What may change when a CV is resumed: more seeds, the reference models (the probes are refitted on every call
from the folds; a fold trained without a trained reference is refused by name), and where and how pixels are
read (not the results). ``cv.baselines`` is the name an older CV folder recorded its references under."""


@dataclass
class CVResult:
    """The per-fold table, its summary (mean and sd over seeds x folds), out-of-fold predictions, files."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    oof: pd.DataFrame
    files: list[Path]


def run_cv(config: RunConfig, cv: CVConfig, out: str | Path) -> CVResult:
    """Train and score every (seed, fold) beside the reference models fitted on the same training folds.

    Args:
        config: the settings of each fold's run (its split settings are replaced by the folds).
        cv: folds, seeds and reference models.
        out: the folder to write ``cv_folds.csv``, ``cv_summary.csv``, ``oof_predictions.csv``, pooled figures
            and ``cv_report.md`` into; a folder of an unfinished CV with the same settings is continued.

    Returns:
        The per-fold rows, the summary and the out-of-fold predictions.

    Raises:
        ValueError: a setting out of range or an unknown reference model.
        DataError: ``out`` holds a CV with other settings, or the dataset cannot be read or split into folds.
    """
    out = Path(out)
    check_input_size(config.model.backbone, config.data.image_size)  # before the folder is claimed
    check_references(cv.references)
    config = RunConfig.from_dict(config.to_dict())
    config.validate()
    resolve_objective(config.embed)
    config.references = tuple(n for n in cv.references if REFERENCE_MODELS[n].trained)  # the folds train these
    if config.data.synthetic_seed is None:  # every fold must see the same generated images
        config.data.synthetic_seed = config.seed
    cv = _claim(out, config, cv)
    table = load_run_table(config)
    classes = table.classes
    pairs = read_pairs_for(config.data.duplicates, table.frame["image_id"]) if config.data.duplicates else None
    pixels = ReferencePixels(table, config)
    features = CVFeatures(table, pixels, config.model.backbone, out)
    plan = [(seed, fold) for seed in cv.seeds for fold in range(cv.folds)]
    rows, predictions = [], []
    start = time.perf_counter()
    folds_of_seed: dict[int, pd.DataFrame] = {}
    code = {c: i for i, c in enumerate(classes)}
    position = pd.Series(np.arange(len(table.frame)), index=table.frame["image_id"])
    for seed, fold in tqdm(plan, desc="cv (seed, fold)"):
        if seed not in folds_of_seed:
            folds_of_seed[seed] = kfold_table(table.frame, pairs, folds=cv.folds, seed=seed)
        manifest = fold_manifest(folds_of_seed[seed], fold, pairs, config.data.val_fraction, seed)
        fold_dir = out / f"seed{seed}" / f"fold{fold}"
        seconds = _train_fold(config, manifest, fold_dir, seed)
        proba, ids, y_test = _deep_predictions(fold_dir, classes, code, config.references)
        fit = manifest[manifest["split"] != "test"]
        rows_fit, rows_test = position[fit["image_id"]].to_numpy(), position[ids].to_numpy()

        def fold_features(kind: str, fit: pd.DataFrame = fit, ids: np.ndarray = ids, fold_dir: Path = fold_dir,
                          rows_fit: np.ndarray = rows_fit, rows_test: np.ndarray = rows_test
                          ) -> tuple[np.ndarray, np.ndarray]:
            if kind == "embedding":
                embedding = fold_embeddings(fold_dir, np.concatenate([fit["image_id"].to_numpy(), ids]))
                return embedding[:len(fit)], embedding[len(fit):]
            values = features(kind)
            return values[rows_fit], values[rows_test]

        proba.update(probe_scores(cv.references, fold_features, fit["label"].map(code).to_numpy(), len(ids),
                                  len(classes), seed))
        proba = {m: proba[m] for m in (*DEEP_MODELS, *cv.references)}
        rows += fold_rows(seed, fold, y_test, proba, classes, seconds, _model_seconds(fold_dir))
        predictions.append(_oof_frame(seed, fold, ids, y_test, proba, classes))
    oof = pd.concat(predictions, ignore_index=True)
    folds = pd.DataFrame(rows)
    summary = summarize(folds)
    folds.to_csv(out / "cv_folds.csv", index=False)
    summary.to_csv(out / "cv_summary.csv", index=False)
    oof.to_csv(out / "oof_predictions.csv", index=False)
    files = [out / "cv_folds.csv", out / "cv_summary.csv", out / "oof_predictions.csv"]
    files += write_cv_figures(oof, classes, out)
    timing = {"this_call_seconds": time.perf_counter() - start,
              "training_seconds": float(folds.drop_duplicates(["seed", "fold"])["train_seconds"].sum())}
    notes = [] if features.backbone is None else [f"`imagenet_probe` used frozen ImageNet {features.backbone} "
                                                   "features."]
    report = write_cv_report(out, config, cv, summary, folds, classes, timing, machine_description(), notes)
    files += [out / "cv_paired.csv", report]
    return CVResult(folds, summary, oof, files)


def _claim(out: Path, config: RunConfig, cv: CVConfig) -> CVConfig:
    """A CV folder holds one set of settings: resuming with others would mix two experiments. More seeds
    may be added to a finished CV (its folds are reused, and the summary covers them all); any other
    change is refused, unless no fold was started yet (a failed start leaves nothing to protect). Returns
    the settings with every seed the folder holds. A folder holding a single run (its ``config.json``) is
    refused: the folds would be written among its files."""
    if (out / "config.json").is_file():
        raise DataError(f"{out} holds a train run (config.json); give the cross-validation another --out")
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({"run": replace(config, out=None).to_dict(), "cv": asdict(cv)}))
    path = out / "cv_config.json"
    if path.is_file() and any(out.glob("seed*/fold*")):
        saved = read_json(path)
        # a CV saved before a setting existed: RunConfig fills it in (and json makes its tuples lists again)
        saved["run"] = json.loads(json.dumps(RunConfig.from_dict(saved["run"]).to_dict()))
        changed = sorted(set(differing_settings(saved, settings)) - FREE_SETTINGS)
        if changed:
            raise DataError(f"{out} holds a cross-validation with other settings ({', '.join(changed[:6])}); "
                            f"resume it with the same options or choose another --out")
        settings["cv"]["seeds"] = sorted(set(saved["cv"]["seeds"]) | set(settings["cv"]["seeds"]))
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return replace(cv, seeds=tuple(settings["cv"]["seeds"]))


class ReferencePixels:
    """The pixels the embedder sees (same size, same lesion crop) for the reference models' features; the
    crop boxes (which may run a segmenter) and the source are built once, and only when a cache misses."""

    def __init__(self, table: DatasetTable, config: RunConfig) -> None:
        self.table, self.data, self.source = table, config.data, None

    def __call__(self) -> PixelSource:
        if self.source is None:
            data = self.data
            boxes = crop_boxes(self.table, data.crop, data.crop_margin, data.seg_run)
            self.source = pixel_source(self.table, data.image_size, data.cache_dir, boxes)
        return self.source


class CVFeatures:
    """The probes' per-image features by kind (``colour``, ``imagenet``), each computed once per CV folder
    on the pixels the embedder sees, on first request, and kept in ``OUT/{kind}_features.npz``; ``backbone``:
    the one ``imagenet_probe`` used, once its features were asked for."""

    def __init__(self, table: DatasetTable, pixels: ReferencePixels, backbone: str, out: Path) -> None:
        self.ids = np.asarray(table.frame["image_id"], dtype=str)
        self.pixels, self.arch, self.out = pixels, backbone, out
        self.kinds: dict[str, np.ndarray] = {}
        self.backbone: str | None = None

    def __call__(self, kind: str) -> np.ndarray:
        """``(N_images, D)`` features of ``kind`` for the table's images, in its order."""
        if kind not in self.kinds:
            stored = cached_arrays(self.out / f"{kind}_features.npz", self.ids, getattr(self, f"_{kind}"))
            self.kinds[kind] = stored["features"]
            if "backbone" in stored:
                self.backbone = str(stored["backbone"])
        return self.kinds[kind]

    def _colour(self) -> dict[str, np.ndarray]:
        return {"features": colour_feature_matrix(self.pixels())}

    def _imagenet(self) -> dict[str, np.ndarray]:
        values, used = imagenet_feature_matrix(self.pixels(), self.arch)
        return {"features": values, "backbone": np.asarray(used)}


def _train_fold(config: RunConfig, manifest: pd.DataFrame, fold_dir: Path, seed: int) -> float:
    """Train one fold unless it already finished; returns its training time (read back when resumed)."""
    timing = fold_dir / "cv_seconds.json"
    if (fold_dir / "metrics.json").is_file() and timing.is_file():
        return float(read_json(timing)["seconds"])
    split_path = fold_dir.parent / f"{fold_dir.name}_split.csv"
    write_manifest(manifest, split_path)
    fold_config = RunConfig.from_dict(config.to_dict())
    fold_config.out, fold_config.seed, fold_config.data.split = str(fold_dir), seed, str(split_path)
    resume = fold_dir if (fold_dir / "config.json").is_file() else None
    start = time.perf_counter()
    run_training(fold_config, resume=resume)
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def _model_seconds(fold_dir: Path) -> dict[str, float]:
    """A finished fold's own training times: the two stages' (``wall_seconds``) and each trained reference's."""
    metrics = read_json(fold_dir / "metrics.json")
    stages = metrics.get("wall_seconds")
    return {**({"classifier": stages, "knn": stages} if stages is not None else {}),
            **metrics.get("reference_seconds", {})}


def fold_embeddings(fold_dir: Path, image_ids: np.ndarray) -> np.ndarray:
    """A finished fold's cached embeddings (train, val, held-out) of ``image_ids``, in that order."""
    paths = [fold_dir / "embeddings" / f"{split}.npz" for split in ("train", "val", "test")]
    frames = [pd.DataFrame(stored["embedding"], index=stored["image_id"])
              for stored in (np.load(path, allow_pickle=False) for path in paths if path.is_file())]
    cached = pd.concat(frames) if frames else pd.DataFrame()
    missing = pd.Index(image_ids).difference(cached.index)
    if len(missing):
        raise DataError(f"{fold_dir / 'embeddings'} has no embedding for {len(missing)} of the fold's images "
                        f"(first: {list(missing[:3])}); was the fold's folder changed? Delete {fold_dir} and run "
                        f"the same cv command again to retrain it")
    return cached.loc[image_ids].to_numpy()


def _deep_predictions(fold_dir: Path, classes: list[str], code: dict[str, int], trained: tuple[str, ...] = ()
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A fold's held-out predictions of the two stages and of the ``trained`` references.
    Raises DataError naming a trained reference the fold was trained without."""
    frame = pd.read_csv(fold_dir / "test_predictions.csv", dtype={"image_id": str, "label": str})
    missing = [m for m in trained if f"{m}_p_{classes[0]}" not in frame.columns]
    if missing:
        raise DataError(f"{fold_dir} was trained without the reference model(s) {missing}; leave them out of "
                        f"--references to resume this CV, or choose another --out")
    proba = {m: frame[[f"{m}_p_{c}" for c in classes]].to_numpy() for m in (*DEEP_MODELS, *trained)}
    y = frame["label"].map(code).to_numpy()
    return proba, frame["image_id"].to_numpy(), y


def _oof_frame(seed: int, fold: int, ids: np.ndarray, y: np.ndarray, proba: dict[str, np.ndarray],
               classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"seed": seed, "fold": fold, "image_id": ids, "label": np.array(classes)[y]})
    for model, p in proba.items():
        for i, c in enumerate(classes):
            frame[f"{model}_p_{c}"] = p[:, i]
    return frame
