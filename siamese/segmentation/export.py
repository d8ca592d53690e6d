"""A segmentation run's ONNX export, checked against torch like the classifier's."""

from __future__ import annotations

from pathlib import Path

from siamese.config import SegmentConfig
from siamese.inference.engines import checkpoint_digests
from siamese.inference.export import export_checked
from siamese.inference.lesion_masks import CHECKPOINT, CONFIG_FILE, segmenter_graph


def export_segmenter(run_dir: str | Path, tolerance: float = 1e-3) -> Path:
    """``model.onnx`` of a segmentation run (uint8 pixels to lesion probabilities), kept only when ONNX
    Runtime agrees with torch; stale once ``segmenter.pt`` changes."""
    run_dir = Path(run_dir)
    size = SegmentConfig.load(run_dir / CONFIG_FILE).image_size
    digests = checkpoint_digests(run_dir, (CHECKPOINT,))
    return export_checked(run_dir, segmenter_graph(run_dir), size, ("lesion_probability",), digests, tolerance)
