"""ISIC challenge submission files: a run's class probabilities in the challenges' own CSV layouts.

=========  =================================================  =============================================
format     columns, in the official order                      challenge
=========  =================================================  =============================================
isic2018   image, MEL, NV, BCC, AKIEC, BKL, DF, VASC           ISIC 2018 Task 3 (HAM10000's seven diagnoses)
isic2019   image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK    ISIC 2019, both tasks (eight diagnoses and
                                                               UNK, "none of the others")
isic2020   image_name, target                                  SIIM-ISIC 2020 (Kaggle): melanoma probability
isic2024   isic_id, target                                     ISIC 2024 (SLICE-3D, Kaggle): malignancy
=========  =================================================  =============================================

Which of a run's classes fills which column is decided by the class names, never by position:

* isic2018 and isic2019 need exactly HAM10000's seven diagnosis codes (a HAM10000 or DermaMNIST run, or a
  CSV run with those labels); isic2019 also takes an ISIC 2019 run's eight (``unk`` too, when it has one).
  2019 renamed AKIEC to AK: HAM10000's ``akiec`` (actinic keratoses and intraepithelial carcinoma) fills AK.
  SCC and UNK are classes a HAM10000 run never saw (UNK: an ISIC 2019 run neither): they are written as 0
  and reported.
* isic2020's ``target`` is the probability of melanoma: the class ``mel`` (HAM10000 codes) or ``melanoma``
  (PH2, three-class or ``--binary``); for an ISIC 2020 run its ``malignant`` class, because every malignant
  lesion of ISIC 2020 is a melanoma and ``target`` is that label. A benign/malignant run of another dataset
  is refused: HAM10000's ``--binary`` malignant class is mel, bcc and akiec together.

* isic2024's ``target`` is the probability of malignancy of any kind (melanoma, basal or squamous cell
  carcinoma): a run's ``malignant`` class (ISIC 2024, ISIC 2020, or ``--binary`` of HAM10000 or ISIC 2019).

Probabilities are written at full float precision: rounding would create ties, and ties change both the
official scorer's AUC and its balanced accuracy (an arg-max tie counts as wrong there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from siamese.data.hdf5 import split_member
from siamese.data.readers import HAM_CLASSES, ISIC2019_CLASSES
from siamese.data.table import first_offenders
from siamese.runtime.errors import SubmissionError

if TYPE_CHECKING:
    from siamese.inference.predictor import Prediction

SUBMISSION_FORMATS = ("isic2018", "isic2019", "isic2020", "isic2024")

# HAM10000 dx code -> the challenge's column, per format (the official column order).
_HAM_COLUMNS = {
    "isic2018": {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
                 "VASC": "vasc"},
    "isic2019": {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc",
                 "SCC": None, "UNK": None},
}
_ID_COLUMN = {"isic2018": "image", "isic2019": "image", "isic2020": "image_name", "isic2024": "isic_id"}
_MELANOMA_CLASSES = ("mel", "melanoma")


class Submission:
    """One challenge format bound to a run's classes; refused at construction when they cannot be mapped,
    so ``predict`` fails before it reads a single image.

    ``columns`` maps each column after the image id, in the official order, to the index of the run's class
    that fills it (None: written as 0)."""

    def __init__(self, fmt: str, classes: Sequence[str], dataset: str) -> None:
        """``classes``: the run's class names in its probability order; ``dataset``: the run's dataset name.

        Raises SubmissionError naming the run's classes and what the format needs."""
        if fmt not in SUBMISSION_FORMATS:
            raise SubmissionError(f"unknown submission format {fmt!r}; choose from {list(SUBMISSION_FORMATS)}")
        self.format, self.classes = fmt, list(classes)
        self.id_column = _ID_COLUMN[fmt]
        if fmt == "isic2020":
            self.columns = _isic2020_column(classes, dataset)
        elif fmt == "isic2024":
            self.columns = _isic2024_column(classes, dataset)
        else:
            self.columns = _ham_columns(fmt, classes)

    @property
    def notes(self) -> list[str]:
        """What a reader of the file should know: columns written as 0, the class behind isic2020's target."""
        zero = [column for column, index in self.columns.items() if index is None]
        notes = [f"{', '.join(zero)}: the run has no such class; written as 0"] if zero else []
        if self.format in ("isic2020", "isic2024"):
            notes.append(f"target: the probability of the run's class {self.classes[self.columns['target']]!r}")
        return notes

    def table(self, image_ids: Sequence[str], proba: np.ndarray) -> pd.DataFrame:
        """The submission: one row per image, ``proba`` (``N x classes``, the run's order) in the format's
        columns. Raises SubmissionError when two images share an id (a submission has one row per image)."""
        ids = pd.Series(list(image_ids), dtype=str)
        repeated = ids[ids.duplicated()]
        if len(repeated):
            raise SubmissionError(f"images share an id, so a {self.format} submission cannot tell them apart: "
                                  f"{first_offenders(repeated.unique())}")
        proba = np.asarray(proba, dtype=np.float64)
        frame = pd.DataFrame({self.id_column: ids})
        for column, index in self.columns.items():
            frame[column] = 0.0 if index is None else proba[:, index]
        return frame

    def csv(self, predictions: Sequence[Prediction]) -> str:
        """``predict``'s answers as the submission file's text, images named by ``image_id``."""
        table = self.table([image_id(p.image) for p in predictions], np.stack([p.probabilities for p in predictions]))
        return table.to_csv(index=False)


def image_id(path: str | Path) -> str:
    """The id a challenge file names an image by: its file name without the extension (``ISIC_0024306``), or
    its key in an HDF5 archive."""
    inside = split_member(path)
    return inside[1] if inside is not None else Path(path).stem


def _ham_columns(fmt: str, classes: Sequence[str]) -> dict[str, int | None]:
    index = {name: i for i, name in enumerate(classes)}
    if fmt == "isic2019" and set(ISIC2019_CLASSES[:-1]) <= set(classes) <= set(ISIC2019_CLASSES):
        return {code.upper(): index.get(code) for code in ISIC2019_CLASSES}
    if sorted(classes) != sorted(HAM_CLASSES):
        raise SubmissionError(f"{fmt} needs one probability per HAM10000 diagnosis {list(HAM_CLASSES)}; this run's "
                              f"classes are {list(classes)}")
    return {column: None if code is None else index[code] for column, code in _HAM_COLUMNS[fmt].items()}


def _isic2020_column(classes: Sequence[str], dataset: str) -> dict[str, int | None]:
    for name in _MELANOMA_CLASSES:
        if name in classes:
            return {"target": list(classes).index(name)}
    if dataset == "isic2020" and sorted(classes) == ["benign", "malignant"]:
        return {"target": list(classes).index("malignant")}
    why = (" (benign/malignant stands for melanoma only in ISIC 2020, where every malignant lesion is one; "
           "HAM10000's --binary malignant class is mel, bcc and akiec together)" if "malignant" in classes else "")
    raise SubmissionError(f"isic2020's target is the probability of melanoma, but this {dataset} run's classes "
                          f"{list(classes)} have no melanoma class ('mel', 'melanoma'){why}")


def _isic2024_column(classes: Sequence[str], dataset: str) -> dict[str, int | None]:
    if "malignant" in classes:
        return {"target": list(classes).index("malignant")}
    raise SubmissionError(f"isic2024's target is the probability of malignancy, but this {dataset} run's classes "
                          f"{list(classes)} have no 'malignant' class (train with --binary)")
