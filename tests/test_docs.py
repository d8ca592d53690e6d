"""The README stays a front door, every relative link of the README and the docs resolves, the CLI reference
follows the parser, and the notebook page runs as written."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 260
SETUP_COMMANDS = (
    "pip install -r requirements.txt && pip install -e . && python train.py",
    "pip install -r requirements.txt && pip install -e . && python -m pytest -q",
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def site_hook():
    """docs/hooks/site_files.py, the MkDocs hook that adds the generated and mounted files."""
    spec = importlib.util.spec_from_file_location("site_files", DOCS / "hooks" / "site_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(markdown: str) -> list[str]:
    """Link and image targets outside code blocks that point into the repository (no scheme, no mail)."""
    targets = LINK.findall(INLINE_CODE.sub("", FENCE.sub("", markdown)))
    return [t for t in targets if not urlsplit(t).scheme and not t.startswith("#")]


def resolves(page: Path, target: str, hook) -> bool:
    """Whether a relative link of ``page`` names a file that exists, or, from a page of the site, one that the
    site hook provides (the README is read on its own, where those files do not exist)."""
    path = (page.parent / unquote(urlsplit(target).path)).resolve()
    if path.exists():
        return True
    if DOCS in page.parents and DOCS in path.parents:
        inside = path.relative_to(DOCS).as_posix()
        if inside == hook.CLI_PAGE:
            return True
        site_dir, _, rest = inside.partition("/")
        return site_dir in hook.MOUNTED and (hook.MOUNTED[site_dir] / rest).is_file()
    return False


def test_readme_is_short_and_shows_the_two_setup_commands_first():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    first_block = FENCE.search(readme).group(0)
    for command in SETUP_COMMANDS:
        assert command in first_block


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    hook = site_hook()
    pages = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]
    broken = [f"{page.relative_to(REPO)}: {target}" for page in pages
              for target in relative_links(page.read_text()) if not resolves(page, target, hook)]
    assert broken == []


def test_a_link_to_a_missing_file_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[there](missing.md) and `[code](not-a-link.md)`\n```text\n[x](y.md)\n```\n")
    assert relative_links(page.read_text()) == ["missing.md"]
    assert not resolves(page, "missing.md", site_hook())
    assert resolves(DOCS / "index.md", "cli.md", site_hook())
    assert not resolves(REPO / "README.md", "docs/cli.md", site_hook())


def test_the_cli_reference_has_every_command_of_the_parser():
    from siamese.cli import build_parser

    hook = site_hook()
    page = hook.cli_reference()
    names = [name for name, _ in hook.subcommands(build_parser(), "siamese")]
    assert "siamese segment train" in names
    for name in names:
        assert f"## `{name.removeprefix('siamese ')}`" in page
    assert "usage: siamese train" in page


def test_the_notebook_page_runs_as_written(tmp_path, monkeypatch):
    """Its python blocks, in order, in one namespace, from an empty working folder."""
    blocks = PYTHON_BLOCK.findall((DOCS / "notebook.md").read_text())
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__notebook__"}
    for number, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/notebook.md, block {number + 1}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"block {number + 1} of docs/notebook.md failed: {error!r}\n{block}")
    assert (tmp_path / "runs" / "notebook-digits" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "notebook-cv" / "cv_summary.csv").is_file()


COMMAND = re.compile(r"python3? (train\.py|predict\.py)(.*)|python -m siamese ((?:segment )?[a-z][a-z-]*)(.*)")
SCRIPTS = {"train.py": "train", "predict.py": "predict"}


def shown_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(command, its --flags) for each `python train.py`, `python predict.py` or `python -m siamese CMD` the
    text shows, in code blocks or prose; what follows a `#` on the line is a comment."""
    shown = []
    for line in markdown.splitlines():
        for match in COMMAND.finditer(line):
            name = SCRIPTS.get(match.group(1)) or match.group(3)
            rest = (match.group(2) if match.group(1) else match.group(4)).split("#")[0].split("`")[0]
            shown.append((name, re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)))
    return shown


def test_every_command_shown_is_one_the_parser_has_with_its_options():
    from siamese.cli import build_parser

    parsers = {name.removeprefix("siamese "): parser
               for name, parser in site_hook().subcommands(build_parser(), "siamese")}
    shown = [(page, name, flags) for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
             for name, flags in shown_commands(page.read_text())]
    assert len(shown) > 50
    unknown = [f"{page.relative_to(REPO)}: {name} {flag}" for page, name, flags in shown
               for flag in (flags if name in parsers else ["(no such command)"])
               if name not in parsers or flag not in {o for a in parsers[name]._actions for o in a.option_strings}]
    assert unknown == []


def test_a_flag_the_parser_lacks_is_found():
    assert shown_commands("python train.py --preset ph2 --no-such-flag  # --comment") == [
        ("train", ["--preset", "--no-such-flag"])]
