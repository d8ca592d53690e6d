"""Images read by what they are, not by their extension; transparency shown as a viewer shows it."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.data import ImageError, load_dataset, load_image
from siamese.data.crops import find_mask, read_mask
from siamese.data.table import DataError
from siamese.inference.predictor import expand_inputs

LOSSLESS = {"PNG": {}, "BMP": {}, "TIFF": {}, "PPM": {}, "TGA": {}, "WEBP": {"lossless": True}}
LOSSY = {"JPEG": {"quality": 95}, "HEIF": {"quality": 95}, "AVIF": {"quality": 95}, "JPEG2000": {}}


def smooth(height: int = 48, width: int = 64) -> np.ndarray:
    """A dark blob on pale skin: smooth, so lossy codecs keep it close."""
    y, x = np.mgrid[:height, :width]
    blob = np.exp(-((y - height / 2) ** 2 + (x - width / 2) ** 2) / (2 * (height / 4) ** 2))
    skin = np.array([220, 170, 150])
    lesion = np.array([90, 50, 30])
    return (skin + (lesion - skin) * blob[..., None]).round().astype(np.uint8)


def save(pixels: np.ndarray, path, fmt: str) -> None:
    Image.fromarray(pixels).save(path, format=fmt, **{**LOSSLESS, **LOSSY}[fmt])


@pytest.mark.parametrize("fmt", [*LOSSLESS, *LOSSY])
@pytest.mark.parametrize("name", ["lesion", "lesion.dat", "lesion.jpg"])  # no extension, a foreign one, a wrong one
def test_every_format_pillow_opens_is_read_whatever_its_name(tmp_path, fmt, name):
    pixels = smooth()
    save(pixels, tmp_path / name, fmt)
    decoded = load_image(tmp_path / name).astype(float)
    assert decoded.shape == pixels.shape
    assert np.abs(decoded - pixels).mean() < (0.01 if fmt in LOSSLESS else 3)


def test_a_folder_gives_every_image_and_names_what_it_leaves_out(tmp_path):
    pixels = smooth()
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF"]):
        save(pixels, tmp_path / f"img{i}.{'jpg' if i % 2 else 'photo'}", fmt)
    (tmp_path / "notes.txt").write_text("seen on 3 March")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning) as caught:
        found = expand_inputs([str(tmp_path)])
    assert [p.name for p in found] == [f"img{i}.{'jpg' if i % 2 else 'photo'}" for i in range(6)]
    message = str(caught[0].message)
    assert message.startswith(f"{tmp_path}: 3 file(s) not used (not images): empty.jpg (empty file (0 bytes))")
    assert "notes.txt (not an image" in message and "sub/ (a folder" in message


@pytest.fixture
def without_plugins(monkeypatch):
    """Pillow as installed without pillow-heif and without AVIF support."""
    monkeypatch.setattr(Image, "ID", [plugin for plugin in Image.ID if plugin not in ("HEIF", "AVIF")])


@pytest.mark.parametrize("fmt, named", [("HEIF", "HEIC/HEIF; needs pillow-heif (pip install pillow-heif)"),
                                        ("AVIF", "AVIF; needs Pillow 11.2 or later built with libavif")])
def test_a_format_without_its_plugin_is_refused_with_the_package(tmp_path, without_plugins, fmt, named):
    path = tmp_path / "phone.heic"
    Image.fromarray(smooth()).save(path, format=fmt)  # saved before the fixture hides the plugins' openers
    refusal = rf"phone.heic: unreadable image: no decoder for this format \({re.escape(named)}"
    with pytest.raises(ImageError, match=refusal):
        load_image(path)
    (tmp_path / "also.txt").write_text("x")
    with pytest.raises(DataError, match=rf"2 file\(s\) not used \(not images\): also.txt .*phone.heic "
                                        rf"\(no decoder for this format \({re.escape(named)}.*; no image to read"):
        expand_inputs([str(tmp_path)])


def test_an_unreadable_file_says_why(tmp_path):
    pixels = smooth()
    save(pixels, tmp_path / "whole.jpg", "JPEG")
    save(pixels, tmp_path / "whole.png", "PNG")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) * 2 // 3])
    (tmp_path / "head.jpg").write_bytes(whole[:400])
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("lesion_id,image_id\n")
    (tmp_path / "next.jxl").write_bytes(b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(20))
    for empty in ("empty.jpg", "empty.png", "empty.bmp"):
        (tmp_path / empty).write_bytes(b"")
    reasons = {"empty.jpg": "empty file (0 bytes)", "empty.png": "empty file (0 bytes)",
               "empty.bmp": "empty file (0 bytes)",
               "cut.jpg": "truncated or corrupt JPEG data", "head.jpg": "truncated or corrupt header",
               "cut.png": "truncated or corrupt PNG data",
               "text.jpg": "not an image (its first bytes b'lesion_id,im' match no format Pillow knows)",
               "next.jxl": "no decoder for this format (JPEG XL; needs pillow-jxl-plugin"}
    for name, reason in reasons.items():
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name, 32)
        assert str(info.value).startswith(f"{tmp_path / name}: unreadable image: {reason}")


def test_a_dataset_reader_finds_images_in_any_format_and_counts_unused_files(ham_dir):
    folder = ham_dir / "HAM10000_images_part_1"
    jpegs = sorted(folder.glob("*.jpg"))
    for path, (suffix, fmt) in zip(jpegs, [(".png", "PNG"), (".webp", "WEBP"), ("", "PNG"), (".heic", "HEIF")],
                                   strict=False):
        with Image.open(path) as image:
            image.save(path.with_name(path.stem + suffix), format=fmt)
        path.unlink()
    (folder / f"{jpegs[4].stem}.json").write_text("{}")  # a sidecar beside its image (ISIC archive downloads)
    (folder / "Thumbs.db").write_bytes(b"\x00" * 10)
    Image.fromarray(smooth()).save(ham_dir / "unlisted.png")
    (ham_dir / "README.txt").write_text("beside the tables: not counted")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_dataset("ham10000", ham_dir)
    paths = dict(zip(table.frame["image_id"], table.frame["path"], strict=True))
    assert paths[jpegs[4].stem].endswith(".jpg") and paths[jpegs[2].stem].endswith(jpegs[2].stem)
    assert [load_image(paths[p.stem], 16).shape for p in jpegs[:5]] == [(16, 16, 3)] * 5
    messages = [str(w.message) for w in caught]
    assert [m for m in messages if "not used" in m] == [
        f"{ham_dir}: 3 file(s) not used (not listed in HAM10000_metadata.csv): "
        f"HAM10000_images_part_1/{jpegs[4].stem}.json, HAM10000_images_part_1/Thumbs.db, unlisted.png"]


def test_masks_in_any_format_are_found(tmp_path):
    lesion = np.zeros((20, 30), dtype=np.uint8)
    lesion[5:15, 10:20] = 255
    for stem, fmt in (("a_segmentation", "WEBP"), ("b_lesion", "GIF"), ("c", "TIFF")):
        Image.fromarray(lesion).save(tmp_path / f"{stem}.mask", format=fmt, **({"lossless": True} if fmt == "WEBP"
                                                                              else {}))
        image = tmp_path / f"{stem.split('_')[0]}.jpg"
        found = find_mask(image, tmp_path)
        assert found is not None and found.name == f"{stem}.mask"
        np.testing.assert_array_equal(read_mask(found), lesion > 0)


def viewed(rgb: np.ndarray, alpha: np.ndarray, background: int = 255) -> np.ndarray:
    """What a viewer shows: the colours alpha-composited on a uniform background."""
    a = alpha[..., None].astype(float) / 255
    return rgb * a + background * (1 - a)


def cut_out() -> tuple[np.ndarray, np.ndarray]:
    """A lesion cut out of its skin: opaque lesion, a half-transparent rim, and black under the transparent
    surround (what editors store there)."""
    rgb = smooth()
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    alpha[8:40, 12:52] = 128
    alpha[12:36, 16:48] = 255
    rgb = np.where(alpha[..., None] == 0, 0, rgb).astype(np.uint8)
    return rgb, alpha


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "HEIF"])
def test_an_alpha_channel_is_composited_on_white(tmp_path, fmt):
    rgb, alpha = cut_out()
    path = tmp_path / "cutout"
    options = {"WEBP": {"lossless": True}, "HEIF": {"quality": -1}}.get(fmt, {})
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path, format=fmt, **options)
    decoded = load_image(path).astype(float)
    assert np.abs(decoded - viewed(rgb, alpha)).max() <= (1 if fmt != "HEIF" else 24)
    assert decoded[0, 0].tolist() == [255, 255, 255]  # not the black stored under alpha 0


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    rgb, alpha = cut_out()
    grey = rgb[..., 1]
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "grey.png")
    expected = viewed(np.repeat(grey[..., None], 3, axis=2), alpha)
    assert np.abs(load_image(tmp_path / "grey.png") - expected).max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_transparent_palette_entry_is_shown_as_the_background(tmp_path, fmt):
    index = np.random.default_rng(0).integers(0, 4, (20, 30), dtype=np.uint8)
    palette = [[0, 0, 0], [200, 150, 120], [90, 50, 30], [40, 40, 90]]
    image = Image.fromarray(index, "P")
    image.putpalette([v for colour in palette for v in colour])
    image.save(tmp_path / "palette", format=fmt, transparency=0)
    expected = np.array([[255, 255, 255], *palette[1:]])[index]
    np.testing.assert_array_equal(load_image(tmp_path / "palette"), expected)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_transparent_colour_is_shown_as_the_background(tmp_path, mode):
    rgb, alpha = cut_out()
    pixels = rgb if mode == "RGB" else rgb[..., 1]
    transparency = (0, 0, 0) if mode == "RGB" else 0
    Image.fromarray(pixels).save(tmp_path / "trns.png", transparency=transparency)
    shown = np.repeat(pixels[..., None], 3, axis=2) if mode == "L" else pixels
    expected = np.where((alpha == 0)[..., None], 255, shown)
    np.testing.assert_array_equal(load_image(tmp_path / "trns.png"), expected)


def sixteen_bit_png(path, samples: np.ndarray, transparent: tuple[int, ...]) -> None:
    """A 16-bit greyscale (``HxW``) or RGB (``HxWx3``) PNG with a tRNS colour, written chunk by chunk (Pillow
    writes neither)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = samples.shape[:2]
    colour_type = 0 if samples.ndim == 2 else 2
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
                     + chunk(b"tRNS", struct.pack(f">{len(transparent)}H", *transparent))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("key", [0, 1234, 65535])
def test_a_16_bit_grey_image_with_a_transparent_grey_is_shown_on_white_exactly(tmp_path, key):
    grey = np.random.default_rng(key).integers(0, 65536, (12, 16)).astype(np.uint16)
    grey[grey == key] = key ^ 1
    grey[2:5, 3:9] = key
    grey[6, 6] = key ^ 1  # differs in the lowest bit only: still opaque
    sixteen_bit_png(tmp_path / "g16.png", grey, (key,))
    expected = np.where(grey == key, 255, np.rint(grey * (255 / 65535))).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png"), np.repeat(expected[..., None], 3, axis=2))


@pytest.mark.parametrize("key", [(1000, 2000, 3000), (0, 0, 0), (65535, 256, 0)])
def test_a_16_bit_rgb_image_with_a_transparent_colour_is_shown_on_white_and_named(tmp_path, key):
    rgb = np.zeros((10, 14, 3), dtype=np.uint16)
    rgb[...] = [key[0] ^ 0x8000, key[1] ^ 0x8000, key[2] ^ 0x8000]
    rgb[1:4, 2:7] = key
    sixteen_bit_png(tmp_path / "rgb16.png", rgb, key)
    with pytest.warns(UserWarning, match="rgb16.png: a 16-bit RGB image with a colour marked transparent"):
        shown = load_image(tmp_path / "rgb16.png")
    transparent = np.zeros(rgb.shape[:2], dtype=bool)
    transparent[1:4, 2:7] = True
    assert (shown[transparent] == 255).all()
    np.testing.assert_array_equal(shown[~transparent], rgb[~transparent] >> 8)


def test_a_mask_with_alpha_is_read_on_black(tmp_path):
    """A segmentation tool's cut-out mask: white everywhere, the lesion opaque, the rest transparent."""
    alpha = np.zeros((20, 30), dtype=np.uint8)
    alpha[5:15, 10:20] = 255
    Image.fromarray(np.dstack([np.full((20, 30, 3), 255, np.uint8), alpha]), "RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), alpha > 0)


def test_an_image_table_reads_images_by_contents(tmp_path):
    for name, fmt in (("a.heic", "HEIF"), ("b", "PNG"), ("c.webp", "WEBP"), ("d.avif", "AVIF")):
        Image.fromarray(smooth()).save(tmp_path / name, format=fmt)
    pd.DataFrame({"path": ["a.heic", "b", "c.webp", "d.avif"], "label": ["x", "x", "y", "y"]}).to_csv(
        tmp_path / "images.csv", index=False)
    table = load_dataset("csv", metadata=tmp_path / "images.csv")
    assert [load_image(p, 16).shape for p in table.frame["path"]] == [(16, 16, 3)] * 4
