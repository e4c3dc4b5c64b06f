"""Errors whose message is shown to the user as is."""


class MediaError(Exception):
    """A media file that cannot be used: the message says which file, what is wrong and what to do."""
