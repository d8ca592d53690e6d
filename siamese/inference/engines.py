"""What turns a batch of pixels into embeddings and class probabilities for ``predict``.

``predict`` is run once per image from a shell as often as it is run on folders, so its start-up counts:
on two CPU cores importing torch and torchvision alone takes about 4 s. Training therefore also writes
``model.onnx``, the whole inference graph (uint8 pixels in, embedding and probabilities out), and ONNX
Runtime answers from it without importing torch. The torch engine is the fallback (a run without an
export, an export older than the checkpoints, a GPU) and the reference every export is checked against.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from siamese.runtime.digest import file_sha256
from siamese.runtime.errors import CheckpointError, EngineError
from siamese.runtime.json_files import read_json

ONNX_FILE = "model.onnx"
ONNX_INFO = "model.onnx.json"
CHECKPOINTS = ("embedder.pt", "classifier.pt")
ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    name: str

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """``Nx3xHxW`` uint8 pixels to the graph's outputs: for a classification run (``NxD`` unit
        embeddings, ``NxC`` class probabilities), for a segmentation run (``Nx1xHxW`` lesion probabilities,)."""
        ...


def checkpoint_digests(run_dir: str | Path, checkpoints: Sequence[str] = CHECKPOINTS) -> dict[str, str]:
    """SHA-256 of the run's checkpoints: an export records them, and is stale once they change."""
    digests = {}
    for name in checkpoints:
        path = Path(run_dir) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        digests[name] = file_sha256(path)
    return digests


NO_ONNXRUNTIME = "onnxruntime is not installed"


def onnx_problem(run_dir: str | Path, checkpoints: Sequence[str] = CHECKPOINTS) -> str | None:
    """Why the run's ``model.onnx`` cannot be used, or None when it is there and matches the checkpoints."""
    run_dir = Path(run_dir)
    if not (run_dir / ONNX_FILE).is_file() or not (run_dir / ONNX_INFO).is_file():
        return f"{run_dir} has no {ONNX_FILE}"
    recorded = read_json(run_dir / ONNX_INFO).get("checkpoints")
    if recorded != checkpoint_digests(run_dir, checkpoints):
        return f"{run_dir / ONNX_FILE} was exported from other checkpoints than the run's current ones"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return NO_ONNXRUNTIME
    return None


class OnnxEngine:
    """ONNX Runtime on the CPU: no torch import, so a one-image ``predict`` starts in about a second."""

    name = "onnx"

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types live in a compiled module
            raise EngineError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, {"pixels": pixels}))


GraphBuilder = Callable[[Path], Any]
"""Builds a run's torch inference graph (an ``nn.Module`` from uint8 pixels to its outputs); it imports
torch itself, so a caller that ends up on ONNX Runtime never does."""


class TorchEngine:
    """The run's torch modules, on any device; what the ONNX export is checked against."""

    name = "torch"

    def __init__(self, run_dir: str | Path, build: GraphBuilder, device: str = "cpu") -> None:

        from siamese.runtime.device import configure_threads, prepare_model, resolve_compute, resolve_device

        configure_threads()
        self.device = resolve_device(device)
        self.compute = resolve_compute("auto", self.device)
        self.graph = prepare_model(build(Path(run_dir)), self.device, self.compute).eval()

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        import torch

        from siamese.runtime.device import autocast, to_device

        with torch.inference_mode(), autocast(self.device, self.compute.bf16):
            outputs = self.graph(to_device(torch.from_numpy(pixels), self.device, self.compute.channels_last))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(t.float().cpu().numpy() for t in outputs)


def open_engine(run_dir: str | Path, build: GraphBuilder, engine: str = "auto", device: str = "cpu",
                checkpoints: Sequence[str] = CHECKPOINTS, export_command: str = "export") -> Engine:
    """``auto``: ONNX Runtime when the device is the CPU and the run's export is current, else torch
    (``build`` makes the torch graph; ``checkpoints`` are the files an export must match)."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if engine == "torch" or (engine == "auto" and device != "cpu"):
        return TorchEngine(run_dir, build, device)
    if device != "cpu":
        raise EngineError(f"the onnx engine runs on the CPU only; use the torch engine for device {device!r}")
    problem = onnx_problem(run_dir, checkpoints)
    if problem is None:
        try:
            return OnnxEngine(Path(run_dir) / ONNX_FILE)
        except EngineError as exc:
            problem = str(exc)
    remedy = ("`pip install onnxruntime` adds it" if problem == NO_ONNXRUNTIME
              else f"`python -m siamese {export_command} {run_dir}` writes the export")
    if engine == "onnx":
        raise EngineError(f"{problem}; {remedy}")
    warnings.warn(f"{problem}: using torch, which starts slower ({remedy})", stacklevel=2)
    return TorchEngine(run_dir, build, device)
