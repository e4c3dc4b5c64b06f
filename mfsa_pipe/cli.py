"""The `mfsa-pipe` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

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
    """The console script. Once a command has finished (its outputs closed and in place, exit
    handlers run: locks released, Ray shut down), the process ends without the interpreter's
    teardown, which spent 1.5-4 s here destroying the native libraries' objects (speech, face,
    torch) after every `analyze`. An uncaught exception still ends the usual way."""
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    main()
