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


def context_features(proba: np.ndarray, embeddings: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """The classifier's log-probabilities ``(N, C)`` beside :func:`ugly_duckling_features`."""
    return np.hstack([np.log(np.clip(proba, 1e-7, 1.0)), ugly_duckling_features(embeddings, patients)])


def patient_context_proba(val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                          test: tuple[np.ndarray, np.ndarray, np.ndarray], n_classes: int, seed: int = 0
                          ) -> np.ndarray:
    """``(N_test, n_classes)``: class-balanced logistic regression on :func:`context_features`, fitted on
    the validation split's ``(proba, embeddings, patients, targets)`` and applied to the test split's
    ``(proba, embeddings, patients)``. Classes absent from the validation split get probability 0."""
    x_val = context_features(*val[:3])
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    model.fit(x_val, val[3])
    out = np.zeros((len(test[0]), n_classes))
    out[:, model.classes_] = model.predict_proba(context_features(*test))
    return out
