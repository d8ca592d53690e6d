"""Class balancing: oversampling, balanced subsets and class-balanced batches for triplet mining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import Sampler


def oversample(frame: pd.DataFrame, seed: int = 0, proportions: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Repeat rows of under-represented classes until each class reaches its target share.

    Every original row is kept; with no ``proportions`` all classes get equal shares (50/50 for binary).
    """
    counts = frame["label"].value_counts()
    if proportions is None:
        proportions = {label: 1 / len(counts) for label in counts.index}
    missing = set(counts.index) - set(proportions)
    if missing or not np.isclose(sum(proportions.values()), 1.0):
        raise ValueError(f"proportions must cover every class {sorted(counts.index)} and sum to 1")
    total = max(counts[c] / proportions[c] for c in counts.index)
    rng = np.random.default_rng(seed)
    parts = []
    for label, count in counts.items():
        rows = frame[frame["label"] == label]
        extra = int(round(proportions[label] * total)) - count
        parts.append(rows)
        if extra > 0:
            parts.append(rows.iloc[rng.integers(0, count, extra)])
    return pd.concat(parts).reset_index(drop=True)


def balanced_subset(frame: pd.DataFrame, per_class: int | None = None, seed: int = 0) -> pd.DataFrame:
    """At most ``per_class`` rows of each class, sampled without replacement.

    With no cap every class is cut to the rarest class's size (so binary data becomes 50/50).
    """
    counts = frame["label"].value_counts()
    cap = int(counts.min()) if per_class is None else per_class
    parts = [rows.sample(n=min(cap, len(rows)), random_state=seed) for _, rows in frame.groupby("label")]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def samples_per_class(batch_size: int, n_classes: int) -> int:
    """Smallest m >= 2 that divides the batch and lets the classes fill it (what MPerClassSampler needs)."""
    for m in range(2, batch_size + 1):
        if batch_size % m == 0 and m * n_classes >= batch_size and m < batch_size:
            return m
    raise ValueError(f"no class-balanced batch of {batch_size} fits {n_classes} classes "
                     f"(need batch_size divisible by m, m * classes >= batch_size)")


def check_batches(labels: Sequence[int] | np.ndarray, batch_size: int, m: int | None = None,
                  world_size: int = 1) -> None:
    """Refuse stage 1's batch settings before a run starts, rather than at its first epoch: the batch must
    split into ``m`` images of each of several classes (and evenly across ``world_size`` processes).

    Raises ValueError naming ``--batch-size`` and the nearest sizes that would work.
    """
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} must be divisible by the {world_size} processes")
    n_classes = len(np.unique(labels))
    try:
        class_balanced_sampler(labels, batch_size, m)
    except (ValueError, AssertionError) as exc:  # pytorch-metric-learning asserts on an explicit m
        workable = [size for size in sorted(range(2, 2 * batch_size + 1), key=lambda size: abs(size - batch_size))
                    if size % world_size == 0 and _fits(size, n_classes, m)][:3]
        sizes = [str(size) for size in sorted(workable)]
        hint = f"; {', '.join(sizes[:-1])} or {sizes[-1]} would fit" if len(sizes) > 1 else ""
        raise ValueError(f"--batch-size {batch_size}: {exc}{hint}") from exc


def _fits(batch_size: int, n_classes: int, m: int | None) -> bool:
    if m is not None:
        return batch_size % m == 0 and m * n_classes >= batch_size
    try:
        samples_per_class(batch_size, n_classes)
    except ValueError:
        return False
    return True


def class_balanced_sampler(labels: Sequence[int] | np.ndarray, batch_size: int, m: int | None = None,
                           length: int | None = None) -> MPerClassSampler:
    """Batches with m images of each of several classes, so every batch can form triplets."""
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    m = m or samples_per_class(batch_size, n_classes)
    length = length or len(labels)
    length = max(batch_size, length - length % batch_size)
    return MPerClassSampler(labels, m=m, batch_size=batch_size, length_before_new_iter=length)


class DistributedClassBalancedSampler(Sampler[int]):
    """Each rank's share of one class-balanced *global* batch stream.

    Every rank draws the same ``MPerClassSampler`` sequence (same seed) and keeps its own contiguous
    slice of each global batch, so the batch gathered across ranks, which pytorch-metric-learning's
    distributed miner sees, holds m images of each of its classes exactly as on one device.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, global_batch: int, world_size: int, rank: int,
                 m: int | None = None) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} must be divisible by the {world_size} processes")
        self.inner = class_balanced_sampler(labels, global_batch, m)
        self.global_batch, self.world_size, self.rank = global_batch, world_size, rank
        self.local = global_batch // world_size

    def __len__(self) -> int:
        return len(self.inner) // self.world_size

    def __iter__(self):
        order = np.fromiter(iter(self.inner), dtype=np.int64)
        batches = order.reshape(-1, self.global_batch)
        mine = batches[:, self.rank * self.local:(self.rank + 1) * self.local]
        return iter(mine.reshape(-1).tolist())
