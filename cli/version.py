"""`swipeloop --version`: the version pip installed, from the package's metadata."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer


def _show(wanted: bool) -> None:
    if wanted:
        print(f"swipeloop {metadata.version('swipeloop')}")
        raise typer.Exit()


def version_option(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """The options of `swipeloop` itself, given before a command."""
