import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd

from siamese.data.balance import DistributedClassBalancedSampler
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_sampler_shards_one_balanced_global_batch():
    labels = np.repeat(np.arange(4), 30)
    shards = []
    for rank in range(2):
        np.random.seed(5)
        shards.append(np.array(list(iter(DistributedClassBalancedSampler(labels, 16, 2, rank)))))
    assert len(shards[0]) == len(shards[1])
    first_global_batch = np.concatenate([shards[0][:8], shards[1][:8]])
    assert sorted(np.bincount(labels[first_global_batch], minlength=4)) == [4, 4, 4, 4]
    assert not set(shards[0][:8]) & set(shards[1][:8])


def test_torchrun_two_cpu_processes_agree_on_weights(tmp_path):
    """With a frozen-backbone warm-up epoch first: DDP then trains the head alone, then the whole network."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(REPO / "train.py"), "--dataset", "synthetic", "--image-size", "32", "--epochs-embed", "2",
               "--frozen-epochs", "1", "--epochs-classifier", "2", "--batch-size", "56", "--wandb", "disabled",
               "--device", "cpu", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    evidence = json.loads((out / "checkpoints" / "rank_digests.json").read_text())
    assert evidence["backend"] == "gloo" and evidence["world_size"] == 2
    digests = evidence["digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    history = pd.read_csv(out / "history.csv")
    assert list(history.loc[history["stage"] == "embed", "epoch"]) == [1, 2]
    assert (out / "metrics.json").is_file()
    assert done.stdout.count("results in") == 1
    resume = command[:5] + [str(REPO / "train.py"), "--resume", str(out)]
    again = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert pd.read_csv(out / "history.csv").equals(history)


def test_torchrun_keeps_a_proxy_loss_and_its_cross_entropy_head_in_step(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(REPO / "train.py"), "--dataset", "synthetic", "--image-size", "32", "--epochs-embed", "2",
               "--epochs-classifier", "1", "--batch-size", "56", "--wandb", "disabled", "--device", "cpu",
               "--loss", "arcface", "--ce-weight", "0.5", "--references", "none", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = json.loads((out / "checkpoints" / "rank_digests.json").read_text())["digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # the model's and the objective's (arcface's W, the head)
    assert json.loads((out / "config.json").read_text())["embed"]["loss"] == "arcface"
