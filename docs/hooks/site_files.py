"""MkDocs hook: pages and files the site takes from the repository at build time, not from docs/.

- ``cli.md``: every command's ``--help``, from :func:`siamese.cli.build_parser` as it is when the site is
  built, so the reference follows the parser (sub-commands found by walking it, not listed here).
- ``assets/``: the repository's own figures folder (the README shows them too), mounted under the same
  name, so each figure is kept once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
MOUNTED = {"assets": REPO / "assets"}
"""Site folder -> repository folder whose files the site serves under that name."""
CLI_PAGE = "cli.md"
HELP_WIDTH = "100"
"""Columns argparse wraps the help text to (it reads $COLUMNS), so the page does not depend on the terminal."""


def subcommands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each command under ``parser`` as (its full name, its parser), depth first, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                full = f"{prefix} {name}"
                yield full, child
                yield from subcommands(child, full)


def cli_reference() -> str:
    """The Markdown page: the top-level help, then one section per command with its ``--help``."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        from siamese.cli import build_parser

        parser = build_parser()
        lines = ["# Command-line reference", "",
                 "Generated from the parser (`siamese.cli.build_parser`) when this site was built; "
                 "`python -m siamese COMMAND --help` prints the same. `python train.py` is `train`, "
                 "`python predict.py` is `predict`.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, child in subcommands(parser, parser.prog):
            lines += [f"## `{name.removeprefix(parser.prog + ' ')}`", "", "```text", child.format_help().rstrip(),
                      "```", ""]
        return "\n".join(lines)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    for site_dir, repo_dir in MOUNTED.items():
        for path in sorted(p for p in repo_dir.rglob("*") if p.is_file()):
            files.append(File.generated(config, f"{site_dir}/{path.relative_to(repo_dir).as_posix()}",
                                        abs_src_path=str(path)))
    return files
