import pandas as pd
import pytest
from PIL import Image

from siamese.cli import main
from siamese.data import make_synthetic
from siamese.diagnostics.projection import stratified_sample, visualize_run
from siamese.diagnostics.saliency import saliency_maps

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_visualize_writes_plots_and_one_row_per_embedded_image(run_dir, capsys):
    assert main(["visualize", str(run_dir), "--method", "both", "--split", "all"]) == 0
    split = pd.read_csv(run_dir / "split.csv")
    embedded = len(pd.read_csv(run_dir / "test_predictions.csv"))
    for method in ("tsne", "umap"):
        coords = pd.read_csv(run_dir / "projections" / f"{method}_all.csv")
        assert {"image_id", "split", "label", "x", "y", "misclassified"} <= set(coords.columns)
        assert coords["image_id"].is_unique and coords[["x", "y"]].notna().all().all()
        assert set(coords["split"]) == {"train", "val", "test"}
        assert (coords["split"] == "test").sum() == embedded
        assert (coords["split"] == "val").sum() == (split["split"] == "val").sum()
        assert coords.loc[coords["misclassified"], "split"].eq("test").all()
        for view in ("by_class", "by_split"):
            assert is_png(run_dir / "projections" / f"{method}_all_{view}.png")
    report = (run_dir / "report.md").read_text()
    assert "projections/umap_all_by_split.png" in report and "| classifier |" in report


def test_max_points_subsamples_and_says_so(run_dir, capsys):
    written = visualize_run(run_dir, ("tsne",), "test", max_points=20)
    assert written["points"] <= 22 and written["total_points"] > written["points"]
    assert len(pd.read_csv(run_dir / "projections" / "tsne_test.csv")) == written["points"]
    main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--max-points", "20"])
    assert "subsampled" in capsys.readouterr().out


def test_stratified_sample_keeps_every_class():
    frame = pd.DataFrame({"label": ["a"] * 90 + ["b"] * 10})
    picks = stratified_sample(frame, 20)
    assert frame.iloc[picks]["label"].value_counts().to_dict() == {"a": 18, "b": 2}


def test_evaluation_plots_are_valid_pngs(run_dir):
    for name in ("confusion_matrix.png", "roc.png", "per_class.png", "confident_errors.png", "curves_embed.png"):
        assert is_png(run_dir / name), name


def test_saliency_overlays(run_dir, tmp_path):
    table = make_synthetic(lesions_per_class=1, seed=5)
    paths = []
    for i in range(2):
        Image.fromarray(table.images[i]).save(tmp_path / f"lesion_{i}.png")
        paths.append(tmp_path / f"lesion_{i}.png")
    written = saliency_maps(run_dir, paths, tmp_path / "cams")
    assert [p.name for p in written] == ["lesion_0_gradcam.png", "lesion_1_gradcam.png"]
    assert all(is_png(p) for p in written)


def test_visualize_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["visualize", str(tmp_path)]) == 2
    assert "a run folder written by train.py" in capsys.readouterr().err


def test_saliency_refuses_a_missing_image(run_dir, tmp_path, capsys):
    assert main(["saliency", str(run_dir), str(tmp_path / "absent.jpg")]) == 2
    assert "absent.jpg" in capsys.readouterr().err


def test_unknown_projection_method():
    from siamese.diagnostics.projection import project

    with pytest.raises(ValueError, match="unknown projection"):
        project(pd.DataFrame([[0.0, 1.0]] * 5).to_numpy(), "pca")


def test_visualize_without_thumbnails_draws_points_only(run_dir):
    plot = run_dir / "projections" / "tsne_test_by_class.png"
    assert main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--thumbnails", "0"]) == 0
    points_only = plot.read_bytes()
    assert main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--thumbnails", "2"]) == 0
    assert is_png(plot) and plot.read_bytes() != points_only


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_projections_adapt_to_three_points_and_refuse_two(method):
    import numpy as np

    from siamese.data import DataError
    from siamese.diagnostics.projection import project

    embeddings = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    assert np.isfinite(project(embeddings, method)).all() and project(embeddings, method).shape == (3, 2)
    with pytest.raises(DataError, match="2 image\\(s\\): too few for a projection"):
        project(embeddings[:2], method)


def test_visualize_a_tiny_test_split(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    split = pd.read_csv(run / "split.csv")
    test = split.index[split["split"] == "test"]
    for kept, code in ((3, 0), (2, 2)):
        split.loc[test[kept:], "split"] = "val"
        split.to_csv(run / "split.csv", index=False)
        assert main(["visualize", str(run), "--method", "umap", "--split", "test", "--thumbnails", "0"]) == code
    assert len(pd.read_csv(run / "projections" / "umap_test.csv")) == 3
    assert "test split): 2 image(s): too few for a projection" in capsys.readouterr().err
