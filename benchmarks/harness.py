"""Shared by the benchmark scripts: run a case in a fresh process (so its peak memory is its own), print a
table of figures with the ratio to the baseline measured in the same run, and pick a real dataset's images
(read by the package's own reader) for the scripts that can measure on them."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from siamese.runtime.device import configure_threads, cpu_capability


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a size, a count, a batch)."""
    return _at_least(text, 1)


def non_negative(text: str) -> int:
    """An argparse type: a whole number of at least 0 (workers)."""
    return _at_least(text, 0)


def _at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value


def peak_rss_mb() -> float:
    """This process's own peak resident memory.

    Linux's ``VmHWM`` belongs to the process image, so it starts afresh at exec. ``ru_maxrss`` does not:
    a spawned child starts from its parent's figure (it survives fork and exec), which put a floor of the
    parent's memory under every case. ``ru_maxrss`` is the fallback where there is no ``/proc``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(fn: Callable[..., dict[str, Any]], args: tuple) -> dict[str, Any]:
    configure_threads(int(os.environ.get("BENCH_THREADS", 0)) or None)
    result = fn(*args)
    result["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available():
        result["cuda_max_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a spawned process; its dict comes back with that process's peak RSS. The worker is
    not a daemon (unlike a ``multiprocessing.Pool``'s), so a case may start DataLoader workers of its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, fn, args).result()


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Seconds per call (CUDA synchronised), after one warm-up call."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def machine_facts() -> dict[str, Any]:
    """What a figure was measured on, as fields a script can collect: device, torch, threads, date."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    return {"device": device, "cpu_capability": cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpus": os.cpu_count(),
            "host": platform.node(), "date": time.strftime("%Y-%m-%d")}


def machine() -> str:
    """:func:`machine_facts` as the one line a table is headed with."""
    facts = machine_facts()
    return (f"{facts['host']} | {facts['device']} | {facts['cpus']} CPUs ({facts['cpu_capability']}), "
            f"{facts['threads']} torch threads | torch {facts['torch']} | {facts['date']}")


def print_table(title: str, rows: list[dict[str, Any]], value: str, baseline_case: str,
                higher_is_better: bool = True) -> None:
    """Rows need 'case' and ``value``; the ratio is against the row named ``baseline_case``."""
    base = next(r[value] for r in rows if r["case"] == baseline_case)
    print(f"\n{title}\n{machine()}\n(x baseline: each case's {value} "
          f"{'over' if higher_is_better else 'into'} that of {baseline_case!r})")
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':{width}s} {value:>16s} {'x baseline':>11s} {'peak RSS MB':>12s} {'CUDA MB':>9s}")
    for row in rows:
        ratio = row[value] / base if higher_is_better else base / row[value]
        cuda = f"{row['cuda_max_mb']:9.0f}" if "cuda_max_mb" in row else f"{'-':>9s}"
        rss = f"{row['peak_rss_mb']:12.0f}" if "peak_rss_mb" in row else f"{'-':>12s}"
        print(f"{row['case']:{width}s} {row[value]:16.2f} {ratio:11.2f} {rss} {cuda}")


def real_images(dataset: str, data_dir: str | Path, count: int) -> pd.DataFrame:
    """``count`` rows (``image_id``, ``path``, ``label``) of a dataset as the package reads it
    (:func:`siamese.data.load_dataset`), taken from the classes in turn (each class's first image in table
    order, then each one's second, ...), so a scarce class is in the sample as in a class-balanced batch.
    The first rows alone would not do: ISIC 2020's first 384 hold 5 melanomas, too few for the class-balanced
    sampler and miner to find pairs, and the project's step skips the backward pass of a batch without any."""
    from siamese.data import load_dataset

    frame = load_dataset(dataset, data_dir=data_dir).frame
    if len(frame) < count:
        raise SystemExit(f"{dataset} in {data_dir} has {len(frame)} images; the benchmark needs {count}")
    turn = frame.groupby("label", sort=False).cumcount()
    order = np.lexsort((pd.factorize(frame["label"])[0], turn.to_numpy()))
    return frame.iloc[order[:count]][["image_id", "path", "label"]].reset_index(drop=True)


def describe_images(source: str, paths: list[str], root: str | Path | None = None) -> str:
    """One line naming the images a benchmark read: their source, the folders they lie in (relative to
    ``root`` when given), how many, and their pixel sizes (read from the file headers)."""
    folders = Counter(_folder(Path(path), root) for path in paths)
    sizes = Counter(_size(path) for path in paths)
    where = ", ".join(f"{folder} ({n})" for folder, n in sorted(folders.items()))
    dims = ", ".join(f"{size} ({n})" for size, n in sizes.most_common())
    return f"images: {len(paths)} {source} JPEGs{f' in {root}' if root else ''}: {where}; sizes {dims}"


def common_size(paths: list[str]) -> str:
    """``WxH`` of the images when they all share it, else ``mixed sizes``."""
    sizes = {_size(path) for path in paths}
    return sizes.pop() if len(sizes) == 1 else "mixed sizes"


def _folder(path: Path, root: str | Path | None) -> str:
    if root is not None and path.parent.is_relative_to(root):
        return str(path.parent.relative_to(root))
    return str(path.parent)


def _size(path: str) -> str:
    with Image.open(path) as image:
        return f"{image.width}x{image.height}"
