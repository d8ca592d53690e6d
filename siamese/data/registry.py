"""Every dataset by name, one entry each: how it is read, how it becomes two classes and the preset a run
starts from; and the other named choices the data settings accept.

A dataset is added by registering a loader (as timm's ``register_model`` does for a network)::

    @register_dataset("mydata", preset="lightweight")
    def _mydata(source: DatasetSource) -> DatasetTable:
        return read_mydata(source.data_dir, source.metadata)

The command line's ``--dataset`` choices, :func:`siamese.data.load_dataset` and the preset ``train`` picks
for ``--dataset`` alone all come from here. The readers are imported when a dataset is loaded, not when
this module is, so the configuration can list the names without loading pandas' readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from siamese.data.table import DatasetTable

AUGMENTATIONS = ("lesion", "dermoscopy", "light", "none")
CROPS = ("none", "lesion-mask", "lesion")
"""``lesion-mask``: the dataset's own lesion masks; ``lesion``: masks predicted by a ``segment train`` run."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's files are and how to read them (the arguments of :func:`siamese.data.load_dataset`).

    ``lesions_per_class`` and ``seed`` shape the generated ``synthetic`` set; ``require_images`` is False
    where only the table is wanted (``split``, ``audit``)."""

    data_dir: str | Path | None = None
    metadata: str | Path | None = None
    require_images: bool = True
    only_present: bool = False
    seed: int = 0
    lesions_per_class: int = 24


@dataclass(frozen=True)
class Dataset:
    """One registered dataset.

    Attributes:
        name: the ``--dataset`` value.
        load: reads the table from a :class:`DatasetSource`.
        preset: the preset ``train --dataset NAME`` starts from when no ``--preset`` is given.
        binary: its own two-class view (malignant classes named by the dataset); None: the table is kept as it
            is when its classes are already ``benign``/``malignant``, else HAM10000's malignant classes decide.
    """

    name: str
    load: Callable[[DatasetSource], DatasetTable]
    preset: str = "lightweight"
    binary: Callable[[DatasetTable], DatasetTable] | None = None


DATASET_REGISTRY: dict[str, Dataset] = {}


def register_dataset(name: str, *, preset: str = "lightweight",
                     binary: Callable[[DatasetTable], DatasetTable] | None = None
                     ) -> Callable[[Callable[[DatasetSource], DatasetTable]], Callable[[DatasetSource], DatasetTable]]:
    """Registers the decorated loader as dataset ``name``.

    Args:
        name: the ``--dataset`` value; must not be registered already.
        preset: the preset a run on it starts from (a name of :data:`siamese.config.PRESETS`).
        binary: its own two-class view, if the generic one does not fit.

    Returns:
        The decorator, which returns the loader unchanged.

    Raises:
        ValueError: ``name`` is registered already.
    """
    if name in DATASET_REGISTRY:
        raise ValueError(f"dataset {name!r} is registered already")

    def register(load: Callable[[DatasetSource], DatasetTable]) -> Callable[[DatasetSource], DatasetTable]:
        DATASET_REGISTRY[name] = Dataset(name, load, preset, binary)
        return load

    return register


def dataset_entry(name: str) -> Dataset:
    """The registered dataset ``name``.

    Raises:
        DataError: no dataset of that name is registered (the message lists those that are).
    """
    from siamese.data.table import DataError

    try:
        return DATASET_REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose from {list(DATASET_REGISTRY)}") from None


def _single_file(source: DatasetSource, default: str, name: str) -> Path:
    from siamese.data.table import DataError

    if source.metadata is not None:
        return Path(source.metadata)
    if source.data_dir is None:
        raise DataError(f"{name}: give --metadata FILE or --data-dir DIR")
    path = Path(source.data_dir)
    return path if path.is_file() else path / default


def _isic2019_binary(table: DatasetTable) -> DatasetTable:
    from siamese.data.readers import ISIC2019_MALIGNANT, to_binary

    return to_binary(table, ISIC2019_MALIGNANT)


def _ph2_binary(table: DatasetTable) -> DatasetTable:
    from siamese.data.readers import PH2_MALIGNANT, to_binary

    return to_binary(table, PH2_MALIGNANT, ("nevus", "melanoma"))


@register_dataset("ham10000", preset="ham")
def _ham10000(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_ham10000

    return read_ham10000(source.data_dir, source.metadata, require_images=source.require_images,
                         only_present=source.only_present)


@register_dataset("isic2019", preset="ham", binary=_isic2019_binary)
def _isic2019(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_isic2019

    return read_isic2019(source.data_dir, source.metadata, require_images=source.require_images,
                         only_present=source.only_present)


@register_dataset("isic2020", preset="isic")
def _isic2020(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_isic2020

    return read_isic2020(source.data_dir, source.metadata, require_images=source.require_images,
                         only_present=source.only_present)


@register_dataset("isic2024", preset="isic")
def _isic2024(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_isic2024

    return read_isic2024(source.data_dir, source.metadata, require_images=source.require_images,
                         only_present=source.only_present)


@register_dataset("ph2", preset="ph2", binary=_ph2_binary)
def _ph2(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_ph2

    return read_ph2(source.data_dir, require_images=source.require_images)


@register_dataset("dermamnist")
def _dermamnist(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_npz

    return read_npz(_single_file(source, "dermamnist.npz", "dermamnist"))


@register_dataset("csv")
def _csv(source: DatasetSource) -> DatasetTable:
    from siamese.data.readers import read_image_csv

    return read_image_csv(_single_file(source, "images.csv", "csv"))


@register_dataset("digits", preset="tiny")
def _digits(source: DatasetSource) -> DatasetTable:
    from siamese.data.embedded import read_digits

    return read_digits()


@register_dataset("synthetic", preset="tiny")
def _synthetic(source: DatasetSource) -> DatasetTable:
    from siamese.data.embedded import make_synthetic

    return make_synthetic(lesions_per_class=source.lesions_per_class, seed=source.seed)


DATASETS = tuple(DATASET_REGISTRY)
"""The registered names, in registration order (the ``--dataset`` choices)."""
