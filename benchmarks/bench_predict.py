"""predict.py latency on CPU: cold (process start to first answer, model load included) and warm per image.

    python -m benchmarks.bench_predict [--backbone inception_v3] [--size 256]

A run folder is trained first (one short epoch on synthetic lesions, random init: latency does not depend
on the weights' values), with its ONNX export. Both engines are measured. Baselines in the same run: cold,
the bare ``python -c "import torch"`` start; warm, one bare forward pass of the same network on an
already-decoded tensor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.harness import isolated, positive, print_table
from siamese.config import preset
from siamese.data import make_synthetic
from siamese.inference.predictor import Predictor
from siamese.workflows.training_run import run_training

REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path, backbone: str, size: int) -> Path:
    config = preset("lightweight")
    config.data.dataset, config.data.synthetic_lesions_per_class, config.data.image_size = "synthetic", 8, size
    config.model.backbone, config.model.weights = backbone, "none"
    config.embed.epochs, config.embed.batch_size, config.classifier.epochs = 1, 14, 1
    config.wandb, config.out, config.device = "disabled", str(root / "run"), "cpu"
    return run_training(config)


def images(root: Path, count: int) -> list[Path]:
    table = make_synthetic(lesions_per_class=3, seed=7)
    paths = []
    for i in range(count):
        path = root / f"query_{i}.jpg"
        Image.fromarray(table.images[i]).resize((600, 450)).save(path)
        paths.append(path)
    return paths


def wall(command: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_project(run: Path, paths: list[Path], engine: str) -> dict:
    predictor = Predictor(run, engine=engine)
    predictor.predict(paths[:2])
    start = time.perf_counter()
    predictor.predict(paths)
    return {"ms_per_image": (time.perf_counter() - start) / len(paths) * 1000}


def warm_bare(backbone: str, size: int, count: int) -> dict:
    from siamese.models import EmbeddingNet

    model = EmbeddingNet(backbone, "none").eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(count):
            model(x)
    return {"ms_per_image": (time.perf_counter() - start) / count * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--size", type=positive, default=256)
    parser.add_argument("--images", type=positive, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.backbone, args.size)
        paths = images(Path(tmp), args.images)
        cold = [{"case": "python -c 'import torch' (floor)", "seconds": wall([sys.executable, "-c", "import torch"])}]
        cold += [{"case": f"python predict.py --engine {engine}, one image",
                  "seconds": wall([sys.executable, "predict.py", "--run", str(run), str(paths[0]), "--engine", engine])}
                 for engine in ("torch", "onnx")]
        warm = [{"case": "bare forward, decoded tensor", **isolated(warm_bare, args.backbone, args.size, args.images)}]
        warm += [{"case": f"Predictor ({engine}): decode+resize+embed+classify+kNN",
                  **isolated(warm_project, run, paths, engine)} for engine in ("torch", "onnx")]
    print_table(f"predict cold start ({args.backbone} {args.size}px, CPU, median of 3)", cold, "seconds",
                "python -c 'import torch' (floor)", higher_is_better=False)
    print_table(f"predict warm latency ({args.images} JPEGs 600x450)", warm, "ms_per_image",
                "bare forward, decoded tensor", higher_is_better=False)


if __name__ == "__main__":
    main()
