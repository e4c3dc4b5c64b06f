"""The CLI's one-line error: `error: <message>` on stderr, then the given exit code."""

from __future__ import annotations

import typer

EXIT_BAD_INPUT = 2


def fail(message: str, *, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print the message (as plain text: paths with brackets are not rich markup) and return
    the Exit to raise."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    return typer.Exit(code)
