"""Which stage-2 read-out should sit on the frozen embedding? Read-out variants fitted on finished runs' saved
embeddings, scored on their test splits and paired run by run.

Usage (from the repository root, on run folders written by ``train.py``, ``cv`` or ``compare``)::

    python experiments/readout.py RUN [RUN ...] --out DIR [--seeds 0 1 2] [--tta 4 8] [--work DIR]
                                  [--references OUT/compare_runs.csv]

The variants (:data:`VARIANTS`): ``dense`` (stage 2 as it was: hidden layers 64 and 32, dropout 0.3, Adam at
1e-3 for 50 epochs, the epoch with the best validation balanced accuracy), ``dense_select_loss`` (the epoch by
class-balanced validation loss), ``dense_wd`` (and a weight decay chosen on validation), ``linear`` (one dense
layer), ``linear_wd`` (and a weight decay chosen on validation), ``linear_wd_lr`` (the same at 20 times the
learning rate, near convergence), each also as ``_last`` (no model selection); ``logistic`` (scikit-learn's
converged logistic regression on the embedding), ``colour_embedding_train`` (on the embedding and the colour
statistics), and both fitted on training and validation (``logistic_trainval``, ``colour_embedding``: the
reference model); ``dense_colour`` and ``linear_colour_wd`` are ``dense`` and ``linear_wd`` on the
embedding and the colour statistics. Each (run, stage-2 seed) is one pair; the test split and embedding are
the run's, so several seeds of one run measure the read-out's own spread, not a split's.

Every variant learns from the run's training split (the dense classifiers oversampled to balance, as stage 2
does) and uses its validation split only where it says so (model selection, the weight decay, tau); the
``*_trainval`` variants are fitted on both, as the reference models are. ``+la`` is the variant with the
class-prior logit adjustment fitted on the validation split (:func:`siamese.training.classify.
fit_logit_adjustment`); ``@ttaV`` the variant on embeddings averaged over V flipped views (the embedder's
``tta``), computed here from the run's ``embedder.pt`` (stage 1 is never retrained). ``shipped`` is the run's
own classifier, read from its predictions. Colour statistics come from the run's ``references/colour_*.npz``
when its references computed them, else are computed here.

Nothing is written into the run folders: the run's split and preprocessing are copied to ``--work``, where the
pixels, features and the variants' checkpoints are kept. Writes ``readout_table.csv`` (one row per run and
variant), ``readout_paired.csv`` (each variant minus each baseline, paired by (run, seed): mean, sd, 95 % interval,
pairs ahead) and ``readout.md`` to ``--out``; the table also holds each variant's validation figures
(``val_*``) where it kept the validation split out of its fit, so a read-out can be chosen on them.

With ``--references`` (the ``compare_runs.csv`` of the ``compare`` that trained the runs, which lie under
``OUT/RECIPE/seedS[/foldF]``), each variant of each recipe is also paired with the reference models scored on
the same held-out images (the same seed and fold), as ``compare`` pairs its own classifier:
``readout_references.csv`` and a section of ``readout.md``. Only the runs' own stage-2 seed pairs there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from siamese.config import ClassifierConfig, RunConfig
from siamese.data.balance import oversample
from siamese.evaluation.metrics import classification_metrics
from siamese.evaluation.reference_features import colour_feature_matrix
from siamese.evaluation.reference_models import REFERENCE_MODELS
from siamese.evaluation.seeds import paired_difference
from siamese.evaluation.tables import markdown_table
from siamese.models import EmbeddingNet
from siamese.runtime.device import resolve_compute
from siamese.runtime.tracking import Tracker
from siamese.training.classify import ClassifierTrainer, fit_logit_adjustment, predict_logits
from siamese.training.embeddings import cached_arrays, compute_embeddings

SPLITS = ("train", "val", "test")
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
DENSE = ClassifierConfig(hidden=(64, 32), dropout=0.3, weight_decays=(0.0,), select="balanced_accuracy")
"""The stage-2 classifier as runs trained it before this experiment: two hidden layers, no weight decay,
the best epoch by validation balanced accuracy."""
LINEAR = dataclasses.replace(DENSE, hidden=())
BASELINES = ("dense", "shipped", "colour_embedding")
METRICS = ("roc_auc", "balanced_accuracy")


@dataclasses.dataclass
class RunArrays:
    """One run's per-split features (``embedding``, ``colour``), class indices and class names."""

    name: str
    run_dir: Path
    config: RunConfig
    classes: list[str]
    y: dict[str, np.ndarray]
    features: dict[str, dict[str, np.ndarray]]
    ids: dict[str, np.ndarray]


@dataclasses.dataclass
class Outputs:
    """A variant's scores: validation ``(N_val, K)`` log-probabilities or logits (None: no validation use
    allowed, e.g. fitted on it) and test probabilities ``(N_test, n_classes)``."""

    val: np.ndarray | None
    test: np.ndarray
    note: str = ""


def run_key(run_dir: Path) -> str:
    """A short folder name for a run's scratch files: its last two path parts and a hash of the whole path."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"{run_dir.parent.name}-{run_dir.name}-{digest}"


def scratch_run(run_dir: Path, work: Path) -> Path:
    """A copy of the files a run's data needs (config, split, preprocessing), pixels cached beside it, so that
    rebuilding the run's data writes nothing into the run folder."""
    scratch = work / run_key(run_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "split.csv", "preprocess.json"):
        shutil.copy2(run_dir / name, scratch / name)
    return scratch


def load_run(run_dir: Path, work: Path) -> RunArrays:
    """The run's saved embeddings, its labels from ``split.csv`` in the embeddings' order, and colour
    statistics (the run's own reference features, or computed into ``work``)."""
    config = RunConfig.load(run_dir / "config.json")
    classes = json.loads((run_dir / "preprocess.json").read_text())["classes"]
    labels = pd.read_csv(run_dir / "split.csv", dtype=str).set_index("image_id")["label"]
    code = {c: i for i, c in enumerate(classes)}
    ids, y, features = {}, {}, {}
    for split in SPLITS:
        saved = np.load(run_dir / "embeddings" / f"{split}.npz")
        ids[split] = saved["image_id"]
        y[split] = labels.loc[ids[split]].map(code).to_numpy()
        features[split] = {"embedding": saved["embedding"]}
    missing = [s for s in SPLITS if not _matching(run_dir / "references" / f"colour_{s}.npz", ids[s])]
    if missing:
        data = _run_data(run_dir, work, config)
        for split in missing:
            path = work / run_key(run_dir) / f"colour_{split}.npz"
            cached_arrays(path, ids[split],
                          lambda split=split: {"features": colour_feature_matrix(data.sources[split])})
    for split in SPLITS:
        own = run_dir / "references" / f"colour_{split}.npz"
        path = own if split not in missing else work / run_key(run_dir) / f"colour_{split}.npz"
        features[split]["colour"] = np.load(path)["features"]
    return RunArrays(run_key(run_dir), run_dir, config, classes, y, features, ids)


def _matching(path: Path, ids: np.ndarray) -> bool:
    return path.is_file() and np.array_equal(np.load(path)["image_id"], ids.astype(str))


def _run_data(run_dir: Path, work: Path, config: RunConfig):  # noqa: ANN202 (the pipeline's RunData)
    from siamese.workflows.run_data import build_run_data

    scratch = scratch_run(run_dir, work)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=str(work / "pixels")))
    return build_run_data(config, scratch)


def tta_embeddings(run: RunArrays, views: int, work: Path) -> dict[str, np.ndarray]:
    """Each split's embeddings from the run's frozen ``embedder.pt``, averaged over ``views`` flipped views
    (cached in ``work``)."""
    model = EmbeddingNet.from_checkpoint(run.run_dir / "embedder.pt")
    model.tta = views
    device = torch.device("cpu")
    compute = resolve_compute(run.config.compute, device)
    data = None
    out = {}
    for split in SPLITS:
        path = work / run.name / f"tta{views}_{split}.npz"

        def compute_split(split: str = split) -> dict[str, np.ndarray]:
            nonlocal data
            data = data or _run_data(run.run_dir, work, run.config)
            return {"embedding": compute_embeddings(model, data.dataset(split), device, 64, 0, f"tta{views} {split}",
                                                    compute.bf16, compute.channels_last)}
        out[split] = cached_arrays(path, run.ids[split].astype(str), compute_split)["embedding"]
    return out


def torch_readout(cfg: ClassifierConfig) -> Callable[..., dict[str, Outputs]]:
    """Stage 2's own trainer with ``cfg`` on the oversampled training split: the model the validation split picks
    (weight decay, epoch), and under ``_last`` the one it ends with (the last epoch of the last weight decay, no
    model selection)."""
    def fit(run: RunArrays, x: dict[str, np.ndarray], folder: Path) -> dict[str, Outputs]:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in ("classifier.pt", "checkpoints/classifier_last.pt"):
            (folder / stale).unlink(missing_ok=True)
        trainer = ClassifierTrainer(len(run.classes), x["train"].shape[1], cfg=cfg, device=torch.device("cpu"),
                                    run_dir=folder, tracker=Tracker(folder, {}, "disabled"), seed=run.config.seed)
        picks = oversample(pd.DataFrame({"row": np.arange(len(run.y["train"])), "label": run.y["train"]}),
                           run.config.seed)["row"].to_numpy()
        trainer.fit(x["train"][picks], run.y["train"][picks], x["val"], run.y["val"])
        last = _outputs(trainer.model.eval(), x)
        best = _outputs(trainer.load_best(), x,
                        f"weight decay {trainer.state['best_weight_decay']}, epoch {trainer.state['best_epoch']}")
        return {"": best, "_last": last}
    return fit


def _outputs(model: torch.nn.Module, x: dict[str, np.ndarray], note: str = "") -> Outputs:
    logits = {s: predict_logits(model, x[s], torch.device("cpu")) for s in ("val", "test")}
    with torch.no_grad():
        test = model.probabilities(torch.from_numpy(logits["test"])).numpy()
    return Outputs(logits["val"], test, note)


def sklearn_readout(trainval: bool) -> Callable[..., dict[str, Outputs]]:
    """The reference models' logistic regression (standardised, class-balanced, C = 1), fitted on the training
    split, or on training and validation together (then without validation outputs)."""
    def fit(run: RunArrays, x: dict[str, np.ndarray], folder: Path) -> dict[str, Outputs]:
        fit_x = np.vstack([x["train"], x["val"]]) if trainval else x["train"]
        fit_y = np.concatenate([run.y["train"], run.y["val"]]) if trainval else run.y["train"]
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                                   random_state=run.config.seed))
        model.fit(fit_x, fit_y)
        proba = {s: np.zeros((len(x[s]), len(run.classes))) for s in ("val", "test")}
        for s in proba:
            proba[s][:, model.classes_] = model.predict_proba(x[s])
        val = None if trainval else _as_logits(proba["val"])
        return {"": Outputs(val, proba["test"])}
    return fit


def _as_logits(proba: np.ndarray) -> np.ndarray:
    """Probabilities as the logits a stage-2 head gives: ``(N, 1)`` log-odds when binary, log-probabilities else."""
    logp = np.log(np.clip(proba, 1e-12, 1))
    return (logp[:, 1] - logp[:, 0])[:, None] if proba.shape[1] == 2 else logp


def _from_logits(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


VARIANTS: dict[str, tuple[tuple[str, ...], Callable[..., dict[str, Outputs]]]] = {
    "dense": (("embedding",), torch_readout(DENSE)),
    "dense_select_loss": (("embedding",), torch_readout(dataclasses.replace(DENSE, select="loss"))),
    "linear": (("embedding",), torch_readout(LINEAR)),
    "linear_wd": (("embedding",), torch_readout(dataclasses.replace(LINEAR, weight_decays=WEIGHT_DECAYS,
                                                                    select="loss"))),
    "linear_wd_lr": (("embedding",), torch_readout(dataclasses.replace(LINEAR, weight_decays=WEIGHT_DECAYS,
                                                                       select="loss", lr=0.02))),
    "dense_wd": (("embedding",), torch_readout(dataclasses.replace(DENSE, weight_decays=WEIGHT_DECAYS,
                                                                   select="loss"))),
    "logistic": (("embedding",), sklearn_readout(trainval=False)),
    "logistic_trainval": (("embedding",), sklearn_readout(trainval=True)),
    "colour_embedding_train": (("colour", "embedding"), sklearn_readout(trainval=False)),
    "colour_embedding": (("colour", "embedding"), sklearn_readout(trainval=True)),
    "dense_colour": (("colour", "embedding"), torch_readout(DENSE)),
    "linear_colour_wd": (("colour", "embedding"), torch_readout(dataclasses.replace(LINEAR, weight_decays=WEIGHT_DECAYS,
                                                                                    select="loss"))),
}
"""Every read-out tried: the features it reads and how it is fitted (``_last``: the same training without
model selection)."""
TTA_VARIANTS = ("dense", "dense_colour", "linear_wd", "colour_embedding")


def score(run: RunArrays, proba: np.ndarray, split: str = "test") -> dict[str, float]:
    """``METRICS`` of ``proba`` on ``split``, the validation split's prefixed ``val_``."""
    summary, _ = classification_metrics(run.y[split], proba, run.classes)
    prefix = "" if split == "test" else f"{split}_"
    return {prefix + m: summary[m] for m in METRICS}


def shipped(run: RunArrays) -> np.ndarray | None:
    """The run's own classifier's test probabilities, in the embeddings' order; None before it is scored."""
    path = run.run_dir / "test_predictions.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id").loc[run.ids["test"]]
    return frame[[f"classifier_p_{c}" for c in run.classes]].to_numpy()


def evaluate(run: RunArrays, work: Path, tta: tuple[int, ...], variants: list[str]) -> list[dict[str, object]]:
    """Every variant's test figures on one run (``+la``: logit-adjusted; ``@ttaV``: on TTA embeddings)."""
    rows = []
    own = shipped(run)
    if own is not None:
        rows.append({"run": str(run.run_dir), "seed": run.config.seed, "variant": "shipped", **score(run, own)})
    embeddings = {1: {s: run.features[s]["embedding"] for s in SPLITS}}
    for views in tta:
        embeddings[views] = tta_embeddings(run, views, work)
    for views, embedding in embeddings.items():
        names = variants if views == 1 else [v for v in TTA_VARIANTS if v in variants]
        for name in names:
            kinds, fit = VARIANTS[name]
            x = {s: np.hstack([embedding[s] if k == "embedding" else run.features[s][k] for k in kinds])
                 for s in SPLITS}
            base = name if views == 1 else f"{name}@tta{views}"
            for suffix, out in fit(run, x, work / run.name / f"{base}-seed{run.config.seed}").items():
                label = base + suffix
                val = {} if out.val is None else score(run, _from_logits(out.val), "val")
                rows.append({"run": str(run.run_dir), "seed": run.config.seed, "variant": label, **score(run, out.test),
                             **val, "note": out.note})
                if out.val is not None:
                    tau, offset = fit_logit_adjustment(out.val, run.y["val"], run.y["train"], len(run.classes))
                    adjusted = _from_logits(_as_logits(out.test) + offset)
                    rows.append({"run": str(run.run_dir), "seed": run.config.seed, "variant": f"{label}+la",
                                 **score(run, adjusted), "note": f"tau {tau}"})
                for row in rows[-2 if out.val is not None else -1:]:
                    print(f"{run.name} seed {run.config.seed} {row['variant']}: "
                          + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS), flush=True)
    return rows


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """Each variant minus each of :data:`BASELINES`, paired by (run, stage-2 seed): mean, sd, 95 % interval, pairs
    ahead (``shipped`` pairs with every seed of its run)."""
    rows = []
    for baseline in (b for b in BASELINES if b in set(table["variant"])):
        theirs = table[table["variant"] == baseline].set_index(["run", "seed"])
        for variant in dict.fromkeys(table["variant"]):
            if variant == baseline:
                continue
            mine = table[table["variant"] == variant].set_index(["run", "seed"])
            for metric in METRICS:
                rows.append({"variant": variant, "baseline": baseline, "metric": metric,
                             **paired_difference(mine[metric], theirs[metric])})
    return pd.DataFrame(rows)


def compare_key(run: str) -> tuple[str, int, int]:
    """(recipe, seed, fold) of a run folder that ``compare`` wrote: ``OUT/RECIPE/seedS/foldF`` (``cv``) or
    ``OUT/RECIPE/seedS`` (``train`` runs, fold 0). Raises ValueError for any other folder."""
    match = re.search(r"([^/]+)/seed(\d+)(?:/fold(\d+))?$", Path(run).as_posix())
    if match:
        return match[1], int(match[2]), int(match[3] or 0)
    raise ValueError(f"{run}: not a run folder of `compare` (OUT/RECIPE/seedS[/foldF])")


def versus_references(table: pd.DataFrame, compare_runs: pd.DataFrame) -> pd.DataFrame:
    """Each recipe's variants minus each reference model of ``compare_runs`` (columns ``seed``, ``fold``,
    ``model``, the metrics), paired by (seed, fold): the variant's own ``variant_mean`` and ``variant_sd`` over
    those runs, then the difference's (``mean_difference``, ``sd``, the interval, runs ahead)."""
    own_seed = table.copy()
    keys = [compare_key(run) for run in own_seed["run"]]
    own_seed["recipe"] = [k[0] for k in keys]
    own_seed["run_seed"], own_seed["fold"] = [k[1] for k in keys], [k[2] for k in keys]
    own_seed = own_seed[own_seed["seed"] == own_seed["run_seed"]]
    references = [m for m in dict.fromkeys(compare_runs["model"]) if m in REFERENCE_MODELS]
    rows = []
    for (recipe, variant), mine in own_seed.groupby(["recipe", "variant"], sort=False):
        mine = mine.set_index(["run_seed", "fold"])
        for reference in references:
            # a probe is scored in every recipe's runs, on the same images: one row per (seed, fold)
            theirs = compare_runs[compare_runs["model"] == reference].groupby(["seed", "fold"]).first()
            for metric in METRICS:
                rows.append({"recipe": recipe, "variant": variant, "reference": reference, "metric": metric,
                             "variant_mean": mine[metric].mean(), "variant_sd": mine[metric].std(),
                             **paired_difference(mine[metric], theirs[metric])})
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, out: Path, compare_runs: pd.DataFrame | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "readout_table.csv", index=False)
    differences = paired(table)
    differences.to_csv(out / "readout_paired.csv", index=False)
    columns = [c for c in (*METRICS, *(f"val_{m}" for m in METRICS)) if c in table.columns]
    means = table.groupby("variant", sort=False)[columns].agg(["mean", "std", "count"])
    means.columns = [f"{m}_{s}" for m, s in means.columns]
    if differences.empty:  # no baseline among the variants: nothing pairs
        differences = pd.DataFrame(columns=["variant", "baseline", "metric", "mean_difference", "ci95_low",
                                            "ci95_high"])
    lines = [f"# Stage-2 read-outs on {table['run'].nunique()} run(s): test figures", "",
             markdown_table(means.reset_index().round(4)), ""]
    first = next((b for b in BASELINES if b in set(differences["baseline"])), None)
    if first is not None:  # the first baseline that was run, its differences side by side
        versus = differences[differences["baseline"] == first].pivot(
            index="variant", columns="metric", values=["mean_difference", "ci95_low", "ci95_high"])
        versus.columns = [f"{m} {s}" for s, m in versus.columns]
        lines += [f"## Paired differences from `{first}`", "", markdown_table(versus.reset_index().round(4)), ""]
    lines += ["## All paired differences", "", markdown_table(differences.round(4)), ""]
    if compare_runs is not None:
        references = versus_references(table, compare_runs)
        references.to_csv(out / "readout_references.csv", index=False)
        lines += ["## Each recipe's read-outs minus the reference models (same seed and fold)", "",
                  markdown_table(references.round(4)), ""]
    (out / "readout.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (with embeddings/)")
    parser.add_argument("--out", type=Path, required=True, help="where the tables are written")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: OUT/work)")
    parser.add_argument("--tta", type=int, nargs="*", default=[], choices=(2, 4, 8),
                        help="also score the main read-outs on embeddings averaged over this many views")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="stage-2 seeds per run, each (run, seed) one pair (default: the run's own seed)")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the read-outs to fit (default: all)")
    parser.add_argument("--references", type=Path, default=None,
                        help="compare_runs.csv of the compare that trained the runs: pair with its references")
    args = parser.parse_args(argv)
    compare_runs = None
    if args.references is not None:
        if not args.references.is_file():
            parser.error(f"--references {args.references}: no such file (a compare's compare_runs.csv)")
        compare_runs = pd.read_csv(args.references)
        try:
            for run_dir in args.runs:
                compare_key(str(run_dir))
        except ValueError as exc:
            parser.error(str(exc))
    torch.set_num_threads(1)  # tiny models: more threads only contend
    work = args.work or args.out / "work"
    rows = []
    for run_dir in args.runs:
        if not (run_dir / "embeddings" / "test.npz").is_file():
            print(f"{run_dir}: no test embeddings yet, skipped", flush=True)
            continue
        run = load_run(run_dir, work)
        for seed in args.seeds if args.seeds is not None else [run.config.seed]:
            run.config.seed = seed
            rows += evaluate(run, work, tuple(args.tta), args.variants)
            write(pd.DataFrame(rows), args.out, compare_runs)  # after every seed: a long call's tables grow as it goes
    print(f"wrote {args.out / 'readout.md'}")


if __name__ == "__main__":
    main()
