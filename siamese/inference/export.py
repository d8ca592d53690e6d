"""A finished run's ONNX export, checked against torch before it is kept."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese.inference.contract import ONNX_INPUT, ONNX_OUTPUTS
from siamese.inference.engines import ONNX_FILE, ONNX_INFO, OnnxEngine, checkpoint_digests
from siamese.inference.graph import InferenceGraph
from siamese.inference.preprocess import Preprocessing
from siamese.runtime.errors import ExportError

OUTPUTS = ONNX_OUTPUTS  # a classification run's, as preprocess.json names them to clients


def export_onnx(run_dir: str | Path, tolerance: float = 1e-3) -> Path:
    """Write ``model.onnx`` (any batch size) and ``model.onnx.json`` beside the run's checkpoints.

    The export is kept only if ONNX Runtime reproduces torch's outputs on a sample batch within
    ``tolerance``; the JSON records the checkpoints' digests (so a stale export is never used), the
    measured differences and the versions. Both files are written under temporary names and renamed.
    """
    run_dir = Path(run_dir)
    size = Preprocessing.load(run_dir / "preprocess.json").image_size  # first: names a folder that is no run
    digests = checkpoint_digests(run_dir)
    return export_checked(run_dir, InferenceGraph.from_run(run_dir), size, OUTPUTS, digests, tolerance)


def export_checked(run_dir: Path, graph: torch.nn.Module, size: int, outputs: tuple[str, ...],
                   digests: dict[str, str], tolerance: float = 1e-3) -> Path:
    """Export ``graph`` (uint8 ``Nx3xSxS`` pixels in, ``outputs`` out) to ``run_dir/model.onnx`` if ONNX
    Runtime agrees with torch on a sample batch, recording ``digests`` of the checkpoints it came from."""
    sample = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    partial = run_dir / f"{ONNX_FILE}.partial"
    try:
        program = torch.onnx.export(graph, (sample,), dynamo=True, verbose=False, input_names=[ONNX_INPUT],
                                    output_names=list(outputs),
                                    dynamic_shapes={ONNX_INPUT: {0: torch.export.Dim("batch", min=1)}})
        program.save(partial)
    except Exception as exc:  # the exporter raises many types; any of them means "no export"
        partial.unlink(missing_ok=True)
        raise ExportError(f"{run_dir}: ONNX export failed ({type(exc).__name__}: {exc})") from exc
    with torch.inference_mode():
        expected = graph(sample)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    got = OnnxEngine(partial)(sample.numpy())
    differences = {name: float(np.abs(a - b).max()) for name, a, b in zip(outputs, got, expected, strict=True)}
    if max(differences.values()) > tolerance:
        partial.unlink()
        raise ExportError(f"{run_dir}: ONNX Runtime disagrees with torch by {differences} (tolerance {tolerance})")
    os.replace(partial, run_dir / ONNX_FILE)
    _write_json(run_dir / ONNX_INFO, {"checkpoints": digests, "max_abs_difference": differences,
                                      "tolerance": tolerance, "torch": torch.__version__,
                                      "onnxruntime": _onnxruntime_version()})
    return run_dir / ONNX_FILE


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _write_json(path: Path, values: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(partial, path)
