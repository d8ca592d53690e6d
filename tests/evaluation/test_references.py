"""A single run scored beside the reference models, binary screening figures, patient context, rescoring."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from siamese.cli import main
from siamese.evaluation.metrics import positive_index, sensitivity_at_specificity
from siamese.evaluation.patient_context import (
    check_patient_context,
    patient_context_proba,
    ugly_duckling_features,
)
from siamese.evaluation.reference_features import colour_embedding_proba, logistic_probe_proba
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config


def _cached(run_dir, kind, split):
    stored = np.load(run_dir / "references" / f"{kind}_{split}.npz")
    return stored["image_id"], stored["features"]


def test_references_are_fitted_on_the_runs_training_and_validation_images(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["models"] == ["classifier", "knn", "colour_baseline", "colour_embedding"]
    split = pd.read_csv(run_dir / "split.csv", dtype={"image_id": str})
    classes = metrics["classifier"]["classes"]
    code = {c: i for i, c in enumerate(classes)}
    x, y, e = {}, {}, {}
    for part in ("train", "val", "test"):
        ids, x[part] = _cached(run_dir, "colour", part)
        assert list(ids) == list(split.loc[split["split"] == part, "image_id"])  # features of the split's images
        y[part] = split.set_index("image_id").loc[ids, "label"].map(code).to_numpy()
        stored = np.load(run_dir / "embeddings" / f"{part}.npz")
        assert list(stored["image_id"]) == list(ids)
        e[part] = stored["embedding"]
    fit_x, fit_y, fit_e = (np.vstack([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]),
                           np.vstack([e["train"], e["val"]]))
    predictions = pd.read_csv(run_dir / "test_predictions.csv")
    colour = logistic_probe_proba(fit_x, fit_y, x["test"], len(classes), seed=0)
    assert np.allclose(predictions[[f"colour_baseline_p_{c}" for c in classes]].to_numpy(), colour, atol=1e-6)
    both = colour_embedding_proba(fit_x, fit_e, fit_y, x["test"], e["test"], len(classes), seed=0)
    assert np.allclose(predictions[[f"colour_embedding_p_{c}" for c in classes]].to_numpy(), both, atol=1e-6)
    assert metrics["colour_baseline"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y["test"], colour.argmax(axis=1)))
    assert set(pd.read_csv(run_dir / "per_class.csv")["model"]) == set(metrics["models"])
    assert "colour_baseline" in (run_dir / "report.md").read_text()


def test_sensitivity_at_specificity_is_the_best_operating_point_that_keeps_the_specificity():
    positive = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    score = np.array([.1, .2, .3, .4, .5, .6, .7, .8, .95, .99, .9, .85, .3, .98])
    # 90 % specificity allows one of ten negatives above the threshold: at 0.98 only one positive (0.98)
    # is caught with one false positive (0.99); at 0.9 two negatives would be above. Sensitivity 1/4.
    assert sensitivity_at_specificity(positive, score, 0.9) == pytest.approx(0.25)
    # 80 % allows two negatives (0.99, 0.95): at 0.85 positives 0.98, 0.9 and 0.85 are caught, 0.3 is not.
    assert sensitivity_at_specificity(positive, score, 0.8) == pytest.approx(0.75)
    assert positive_index(["benign", "malignant"]) == 1 and positive_index(["melanoma", "nevus"]) == 0


@pytest.mark.integration
def test_binary_runs_report_sensitivity_at_80_and_90_percent_specificity(tmp_path):
    config = tiny_config(tmp_path / "bin", epochs_embed=1, binary=True)
    config.classifier.epochs = 3
    run_dir = run_training(config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for model in metrics["models"]:
        assert 0 <= metrics[model]["sensitivity_at_80_specificity"] <= 1
        assert metrics[model]["sensitivity_at_90_specificity"] <= metrics[model]["sensitivity_at_80_specificity"]
    split = pd.read_csv(run_dir / "split.csv")
    train = split[split["split"] == "train"]
    sizes = metrics["split_sizes"]
    assert sizes["train"] == len(train)  # stage 2: the whole training split
    assert sizes["stage1"] == 2 * train["label"].value_counts().min() < sizes["train"]  # stage 1: 50/50


def test_ugly_duckling_features_single_out_the_odd_lesion_of_a_patient():
    rng = np.random.default_rng(0)
    alike = rng.normal(0, 0.05, (4, 8)) + 1
    odd = np.full((1, 8), -1.0)
    embeddings = np.vstack([alike, odd, rng.normal(size=(1, 8))])
    patients = np.array(["a"] * 5 + ["b"])
    features = ugly_duckling_features(embeddings, patients)
    assert features[4, 1] > 1.5 and (features[:4, 1] < 1).all()  # odd one out above the patient's mean
    assert features[4, 0] > features[:4, 0].max()
    assert list(features[5]) == [0.0, 1.0, 0.0] and (features[:5, 2] == 1).all()  # no context: neutral


def test_patient_context_finds_melanomas_the_classifier_cannot_see():
    rng = np.random.default_rng(1)

    def patients(n_patients, offset):
        embeddings, labels, ids = [], [], []
        for p in range(n_patients):
            centre = rng.normal(size=16)
            own = centre + rng.normal(0, 0.1, (5, 16))
            label = np.zeros(5, dtype=int)
            if p % 2 == 0:  # this patient's last lesion is the odd one out and malignant
                own[-1] = centre + rng.normal(0, 1.0, 16)
                label[-1] = 1
            embeddings.append(own)
            labels.append(label)
            ids += [f"p{offset + p}"] * 5
        return np.vstack(embeddings), np.concatenate(labels), np.array(ids)

    e_val, y_val, p_val = patients(40, 0)
    e_test, y_test, p_test = patients(40, 100)
    flat = np.full((len(y_val), 2), 0.5)  # a classifier that says nothing
    proba = patient_context_proba((flat, e_val, p_val, y_val), (np.full((len(y_test), 2), 0.5), e_test, p_test), 2)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.9
    control = patient_context_proba((flat, e_val, p_val, y_val), (np.full((len(y_test), 2), 0.5), e_test, p_test), 2,
                                    use_context=False)
    assert roc_auc_score(y_test, control[:, 1]) == pytest.approx(0.5)  # the refit alone learns nothing
    with pytest.raises(ValueError, match="patient ids"):
        check_patient_context("ham10000")


def test_patient_context_does_not_learn_how_many_images_a_patient_has():
    rng = np.random.default_rng(2)

    def patients(offset):  # every malignant lesion is its patient's only image; the rest come in fours
        embeddings = rng.normal(size=(60 + 4 * 60, 16))
        labels = np.r_[np.ones(60, dtype=int), np.zeros(240, dtype=int)]
        ids = np.r_[[f"s{offset + i}" for i in range(60)], np.repeat([f"m{offset + i}" for i in range(60)], 4)]
        return embeddings, labels, ids

    e_val, y_val, p_val = patients(0)
    e_test, y_test, p_test = patients(1000)
    flat = np.full((len(y_val), 2), 0.5)
    proba = patient_context_proba((flat, e_val, p_val, y_val), (flat, e_test, p_test), 2)
    assert abs(roc_auc_score(y_test, proba[:, 1]) - 0.5) < 0.1


def test_rescore_refits_other_references_without_touching_the_models(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    assert main(["rescore", str(copy), "--references", "colour_baseline"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    assert after["models"] == ["classifier", "knn", "colour_baseline"]
    assert after["wall_seconds"] == before["wall_seconds"] and after["machine"] == before["machine"]
    for model in ("classifier", "knn", "colour_baseline"):
        assert after[model]["balanced_accuracy"] == before[model]["balanced_accuracy"]
    assert "colour_embedding_p_" not in (copy / "test_predictions.csv").read_text()
    assert "test colour_baseline" in capsys.readouterr().out
    assert main(["rescore", str(copy), "--references", "none"]) == 0
    assert json.loads((copy / "metrics.json").read_text())["models"] == ["classifier", "knn"]
    with pytest.raises(SystemExit):
        main(["rescore", str(copy), "--references", "nearest_centroid"])


@pytest.mark.integration
def test_runs_with_a_cache_dir_share_reference_features_across_splits(tmp_path, monkeypatch):
    from siamese.evaluation import reference_scores as references

    computed = []
    real = references.colour_feature_matrix

    def counting(source):
        computed.append(len(source))
        return real(source)

    monkeypatch.setattr(references, "colour_feature_matrix", counting)
    runs = {}
    for seed in (0, 1):
        config = tiny_config(tmp_path / f"seed{seed}", epochs_embed=1, cache_dir=str(tmp_path / "cache"))
        config.classifier.epochs = 2
        config.seed, config.data.synthetic_seed, config.references = seed, 0, ("colour_baseline",)
        runs[seed] = run_training(config)
    images = len(pd.read_csv(runs[0] / "split.csv"))
    assert sum(computed) == images  # the second seed's split found every image's features in the store
    for run in runs.values():
        split = pd.read_csv(run / "split.csv", dtype={"image_id": str})
        ids, features = _cached(run, "colour", "test")
        assert list(ids) == list(split.loc[split["split"] == "test", "image_id"])
        alone = real(references.PixelRows(_test_source(run), np.arange(len(ids))))
        assert np.allclose(features, alone)
    assert not pd.read_csv(runs[0] / "split.csv")["split"].equals(pd.read_csv(runs[1] / "split.csv")["split"])


def _test_source(run_dir):
    from siamese.config import RunConfig
    from siamese.workflows.run_data import build_run_data

    return build_run_data(RunConfig.load(run_dir / "config.json"), run_dir).sources["test"]


def test_summarize_refuses_runs_that_differ_in_more_than_the_seed(run_dir, tmp_path):
    from siamese.evaluation.seeds import write_seed_summary

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["seed"] = 7
    (other / "metrics.json").write_text(json.dumps(metrics))
    config = json.loads((other / "config.json").read_text())
    config["model"]["embedding_dim"] = 32
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="more than the seed.*model.embedding_dim"):
        write_seed_summary([run_dir, other], tmp_path / "summary")
    assert not (tmp_path / "summary").exists()
    config["model"]["embedding_dim"], config["data"]["cache_dir"] = json.loads(
        (run_dir / "config.json").read_text())["model"]["embedding_dim"], "elsewhere"
    (other / "config.json").write_text(json.dumps(config))
    paths = write_seed_summary([run_dir, other], tmp_path / "summary")  # where the cache is changes nothing
    assert "2 runs (seeds [0, 7])" in paths[-1].read_text()


@pytest.mark.integration
def test_one_registry_serves_train_and_cv_alike(tmp_path, monkeypatch):
    from siamese.cli import build_parser
    from siamese.config import CVConfig
    from siamese.evaluation import reference_models
    from siamese.workflows.crossval import run_cv

    fitted = []

    def uniform(probe):
        fitted.append(len(probe.y_fit))
        return np.full((probe.n_scored, probe.n_classes), 1 / probe.n_classes)

    monkeypatch.setitem(reference_models.REFERENCE_MODELS, "uniform",
                        reference_models.ReferenceModel("uniform", "nothing", ("colour",), uniform))
    config = tiny_config(tmp_path / "run", epochs_embed=1)
    config.classifier.epochs, config.references = 2, ("uniform", "majority")
    run = run_training(config)
    assert json.loads((run / "metrics.json").read_text())["models"] == ["classifier", "knn", "uniform", "majority"]
    config.out = None
    result = run_cv(config, CVConfig(folds=2, seeds=(0,), references=("uniform",)), tmp_path / "cv")
    assert set(result.folds["model"]) == {"classifier", "knn", "uniform"} and len(fitted) == 3
    assert build_parser().parse_args(["cv", "--baselines", "uniform", "--out", "x"]).references == ["uniform"]
    assert build_parser().parse_args(["train", "--references", "uniform", "none"]).references == ["uniform", "none"]
    with pytest.raises(ValueError, match="unknown reference model"):
        run_cv(config, CVConfig(folds=2, seeds=(0,), references=("colour_histogram",)), tmp_path / "cv2")


def test_cv_scores_every_registered_reference_model_by_default():
    from siamese.config import CV_REFERENCES, CVConfig
    from siamese.evaluation.reference_models import REFERENCE_MODELS

    assert CVConfig().references == CV_REFERENCES == tuple(REFERENCE_MODELS)
