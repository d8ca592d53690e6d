"""The whole pipeline on real dermoscopy from ../shared (skipped where it is absent)."""

import json

import pandas as pd
import pytest

from siamese.cli import main
from tests.diagnostics.test_diagnostics import is_png


@pytest.fixture(scope="module")
def ph2_run(shared_ph2, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "ph2-run"
    code = main(["train", "--dataset", "ph2", "--data-dir", str(shared_ph2), "--binary", "--image-size", "48",
                 "--crop", "lesion-mask", "--epochs-embed", "2", "--epochs-classifier", "5", "--batch-size", "16",
                 "--wandb", "disabled", "--out", str(out)])
    assert code == 0
    return out


def test_train_on_real_ph2_writes_metrics_for_both_classes(ph2_run):
    metrics = json.loads((ph2_run / "metrics.json").read_text())
    assert metrics["classifier"]["classes"] == ["melanoma", "nevus"]
    assert sum(metrics["split_sizes"].values()) >= 150
    assert metrics["crop"] == {"mode": "lesion-mask", "margin": 0.15, "kept_whole": 0}
    split = pd.read_csv(ph2_run / "split.csv")
    assert split.groupby("split")["label"].nunique().eq(2).all()
    assert is_png(ph2_run / "confident_errors.png") and (ph2_run / "model.onnx").is_file()


def test_predict_saliency_and_visualize_on_real_ph2_images(ph2_run, shared_ph2, tmp_path, capsys):
    test_ids = pd.read_csv(ph2_run / "split.csv").query("split == 'test'")["image_id"].head(2)
    images = [next(shared_ph2.rglob(f"{case}.jpg")) for case in test_ids]
    capsys.readouterr()
    assert main(["predict", "--run", str(ph2_run), *map(str, images), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["prediction"] in ("melanoma", "nevus") for r in rows] == [True, True]
    assert all(abs(r["top1_p"] + r["top2_p"] - 1) < 1e-3 for r in rows)
    assert main(["saliency", str(ph2_run), *map(str, images), "--out", str(tmp_path / "cam")]) == 0
    assert len([p for p in (tmp_path / "cam").glob("*.png") if is_png(p)]) == 2
    assert main(["visualize", str(ph2_run), "--method", "tsne", "--split", "all"]) == 0
    coords = pd.read_csv(ph2_run / "projections" / "tsne_all.csv")
    assert len(coords) >= 150 and set(coords["label"]) == {"melanoma", "nevus"}
    assert is_png(ph2_run / "projections" / "tsne_all_by_class.png")


def test_predict_crops_new_images_with_their_masks(ph2_run, shared_ph2, tmp_path, capsys):
    """The run was trained on lesion crops: predict finds PH2's own masks, or takes --masks, and warns
    (using the whole image) where there is none."""
    image = next(shared_ph2.rglob("IMD003.jpg"))
    (tmp_path / "IMD003.jpg").write_bytes(image.read_bytes())
    capsys.readouterr()
    assert main(["predict", "--run", str(ph2_run), str(image), "--format", "csv"]) == 0
    beside = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    with pytest.warns(UserWarning, match="no lesion mask found"):
        assert main(["predict", "--run", str(ph2_run), str(tmp_path / "IMD003.jpg"), "--format", "csv"]) == 0
    whole = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    masks = next(shared_ph2.rglob("IMD003_lesion.png")).parent
    assert main(["predict", "--run", str(ph2_run), str(tmp_path / "IMD003.jpg"), "--masks", str(masks),
                 "--format", "csv"]) == 0
    given = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert given["top1_p"].iloc[0] == pytest.approx(beside["top1_p"].iloc[0], abs=1e-6)
    assert given["nn1_distance"].iloc[0] != pytest.approx(whole["nn1_distance"].iloc[0], abs=1e-6)
