"""Where extractions are cached, and under which key.

The key covers what decides the output: the media's content hash (not its name or path),
the full extraction config and every extractor's id and version. The default directory is
$MFSA_PIPE_CACHE, else $XDG_CACHE_HOME/mfsa-pipe, else ~/.cache/mfsa-pipe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1  # bump when the stored Extraction layout changes
ENV_VAR = "MFSA_PIPE_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mfsa-pipe"


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """None or True: the default; False: no cache; a path: that directory."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return default_cache_dir()
    return Path(cache_dir).expanduser()


def cache_key(*, sha256: str, config: dict[str, Any], spec: dict[str, dict[str, Any]]) -> str:
    extractors = {m: [s["id"], s["version"]] for m, s in sorted(spec.items())}
    blob = json.dumps(
        {"format": CACHE_FORMAT, "media": sha256, "config": config, "extractors": extractors},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(directory: Path, key: str) -> Path:
    return directory / "extractions" / key[:2] / f"{key}.npz"
