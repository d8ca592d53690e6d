"""The GPU lease's one script (benchmarks/device_check.sh) at tiny settings on the CPU: every step runs, the
figures land in the output folder, and the budget decides what starts."""

import json
import os
import subprocess
import tarfile

import pandas as pd

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
        history = pd.read_csv(tar.extractfile("torchrun/history.csv"))
    assert {"seed0/metrics.json", "seed0/config.json"} <= set(names)
    assert not [n for n in names if n.endswith(".pt") or "checkpoints" in n]
    assert list(history.loc[history["stage"] == "embed", "epoch"]) == [1, 2]  # a frozen epoch, then the rest
    page = (out / "summary.md").read_text()
    assert "## Stage-1 training step against the bare loop" in page and "| resnet18 | 32 | 8 |" in page
    assert "digest check passed: True" in page
    assert "train seed 0: done" in (out / "device_check.log").read_text()


def test_a_failed_first_seed_is_reported_and_the_later_seeds_are_listed_as_skipped(tmp_path):
    pack, out = tmp_path / "pack", tmp_path / "out"
    pack.mkdir()
    (pack / "pack.json").write_text(json.dumps({"dataset": "synthetic", "preset": "tiny"}))
    command = ["bash", str(REPO / "benchmarks" / "device_check.sh"), str(pack), str(out), "--seeds", "0", "1",
               "--train-args", "--no-such-option 3", "--bench", "none", "--no-torchrun"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "failed: train seed 0" in done.stderr
    steps = {s["step"]: s["status"] for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert steps["train seed 0"] == "failed"
    assert steps["train seed 1"] == "skipped: seed 0 did not finish, so its time is unknown"
    assert "--no-such-option" in (out / "device_check.log").read_text()


def test_a_folder_without_a_pack_is_refused(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), str(tmp_path), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "make the pack with benchmarks/device_pack.sh" in done.stderr
    (tmp_path / "pack.json").write_text("{not json")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), str(tmp_path), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a pack from benchmarks/device_pack.sh" in done.stderr


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
