"""2-D projections of a run's embeddings (t-SNE, UMAP), coloured by class and by split.

Colouring by split is what makes leakage or drift visible: test points sitting on top of their own
training twins, or a split that lives in a corner of the space by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from sklearn.manifold import TSNE

from siamese.config import RunConfig
from siamese.data.table import DataError
from siamese.diagnostics.explorer import write_run_explorer
from siamese.evaluation.figures import new_figure, save_figure
from siamese.models import EmbeddingNet
from siamese.runtime.device import resolve_device
from siamese.training.embeddings import stored_embeddings
from siamese.workflows.run_data import build_run_data, embedder_sha256, split_embeddings

METHODS = ("tsne", "umap")
MIN_POINTS = 3
"""Fewest points a projection is made of: t-SNE's perplexity must stay below the number of points and be at
least 1, UMAP needs two neighbours per point."""


def run_embeddings(run_dir: Path, splits: list[str] | None) -> tuple[pd.DataFrame, np.ndarray, Any]:
    """Embeddings of the requested splits (None: all the run has): the run's cache when present, recomputed
    from embedder.pt if not. Raises DataError naming a split the run does not have (a final model has no
    test split), or the embeddings file a run without embedder.pt lacks."""
    config = RunConfig.load(run_dir / "config.json")
    data = build_run_data(config, run_dir)
    splits = list(data.splits) if splits is None else splits
    absent = [s for s in splits if s not in data.splits]
    if absent:
        raise DataError(f"{run_dir} has no {absent} split (its splits: {list(data.splits)})")
    model = None
    frames, arrays = [], []
    for split in splits:
        path = run_dir / "embeddings" / f"{split}.npz"
        ids = data.parts[split]["image_id"].astype(str).to_numpy()
        # absent, of another split.csv, or of another embedder.pt than the run's
        if model is None and stored_embeddings(path, ids, embedder_sha256(run_dir)) is None:
            if not (run_dir / "embedder.pt").is_file():
                raise DataError(f"{run_dir}: no embeddings of its {split} split ({path} is absent or of other "
                                f"images) and no {run_dir / 'embedder.pt'} to compute them; train or resume the run")
            model = EmbeddingNet.from_checkpoint(run_dir / "embedder.pt")
        arrays.append(split_embeddings(model, data.dataset(split), data.parts[split], run_dir, config,
                                       resolve_device("cpu")))
        frames.append(pd.DataFrame({"image_id": ids, "split": split, "label": data.parts[split]["label"].to_numpy(),
                                    "row": np.arange(len(ids))}))
    return pd.concat(frames, ignore_index=True), np.concatenate(arrays), data


def stratified_sample(frame: pd.DataFrame, max_points: int, seed: int = 0) -> np.ndarray:
    """Row positions of at most ``max_points`` points with every class's share kept."""
    if len(frame) <= max_points:
        return np.arange(len(frame))
    fraction = max_points / len(frame)
    picks = frame.groupby("label", group_keys=False).apply(
        lambda g: g.sample(n=max(1, int(round(len(g) * fraction))), random_state=seed), include_groups=False)
    return np.sort(frame.index.get_indexer(picks.index))


def project(embeddings: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """``N x 2`` coordinates of ``N x D`` embeddings, with each method's neighbourhood size shrunk for small N.

    Raises DataError below :data:`MIN_POINTS` points, ValueError for an unknown method.
    """
    n = len(embeddings)
    if n < MIN_POINTS:
        raise DataError(f"{n} image(s): too few for a projection (t-SNE and UMAP need at least {MIN_POINTS})")
    if method == "tsne":
        return TSNE(n_components=2, init="pca", perplexity=min(30.0, max(2.0, (n - 1) / 3)),
                    random_state=seed).fit_transform(embeddings)
    if method == "umap":
        import umap

        # UMAP's spectral start solves for 3 eigenvectors, which needs more than 3 points
        init = "spectral" if n > 3 else "random"
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1, init=init)
        return reducer.fit_transform(embeddings)
    raise ValueError(f"unknown projection {method!r}; choose from {METHODS}")


def scatter(coords: pd.DataFrame, colour_by: str, path: Path, title: str, thumbnails: list | None = None) -> Path:
    fig, ax = new_figure(figsize=(8, 7))
    groups = sorted(coords[colour_by].unique())
    cmap = matplotlib.colormaps.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for i, group in enumerate(groups):
        part = coords[coords[colour_by] == group]
        ax.scatter(part["x"], part["y"], s=8, color=cmap(i % cmap.N), label=str(group), alpha=0.75, linewidths=0)
    wrong = coords[coords["misclassified"]]
    if len(wrong):
        ax.scatter(wrong["x"], wrong["y"], s=28, facecolors="none", edgecolors="black", linewidths=0.7,
                   label="misclassified (test)")
    for image, x, y in thumbnails or []:
        ax.add_artist(AnnotationBbox(OffsetImage(image, zoom=24 / max(image.shape[:2])), (x, y), frameon=True,
                                     pad=0.1))
    ax.legend(markerscale=2, fontsize=8, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def visualize_run(run_dir: str | Path, methods: tuple[str, ...] = METHODS, split: str = "all",
                  max_points: int = 5000, seed: int = 0, per_class_thumbnails: int = 2,
                  wandb_mode: str | None = None, html: bool = False) -> dict[str, Any]:
    """Projections, plots and coordinate CSVs under ``RUN_DIR/projections``; with ``html`` also the explorer
    page ``explorer.html`` (:mod:`siamese.diagnostics.explorer`). Returns what it wrote."""
    run_dir = Path(run_dir)
    shown = None if split == "all" else [split]
    # the explorer's neighbours are training images, needed even when another split is shown
    wanted = [*shown, "train"] if html and shown and "train" not in shown else shown
    everything, all_embeddings, data = run_embeddings(run_dir, wanted)
    in_view = everything if shown is None else everything[everything["split"].isin(shown)]
    frame, embeddings = in_view.reset_index(drop=True), all_embeddings[in_view.index.to_numpy()]
    total = len(frame)
    picks = stratified_sample(frame, max_points, seed)
    frame, embeddings = frame.iloc[picks].reset_index(drop=True), embeddings[picks]
    if len(frame) < MIN_POINTS:  # before any file is written
        raise DataError(f"{run_dir} ({split} split): {len(frame)} image(s): too few for a projection (t-SNE and "
                        f"UMAP need at least {MIN_POINTS})")
    # test errors only: a final model (no test split) circles none, its validation split picked its epochs
    predictions = pd.read_csv(run_dir / "test_predictions.csv", dtype=str) if (
        run_dir / "test_predictions.csv").is_file() else pd.DataFrame(columns=["image_id", "label", "classifier_pred"])
    wrong_ids = set(predictions.loc[predictions["label"] != predictions["classifier_pred"], "image_id"])
    frame["misclassified"] = (frame["split"] == "test") & frame["image_id"].isin(wrong_ids)
    out_dir = run_dir / "projections"
    out_dir.mkdir(exist_ok=True)
    written: dict[str, Any] = {"points": len(frame), "total_points": total, "files": []}
    rng = np.random.default_rng(seed)
    for method in methods:
        coords = frame.assign(**dict(zip(("x", "y"), project(embeddings, method, seed).T, strict=True)))
        stem = f"{method}_{split}"
        coords[["image_id", "split", "label", "x", "y", "misclassified"]].to_csv(out_dir / f"{stem}.csv", index=False)
        thumbs = []
        for _, group in coords.groupby("label"):
            for _, row in group.iloc[rng.permutation(len(group))[:per_class_thumbnails]].iterrows():
                thumbs.append((data.sources[row["split"]][int(row["row"])], row["x"], row["y"]))
        name = method.upper() if method == "umap" else "t-SNE"
        written["files"] += [
            out_dir / f"{stem}.csv",
            scatter(coords, "label", out_dir / f"{stem}_by_class.png", f"{name} of embeddings ({split}), by class",
                    thumbs),
            scatter(coords, "split", out_dir / f"{stem}_by_split.png", f"{name} of embeddings ({split}), by split"),
        ]
        written[method] = coords
    if html:
        train_embeddings = all_embeddings[(everything["split"] == "train").to_numpy()]
        coords = {("UMAP" if m == "umap" else "t-SNE"): written[m][["x", "y"]].to_numpy() for m in methods}
        written["files"].append(write_run_explorer(run_dir, frame, coords, embeddings, data, train_embeddings,
                                                   total))
    if wandb_mode and wandb_mode != "disabled":
        _log_to_wandb(run_dir, written, wandb_mode)
    return written


def _log_to_wandb(run_dir: Path, written: dict[str, Any], mode: str) -> None:
    from siamese.runtime.tracking import Tracker

    tracker = Tracker(run_dir, RunConfig.load(run_dir / "config.json").to_dict(), mode)
    try:
        tracker.log_images({p.stem: p for p in written["files"] if p.suffix == ".png"})
        for method in METHODS:
            if method in written:
                tracker.log_table(f"projection/{method}", written[method][["image_id", "split", "label", "x", "y"]])
    finally:
        tracker.finish()
