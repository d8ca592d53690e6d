"""Time from opening the embedding explorer (``visualize --html``) to its first drawing, in headless Chromium.

    python -m benchmarks.bench_explorer [--points 1000 5000 10015] [--repeat 3] [--trace TOP]

Each page is a generated run: ``N`` points in two projections with 128-dimensional embeddings, seven classes,
probabilities, four metadata columns, lesion groups and duplicate pairs, and a synthetic lesion thumbnail per
image at the real thumbnails' size (a 64 x 48 JPEG of about 1.4 kB). Chromium opens the file from disk through
its DevTools protocol (``--remote-debugging-pipe``: no extra package), in real time, and reads the marks the
page sets (:data:`~siamese.diagnostics.page.MARKS`) from navigation start: plotly evaluated, data parsed,
first drawing; and, from a performance trace, the renderer main thread's CPU time until that drawing, which a
shared machine's load inflates far less than the wall clock. ``--trace TOP`` adds the kinds of work that
time went to (DevTools timeline events).

Baseline in the same run: a bare plotly page drawing the same points with ``Plotly.newPlot`` and nothing else,
so the ratio says what the explorer costs on top of plotly itself. The machine may be shared: the load average is
printed with each figure; compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import statistics
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import machine, non_negative, positive
from siamese.diagnostics.explorer import explorer_payload, write_explorer
from siamese.diagnostics.page import MARKS, thumbnail_uri, write_page

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SHARES = [0.033, 0.051, 0.11, 0.011, 0.111, 0.67, 0.014]  # HAM10000's class shares
WAIT_FOR_DRAWING = """new Promise((done) => {
  const poll = () => (document.body && document.body.dataset.ready ? done(JSON.stringify({
    marks: Object.fromEntries(performance.getEntriesByType("mark").map((m) => [m.name, m.startTime])),
    html: performance.getEntriesByType("navigation")[0].responseEnd, ready: performance.now() }))
    : setTimeout(poll, 5));
  poll();
})"""


def lesion_image(rng: np.random.Generator, height: int = 48, width: int = 64, noise: float = 9) -> np.ndarray:
    """A ``height x width x 3`` uint8 picture of a dark ellipse on skin, with sensor noise: its thumbnail is as
    large in bytes as a real dermoscopic image's."""
    yy, xx = np.mgrid[0:height, 0:width]
    centre, radii = rng.uniform(0.3, 0.7, 2) * (height, width), rng.uniform(0.15, 0.35, 2) * (height, width)
    inside = np.clip(1.5 - ((yy - centre[0]) / radii[0]) ** 2 - ((xx - centre[1]) / radii[1]) ** 2, 0, 1)[..., None]
    skin, lesion = rng.uniform([170, 110, 100], [230, 170, 150]), rng.uniform([60, 30, 20], [150, 100, 80])
    picture = skin * (1 - inside) + lesion * inside + rng.normal(0, noise, (height, width, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def synthetic_payload(n: int, seed: int = 0) -> dict[str, Any]:
    """The explorer's data for a generated run of ``n`` images, every one drawn."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, size=n, p=np.asarray(SHARES) / sum(SHARES))
    groups = [f"L{g:05d}" for g in rng.integers(0, int(n * 0.75), n)]  # HAM10000: 7,470 lesions, 10,015 images
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15])
    table = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(n)], "label": labels, "group": groups,
                          "split": splits})
    table["row"] = table.groupby("split").cumcount()
    centres = rng.normal(size=(len(CLASSES), 128))
    embeddings = centres[[CLASSES.index(c) for c in labels]] + rng.normal(scale=0.8, size=(n, 128))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    train = (splits == "train")
    coords = {name: rng.normal(size=(n, 2)) * 20 for name in ("t-SNE", "UMAP")}
    proba = rng.dirichlet(np.ones(len(CLASSES)), n)
    points = table.assign(age=rng.integers(5, 90, n) // 5 * 5, sex=rng.choice(["male", "female", "unknown"], n),
                          localization=rng.choice(["back", "face", "trunk", "lower extremity", "scalp"], n),
                          dataset=rng.choice(["vidir_modern", "rosendahl", "vienna_dermatology"], n))
    pictures = {}  # one picture per (split, row): every thumbnail is encoded once, as a run's are

    def thumbnail(split: str, row: int) -> str:
        if (split, row) not in pictures:
            pictures[split, row] = thumbnail_uri(lesion_image(rng))
        return pictures[split, row]

    ids = table["image_id"]
    pairs = pd.DataFrame({"from_img": ids.sample(n // 500 + 1, random_state=seed).to_numpy(),
                          "to_img": ids.sample(n // 500 + 1, random_state=seed + 1).to_numpy()})
    return explorer_payload(points, coords, embeddings, table, embeddings[train], thumbnail, CLASSES, n, proba,
                            pairs, f"generated run of {n} images")


BARE = """<div id="plot" style="height:90vh"></div><script>
addEventListener("DOMContentLoaded", () => Plotly.newPlot("plot", [{ x: PAGE_DATA.x, y: PAGE_DATA.y,
  mode: "markers", type: "scattergl" }]).then(() => {
    performance.mark("page:drawn"); document.body.dataset.ready = "true"; }));
</script>"""


def bare_page(payload: dict[str, Any], path: Path) -> Path:
    """The same points in a page of plotly alone (no thumbnails, no controls): the baseline."""
    first = next(iter(payload["projections"].values()))
    return write_page(path, "bare plotly", BARE, {"x": first["x"], "y": first["y"]}, script=None)


def above_4(fd: int) -> int:
    """``fd`` moved to a number above 4 (close-on-exec), so that placing the pipe's ends at 3 and 4 in the
    child cannot overwrite one of them."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


class DevTools:
    """Chromium driven over ``--remote-debugging-pipe``: commands written to its fd 3, answers read from its
    fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, browser: str, profile: Path, timeout: float = 120) -> None:
        self.timeout = timeout
        to_browser, self._commands = map(above_4, os.pipe())
        self._answers, from_browser = map(above_4, os.pipe())

        def as_fds_3_and_4() -> None:  # in the child, before exec: the ends Chromium expects, kept open by exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--window-size=1400,900", "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=as_fds_3_and_4,  # os.dup2 makes 3 and 4 inheritable; the rest close
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._last_id, self.events = b"", 0, []
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        attached = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self.session = attached["sessionId"]

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._answers], [], [], self.timeout)[0]:
                raise TimeoutError(f"chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, page: bool = False) -> dict[str, Any]:
        """The result of one command (to the page with ``page``); events that arrive meanwhile are kept."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def until(self, *events: str) -> tuple[str, dict[str, Any]]:
        """The next of ``events`` (its name and params), waiting for it."""
        for k, message in enumerate(self.events):
            if message.get("method") in events:
                message = self.events.pop(k)
                return message["method"], message["params"]
        while True:
            message = self._message()
            if message.get("method") in events:
                return message["method"], message["params"]
            self.events.append(message)

    def close(self) -> None:
        self.send("Browser.close")
        self.process.wait(30)
        os.close(self._commands)
        os.close(self._answers)


TRACED = "devtools.timeline,v8.execute,blink.user_timing,disabled-by-default-devtools.timeline"


def main_thread_ms(events: list[dict[str, Any]], until: str, top: int) -> tuple[float, dict[str, float]]:
    """CPU milliseconds of the renderer's main thread in the tasks that began before the mark ``until``, and
    the ``top`` kinds of timeline event it spent them in (an event inside another counts in both), from a
    trace's events. Thread time, unlike the wall clock, hardly grows when other processes share the cores."""
    main = {(e["pid"], e["tid"]) for e in events
            if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"}
    end = min((e["ts"] for e in events if e.get("name") == until), default=float("inf"))
    spent: Counter[str] = Counter()
    for event in events:
        if (event.get("pid"), event.get("tid")) in main and event.get("ph") == "X" and event["ts"] <= end:
            spent[event["name"]] += event.get("tdur", 0) / 1000
    return spent["RunTask"], {name: round(ms) for name, ms in spent.most_common(top + 1) if name != "RunTask"}


def open_page(browser: str, page: Path, top: int = 0) -> dict[str, Any]:
    """Milliseconds from navigation start to each of the page's marks (:data:`~siamese.diagnostics.page.MARKS`)
    in a fresh browser (nothing cached), and ``cpu_ms``: the main thread's CPU time until the first drawing;
    ``kinds``: the ``top`` kinds of timeline event it went to."""
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(browser, Path(profile))
        try:
            tools.send("Page.enable", page=True)
            tools.send("Tracing.start", {"categories": TRACED, "transferMode": "ReportEvents"}, page=True)
            tools.send("Page.navigate", {"url": page.resolve().as_uri()}, page=True)
            tools.until("Page.loadEventFired")
            answer = tools.send("Runtime.evaluate", {"expression": WAIT_FOR_DRAWING, "awaitPromise": True,
                                                     "returnByValue": True}, page=True)
            times = json.loads(answer["result"]["value"])
            tools.send("Tracing.end", page=True)
            events: list[dict[str, Any]] = []
            while (message := tools.until("Tracing.dataCollected", "Tracing.tracingComplete"))[0] != \
                    "Tracing.tracingComplete":
                events += message[1]["value"]
        finally:
            tools.close()
    times["cpu_ms"], times["kinds"] = main_thread_ms(events, MARKS[-1], top)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=positive, nargs="+", default=[1000, 5000, 10015])
    parser.add_argument("--repeat", type=positive, default=3, help="fresh browsers per page; the median is printed")
    parser.add_argument("--trace", type=non_negative, default=0, metavar="TOP",
                        help="also print the TOP kinds of main-thread work before the first drawing")
    args = parser.parse_args()
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        raise SystemExit("no chromium on this machine (Debian: apt-get install chromium)")
    print(f"{machine()}; {browser}; median of {args.repeat} fresh browsers; ms from navigation start")
    print(f"{'page':9s} {'points':>6s} {'MB':>5s} {'plotly':>7s} {'data':>6s} {'drawn':>6s} {'x bare':>7s} "
          f"{'CPU ms':>7s} {'load':>5s}")
    with tempfile.TemporaryDirectory() as folder:
        for n in args.points:
            payload = synthetic_payload(n)
            pages = {"bare": bare_page(payload, Path(folder) / f"bare_{n}.html"),
                     "explorer": write_explorer(Path(folder) / f"explorer_{n}.html", payload)}
            drawn = {}
            for name, page in pages.items():
                load = os.getloadavg()[0]
                runs = [open_page(browser, page, args.trace) for _ in range(args.repeat)]
                marks = {m: statistics.median(r["marks"][m] for r in runs) for m in runs[0]["marks"]}
                drawn[name] = marks[MARKS[-1]]
                print(f"{name:9s} {n:6d} {page.stat().st_size / 2**20:5.1f} {marks[MARKS[0]]:7.0f} "
                      f"{marks[MARKS[1]] - marks[MARKS[0]]:6.0f} {drawn[name]:6.0f} {drawn[name] / drawn['bare']:7.2f} "
                      f"{statistics.median(r['cpu_ms'] for r in runs):7.0f} {load:5.1f}")
                if args.trace:
                    print("          main thread:", json.dumps(runs[len(runs) // 2]["kinds"]))
    print("plotly: plotly.js evaluated; data: the page's data parsed after it; drawn: the first drawing done; "
          "x bare: drawn over the bare plotly page's (above 1: slower); CPU ms: the renderer's main thread until "
          "the first drawing; load: the 1-minute load average before the page")


if __name__ == "__main__":
    main()
