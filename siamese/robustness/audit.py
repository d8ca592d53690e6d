"""``robustness``: how far a trained run's predictions and embeddings move when a real artefact appears.

Every image of the chosen split is scored clean and with each artefact type inserted (several seeded
draws) into its full-size pixels, which then go through exactly the crop and resize the run was trained
with. Recorded against the clean image: whether the predicted class flips, the change of every class
probability, how far the embedding moves (cosine distance, as a share of the median distance from a
clean image to its nearest training image of another class: a shift of 1 would carry a typical image to
the other class's doorstep), and whether its nearest training neighbour changes. Summaries carry a
bootstrap interval over images (draws of one image are not independent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from siamese.config import RunConfig
from siamese.data import load_dataset
from siamese.data.crops import find_mask, read_mask
from siamese.data.decode import fit, load_image, to_batch
from siamese.data.table import DataError, DatasetTable
from siamese.inference.predictor import Predictor
from siamese.robustness.artefacts import ARTEFACT_TYPES, ArtefactLibrary

BOOTSTRAP = 1000
MALIGNANT = ("melanoma", "malignant")
"""The class whose probability a binary audit reports (PH2 binary; HAM10000 and ISIC binary views)."""


@dataclass
class AuditResult:
    rows: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]


def audit_table(run_dir: str | Path, dataset: str | None = None, data_dir: str | None = None,
                metadata: str | None = None, binary: bool = False, only_present: bool = False) -> DatasetTable:
    """The images to audit a run on: its own dataset as it was trained (the run's folder, table and two-class
    view, each unless given), or with ``dataset`` another one, read from ``data_dir``/``metadata`` alone.
    Raises FileNotFoundError when ``run_dir`` holds no config.json, DataError when the images cannot be read."""
    config = RunConfig.load(Path(run_dir) / "config.json")
    if dataset is not None:
        return load_dataset(dataset, data_dir, metadata, binary=binary, only_present=only_present)
    data = config.data
    return load_dataset(data.dataset, data_dir or data.data_dir, metadata or data.metadata,
                        binary=binary or data.binary, only_present=only_present)


def audited_rows(table: DatasetTable, run_dir: Path, split: str) -> pd.DataFrame:
    """The rows of ``split`` in the run's own split (``all``: every row, e.g. another dataset's images)."""
    frame = table.frame
    if "path" not in frame.columns:
        raise DataError(f"the robustness audit needs image files; dataset {table.name} is held in memory")
    if split == "all":
        return frame.reset_index(drop=True)
    manifest = pd.read_csv(run_dir / "split.csv", dtype=str)
    ids = set(manifest.loc[manifest["split"] == split, "image_id"])
    rows = frame[frame["image_id"].astype(str).isin(ids)].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"none of {table.name}'s images is in {run_dir}'s {split} split; use --split all for "
                        "images the run never saw listed (another dataset)")
    return rows


def run_audit(run_dir: str | Path, table: DatasetTable, out: str | Path, library: ArtefactLibrary,
              types: tuple[str, ...] = ARTEFACT_TYPES, repeats: int = 3, split: str = "test", seed: int = 0,
              masks: str | Path | None = None, engine: str = "auto", predictor: Predictor | None = None
              ) -> AuditResult:
    """Audit a run on ``table``'s images; writes ``robustness.csv``, ``robustness_summary.csv``, a grid of
    the largest changes, a bar chart by type and ``robustness.md`` into ``out`` (``predictor``: the run's,
    or any object answering as one)."""
    run_dir, out = Path(run_dir), Path(out)
    unknown = sorted(set(types) - set(ARTEFACT_TYPES))
    if unknown:
        raise DataError(f"unknown artefact type(s) {unknown}; choose from {list(ARTEFACT_TYPES)}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1; got {repeats}")
    rows = audited_rows(table, run_dir, split)
    predictor = predictor or Predictor(run_dir, engine=engine, masks=masks)
    prep, classes = predictor.prep, predictor.prep.classes
    out.mkdir(parents=True, exist_ok=True)
    records, clean_embeddings, examples = [], [], []
    for number, row in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="robustness audit")):
        full = load_image(row.path)
        mask = _lesion_mask(row, masks, full.shape)
        box = prep.box(row.path, masks)
        draws = [(kind, draw) for kind in types for draw in range(repeats)]
        altered = [library.insert(full, kind, np.random.default_rng([seed, number, ARTEFACT_TYPES.index(kind), draw]),
                                  mask) for kind, draw in draws]
        inputs = [fit(full, prep.image_size, box)] + [fit(a, prep.image_size, box) for a in altered]
        embedding, proba = predictor.engine(to_batch(inputs))
        clean_embeddings.append(embedding[0])
        _, neighbours = predictor.nearest(embedding, 1)
        for i, (kind, draw) in enumerate(draws, start=1):
            change = proba[i] - proba[0]
            records.append({"image_id": row.image_id, "label": row.label, "type": kind, "draw": draw,
                            "clean_pred": classes[proba[0].argmax()], "artefact_pred": classes[proba[i].argmax()],
                            "flipped": bool(proba[i].argmax() != proba[0].argmax()),
                            "prob_change": _headline_change(change, classes),
                            "cosine_shift": float(1 - embedding[0] @ embedding[i]),
                            "nn_changed": bool(neighbours[i, 0] != neighbours[0, 0]),
                            **{f"p_change_{c}": float(change[k]) for k, c in enumerate(classes)}})
            examples.append((abs(records[-1]["prob_change"]), inputs[0], inputs[i], records[-1]))
    frame = pd.DataFrame(records)
    scale = other_class_scale(predictor, np.stack(clean_embeddings), rows["label"].astype(str).to_numpy())
    frame["embedding_shift"] = frame["cosine_shift"] / scale
    summary = summarize(frame, seed)
    frame.to_csv(out / "robustness.csv", index=False)
    summary.to_csv(out / "robustness_summary.csv", index=False)
    files = [out / "robustness.csv", out / "robustness_summary.csv",
             _pairs_grid(sorted(examples, key=lambda e: -e[0])[:12], out / "robustness_pairs.png"),
             _bars(summary, out / "robustness_by_type.png")]
    info = {"run": str(run_dir), "dataset": table.name, "split": split, "images": len(rows), "repeats": repeats,
            "types": list(types), "templates": library.counts(), "other_class_scale": scale, "seed": seed,
            "engine": predictor.engine.name}
    files.append(write_markdown(out, summary, info))
    (run_dir / "robustness.json").write_text(json.dumps({**info, "out": str(out.resolve())}, indent=2) + "\n")
    return AuditResult(frame, summary, files)


def _lesion_mask(row: object, masks: str | Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The image's lesion mask when one is known (PH2's own, or one in ``masks``), so artefacts stay off it."""
    listed = getattr(row, "mask", "") or ""
    path = Path(listed) if listed else find_mask(row.path, masks) if masks else None
    return None if path is None else read_mask(path, (shape[1], shape[0]))


def _headline_change(change: np.ndarray, classes: list[str]) -> float:
    """The malignant class's probability change for a binary run; otherwise the largest change of any class."""
    if len(classes) == 2:
        positive = next((k for k, c in enumerate(classes) if c in MALIGNANT), 1)
        return float(change[positive])
    return float(change[np.abs(change).argmax()])


def other_class_scale(predictor: Predictor, clean: np.ndarray, labels: np.ndarray) -> float:
    """Median cosine distance from each clean image to its nearest training image of another class (its own
    class by label when the run knows the label, else by the run's prediction)."""
    reference, reference_labels = predictor.reference, predictor.reference_labels.astype(str)
    known = set(predictor.prep.classes)
    distances = 1 - clean @ reference.T
    own = np.array([label if label in known else None for label in labels], dtype=object)
    missing = own == None  # noqa: E711 (elementwise on an object array)
    if missing.any():
        predicted = np.asarray(reference_labels)[np.argmin(distances[missing], axis=1)]
        own[missing] = predicted
    other = reference_labels[None, :] != own[:, None].astype(str)
    nearest = np.where(other, distances, np.inf).min(axis=1)
    return float(np.median(nearest[np.isfinite(nearest)]))


def summarize(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per type: flip rate, mean and 95th-percentile absolute probability change, the embedding's cosine shift
    (raw, and relative to the other-class distance: a space whose classes overlap makes that distance tiny
    and the relative shift large) and the neighbour change rate, each mean with a 95 % bootstrap interval
    over images."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind, part in frame.groupby("type", sort=False):
        per_image = part.assign(abs_prob_change=part["prob_change"].abs()).groupby("image_id")[
            ["flipped", "abs_prob_change", "cosine_shift", "embedding_shift", "nn_changed"]].mean()
        picks = rng.integers(0, len(per_image), (BOOTSTRAP, len(per_image)))
        row = {"type": kind, "images": len(per_image), "draws": len(part),
               "p95_abs_prob_change": float(part["prob_change"].abs().quantile(0.95))}
        for column, name in (("flipped", "flip_rate"), ("abs_prob_change", "mean_abs_prob_change"),
                             ("cosine_shift", "cosine_shift"), ("embedding_shift", "embedding_shift"),
                             ("nn_changed", "nn_change_rate")):
            values = per_image[column].to_numpy(dtype=float)
            boot = values[picks].mean(axis=1)
            row.update({name: float(values.mean()), f"{name}_ci_low": float(np.quantile(boot, 0.025)),
                        f"{name}_ci_high": float(np.quantile(boot, 0.975))})
        rows.append(row)
    return pd.DataFrame(rows)


def write_markdown(out: Path, summary: pd.DataFrame, info: dict) -> Path:
    """``robustness.md``: the summary table with intervals, and what the numbers mean."""
    lines = robustness_section(summary, info, figures=("robustness_by_type.png", "robustness_pairs.png"))
    path = out / "robustness.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def robustness_section(summary: pd.DataFrame, info: dict, figures: tuple[str, ...] = ()) -> list[str]:
    """The Markdown section shared by ``robustness.md`` and the run's ``report.md``."""
    def cell(row: pd.Series, name: str) -> str:
        return f"{row[name]:.3f} [{row[name + '_ci_low']:.3f}, {row[name + '_ci_high']:.3f}]"

    lines = ["## Artefact robustness", "",
             f"{info['images']} images of `{info['dataset']}` ({info['split']} split), {info['repeats']} seeded "
             f"draws per artefact type, templates {info['templates']}. Mean over images with a 95 % bootstrap "
             "interval. Embedding shift: cosine distance moved, as a share of the median distance from a clean "
             f"image to the nearest training image of another class ({info['other_class_scale']:.3f}).", "",
             "| type | flip rate | mean abs. prob. change | p95 abs. prob. change | cosine shift | embedding shift | "
             "nearest neighbour changed |", "|---|---|---|---|---|---|---|"]
    for _, row in summary.iterrows():
        lines.append(f"| {row['type']} | {cell(row, 'flip_rate')} | {cell(row, 'mean_abs_prob_change')} | "
                     f"{row['p95_abs_prob_change']:.3f} | {cell(row, 'cosine_shift')} | "
                     f"{cell(row, 'embedding_shift')} | {cell(row, 'nn_change_rate')} |")
    lines.append("")
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return lines


def _pairs_grid(examples: list, path: Path) -> Path:
    from siamese.evaluation.figures import image_grid

    images, captions = [], []
    for _, clean, altered, record in examples:
        images += [clean, altered]
        captions += [f"{record['image_id']} clean\nsaid {record['clean_pred']}",
                     f"+{record['type']} (draw {record['draw']})\nsaid {record['artefact_pred']}, "
                     f"dp {record['prob_change']:+.2f}"]
    return image_grid(images, captions, path, "largest probability changes: clean | with artefact")


def _bars(summary: pd.DataFrame, path: Path) -> Path:
    from siamese.evaluation.figures import new_figure, save_figure

    measures = (("flip_rate", "flip rate"), ("mean_abs_prob_change", "mean |prob. change|"),
                ("embedding_shift", "embedding shift"), ("nn_change_rate", "nearest neighbour changed"))
    fig, axes = new_figure(1, len(measures), figsize=(3.2 * len(measures), 3.2))
    for axis, (name, title) in zip(axes, measures, strict=True):
        low = summary[name] - summary[f"{name}_ci_low"]
        high = summary[f"{name}_ci_high"] - summary[name]
        axis.bar(summary["type"], summary[name], yerr=[low, high], capsize=4, color="tab:blue")
        axis.set_title(title, fontsize=9)
    fig.suptitle("Artefact robustness by type (95 % bootstrap interval over images)", fontsize=10)
    return save_figure(fig, path)
