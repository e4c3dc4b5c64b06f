"""The CLI's terminal output. Paths, file names, transcripts and error messages come from outside
the program, so every console here prints text literally: rich markup (`[b]`, `[/x]`) and emoji
codes (`:cat:`) in them are never interpreted. Styles are given as Text objects instead.

`fail`: the one-line error, `error: <message>` on stderr, then the given exit code."""

from __future__ import annotations

import typer

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)


def plain_console(*, stderr: bool = False):
    """A rich Console that never reads markup or emoji codes in what it prints."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False)


def styled(*parts):
    """Text from (text, style) pairs and plain strings, e.g. styled(("note:", "yellow"), " ", path)."""
    from rich.text import Text

    return Text.assemble(*parts)


def fail(message: str, *, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print the message (as plain text) and return the Exit to raise."""
    plain_console(stderr=True).print(styled(("error: ", "bold red"), str(message)), soft_wrap=True)
    return typer.Exit(code)


def interrupted(what: str = "") -> typer.Exit:
    """After Ctrl-C: one line saying so (and what was kept), and the Exit to raise."""
    plain_console(stderr=True).print(styled(("interrupted", "yellow"), f": {what}" if what else ""), soft_wrap=True)
    return typer.Exit(EXIT_INTERRUPTED)
