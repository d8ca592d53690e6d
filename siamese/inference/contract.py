"""What ``preprocess.json`` tells a client of ``model.onnx`` that does not run this package (a web or mobile
app, another language): every step between an image file and the model's input tensor, as ``predict``
takes it.

The steps are written from the constants the decoder itself uses, so the file cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from siamese.data.decode import BACKGROUND, JPEG_SCALES

ONNX_INPUT = "pixels"
ONNX_OUTPUTS = ("embedding", "probabilities")


def pipeline(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], crop: str, crop_margin: float
             ) -> dict[str, Any]:
    """The input tensor and the ordered steps that make it from a file, for a run trained at ``image_size`` with
    input statistics ``mean``/``std`` (applied inside the model) and lesion crop ``crop``."""
    steps: list[dict[str, Any]] = [
        {"step": "jpeg_dct_scaling",
         "applies_to": "JPEG files, when no lesion crop is taken (a crop box is in full-size pixels)",
         "scale": f"1/d, d the largest of {list(JPEG_SCALES)} with d <= min(width // {image_size}, "
                  f"height // {image_size}), width and height as stored (before EXIF orientation); d = 1 is a "
                  f"plain decode",
         "how": "libjpeg's own reduced-scale decode (scale_num = 1, scale_denom = d; Pillow: "
                f"Image.draft('RGB', ({image_size}, {image_size}))), giving ceil(width / d) x ceil(height / d)",
         "why": "large photographs decode several times faster; it changes the pixels slightly, and the model "
                "was trained on images read the same way"},
        {"step": "exif_orientation", "how": "turn the image upright by its EXIF Orientation tag (1-8)"},
        {"step": "bit_depth", "how": "16-bit greyscale times 255/65535, 32-bit float in 0-1 times 255, rounded; "
                                     "other modes as they are"},
        {"step": "transparency", "background_rgb": list(BACKGROUND["RGB"]),
         "how": "alpha channels, transparent palette entries and transparent colours alpha-composited on the "
                "background"},
        {"step": "to_rgb", "how": "convert to 8-bit RGB (greyscale repeated, palette looked up, CMYK converted)"},
    ]
    if crop != "none":
        steps.append({"step": "lesion_crop", "crop": crop, "margin": crop_margin,
                      "how": "a square of side max(box height, box width) * (1 + 2 * margin), at most the image's "
                             "larger side, centred on the lesion mask's bounding box and shifted (then clipped) "
                             "to lie inside the image; the whole image when no mask or no lesion is found"})
    steps.append({"step": "resize", "size": [image_size, image_size], "aspect": "not kept",
                  "filter": "bilinear with antialiasing: Pillow's Image.resize(BILINEAR), whose triangle filter "
                            "widens by the reduction factor (OpenCV INTER_LINEAR or a GPU texture fetch does not)"})
    return {"input": {"name": ONNX_INPUT, "dtype": "uint8", "layout": "NCHW", "channels": "RGB",
                      "shape": ["batch", 3, image_size, image_size],
                      "normalization": f"inside the model: (pixels / 255 - mean) / std, mean {list(mean)}, "
                                       f"std {list(std)}; feed raw 0-255 values"},
            "outputs": list(ONNX_OUTPUTS), "steps": steps}
