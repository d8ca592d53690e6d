"""A run's folder: where a new run writes, how a resumed one is found and checked, and what a failed
setup removes again.

The run folder is the unit of work: config, split, checkpoints, history, metrics and plots all live
there, and ``resume`` needs nothing else.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from siamese.config import RunConfig, resumed
from siamese.data.table import DataError


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
