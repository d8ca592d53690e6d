"""Image decoding with PIL and numpy alone, so ``predict`` can read images without importing torch.

Every image, lesion mask and artefact template the package reads is decoded by :func:`decode`, so each is
read as a viewer displays it, the same way in training, prediction, duplicate search, segmentation and the
robustness audit: EXIF orientation applied before any crop or resize, samples of more than 8 bits scaled
to 8, transparency composited on :data:`BACKGROUND`, and every failure named by file as an
:class:`ImageError` that says why (no decoder for the format, truncated data, not an image).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from siamese.data.formats import raster_format, read_head, unidentified_reason
from siamese.data.hdf5 import read_member, split_member
from siamese.data.table import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow's modes for 16-bit greyscale (PNG, TIFF, PGM; ``I`` is how older Pillow and some formats give it):
Pillow's own conversion to RGB clips them at 255, which turns a 16-bit lesion white."""
SIDEWAYS = (5, 6, 7, 8)
"""EXIF orientations that swap width and height when applied."""
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
"""What Pillow raises for a file it cannot decode: unknown or truncated data, a mode it cannot convert."""
JPEG_SCALES = (8, 4, 2, 1)
"""The denominators of libjpeg's reduced-scale decode that Pillow's ``draft`` chooses among, largest first: the
largest not above the ratio of the stored size to the size asked for."""
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
BACKGROUND = {"RGB": (255, 255, 255), "L": (0, 0, 0)}
"""What transparent pixels are shown on, by output mode: an image on white, as a browser or document shows a
cut-out (never the colour stored under alpha 0, often black, which viewers hide); a mask on black, so what
a tool left transparent is outside the lesion."""


class ImageError(DataError):
    """An image file that is missing, unreadable or corrupt (the message names it)."""


def decode(path: str | Path, mode: str = "RGB", size: int | None = None, kind: str = "image",
           labels: bool = False) -> Image.Image:
    """The file at ``path`` as displayed, fully decoded (so truncated files fail here, not mid-epoch), in
    ``mode`` (``RGB`` for images, ``L`` for masks) with 8 bits per sample: wider samples are scaled
    (:func:`eight_bit`), or with ``labels`` (a mask, whose values are classes, not intensities: a 16-bit
    0/1 mask must stay 0/1) kept and clipped at 255.

    ``size`` is the side the caller will resize to: a JPEG several times larger is then decoded at 1/2 to
    1/8 scale by libjpeg itself (PIL's ``draft``), never below ``size``; an ISIC 2020 photograph of
    6000x4000 takes 25 ms instead of 171 ms to reach 256 px, a mean difference of 0.17 grey levels. A
    JPEG above Pillow's decompression-bomb limit is read that way too when the reduced scale is within
    the limit; any other file above it is refused by name. ``kind`` names the file in errors.

    Raises :class:`ImageError` naming the file when it is missing or cannot be decoded.
    """
    path = _existing(path, kind)
    image = _open(path, size, kind)
    try:
        with image:
            if size is not None:
                image.draft(mode, (size, size))
            wide = _wide_samples(image)
            ImageOps.exif_transpose(image, in_place=True)  # loads the pixels, then turns them upright
            transparent = wide_transparency(image, wide, path)
            return flatten(image if labels else eight_bit(image), BACKGROUND[mode], transparent).convert(mode)
    except DECODE_ERRORS as exc:
        raise ImageError(f"{path}: unreadable {kind}: {_load_failure(image, exc)}") from exc


def flatten(image: Image.Image, background: tuple[int, int, int],
            transparent: np.ndarray | None = None) -> Image.Image:
    """An image with an alpha channel, or a palette or colour marked transparent (PNG ``tRNS``, GIF), as a
    viewer shows it on ``background``: alpha-composited (partial alpha blends). ``transparent`` (``HxW`` bool,
    from :func:`wide_transparency`) marks the pixels of a transparent colour Pillow cannot match itself.
    Images without transparency are returned as they are; Pillow's plain conversion would drop the alpha and
    show the hidden colours."""
    if transparent is None and image.mode not in ALPHA_MODES and "transparency" not in image.info:
        return image
    shown = image.convert("RGBA")
    if transparent is not None:
        shown.putalpha(Image.fromarray(np.where(transparent, 0, 255).astype(np.uint8)))
    canvas = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(canvas, shown).convert("RGB")


def _wide_samples(image: Image.Image) -> bool:
    """Whether the file stores more than 8 bits per sample, from the raw mode of its first tile (read before the
    pixels load: Pillow decodes a 16-bit RGB PNG to 8 bits and keeps no other trace of it)."""
    tile = getattr(image, "tile", None)
    return bool(tile) and isinstance(tile[0].args, str) and ";16" in tile[0].args


def wide_transparency(image: Image.Image, wide: bool, path: Path | str) -> np.ndarray | None:
    """``HxW`` bool, True where a 16-bit image's colour marked transparent (PNG ``tRNS``) is, which Pillow's own
    conversion misses: greyscale compared at 16 bits, exactly; RGB, which Pillow keeps only the high byte of,
    compared by that byte (a warning names the file, since colours within 1/256 of it turn transparent too).
    None for every other image (:func:`flatten` handles those)."""
    colour = image.info.get("transparency")
    if image.mode in SIXTEEN_BIT_MODES and isinstance(colour, int):
        return np.asarray(image) == colour
    if wide and image.mode == "RGB" and isinstance(colour, tuple) and len(colour) == 3:
        warnings.warn(f"{path}: a 16-bit RGB image with a colour marked transparent; Pillow reads 8 of its 16 "
                      f"bits, so pixels within 1/256 of that colour are shown transparent too", stacklevel=3)
        return np.all(np.asarray(image) == np.array(colour) >> 8, axis=-1)
    return None


def is_image(path: str | Path) -> bool:
    """Whether an installed Pillow plugin identifies the file as an image, from its header, or its first
    bytes are the signature of a format Pillow reads (the pixels are not decoded: a truncated image, even
    one cut inside its header, is still an image, refused with its reason when read)."""
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # identified; refused or read at reduced scale when decoded
    except DECODE_ERRORS:
        return raster_format(read_head(Path(path))) is not None


def eight_bit(image: Image.Image) -> Image.Image:
    """Samples of more than 8 bits scaled to 0-255: 16-bit greyscale by 255/65535 (so an 8-bit image saved
    as 16 bits by multiplying by 257 comes back exactly), 32-bit float (``F``) from 0-1 when it lies
    there, else clipped to 0-255 as Pillow does. Other modes are returned as they are."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) * (255 / 65535)
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if values.size and values.min() >= 0 and values.max() <= 1:
            values = values * 255
    else:
        return image
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def load_image(path: str | Path, size: int | None = None,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """An ``HxWx3`` uint8 image as displayed (:func:`decode`), cropped to ``box`` (a lesion-centred square,
    ``(left, top, right, bottom)`` in displayed pixels) and resized to a ``size`` square."""
    # A crop box is in full-size pixels, so a reduced-scale decode would misplace it.
    return fit(decode(path, "RGB", size if box is None else None), size, box)


def fit(image: Image.Image | np.ndarray, size: int | None = None,
        box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop to ``box`` and resize to a ``size`` square: what every model input goes through after decoding
    (also for pixels changed in memory, such as an inserted artefact)."""
    rgb = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if box is not None:
        rgb = rgb.crop(box)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """An image's (width, height) as displayed, from its header and EXIF orientation (PNG may need its
    pixels read to find the EXIF block)."""
    path = _existing(path, "image")
    image = _open(path, None, "image")
    try:
        with image:
            width, height = image.size
            sideways = image.getexif().get(ExifTags.Base.Orientation, 1) in SIDEWAYS
    except DECODE_ERRORS as exc:
        raise ImageError(f"{path}: unreadable image: {_load_failure(image, exc)}") from exc
    return (height, width) if sideways else (width, height)


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """``HxWx3`` arrays to one contiguous ``Nx3xHxW`` uint8 batch, the layout the models take."""
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


def _existing(path: str | Path, kind: str) -> Path:
    inside = split_member(path)
    if inside is not None and not inside[0].is_file():
        raise ImageError(f"{inside[0]}: HDF5 file not found")
    path = Path(path)
    if inside is None and not path.is_file():
        raise ImageError(f"{path}: {kind} file not found")
    return path


def _open(path: Path, size: int | None, kind: str) -> Image.Image:
    """``Image.open`` with its failures named by file. A file above Pillow's decompression-bomb limit is
    refused, except a JPEG that libjpeg can decode at a scale within the limit (Pillow checks the full
    size before any reduction could apply)."""
    inside = split_member(path)
    if inside is not None:
        return _open_member(path, *inside, kind)
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        refusal = ImageError(f"{path}: {kind} too large to decode ({str(exc).rstrip('.')}); downscale it first")
        if size is None:
            raise refusal from exc
        try:
            image = JpegImagePlugin.JpegImageFile(path)
        except DECODE_ERRORS:
            raise refusal from exc
        image.draft("RGB", (size, size))
        if image.size[0] * image.size[1] > Image.MAX_IMAGE_PIXELS:
            image.close()
            raise refusal from exc
        return image
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: unreadable {kind}: {unidentified_reason(path)}") from exc
    except DECODE_ERRORS as exc:
        raise ImageError(f"{path}: unreadable {kind}: truncated or corrupt header ({exc})") from exc


def _open_member(path: Path, file: Path, key: str, kind: str) -> Image.Image:
    """An image stored in an HDF5 file (:mod:`siamese.data.hdf5`), with the same refusals as a file's."""
    try:
        data = read_member(file, key)
    except KeyError as exc:
        raise ImageError(f"{path}: no {key!r} in {file}") from exc
    except OSError as exc:
        raise ImageError(f"{file}: not a readable HDF5 file ({exc})") from exc
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {kind} too large to decode ({str(exc).rstrip('.')})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: unreadable {kind}: {unidentified_reason(data)}") from exc
    except DECODE_ERRORS as exc:
        raise ImageError(f"{path}: unreadable {kind}: truncated or corrupt header ({exc})") from exc


def _load_failure(image: Image.Image, exc: Exception) -> str:
    """Why an identified image's pixels could not be had: no decoder for its format (Pillow built without
    it), or truncated or corrupt data."""
    if isinstance(exc, OSError) and "decoder" in str(exc) and "not available" in str(exc):
        return f"no decoder for this format ({image.format}: {exc})"
    return f"truncated or corrupt {image.format} data ({exc})"
