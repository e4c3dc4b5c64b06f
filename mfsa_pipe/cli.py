"""The `mfsa-pipe` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import importlib

import typer

from mfsa_pipe.version import __version__
from mfsa_pipe.commands import COMMAND_MODULES

app = typer.Typer(
    name="mfsa-pipe",
    help="Raw video to an emotion/sentiment timeline with MFSA (unaligned multimodal fusion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mfsa-pipe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Raw video to an emotion/sentiment timeline with MFSA."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"mfsa_pipe.commands.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
