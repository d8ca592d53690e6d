"""Headless Chromium for the page tests: open an HTML file from disk with the network off, let a script act on
the page as a person would (move the mouse, click), and read what it wrote into the DOM; take screenshots.

Chromium's ``--dump-dom`` prints the page once its scripts have run and ``--virtual-time-budget`` has let
their timers fire, which is all a test needs: no driver, no debugging protocol, no extra package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# every host resolves to nothing and every request goes to a closed port: a page that needs the network fails
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           "--proxy-bypass-list=<-loopback>")


def find_chromium() -> str:
    """The Chromium executable; the test is skipped without one, except in CI (``CI=true``), where
    ``.ci/run`` installs it and its absence is a failure."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("no chromium in CI: .ci/run should have installed it (apt-get install chromium)")
    pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")


def _run(browser: str, page: Path, extra: list[str], profile: Path, budget_ms: int, timeout: float) -> str:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1400,900",
               f"--virtual-time-budget={budget_ms}", *OFFLINE, *extra, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def with_script(page: Path, script: str, out: Path, first: bool = False) -> Path:
    """A copy of ``page`` at ``out`` with ``script`` run after the page's own, or with ``first`` before any
    (to change what the browser offers the page)."""
    text = page.read_text(encoding="utf-8")
    at = text.index("<head>") + len("<head>") if first else text.rindex("</body>")
    out.write_text(text[:at] + f"<script>{script}</script>\n" + text[at:], encoding="utf-8")
    return out


def dump_dom(browser: str, page: Path, profile: Path, budget_ms: int = 8000, timeout: float = 120) -> str:
    """The DOM of ``page`` once its scripts and timers (up to ``budget_ms`` of virtual time) have run."""
    return _run(browser, page, ["--dump-dom"], profile, budget_ms, timeout)


def screenshot(browser: str, page: Path, path: Path, profile: Path, budget_ms: int = 8000,
               timeout: float = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(browser, page, [f"--screenshot={path.resolve()}"], profile, budget_ms, timeout)
    return path


def results(dom: str) -> dict:
    """The JSON a test script left in ``<pre id="test-results">``."""
    start = dom.index('<pre id="test-results">') + len('<pre id="test-results">')
    text = dom[start:dom.index("</pre>", start)]
    return json.loads(text.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
