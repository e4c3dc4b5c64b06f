"""Keep MediaPipe's and TFLite's C++ log lines off the terminal unless a run fails."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

from extractors.errors import UserError


def quiet_native_logs() -> None:
    # read by MediaPipe/TFLite when they load (at the first extraction): set before any extraction
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def held_stderr() -> Iterator[None]:
    """Hold back what native libraries print on file descriptor 2 during a run. It is replayed
    if the run fails unexpectedly, so nothing useful is lost; a UserError has its own one-line
    message, and Ctrl-C (KeyboardInterrupt) is the user's choice, not a failure."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2 (embedded interpreters): nothing to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        replay = True
        try:
            yield
            replay = False
        except (UserError, KeyboardInterrupt):
            replay = False
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if replay:
                held.seek(0)
                data = held.read()
                if data:
                    os.write(2, data)
