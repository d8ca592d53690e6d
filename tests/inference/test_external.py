"""A run scored on another dataset's images, its labels mapped onto the run's classes."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from siamese.cli import main
from siamese.data import load_dataset
from siamese.data.table import DataError
from siamese.inference.external import parse_label_map, score_external
from siamese.inference.predictor import Predictor


@pytest.fixture
def other_dataset(tmp_path, synthetic):
    """Synthetic lesions written as a generic CSV dataset whose labels name the classes otherwise
    (``melanoma`` for ``mel``, ``naevus`` for ``nv``), plus one class the run does not know."""
    rename = {"mel": "melanoma", "nv": "naevus", "vasc": "angioma"}
    rows = []
    for _, row in synthetic.frame.iterrows():
        path = tmp_path / "other" / f"{row['image_id']}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(synthetic.images[row["index"]]).save(path)
        rows.append({"path": path.name, "label": rename.get(row["label"], row["label"]),
                     "image_id": row["image_id"]})
    table = tmp_path / "other" / "table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_external_scores_mapped_labels_and_counts_the_rest(run_dir, other_dataset, tmp_path, capsys):
    table = load_dataset("csv", metadata=other_dataset)
    summary, per_class, predictions = score_external(run_dir, table, label_map=parse_label_map(
        ["melanoma=mel", "naevus=nv"]), engine="torch")
    frame = table.frame
    assert summary["left_out"] == {"angioma": int((frame["label"] == "angioma").sum())}
    own = set(pd.read_csv(run_dir / "split.csv", dtype=str)["image_id"])
    assert summary["images_in_run_split"] == int(predictions["image_id"].isin(own).sum())
    present = per_class[per_class["support"] > 0]
    assert summary["macro_recall"] == pytest.approx(present["recall"].mean())  # over the classes present
    assert summary["n"] == len(predictions) == int((frame["label"] != "angioma").sum())
    assert set(predictions["mapped"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv"}
    by_hand = Predictor(run_dir, engine="torch").embed(
        [other_dataset.parent / f"{i}.png" for i in predictions["image_id"][:4]])[1]
    classes = Predictor(run_dir, engine="torch").prep.classes
    assert np.allclose(predictions[[f"p_{c}" for c in classes]].to_numpy()[:4], by_hand, atol=1e-5)
    recall = per_class.set_index("class")["recall"]
    truth = predictions["mapped"] == "mel"
    assert recall["mel"] == pytest.approx((predictions.loc[truth, "prediction"] == "mel").mean())
    assert per_class.set_index("class").loc["vasc", "support"] == 0
    assert set(summary["one_vs_rest_roc_auc"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv"}
    assert summary["one_vs_rest_roc_auc"]["mel"] == pytest.approx(roc_auc_score(truth, predictions["p_mel"]))

    out = tmp_path / "ext"
    assert main(["external", str(run_dir), "--dataset", "csv", "--metadata", str(other_dataset), "--map",
                 "melanoma=mel", "naevus=nv", "--out", str(out)]) == 0
    saved = json.loads((out / "external_metrics.json").read_text())
    assert saved["n"] == summary["n"] and "balanced" in capsys.readouterr().out
    assert (out / "external_predictions.csv").is_file() and (out / "external_per_class.csv").is_file()


def test_external_refuses_maps_onto_unknown_classes_and_tables_that_map_nothing(run_dir, other_dataset):
    table = load_dataset("csv", metadata=other_dataset)
    with pytest.raises(DataError, match="not classes"):
        score_external(run_dir, table, label_map={"melanoma": "melanoma"}, engine="torch")
    with pytest.raises(DataError, match="no column"):
        score_external(run_dir, table, label_column="diagnosis", engine="torch")
    only_renamed = load_dataset("csv", metadata=other_dataset)
    only_renamed.frame["label"] = "naevus"
    with pytest.raises(DataError, match="--map"):
        score_external(run_dir, only_renamed, engine="torch")
    with pytest.raises(DataError, match=r"\['melanom'\] match no label"):
        score_external(run_dir, table, label_map={"melanom": "mel"}, engine="torch")
    with pytest.raises(ValueError, match="LABEL=CLASS"):
        parse_label_map(["melanoma"])
