"""preprocess.json is the whole contract of model.onnx: a client built from it alone matches predict."""

import json
import math

import numpy as np
import onnxruntime
import pytest
from PIL import Image, ImageOps

from siamese.inference.predictor import Predictor


def client_pixels(run_dir, path, follow_dct_scaling: bool = True) -> np.ndarray:
    """The model input for one file, as a client that reads nothing but preprocess.json would make it (Pillow
    for the codecs, as a browser or phone uses its platform's)."""
    contract = json.loads((run_dir / "preprocess.json").read_text())["pipeline"]
    size = contract["input"]["shape"][2]
    steps = {step["step"]: step for step in contract["steps"]}
    assert list(steps) == ["jpeg_dct_scaling", "exif_orientation", "bit_depth", "transparency", "to_rgb", "resize"]
    image = Image.open(path)
    if follow_dct_scaling and image.format == "JPEG":
        width, height = image.size
        d = max(d for d in (1, 2, 4, 8) if d <= min(width // size, height // size))  # the rule as written
        image.draft("RGB", (size, size))
        assert image.size == (math.ceil(width / d), math.ceil(height / d))  # libjpeg gave what the file says
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (*steps["transparency"]["background_rgb"], 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    image = image.convert("RGB").resize(tuple(steps["resize"]["size"]), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1)[None]


def client_probabilities(run_dir, path) -> np.ndarray:
    contract = json.loads((run_dir / "preprocess.json").read_text())["pipeline"]
    session = onnxruntime.InferenceSession(str(run_dir / "model.onnx"))
    (probabilities,) = session.run(["probabilities"], {contract["input"]["name"]: client_pixels(run_dir, path)})
    return probabilities[0]


def photographs(folder) -> list:
    """Several kinds of file predict meets: JPEGs large enough for each libjpeg scale (odd sizes too), one
    stored sideways with EXIF orientation, a cut-out PNG with alpha and a palette GIF with a transparent
    entry."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:451, :601]
    blob = np.exp(-((y - 225) ** 2 + (x - 300) ** 2) / (2 * 110.0 ** 2))[..., None]
    pixels = (np.array([220, 170, 150]) * (1 - blob) + np.array([90, 50, 30]) * blob
              + rng.normal(0, 12, (451, 601, 3))).clip(0, 255).astype(np.uint8)
    photo = Image.fromarray(pixels)
    paths = []
    for width, height in ((601, 451), (300, 260), (130, 70), (40, 35)):  # scales 1/8, 1/4, 1/2 and 1
        paths.append(folder / f"photo_{width}x{height}.jpg")
        photo.resize((width, height)).save(paths[-1], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    paths.append(folder / "sideways.jpg")
    photo.resize((400, 300)).transpose(Image.Transpose.ROTATE_90).save(paths[-1], quality=90, exif=exif)
    alpha = np.zeros((300, 400), np.uint8)
    alpha[50:250, 80:320] = 255
    paths.append(folder / "cutout.png")
    Image.fromarray(np.dstack([np.asarray(photo.resize((400, 300))), alpha]), "RGBA").save(paths[-1])
    paths.append(folder / "palette.gif")
    photo.resize((200, 150)).quantize(64).save(paths[-1], transparency=0)
    return paths


def test_a_client_built_from_preprocess_json_alone_matches_predict(run_dir, tmp_path):
    paths = photographs(tmp_path)
    predicted = Predictor(run_dir, engine="onnx").predict(paths)
    for path, prediction in zip(paths, predicted, strict=True):
        np.testing.assert_allclose(client_probabilities(run_dir, path), prediction.probabilities, atol=5e-5,
                                   err_msg=path.name)
    # the step the file names matters: without it the large JPEGs reach the model as other pixels
    for path in paths[:3]:
        assert not np.array_equal(client_pixels(run_dir, path), client_pixels(run_dir, path, False)), path.name


def test_real_photographs_through_the_contract(run_dir, shared_ham):
    paths = sorted((shared_ham / "images").rglob("ISIC_*.jpg"))[:4]
    predicted = Predictor(run_dir, engine="onnx").predict(paths)
    for path, prediction in zip(paths, predicted, strict=True):
        np.testing.assert_allclose(client_probabilities(run_dir, path), prediction.probabilities, atol=5e-5)


@pytest.mark.parametrize("crop", ["lesion-mask", "lesion"])
def test_the_contract_names_the_lesion_crop_when_a_run_takes_one(crop):
    from siamese.inference.contract import pipeline

    steps = [step["step"] for step in pipeline(128, (0.5,) * 3, (0.2,) * 3, crop, 0.1)["steps"]]
    assert steps[-2:] == ["lesion_crop", "resize"]
