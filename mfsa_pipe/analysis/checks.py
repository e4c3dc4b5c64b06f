"""What `analyze` checks before any work, and the folders it makes: the input file (exists, is a
file, can be read, is not a still image), the output folder (can be written), the annotated
video's file name; AnalyzeError says what is wrong, for the user as is."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from extractors.errors import UserError
from mfsa_pipe.atomic import fit_name


class AnalyzeError(UserError):
    """Bad input or output location; the message is meant for the user, as is."""


def check_input(path: str | os.PathLike) -> Path:
    """The input as an absolute path; raises AnalyzeError for missing, directory, unreadable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AnalyzeError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise AnalyzeError(f"{p}: is a directory; give one video file (use `mfsa-pipe batch` for folders)")
    if not p.is_file():
        raise AnalyzeError(f"{p}: not a regular file; give a video file")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise AnalyzeError(f"{p}: cannot be read ({e.strerror or e}); check its permissions") from None
    return p.resolve()


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` and prove it is writable; raises AnalyzeError otherwise."""
    d = Path(out_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise AnalyzeError(f"{d}: exists and is not a folder; choose another --out")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise AnalyzeError(f"{d}: the output folder cannot be written ({e.strerror or e}); choose another --out") from None
    return d.resolve()


def refuse_still_image(path: Path) -> None:
    """A photo opens as a one-frame video of 0.04 s; raise AnalyzeError before any work. Anything
    ffmpeg cannot open is left to the media probe, which says why."""
    import av

    try:
        with av.open(str(path)) as container:
            demuxer = container.format.name
    except (av.error.FFmpegError, OSError):
        return
    # ffmpeg's image demuxers: image2 and one <codec>_pipe per format (jpeg_pipe, png_pipe, webp_pipe ...)
    if demuxer in ("image2", "image2pipe") or demuxer.endswith("_pipe"):
        kind = demuxer.removesuffix("_pipe")
        raise AnalyzeError(f"{path}: is a still image ({kind}), not a video; give a video or audio file")


def output_name(path: Path) -> str:
    """`<stem>.annotated.mp4`; a stem too long for that to be a legal file name is shortened
    (the report's `outputs` names the file written)."""
    return fit_name(path.stem, ".annotated.mp4")


def missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of `path` (itself included) that does not exist yet."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def remove_if_empty(out: Path, top: Path | None) -> None:
    """Remove `out` and its parents up to `top` while they are empty: a run that stopped before
    writing anything leaves no folder behind (a folder holding anything is kept)."""
    chain = (out, *out.parents)
    if top is None or top not in chain:
        return
    for p in chain:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return
