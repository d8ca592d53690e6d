"""Per-patient context in embedding space: the "ugly duckling" signal.

Dermatologists judge a lesion against the same patient's other lesions: a naevus that looks unlike the
patient's other naevi is suspicious (Grob & Bonerandi, "The 'ugly duckling' sign", Arch Dermatol 1998;
ISIC 2020 was published with patient ids for this reason, Rotemberg et al., Sci Data 2021). A metric space
makes the sign measurable: how far a lesion's embedding lies from those of its patient's other lesions.
None of the Siamese studies this project grew from used it.

Only other images of the same patient in the same split are used, and no labels: at prediction time a
clinician has all of a patient's lesions. The signal is combined with the classifier's output by a
logistic regression fitted on the validation split (the classifier has seen the training split).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PATIENT_DATASETS = ("isic2020", "csv", "synthetic")
"""Datasets whose group column can name patients (HAM10000's and PH2's groups are lesions or images)."""


def check_patient_context(dataset: str) -> None:
    """Raises ValueError when ``dataset``'s groups are not patients."""
    if dataset not in PATIENT_DATASETS:
        raise ValueError(f"--patient-context compares each lesion with its patient's other lesions and needs "
                         f"patient ids as the table's groups ({', '.join(PATIENT_DATASETS)}); {dataset}'s groups "
                         f"are lesions or images")


def ugly_duckling_features(embeddings: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """``(N, 3)``: for each image, the Euclidean distance of its embedding ``(N, D)`` to the mean embedding
    of the same patient's other images; that distance over the patient's mean such distance (above 1: the
    patient's odd one out); and 1 where the patient has another image (else both distances are neutral:
    0 and 1)."""
    patients = np.asarray(patients).astype(str)
    out = np.zeros((len(embeddings), 3))
    out[:, 1] = 1.0
    for patient in np.unique(patients):
        rows = np.flatnonzero(patients == patient)
        if len(rows) < 2:
            continue
        own = embeddings[rows]
        others_mean = (own.sum(axis=0, keepdims=True) - own) / (len(rows) - 1)
        distance = np.linalg.norm(own - others_mean, axis=1)
        out[rows, 0] = distance
        out[rows, 1] = distance / max(distance.mean(), 1e-12)
        out[rows, 2] = 1.0
    return out


def context_features(proba: np.ndarray, embeddings: np.ndarray, patients: np.ndarray,
                     fill: np.ndarray | None = None) -> np.ndarray:
    """``(N, C + 2)``: the classifier's log-probabilities ``(N, C)`` beside the two distances of
    :func:`ugly_duckling_features`. Lesions without context get ``fill`` (the mean distances of lesions with
    context, from the fitting split) so that having no other lesion says nothing: how many images a
    patient has is a trait of how a dataset was collected, not the ugly-duckling sign, and on the shared
    ISIC 2020 copy it alone moves the ROC-AUC noticeably (measured in docs/results/isic2020.md)."""
    signal = ugly_duckling_features(embeddings, patients)
    alone = signal[:, 2] == 0
    distances = signal[:, :2]
    if fill is not None:
        distances[alone] = fill
    return np.hstack([np.log(np.clip(proba, 1e-7, 1.0)), distances])


def context_fill(embeddings: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """``(2,)``: the mean distances of the lesions that have context (neutral ``(0, 1)`` if none has)."""
    signal = ugly_duckling_features(embeddings, patients)
    with_context = signal[:, 2] == 1
    return signal[with_context, :2].mean(axis=0) if with_context.any() else np.array([0.0, 1.0])


def patient_context_proba(val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                          test: tuple[np.ndarray, np.ndarray, np.ndarray], n_classes: int, seed: int = 0,
                          use_context: bool = True) -> np.ndarray:
    """``(N_test, n_classes)``: class-balanced logistic regression on :func:`context_features`, fitted on
    the validation split's ``(proba, embeddings, patients, targets)`` and applied to the test split's
    ``(proba, embeddings, patients)``. Classes absent from the validation split get probability 0.

    ``use_context=False`` fits the same regression on the classifier's output alone: the control that
    says how much of a difference is the refit on the validation split rather than the patient context."""
    fill = context_fill(*val[1:3])
    columns = slice(None) if use_context else slice(0, -2)
    x_val = context_features(*val[:3], fill)[:, columns]
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    model.fit(x_val, val[3])
    out = np.zeros((len(test[0]), n_classes))
    out[:, model.classes_] = model.predict_proba(context_features(*test, fill)[:, columns])
    return out
