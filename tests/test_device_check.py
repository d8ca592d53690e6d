"""The GPU lease's one script (benchmarks/device_check.sh) at tiny settings on the CPU: every step runs, the
figures land in the output folder, and the budget decides what starts."""

import json
import os
import subprocess
import tarfile

from benchmarks.device_check import Budget, markdown
from tests.conftest import REPO


def test_device_check_runs_every_step_and_writes_its_figures(tmp_path):
    pack, out = tmp_path / "pack", tmp_path / "out"
    pack.mkdir()
    (pack / "pack.json").write_text(json.dumps({"dataset": "synthetic", "duplicates": None, "preset": "tiny"}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = ["bash", str(REPO / "benchmarks" / "device_check.sh"), str(pack), str(out), "--seeds", "0",
               "--references", "colour_baseline", "--train-args",
               "--image-size 32 --epochs-embed 1 --epochs-classifier 2 --batch-size 56 --device cpu",
               "--bench", "resnet18:32", "--bench-batch", "8", "--bench-steps", "2", "--bench-images", "16",
               "--bench-embeddings", "256", "--workers", "0", "--budget", "1500", "--work", str(tmp_path / "work")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["done"] * 6, summary["steps"]
    models = {row["model"]: row for row in summary["test_metrics"]}
    assert set(models) >= {"classifier", "knn", "colour_baseline"}
    assert 0 <= models["classifier"]["balanced_accuracy"] <= 1 and models["classifier"]["seed"] == 0
    step = summary["benchmarks"]["bench_train_step"]["resnet18:32"]
    assert step["project_vs_best_bare"] > 0 and step["batch"] == 8
    assert summary["benchmarks"]["bench_extract"]["resnet18:32"]["extraction_vs_best_bare"] > 0
    torchrun = summary["torchrun"]
    assert torchrun["finished"] and torchrun["digest_check_passed"]
    assert torchrun["backend"] == "gloo" and torchrun["world_size"] == 1 and len(torchrun["digests"]) == 1
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert {"seed0/metrics.json", "seed0/config.json", "torchrun/history.csv"} <= set(names)
    assert not [n for n in names if n.endswith(".pt") or "checkpoints" in n]
    page = (out / "summary.md").read_text()
    assert "## Stage-1 training step against the bare loop" in page and "| resnet18 | 32 | 8 |" in page
    assert "digest check passed: True" in page
    assert "train seed 0: done" in (out / "device_check.log").read_text()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_starts_a_step_only_when_it_can_end_in_time():
    clock = FakeClock()
    budget = Budget(300, clock)
    assert budget.allows(250)
    clock.now += 100  # 200 s of 300 left, less the reserve for packing
    assert budget.allows(150) and not budget.allows(190)


def test_the_page_says_what_was_skipped(tmp_path):
    summary = {"dataset": "ham10000", "preset": "ham_gpu", "steps": [
        {"step": "train seed 0", "status": "done", "seconds": 150.0},
        {"step": "train seed 1", "status": "skipped: 90 s left, about 165 s needed"}]}
    page = markdown(summary, tmp_path)
    assert "| train seed 1 | skipped: 90 s left, about 165 s needed |  |" in page
    assert "# Device check: ham10000 with `ham_gpu`" in page
