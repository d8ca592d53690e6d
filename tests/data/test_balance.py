import numpy as np
import pandas as pd

from siamese.data import balanced_subset, class_balanced_sampler, oversample
from siamese.data.balance import samples_per_class


def imbalanced() -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{i}" for i in range(110)], "label": ["benign"] * 100 + ["malignant"] * 10})


def test_oversample_reaches_50_50_and_keeps_every_row():
    frame = imbalanced()
    out = oversample(frame, seed=0)
    assert out["label"].value_counts().to_dict() == {"benign": 100, "malignant": 100}
    assert set(frame["image_id"]) <= set(out["image_id"])


def test_oversample_to_given_proportion():
    out = oversample(imbalanced(), seed=0, proportions={"benign": 0.8, "malignant": 0.2})
    assert out["label"].value_counts(normalize=True)["malignant"] == 0.2


def test_balanced_subset_binary_and_capped():
    assert balanced_subset(imbalanced(), seed=0)["label"].value_counts().to_dict() == {"benign": 10, "malignant": 10}
    capped = balanced_subset(imbalanced(), per_class=30, seed=0)["label"].value_counts().to_dict()
    assert capped == {"benign": 30, "malignant": 10}


def test_class_balanced_batches_hold_m_per_class():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    sampler = class_balanced_sampler(labels, batch_size=12)
    order = np.array(list(iter(sampler)))
    first = labels[order[:12]]
    assert samples_per_class(12, 3) == 4
    assert sorted(np.bincount(first, minlength=3)) == [4, 4, 4]
    assert samples_per_class(128, 7) == 32
