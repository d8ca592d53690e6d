"""Grad-CAM overlays for the predicted class, through the frozen embedder and the classifier together.

Uses the maintained ``grad-cam`` package (pytorch_grad_cam) rather than hand-written hooks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from siamese.data.decode import to_batch  # noqa: E402
from siamese.evaluation.figures import new_figure, save_figure  # noqa: E402
from siamese.inference.graph import InferenceGraph  # noqa: E402
from siamese.inference.preprocess import Preprocessing  # noqa: E402
from siamese.models import EmbeddingNet  # noqa: E402


class EndToEnd(nn.Module):
    """Image to class logits; a binary head becomes two columns (-z, z) so each class has a target."""

    def __init__(self, graph: InferenceGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.graph.logits(x, self.graph.embedder(x))
        return torch.cat([-logits, logits], dim=1) if self.graph.classifier.binary else logits


def target_layer(embedder: EmbeddingNet) -> nn.Module:
    """The last convolutional block, where Grad-CAM still has spatial resolution and high-level meaning."""
    backbone = embedder.backbone
    if hasattr(backbone, "Mixed_7c"):
        return backbone.Mixed_7c
    if hasattr(backbone, "conv_head"):  # timm's EfficientNet: the 1x1 head convolution, before pooling
        return backbone.bn2
    return backbone.layer4[-1]


def saliency_maps(run_dir: str | Path, images: list[Path], out_dir: str | Path | None = None,
                  masks: str | Path | None = None) -> list[Path]:
    """One PNG per image: the image (lesion-cropped as the run was trained), and the Grad-CAM overlay for
    its predicted class."""
    prep = Preprocessing.load(Path(run_dir) / "preprocess.json")
    graph = InferenceGraph.from_run(run_dir)
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "saliency"
    out_dir.mkdir(parents=True, exist_ok=True)
    model = EndToEnd(graph).eval()
    written = []
    with GradCAM(model=model, target_layers=[target_layer(graph.embedder)]) as cam:
        for path in images:
            pixels = prep.read(path, masks)
            batch = torch.from_numpy(to_batch([pixels]))
            with torch.no_grad():
                probabilities = graph(batch)[1][0]
            index = int(probabilities.argmax())
            mask = cam(input_tensor=batch, targets=[ClassifierOutputTarget(index)])[0]
            overlay = show_cam_on_image(pixels.astype(np.float32) / 255.0, mask, use_rgb=True)
            fig, axes = new_figure(1, 2, figsize=(6, 3.2))
            for ax, picture, title in ((axes[0], pixels, Path(path).name),
                                       (axes[1], overlay, f"Grad-CAM: {prep.classes[index]} "
                                                          f"({probabilities[index]:.2f})")):
                ax.imshow(picture)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
            written.append(save_figure(fig, out_dir / f"{Path(path).stem}_gradcam.png"))
    return written
