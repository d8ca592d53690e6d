"""Lesion segmentation: masks in the readers, joint augmentation, a U-Net that learns, predict, evaluate,
the ONNX path, and lesion-centred crops from predicted masks."""

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

from siamese.cli import main
from siamese.config import SegmentConfig
from siamese.data import DataError, load_dataset
from siamese.data.crops import read_mask
from siamese.inference.engines import onnx_problem
from siamese.inference.lesion_masks import MaskPredictor, predicted_box
from siamese.segmentation.data import SegmentationDataset, joint_transform, with_masks
from siamese.segmentation.evaluate import evaluate_folders
from siamese.segmentation.metrics import isic_score, lesion_extent, mask_scores, summarize_scores
from siamese.segmentation.training import segmentation_table, train_segmentation
from tests.conftest import write_ph2_layout

CLASSES = ("common_nevus", "atypical_nevus", "melanoma")


def disc_image(rng: np.random.Generator, side: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A dark disc (the lesion) at a random place and size on noisy skin, and its mask."""
    yy, xx = np.mgrid[:side, :side]
    (cy, cx), r = rng.uniform(0.3, 0.7, 2) * side, rng.uniform(0.12, 0.3) * side
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    skin = np.array([220, 170, 140]) + rng.normal(0, 12, (side, side, 3))
    lesion = np.array([110, 70, 50]) + rng.normal(0, 12, (side, side, 3))
    return np.clip(np.where(mask[..., None], lesion, skin), 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def discs(tmp_path_factory) -> Path:
    """PH2's layout holding 30 disc images with their true masks."""
    rng = np.random.default_rng(0)
    pairs = [disc_image(rng) for _ in range(30)]
    frame = pd.DataFrame({"image_id": [f"IMD{i:03d}" for i in range(30)], "label": [CLASSES[i % 3] for i in range(30)],
                          "pixels": [p for p, _ in pairs]})
    root = write_ph2_layout(tmp_path_factory.mktemp("discs"), SimpleNamespace(frame=frame), suffix=".png")
    for case, (_, mask) in zip(frame["image_id"], pairs, strict=True):
        path = root / "PH2Dataset" / "PH2 Dataset images" / case / f"{case}_lesion" / f"{case}_lesion.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return root


@pytest.fixture(scope="module")
def seg_run(discs, tmp_path_factory) -> Path:
    config = SegmentConfig(dataset="ph2", data_dir=str(discs), encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8),
                           image_size=64, epochs=12, batch_size=8, lr=3e-3, patience=12, wandb="disabled",
                           out=str(tmp_path_factory.mktemp("seg") / "run"))
    train_segmentation(config)
    return Path(config.out)


def test_a_tiny_unet_learns_disc_masks(seg_run):
    history = pd.read_csv(seg_run / "history.csv")
    assert history["val_dice"].max() > history["val_dice"].iloc[0] + 0.1
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    summary = json.loads((seg_run / "summary.json").read_text())
    assert summary["dice_mean"] > 0.7 and summary["images"] == 6
    for name in ("per_image.csv", "worst_cases.png", "curves_segment.png", "segmenter.pt", "model.onnx"):
        assert (seg_run / name).stat().st_size > 0


def test_joint_transform_keeps_image_and_mask_aligned_pixel_by_pixel():
    """A marked image (white where the mask is) stays marked exactly where its transformed mask is, up to the
    one-pixel band that bilinear resampling of the image blurs."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(20):
        _, mask = disc_image(rng, 64)
        image = np.where(mask[..., None], 255, 0).astype(np.uint8)
        dataset = SegmentationDataset(image[None], mask[None], joint_transform(64, colour=False))
        pixels, truth = dataset[0]
        marked, truth = pixels[0].numpy() > 127, truth[0].numpy() > 0.5
        band = binary_dilation(truth, iterations=2) & ~binary_erosion(truth, iterations=2)
        assert np.array_equal(marked & ~band, truth & ~band)
        moved += not np.array_equal(truth, mask)
    assert moved >= 15  # the geometry really changed


def test_colour_jitter_leaves_the_mask_alone():
    rng = np.random.default_rng(2)
    image, mask = disc_image(rng, 64)
    torch.manual_seed(3)
    pixels, truth = SegmentationDataset(image[None], mask[None], joint_transform(64))[0]
    assert set(np.unique(truth.numpy())) <= {0.0, 1.0} and pixels.dtype == torch.uint8


def test_predict_writes_masks_at_each_images_own_size(seg_run, tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "in").mkdir()
    sizes = {".jpg": (120, 90), ".png": (64, 100), ".bmp": (77, 77)}
    for suffix, (width, height) in sizes.items():
        image, _ = disc_image(rng, 96)
        Image.fromarray(image).resize((width, height)).save(tmp_path / "in" / f"case_{suffix[1:]}{suffix}")
    out = tmp_path / "masks"
    assert main(["segment", "predict", str(seg_run), str(tmp_path / "in"), "--out", str(out)]) == 0
    for suffix, size in sizes.items():
        stem = f"case_{suffix[1:]}"
        for written in (out / f"{stem}_segmentation.png", out / "overlays" / f"{stem}_overlay.png"):
            with Image.open(written) as image:
                assert image.size == size
        with Image.open(out / f"case_{suffix[1:]}_segmentation.png") as mask:
            assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_onnx_and_torch_masks_agree_and_a_stale_export_falls_back(seg_run, discs, tmp_path):
    image = next(discs.rglob("IMD000.png"))
    by_onnx, by_torch = MaskPredictor(seg_run, "onnx"), MaskPredictor(seg_run, "torch")
    assert np.abs(by_onnx.probability(image) - by_torch.probability(image)).max() < 1e-3
    assert onnx_problem(seg_run, ("segmenter.pt",)) is None
    box = predicted_box(image, seg_run, 0.1)
    assert box is not None and box[2] > box[0] and box[3] > box[1]


def test_evaluate_scores_against_hand_computed_values(tmp_path):
    predicted, truth = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    predicted[:2] = True  # 8 pixels
    truth[:1] = True  # 4 pixels inside the prediction
    truth[3, 3] = True  # and one it missed
    scores = mask_scores(predicted, truth)  # tp 4, fp 4, fn 1, tn 7
    assert scores["dice"] == pytest.approx(8 / 13)
    assert scores["iou"] == pytest.approx(4 / 9)
    assert scores["sensitivity"] == pytest.approx(4 / 5)
    assert scores["specificity"] == pytest.approx(7 / 11)
    assert mask_scores(np.zeros((3, 3), bool), np.zeros((3, 3), bool))["dice"] == 1.0
    assert isic_score([0.9, 0.64, 0.7]) == pytest.approx((0.9 + 0 + 0.7) / 3)
    summary = summarize_scores(pd.DataFrame([scores, scores]))
    assert summary["images"] == 2 and summary["dice_sd"] == 0.0

    pred_dir, true_dir = tmp_path / "pred", tmp_path / "true"
    pred_dir.mkdir()
    true_dir.mkdir()
    Image.fromarray(predicted.astype(np.uint8) * 255).save(pred_dir / "ISIC_0000001_segmentation.png")
    Image.fromarray(truth.astype(np.uint8)).save(true_dir / "ISIC_0000001_segmentation.png")  # a 0/1 file
    Image.fromarray(truth.astype(np.uint8) * 255).save(pred_dir / "ISIC_0000002_segmentation.png")  # no truth
    result = evaluate_folders(pred_dir, true_dir, tmp_path / "eval")
    assert result["dice_mean"] == pytest.approx(8 / 13) and result["without_true_mask"] == 1
    per_image = pd.read_csv(tmp_path / "eval" / "per_image.csv")
    assert per_image["iou"].iloc[0] == pytest.approx(4 / 9)
    assert (tmp_path / "eval" / "worst_cases.png").stat().st_size > 0
    assert per_image["edges_touched"].iloc[0] == 4 and per_image["fills_frame"].iloc[0]  # row 0 and pixel (3, 3)
    assert result["fills_frame_images"] == 1 and "inside_frame_dice_mean" not in result


def test_lesions_filling_the_frame_are_reported_apart_not_dropped():
    inside, whole = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    inside[2:6, 2:6] = True
    assert lesion_extent(inside) == {"lesion_fraction": 0.25, "edges_touched": 0, "fills_frame": False}
    assert lesion_extent(whole)["fills_frame"]
    everything = np.ones((8, 8), bool)  # predicting the whole image: perfect on the filling lesion only
    rows = [{**mask_scores(everything, truth), **lesion_extent(truth)} for truth in (inside, whole, whole)]
    summary = summarize_scores(pd.DataFrame(rows))
    assert summary["images"] == 3 and summary["fills_frame_images"] == 2
    assert summary["fills_frame_dice_mean"] == 1.0 and summary["inside_frame_dice_mean"] == pytest.approx(0.4)
    assert summary["dice_mean"] == pytest.approx(2.4 / 3)


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # the scorer's own pandas 3 deprecation
def test_a_task1_submission_scores_the_same_with_the_official_scorer(seg_run, discs, tmp_path):
    """`segment predict` leaves an ISIC 2018 Task 1 submission folder as it stands (the superpixel maps of
    the official input folders left out), and isic-challenge-scoring agrees with `segment evaluate --pred`
    on every figure both compute, the thresholded Jaccard (Task 1's score) included."""
    from isic_challenge_scoring import SegmentationScore

    images, truth, out = tmp_path / "in", tmp_path / "truth", tmp_path / "pred"
    images.mkdir()
    truth.mkdir()
    cases = sorted((discs / "PH2Dataset" / "PH2 Dataset images").iterdir())
    for number, case in enumerate(cases):
        stem = f"ISIC_{number:07d}"
        with Image.open(case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.png") as image:
            image.save(images / f"{stem}{'.JPG' if number % 5 == 0 else '.png'}")  # any image suffix names alike
        true_mask = read_mask(case / f"{case.name}_lesion" / f"{case.name}_lesion.png")
        if number % 3 == 0:  # a truth the prediction misses by a third of the width: IoU below the 0.65 floor
            true_mask = np.roll(true_mask, true_mask.shape[1] // 3, axis=1)
        if number == 1:  # an empty truth: both scorers' conventions for undefined ratios meet here
            true_mask[:] = False
        Image.fromarray(true_mask.astype(np.uint8) * 255).save(truth / f"{stem}_segmentation.png")
    Image.new("RGB", (96, 96)).save(images / "ISIC_0000001_superpixels.png")
    with pytest.warns(UserWarning, match="left out 1 ISIC superpixel map"):
        assert main(["segment", "predict", str(seg_run), str(images), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"overlays", *(f"ISIC_{n:07d}_segmentation.png"
                                                             for n in range(len(cases)))}

    official = SegmentationScore.from_dir(truth, out).macro_average
    ours = evaluate_folders(out, truth, tmp_path / "eval")
    for official_name, our_name in (("threshold_jaccard", "isic2018_score"), ("jaccard", "iou_mean"),
                                    ("dice", "dice_mean"), ("sensitivity", "sensitivity_mean"),
                                    ("specificity", "specificity_mean")):
        assert ours[our_name] == pytest.approx(official[official_name], abs=1e-12), official_name
    iou = pd.read_csv(tmp_path / "eval" / "per_image.csv")["iou"]
    assert (iou < 0.65).any() and (iou >= 0.65).any()  # the threshold counted on both sides


def test_evaluate_a_run_leaves_out_what_it_trained_on(seg_run, discs, tmp_path):
    out = tmp_path / "eval"
    assert main(["segment", "evaluate", str(seg_run), "--dataset", "ph2", "--data-dir", str(discs),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["left_out_seen_in_training"] == 24
    assert summary["dice_mean"] == pytest.approx(json.loads((seg_run / "summary.json").read_text())["dice_mean"],
                                                 abs=1e-3)


def test_bad_masks_are_refused_by_name(tmp_path):
    image = tmp_path / "ISIC_0000001.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(small)
    with pytest.raises(DataError, match="small.png: mask is 30x20 but its image is 60x40"):
        read_mask(small, (60, 40))
    grey = tmp_path / "grey.png"
    Image.fromarray(np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))).save(grey)
    with pytest.raises(DataError, match="grey.png: not a binary mask"):
        read_mask(grey)


def test_masks_folder_for_ham_counts_images_without_a_mask(ham_dir, tmp_path):
    table = load_dataset("ham10000", ham_dir)
    masks = tmp_path / "masks"
    masks.mkdir()
    first = table.frame.iloc[0]
    with Image.open(first["path"]) as image:
        Image.fromarray(np.full(image.size[::-1], 255, np.uint8)).save(masks / f"{first['image_id']}_segmentation.png")
    kept = with_masks(table, masks)
    assert len(kept.frame) == 1 and sum(kept.excluded.values()) == len(table.frame) - 1
    with pytest.raises(DataError, match="lists no lesion masks"):
        with_masks(table)
    with pytest.raises(DataError, match="nowhere: mask folder not found"):
        with_masks(table, tmp_path / "nowhere")
    with pytest.raises(DataError, match="has a lesion mask"):
        with_masks(table, tmp_path)


@pytest.mark.integration
def test_folds_cli_writes_the_cv_summary_and_resumes(ph2_dir, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["segment", "train", "--dataset", "ph2", "--data-dir", str(ph2_dir), "--preset", "cpu", "--image-size",
            "32", "--epochs", "1", "--folds", "2", "--val-fraction", "0.5", "--wandb", "disabled", "--out", str(out)]
    assert main(args) == 0
    summary = pd.read_csv(out / "segment_cv_summary.csv")
    assert {"dice_mean", "isic2018_score", "train_seconds"} <= set(summary["metric"])
    assert len(pd.read_csv(out / "segment_cv_folds.csv")) == 2 and (out / "segment_cv_report.md").is_file()
    pooled = json.loads((out / "segment_cv_pooled.json").read_text())
    held_out = sum(len(pd.read_csv(out / f"fold{k}" / "per_image.csv")) for k in range(2))
    assert pooled["images"] == held_out and "fills_frame_images" in pooled
    assert f"Pooled over the {held_out} held-out images" in (out / "segment_cv_report.md").read_text()
    stamp = (out / "fold0" / "segmenter.pt").stat().st_mtime_ns
    assert main(args) == 0  # finished folds are read back, not retrained
    assert (out / "fold0" / "segmenter.pt").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main([*args[:-2], "--epochs", "2", "--out", str(out)]) == 2  # other settings: refused by name
    assert "other settings (epochs)" in capsys.readouterr().err


def test_bad_input_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "run"
    assert main(["segment", "train", "--dataset", "ph2", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["segment", "train", "--dataset", "ph2", "--data-dir", str(tmp_path), "--image-size", "100",
                 "--out", str(out)]) == 2


def test_lesion_crops_from_a_segmentation_run_train_and_predict(seg_run, discs, tmp_path):
    from siamese.inference.predictor import Predictor

    out = tmp_path / "crop"
    args = ["train", "--dataset", "ph2", "--data-dir", str(discs), "--preset", "ph2", "--image-size", "32",
            "--epochs-embed", "1", "--epochs-classifier", "2", "--crop", "lesion", "--seg-run", str(seg_run),
            "--wandb", "disabled", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["crop"]["mode"] == "lesion" and metrics["crop"]["kept_whole"] == 0
    image = next(discs.rglob("IMD001.png"))
    predictor = Predictor(out)
    assert predictor.prep.seg_run == str(seg_run.resolve())
    assert predictor.predict([image])[0].label in CLASSES


def test_shared_ph2_and_ham_masks_load(shared_ph2, shared_ham):
    table = segmentation_table(SegmentConfig(dataset="ph2", data_dir=str(shared_ph2)))
    assert len(table.frame) == 160
    ham = segmentation_table(SegmentConfig(
        dataset="ham10000", data_dir=str(shared_ham / "images"),
        masks=str(shared_ham / "images" / "HAM10000_segmentations_lesion_tschandl")))
    assert len(ham.frame) == 5 and sum(ham.excluded.values()) == 51
    for row in ham.frame.itertuples():
        mask = read_mask(row.mask, (600, 450))
        assert 0.01 < mask.mean() < 0.99


def test_encoder_weights_from_a_local_torchvision_file(tmp_path):
    from torchvision import models

    from siamese.models.segmenter import LesionSegmenter
    from siamese.runtime.errors import WeightsUnavailableError

    resnet = models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    segmenter = LesionSegmenter("resnet18", (16, 16, 8, 8, 8), weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(segmenter.unet.encoder.conv1.weight, resnet.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="not a state dict of resnet34"):
        LesionSegmenter("resnet34", (16, 16, 8, 8, 8), weights=str(tmp_path / "resnet18.pth"))


@pytest.mark.integration
def test_segment_resume_refuses_a_changed_setting_by_name(tmp_path, capsys):
    run = tmp_path / "seg"
    run.mkdir()
    SegmentConfig(out=str(run)).save(run / "segment_config.json")  # a run stopped after its setup
    assert main(["segment", "train", "--resume", str(run), "--epochs", "3", "--out", str(run)]) == 2
    assert "epochs is 40 there, not 3" in capsys.readouterr().err
