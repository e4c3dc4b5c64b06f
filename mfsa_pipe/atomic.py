"""Outputs are never left half-written as if complete: write to a temporary name, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


NAME_MAX = 255  # bytes in one file name (ext4, APFS, NTFS, ...): a long UTF-8 title reaches it early
_RANDOM_CHARS = 8  # what mkstemp puts between prefix and suffix


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes of UTF-8, never inside a character. Undecodable
    bytes of a file name (surrogate escapes) count as the one byte each they are on disk."""
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) <= max_bytes:
        return text
    end = max(max_bytes, 0)
    while end and (encoded[end] & 0xC0) == 0x80:  # a continuation byte: step back to the character's start
        end -= 1
    return encoded[:end].decode("utf-8", "surrogateescape")


def fit_name(stem: str, suffix: str, *, limit: int = NAME_MAX) -> str:
    """`stem + suffix`, the stem shortened when the whole would pass the file-name limit."""
    return truncate_utf8(stem, limit - len(suffix.encode("utf-8", "surrogateescape"))) + suffix


def _temp_affixes(path: Path) -> tuple[str, str]:
    """mkstemp's prefix and suffix for a temporary beside `path`, whose name fits wherever `path`'s does."""
    suffix = f".partial{path.suffix}" if len(path.suffix.encode("utf-8", "surrogateescape")) <= 32 else ".partial"
    room = NAME_MAX - len(suffix.encode("utf-8", "surrogateescape")) - _RANDOM_CHARS - 2  # the two dots
    return f".{truncate_utf8(path.stem, room)}.", suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The temporary name keeps the suffix so tools that pick a format by extension still work,
    and is shortened so that it fits wherever the final name fits.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; outputs get the usual permissions (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
