"""The CLI's terminal output and its error policy. Paths, file names, transcripts and error
messages come from outside the program, so every console here prints text literally: rich
markup (`[b]`, `[/x]`) and emoji codes (`:cat:`) in them are never interpreted. Styles are given
as Text objects instead.

The error policy, applied by `reported` around every command's work:
- a UserError (what the user can fix): `error: <message>` on stderr, one line, exit its
  `exit_code` (2: bad input; 1: a model or resource of the installation);
- Ctrl-C: `interrupted: <what was kept, how to go on>`, exit 130;
- anything else is a bug: it propagates with its full traceback."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer

from extractors.errors import EXIT_BAD_INPUT, UserError

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


@contextlib.contextmanager
def reported(*, on_interrupt: str = "") -> Iterator[None]:
    """Apply the error policy to the work inside: UserError -> its line and exit code, Ctrl-C ->
    `interrupted: <on_interrupt>` and 130; any other exception passes through untouched."""
    try:
        yield
    except KeyboardInterrupt:
        raise interrupted(on_interrupt) from None
    except UserError as exc:
        raise fail(str(exc), code=exc.exit_code) from None
