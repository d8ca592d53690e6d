import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from siamese.data import ImageDataset, build_transform, load_dataset, load_image, pixel_source
from siamese.data.images import cache_path, channel_stats
from siamese.models import InputNormalization
from tests.conftest import REPO, random_jpegs, upright_and_rotated


def test_transforms_keep_uint8_and_evaluation_is_exact(synthetic):
    source = pixel_source(synthetic, 40)
    for augment in ("lesion", "light", "none"):
        x, y = ImageDataset(source, np.zeros(len(source), int), build_transform(augment))[0]
        assert x.shape == (3, 40, 40) and x.dtype == torch.uint8
    plain = build_transform("none")(source[0])
    torch.testing.assert_close(plain, torch.from_numpy(source[0]).permute(2, 0, 1))
    with pytest.raises(ValueError):
        build_transform("heavy")
    torch.manual_seed(0)
    image = source[0]
    augmented = [build_transform("lesion")(image) for _ in range(4)]
    assert all(isinstance(a, torch.Tensor) for a in augmented)
    assert sum(not torch.equal(a, plain) for a in augmented) >= 3  # flips, rotation and jitter do act


def test_large_jpeg_is_decoded_at_reduced_scale_close_to_full_size(tmp_path, monkeypatch):
    from PIL import Image, JpegImagePlugin

    from siamese.data import load_image, make_synthetic

    path = tmp_path / "large.jpg"
    Image.fromarray(make_synthetic(lesions_per_class=1, seed=0).images[0]).resize((2400, 1800)).save(path, quality=90)
    reductions = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        reductions.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    reduced = load_image(path, 64).astype(float)
    assert reductions == [(300, 225)]  # libjpeg decoded at 1/8 scale, still above 64 px
    with Image.open(path) as image:
        full = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert reduced.shape == full.shape and np.abs(reduced - full).mean() < 2.0


def test_input_normalization_scales_uint8_and_adds_noise_only_in_training():
    layer = InputNormalization((0.5,) * 3, (0.5,) * 3, noise=0.1).eval()
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 3, 2, 1)
    torch.testing.assert_close(layer(images)[0, :, :, 0], torch.tensor([[-1.0, 1.0]] * 3))
    already = torch.randn(1, 3, 2, 1)
    assert layer(already) is already
    torch.manual_seed(0)
    noisy = layer.train()(images)
    assert not torch.equal(noisy, layer.eval()(images))
    assert (noisy - layer(images)).abs().max() < 1.0


def test_file_cache_matches_decoding_and_is_reused(ham_dir, tmp_path):
    table = load_dataset("ham10000", data_dir=ham_dir)
    direct = pixel_source(table, 32)
    cached = pixel_source(table, 32, cache_dir=tmp_path / "cache")
    path = cache_path(table, 32, tmp_path / "cache")
    assert path.is_file() and not list(path.parent.glob("*.partial.npy"))
    assert len(cached) == len(direct)
    np.testing.assert_array_equal(cached[3], direct[3])
    stamp = path.stat().st_mtime_ns
    pixel_source(table, 32, cache_dir=tmp_path / "cache")
    assert path.stat().st_mtime_ns == stamp
    assert cache_path(table, 48, tmp_path / "cache") != path


def test_interrupted_cache_is_rebuilt(ham_dir, tmp_path):
    table = load_dataset("ham10000", data_dir=ham_dir)
    path = cache_path(table, 32, tmp_path)
    (path.parent / f"{path.stem}.123-abcdef12.partial.npy").write_bytes(b"half written")  # a killed build's
    cached = pixel_source(table, 32, cache_dir=tmp_path)
    assert path.is_file() and len(cached) == len(table.frame)


def test_channel_stats_on_training_images(synthetic):
    mean, std = channel_stats(pixel_source(synthetic, 32))
    assert all(0 < m < 1 for m in mean) and all(0 < s < 1 for s in std)


def test_exif_orientation_is_applied_before_crop_and_resize(synthetic, tmp_path):
    from siamese.data.crops import read_mask
    from siamese.data.decode import image_size

    upright, rotated = upright_and_rotated(synthetic.images[0], tmp_path)
    assert image_size(rotated) == image_size(upright) == (128, 96)
    full = load_image(upright).astype(float)
    turned = load_image(rotated).astype(float)
    assert turned.shape == full.shape == (96, 128, 3)
    assert np.abs(turned - full).mean() < 1.5  # JPEG re-encoding of the turned pixels (0.9 here), nothing more
    for size, box in ((32, None), (None, (10, 5, 70, 65))):
        assert np.abs(load_image(rotated, size, box).astype(float) - load_image(upright, size, box)).mean() < 1.5
    mask = tmp_path / "mask.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.triu(np.full((128, 96), 255, np.uint8))).save(mask, exif=exif)
    assert read_mask(mask, image_size(upright)).shape == (96, 128)


def grey_ramp() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)


def in_mode(grey: np.ndarray, mode: str) -> Image.Image:
    """The 8-bit greyscale pixels as Pillow holds them in ``mode`` (16-bit: times 257, float: 0-1)."""
    if mode in ("I;16", "I;16B"):
        return Image.frombytes(mode, grey.shape[::-1], (grey.astype(">u2" if mode.endswith("B") else "<u2") * 257)
                               .tobytes())
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255)
    if mode == "P":
        image = Image.fromarray(grey, "P")
        image.putpalette([v for i in range(256) for v in (i, i, i)])
        return image
    return Image.fromarray(grey).convert(mode)


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16B", ".png"), ("I;16", ".tif"), ("I;16B", ".tif"),
                                          ("I", ".tif"), ("I", ".pgm"), ("F", ".tif"), ("L", ".png"), ("LA", ".png"),
                                          ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".tif"), ("YCbCr", ".tif")])
def test_every_mode_decodes_to_the_8_bit_pixels(tmp_path, mode, suffix):
    grey = grey_ramp()
    path = tmp_path / f"lesion{suffix}"
    in_mode(grey, mode).save(path)
    np.testing.assert_array_equal(load_image(path), np.repeat(grey[..., None], 3, axis=2))


def test_a_16_bit_mask_keeps_its_classes(tmp_path):
    from siamese.data.crops import read_mask

    lesion = np.zeros((20, 30), dtype=np.uint16)
    lesion[5:15, 10:20] = 1
    for value in (1, 255, 65535):
        Image.fromarray(lesion * value).save(tmp_path / f"mask_{value}.png")
        np.testing.assert_array_equal(read_mask(tmp_path / f"mask_{value}.png"), lesion > 0)


def test_an_image_above_the_decompression_bomb_limit_is_named_or_read_at_reduced_scale(tmp_path, capsys):
    from siamese.cli import main
    from siamese.data import ImageError
    from siamese.data.decode import image_size

    huge = tmp_path / "huge.png"
    Image.new("1", (13_500, 13_500)).save(huge)  # 182 million pixels, 22 kB
    for read in (lambda: load_image(huge, 64), lambda: load_image(huge), lambda: image_size(huge)):
        with pytest.raises(ImageError, match="huge.png: image too large to decode"):
            read()
    random_jpegs(tmp_path, 3)
    pd.DataFrame({"path": ["huge.png", "img_000.jpg", "img_001.jpg", "img_002.jpg"],
                  "label": ["a", "a", "b", "b"]}).to_csv(tmp_path / "images.csv", index=False)
    assert main(["dedup", "--dataset", "csv", "--metadata", str(tmp_path / "images.csv"), "--method", "phash",
                 "--out", str(tmp_path / "pairs.csv")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "huge.png" in line][0].startswith("error: ")


def test_a_jpeg_above_the_limit_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    from siamese.data import ImageError

    path = tmp_path / "large.jpg"
    Image.fromarray(grey_ramp()).resize((800, 600)).save(path, quality=95)
    reference = load_image(path, 100).astype(float)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 800 * 600 // 4)  # the file is now twice Pillow's 2x limit
    assert np.abs(load_image(path, 100).astype(float) - reference).mean() < 1.0  # 1/4 scale: 200x150
    with pytest.raises(ImageError, match="large.jpg: image too large"):
        load_image(path)  # in full: refused by name


def test_only_the_decoder_opens_image_files():
    """Orientation, bit depth and size limits are handled in one place only if every read goes through it."""
    package = REPO / "siamese"
    openers = [str(path.relative_to(package)) for path in package.rglob("*.py")
               if any(call in path.read_text() for call in ("Image.open(", "ImageFile(", "imread("))]
    assert openers == ["data/decode.py"]


def test_a_corrupt_image_met_by_a_dataloader_worker_is_one_line(tmp_path):
    from torch.utils.data import DataLoader

    from siamese.cli import error_line
    from siamese.data.images import FilePixels

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    dataset = ImageDataset(FilePixels([str(bad)], 32), [0], build_transform("none"))
    with pytest.raises(ValueError) as info:  # an ImageError, re-raised with the worker's traceback as its message
        next(iter(DataLoader(dataset, num_workers=1)))
    assert "Traceback" in str(info.value)
    assert error_line(info.value) == (f"{bad}: unreadable image: not an image (its first bytes b'not a jpeg' match "
                                      f"no format Pillow knows)")


BUILDER = """
import sys, time
from pathlib import Path

import numpy as np

from siamese.data.images import cached_pixels
from siamese.dedup.features import cached

target, kind, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
(ready / sys.argv[4]).touch()
while len(list(ready.iterdir())) < 2:  # start together: the race the test is about
    time.sleep(0.005)


class Slow:  # images that take a while to decode, so both builds overlap
    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(0.01)
        return np.full((256, 256, 3), i, np.uint8)  # large enough that writing overlaps too


if kind == "pixels":
    out = cached_pixels(Slow(), target)
    values = np.stack([out[i] for i in range(len(out))])
else:
    values = cached(target, lambda: np.stack([Slow()[i] for i in range(40)]))
assert (values == np.arange(40, dtype=np.uint8)[:, None, None, None]).all()
"""


@pytest.mark.parametrize("kind", ["pixels", "dedup"])
def test_two_processes_building_one_cache_at_once_both_finish_with_a_whole_file(tmp_path, kind):
    """Runs sharing a --cache-dir (the README's seeds) build the same file at the same moment."""
    import subprocess
    import sys

    target, ready = tmp_path / "cache" / "same.npy", tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(target), kind, str(ready), str(i)], env=env,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]  # importing torch twice on a busy machine
    assert [run.returncode for run in runs] == [0, 0], errors
    np.testing.assert_array_equal(np.load(target), np.arange(40, dtype=np.uint8)[:, None, None, None]
                                  * np.ones((1, 256, 256, 3), np.uint8))
    assert [p.name for p in target.parent.iterdir()] == ["same.npy"]  # no partial file left behind


def test_an_interrupted_cache_build_leaves_no_partial_file(tmp_path):
    from siamese.data.images import cached_pixels

    class Failing:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 2:
                raise KeyboardInterrupt
            return np.zeros((4, 4, 3), np.uint8)

    with pytest.raises(KeyboardInterrupt):
        cached_pixels(Failing(), tmp_path / "c.npy")
    assert list(tmp_path.iterdir()) == []
