"""The errors a user can fix, for every layer of mfsa-pipe (this is the lowest module both
`extractors/` and `mfsa_pipe/` import; `models/` raises plain ValueError from config checks,
which the application converts where it takes the user's settings).

The command line prints a UserError as one line, `error: <message>` on stderr, literally, and
exits with its `exit_code`; any other exception is a bug and shows its full traceback."""

EXIT_BAD_INPUT = 2
EXIT_SETUP = 1


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do, and is shown as is."""

    exit_code = EXIT_BAD_INPUT


class SetupError(UserError):
    """A model or resource of this installation cannot be loaded (not the input's fault): exit 1."""

    exit_code = EXIT_SETUP


class MediaError(UserError):
    """A media file that cannot be used: the message says which file, what is wrong and what to do."""


class BackendUnavailableError(SetupError, RuntimeError):
    """The chosen backend cannot run here (a missing optional package, weights not downloadable);
    the message says why and what to do."""
