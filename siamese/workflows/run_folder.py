"""A run's folder: where a new run writes, how a resumed one is found and checked, what a failed setup
removes again, and a finished one read back (:func:`load_run`).

The run folder is the unit of work: config, split, checkpoints, history, metrics and plots all live
there, and ``resume`` needs nothing else.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamese.config import RunConfig, resumed
from siamese.data.table import DataError
from siamese.runtime.json_files import folder_problem, read_json

if TYPE_CHECKING:
    import pandas as pd

    from siamese.inference.predictor import Predictor


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{config.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def resumed_config(run_dir: str | Path, changes: dict[str, Any] | None = None) -> RunConfig:
    """The config a run resumed in ``run_dir`` continues with: its saved ``config.json`` with the ``changes``
    (dotted settings) it may make. Raises DataError when the folder holds no run, ValueError naming a change
    a resumed run cannot make (:func:`siamese.config.resumed`)."""
    saved_path = Path(run_dir) / "config.json"
    if problem := folder_problem(run_dir):
        raise DataError(f"{run_dir}: {problem}, so nothing to resume")
    if not saved_path.is_file():
        raise DataError(f"{run_dir}: no config.json, so nothing to resume")
    return resumed(RunConfig.load(saved_path), changes or {}, saved_path)


def new_run_dir(config: RunConfig) -> Path:
    """The folder a new run of ``config`` writes to (``config.out``, else a dated one under ``runs/``). Raises
    DataError when it already holds a run."""
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if (run_dir / "config.json").is_file():
        raise DataError(f"{run_dir} already holds a run; continue it (train --resume {run_dir}, or "
                        f"run_training(config, resume='{run_dir}') from Python) or give another out folder")
    return run_dir


def prepare_run_dir(config: RunConfig, resume: str | Path | None, changes: dict[str, Any] | None = None
                    ) -> tuple[RunConfig, Path, list[Path]]:
    """The run folder and its config; for a new run also what it created, to undo if setup fails.

    A resumed run keeps its saved config; ``changes`` (dotted settings asked for with ``--resume``) are made
    and saved where they are safe (:data:`siamese.config.RESUMABLE`), and refused by name otherwise."""
    if resume is not None:
        run_dir = Path(resume)
        config = resumed_config(run_dir, changes)
        if config != RunConfig.load(run_dir / "config.json"):
            config.save(run_dir / "config.json")
        return config, run_dir, []
    run_dir = new_run_dir(config)
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


@dataclass(frozen=True)
class Run:
    """A run folder read back for a notebook: what it was told (``config``), what it scored (``metrics``, the
    contents of ``metrics.json``: empty until the run has been scored) and its split (``split``: one row per
    image with ``image_id``, ``label``, ``group`` and ``split``)."""

    path: Path
    config: RunConfig
    metrics: dict[str, Any]
    split: pd.DataFrame

    def predictor(self, device: str = "cpu", engine: str = "auto") -> Predictor:
        """The run's trained model, ready for :meth:`~siamese.inference.predictor.Predictor.predict`.

        Args:
            device: where the torch engine runs (``cpu``, ``cuda``, ``auto``); ONNX Runtime runs on the CPU.
            engine: ``auto`` (ONNX Runtime when the run's export is current, else torch), ``onnx`` or ``torch``.

        Returns:
            A predictor loaded once for many images.

        Raises:
            FileNotFoundError: the run has not finished (no checkpoints or embeddings).
        """
        from siamese.inference.predictor import Predictor

        return Predictor(self.path, device=device, engine=engine)

    def __repr__(self) -> str:
        # the dataclass's own repr prints the whole config and metrics.json, confusion matrices included
        scored = self.metrics.get("classifier", {})
        headline = ", ".join(f"{name} {scored[name]:.3f}" for name in ("balanced_accuracy", "roc_auc")
                             if isinstance(scored.get(name), int | float))
        counts = self.split["split"].value_counts()
        sizes = "/".join(str(int(counts.get(name, 0))) for name in ("train", "val", "test"))
        scores = f"{self.metrics.get('scored_on', 'test')} {headline}" if headline else "not scored"
        return (f"Run({os.fspath(self.path)!r}, preset={self.config.preset!r}, "
                f"dataset={self.config.data.dataset!r}, train/val/test={sizes}, {scores})")


def load_run(run_dir: str | Path) -> Run:
    """A run folder written by ``train`` (or :func:`~siamese.workflows.training_run.run_training`).

    Args:
        run_dir: the folder holding the run's ``config.json``.

    Returns:
        Its config, metrics and split.

    Raises:
        FileNotFoundError: ``run_dir`` holds no ``config.json`` or no ``split.csv``.
    """
    from siamese.data.splits import read_manifest

    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / "config.json")
    if not (run_dir / "split.csv").is_file():
        raise FileNotFoundError(f"{run_dir / 'split.csv'}: not found; the run stopped before its split was made")
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    return Run(run_dir, config, metrics, read_manifest(run_dir / "split.csv"))
