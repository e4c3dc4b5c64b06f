"""Errors whose message is shown to the user as is."""


class MediaError(Exception):
    """A media file that cannot be used: the message says which file, what is wrong and what to do."""


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here (a missing optional package, weights not downloadable);
    the message says why and what to do."""
