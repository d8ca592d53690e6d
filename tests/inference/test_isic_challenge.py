"""ISIC challenge submissions from `predict`, scored by the challenges' own package (isic-challenge-scoring):
its balanced multiclass accuracy and macro AUC for a 7-class run, its AUC for a binary run, each against
what the run wrote in metrics.json for the same test images."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from isic_challenge_scoring import ClassificationMetric, ClassificationScore
from isic_challenge_scoring.load_csv import parse_csv
from PIL import Image

from siamese.cli import main
from siamese.data.embedded import make_synthetic
from siamese.data.readers import HAM_CLASSES, HAM_MALIGNANT
from siamese.inference.submission import Submission
from siamese.runtime.errors import SubmissionError
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config, write_ham_layout

# the scorer's own warnings: pandas 3 deprecations (inplace=...), and sklearn's on the balanced accuracy it
# also computes for a one-category (isic2020) truth
pytestmark = [pytest.mark.filterwarnings("ignore:The (inplace|'verify_integrity') keyword"),
              pytest.mark.filterwarnings("ignore:A single label was found in 'y_true' and 'y_pred'")]

@pytest.fixture(autouse=True)
def scorer_on_pandas_3(monkeypatch):
    """isic-challenge-scoring 5.6.0 (its latest release) range-checks a submission with DataFrame.applymap,
    which pandas 3 removed; DataFrame.map is the same method under its new name (pandas >= 2.1)."""
    if not hasattr(pd.DataFrame, "applymap"):
        monkeypatch.setattr(pd.DataFrame, "applymap", pd.DataFrame.map, raising=False)


ISIC2018 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
HAM_OF = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "AK": "akiec", "BKL": "bkl", "DF": "df",
          "VASC": "vasc"}


def test_columns_follow_the_official_order_whatever_the_runs_class_order():
    classes = list(HAM_CLASSES)[::-1]  # vasc, nv, mel, ...: the probabilities' order in this run
    proba = np.arange(14, dtype=float).reshape(2, 7) / 100
    table = Submission("isic2018", classes, "ham10000").table(["ISIC_0000001", "ISIC_0000002"], proba)
    assert list(table.columns) == ["image", *ISIC2018]
    for column in ISIC2018:
        assert table[column].tolist() == proba[:, classes.index(HAM_OF[column])].tolist()

    submission = Submission("isic2019", classes, "dermamnist")
    table = submission.table(["a", "b"], proba)
    assert list(table.columns) == ["image", *ISIC2019]
    assert table["AK"].tolist() == proba[:, classes.index("akiec")].tolist()
    assert (table[["SCC", "UNK"]] == 0).all().all()
    assert submission.notes == ["SCC, UNK: the run has no such class; written as 0"]


@pytest.mark.parametrize(("classes", "dataset", "source"), [
    (list(HAM_CLASSES), "ham10000", "mel"),
    (["atypical_nevus", "common_nevus", "melanoma"], "ph2", "melanoma"),
    (["melanoma", "nevus"], "ph2", "melanoma"),
    (["benign", "malignant"], "isic2020", "malignant"),
])
def test_isic2020_target_is_the_melanoma_probability(classes, dataset, source):
    proba = np.random.default_rng(0).dirichlet(np.ones(len(classes)), size=3)
    submission = Submission("isic2020", classes, dataset)
    table = submission.table(["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"], proba)
    assert list(table.columns) == ["image_name", "target"]
    assert table["target"].tolist() == proba[:, classes.index(source)].tolist()
    assert submission.notes == [f"target: the probability of the run's class {source!r}"]


@pytest.mark.parametrize(("fmt", "classes", "dataset", "message"), [
    ("isic2020", ["benign", "malignant"], "ham10000", "mel, bcc and akiec together"),
    ("isic2020", ["benign", "malignant"], "dermamnist", "only in ISIC 2020"),
    ("isic2020", [str(d) for d in range(10)], "digits", "no melanoma class"),
    ("isic2018", ["melanoma", "nevus"], "ph2", r"this run's classes are \['melanoma', 'nevus'\]"),
    ("isic2019", [c for c in HAM_CLASSES if c != "df"], "csv", "one probability per HAM10000 diagnosis"),
])
def test_runs_whose_classes_do_not_map_are_refused_by_name(fmt, classes, dataset, message):
    with pytest.raises(SubmissionError, match=message):
        Submission(fmt, classes, dataset)


def test_images_sharing_an_id_are_refused():
    with pytest.raises(SubmissionError, match="ISIC_0000001"):
        Submission("isic2020", ["melanoma", "nevus"], "ph2").table(["ISIC_0000001"] * 2, np.full((2, 2), 0.5))


def one_hot_truth(path: Path, image_ids: list[str], labels: list[str], columns: list[str]) -> Path:
    """A ground-truth CSV in the scorer's layout: ``image`` and one 0/1 column per category."""
    truth = pd.DataFrame({"image": image_ids})
    for column in columns:
        truth[column] = [float(HAM_OF.get(column) == label) for label in labels]
    truth.to_csv(path, index=False)
    return path


def run_predict(capsys, run: Path, images: list[str], fmt: str) -> tuple[str, str]:
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--run", str(run), *images, "--format", fmt, "--engine", "torch"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def evaluated_images(run: Path) -> pd.DataFrame:
    """The run's test images with their labels and the probabilities its evaluation wrote."""
    return pd.read_csv(run / "test_predictions.csv")


@pytest.mark.integration
def test_a_7_class_runs_submission_scores_as_its_metrics(tmp_path, capsys):
    data = write_ham_layout(tmp_path / "ham", make_synthetic(lesions_per_class=6, image_size=48, seed=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = run_training(tiny_config(tmp_path / "run", epochs_embed=2, dataset="ham10000", data_dir=str(data)))
    tested = evaluated_images(run)
    # every class among the test images: the scorer's partial AUC fails on a category without positives
    assert set(tested["label"]) == set(HAM_CLASSES)
    paths = {p.stem: str(p) for p in data.rglob("*.jpg")}
    submitted, notes = run_predict(capsys, run, [paths[i] for i in tested["image_id"]], "isic2018")
    (tmp_path / "isic2018.csv").write_text(submitted)
    submission = pd.read_csv(tmp_path / "isic2018.csv")
    assert list(submission.columns) == ["image", *ISIC2018] and "isic2018:" not in notes
    # predict repeats the run's own evaluation of these images
    for column in ISIC2018:
        assert np.abs(submission[column] - tested[f"classifier_p_{HAM_OF[column]}"]).max() < 1e-5

    truth = one_hot_truth(tmp_path / "truth2018.csv", tested["image_id"].tolist(), tested["label"].tolist(), ISIC2018)
    official = ClassificationScore.from_file(truth, tmp_path / "isic2018.csv", ClassificationMetric.BALANCED_ACCURACY)
    ours = json.loads((run / "metrics.json").read_text())["classifier"]
    assert official.overall == pytest.approx(ours["balanced_accuracy"], abs=1e-9)
    assert official.macro_average["auc"] == pytest.approx(ours["roc_auc"], abs=1e-6)

    # 2019: AK carries akiec, SCC and UNK are 0 and said to be. The official parser takes the file as it is;
    # scoring needs SCC and UNK images in the truth (the scorer's partial AUC fails on a category without
    # positives), which HAM10000 has none of.
    submitted, notes = run_predict(capsys, run, [paths[i] for i in tested["image_id"]], "isic2019")
    assert "isic2019: SCC, UNK: the run has no such class; written as 0" in notes
    parsed = parse_csv(io.StringIO(submitted), pd.Index(ISIC2019))
    assert (parsed[["SCC", "UNK"]] == 0).all().all()
    assert np.array_equal(parsed["AK"].to_numpy(), submission.set_index("image").loc[parsed.index, "AKIEC"].to_numpy())


def write_isic2020_layout(root: Path, lesions_per_class: int = 5, seed: int = 7) -> Path:
    """ISIC 2020 as distributed: ``train.csv`` (image_name, patient_id, target) and ``train/ISIC_*.jpg``;
    synthetic lesions, malignant when their HAM10000 class is."""
    table = make_synthetic(lesions_per_class=lesions_per_class, image_size=48, seed=seed)
    (root / "train").mkdir(parents=True)
    rows = []
    for number, row in enumerate(table.frame.itertuples(index=False)):
        name = f"ISIC_{number:07d}"
        Image.fromarray(table.images[row.index]).save(root / "train" / f"{name}.jpg", quality=95)
        rows.append({"image_name": name, "patient_id": row.group, "target": int(row.label in HAM_MALIGNANT)})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


@pytest.mark.integration
def test_a_binary_runs_isic2020_submission_scores_as_its_metrics(tmp_path, capsys):
    data = write_isic2020_layout(tmp_path / "isic2020")
    config = tiny_config(tmp_path / "run", epochs_embed=2, dataset="isic2020", data_dir=str(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = run_training(config)
    tested = evaluated_images(run)
    submitted, notes = run_predict(capsys, run, [str(data / "train" / f"{i}.jpg") for i in tested["image_id"]],
                                   "isic2020")
    assert "isic2020: target: the probability of the run's class 'malignant'" in notes
    submission = pd.read_csv(io.StringIO(submitted))
    assert list(submission.columns) == ["image_name", "target"]
    assert np.abs(submission["target"] - tested["classifier_p_malignant"]).max() < 1e-5

    # the scorer reads the image id from a column named `image` and its categories from the truth's columns
    submission.rename(columns={"image_name": "image"}).to_csv(tmp_path / "scored.csv", index=False)
    pd.DataFrame({"image": tested["image_id"], "target": (tested["label"] == "malignant").astype(float)}).to_csv(
        tmp_path / "truth.csv", index=False)
    official = ClassificationScore.from_file(tmp_path / "truth.csv", tmp_path / "scored.csv", ClassificationMetric.AUC)
    ours = json.loads((run / "metrics.json").read_text())["classifier"]
    assert official.overall == pytest.approx(ours["roc_auc"], abs=1e-6)

    # a benign/malignant run has no output per diagnosis: refused by name, before any image is read
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no model.onnx in these runs
        assert main(["predict", "--run", str(run), str(tmp_path / "absent.jpg"), "--format", "isic2018"]) == 2
    error = capsys.readouterr().err
    assert "error: isic2018 needs one probability per HAM10000 diagnosis" in error and "absent.jpg" not in error
