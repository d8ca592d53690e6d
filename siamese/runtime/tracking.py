"""Weights & Biases logging, offline by default so a run never needs the network.

Offline runs land in ``RUN_DIR/wandb`` and can be uploaded later with ``wandb sync``; ``disabled``
turns every call into a no-op (tests), as does wandb's own switch ``WANDB_MODE=disabled`` in the
environment, whatever ``--wandb`` says. The wandb run id is kept in the run folder so ``--resume``
continues the same dashboard run.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pandas as pd


class Tracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], mode: str = "offline") -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"--wandb must be offline, online or disabled; got {mode!r}")
        self.run = None
        if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
            return
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project="siamese-lesions", name=run_dir.name, id=run_id, resume="allow",
                              dir=str(run_dir), mode=mode, config=config)

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in values.items() if v is not None}, step=step)

    def log_images(self, images: dict[str, Path]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Image(str(path)) for name, path in images.items() if Path(path).is_file()})

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(dataframe=frame)})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
