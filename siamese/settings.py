"""A config from settings by dotted name, the same way for the command line, a settings file and a notebook.

The caller's settings (``asked``: flags, a notebook's dict) win over a file's (``defaults``: ``--config FILE``),
which win over the preset they name, else the dataset's own preset::

    config = run_config({"data.dataset": "ph2", "embed.epochs": 3}, read_config_file("ph2.yaml"))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siamese.config import SEGMENT_PRESETS, RunConfig, SegmentConfig, preset, set_setting, upgrade
from siamese.data.registry import dataset_entry
from siamese.options import flatten, read_settings_file, settings_of

FULL_MODEL = {"preset": "full", "model.backbone": "resnet50"}
"""``--full-model``: the full preset's ResNet50 (an explicit ``--preset`` or ``--backbone`` wins)."""


def read_config_file(path: str | Path, kind: type = RunConfig) -> dict[str, Any]:
    """A YAML or JSON file's settings of ``kind`` (:class:`RunConfig` or :class:`SegmentConfig`) by dotted name,
    each checked to be one and coerced to its type. A run's own ``config.json`` reads as the settings it ran with,
    less its ``out`` (a new run gets a folder of its own). Raises FileNotFoundError, or ValueError naming the file
    and the key of an unknown or mistyped setting, a bad choice or a number out of range."""
    path = Path(path)
    values = read_settings_file(path)
    settings = flatten(upgrade(values) if kind is RunConfig else values, kind, str(path))
    known = {setting.name: setting for setting in settings_of(kind)}
    for name, value in settings.items():
        known[name].check(value, str(path))
    if settings.get("out") and Path(settings["out"]).resolve() == path.resolve().parent:
        del settings["out"]
    return settings


def run_config(asked: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None) -> RunConfig:
    """The :class:`RunConfig` of ``asked`` over ``defaults`` over their preset: the one named as ``preset``
    (with its own dataset unless one is named), else the named dataset's registered one
    (:func:`siamese.data.registry.dataset_entry`), else digits'. A preset's miner belongs to its loss: a loss
    named without a miner takes its own default miner (:func:`siamese.training.losses.resolve_objective`).
    Settings are coerced to their types (``references: ["none"]`` is none); :meth:`RunConfig.validate` checks
    the values when the run starts. Raises ValueError for an unknown setting or preset."""
    settings = {**(defaults or {}), **flatten(asked or {}, RunConfig, "settings")}
    config = preset(settings.get("preset") or dataset_entry(settings.get("data.dataset", "digits")).preset)
    if "embed.loss" in settings and "embed.miner" not in settings:
        config.embed.miner = None
    for name, value in settings.items():
        set_setting(config, name, value)
    return config


def fold_config(asked: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None, *,
                command: str = "cv", folds: int = 5) -> RunConfig:
    """The config each fold or seed of ``cv`` or ``compare`` trains (:func:`run_config`), less what belongs to
    one run: no folder of its own (the command's folder holds them), no model.onnx, W&B disabled unless
    ``wandb`` is set. Raises ValueError for a test fraction asked of folds (each holds out its own)."""
    asked = flatten(asked or {}, RunConfig, "settings")
    if folds and "data.test_fraction" in asked:
        use = "train" if command == "cv" else f"{command} --folds 0 (seeds)"
        raise ValueError(f"{command} holds out each fold in turn as the test split; --test-fraction is for {use}")
    config = run_config(asked, defaults)
    config.out = None
    if "wandb" not in {**(defaults or {}), **asked}:
        config.wandb = "disabled"
    config.export_onnx = False
    return config


def resume_changes(settings: Mapping[str, Any], resume: str | Path) -> dict[str, Any]:
    """What a resumed run is asked to change (an ``out`` naming the resumed folder itself changes nothing)."""
    if "out" in settings and settings["out"] and Path(settings["out"]).resolve() == Path(resume).resolve():
        return {k: v for k, v in settings.items() if k != "out"}
    return dict(settings)


def segment_config(asked: Mapping[str, Any] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> SegmentConfig:
    """The :class:`SegmentConfig` of ``asked`` over ``defaults`` over the named segmentation preset (``full``
    when none is). Raises ValueError for an unknown setting or preset."""
    settings = {**(defaults or {}), **flatten(asked or {}, SegmentConfig, "settings")}
    name = settings.get("preset", "full")
    if name not in SEGMENT_PRESETS:
        raise ValueError(f"unknown segmentation preset {name!r}; choose from {sorted(SEGMENT_PRESETS)}")
    config = SEGMENT_PRESETS[name]()
    for key, value in settings.items():
        setattr(config, key, value)
    return config
