"""Where extractions are cached, and under which key.

The key covers what decides the output: the media's content hash (not its name or path),
the extraction config and every extractor's id and version, and the modalities extracted. When
not all three are extracted, only their options and extractors count (and their names are
hashed); the full set keeps the key it always had. The default directory is
$MFSA_PIPE_CACHE, else $XDG_CACHE_HOME/mfsa-pipe, else ~/.cache/mfsa-pipe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from extractors.sequence import MODALITIES

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


def hashed_config(config) -> dict[str, Any]:
    """An ExtractionConfig as hashed into cache keys: without options added later at their no-op
    value (text.lexicon ""), so the caches made before an option existed keep hitting."""
    config_dict = config.to_dict()
    if not config.text.lexicon:
        del config_dict["text"]["lexicon"]
    return config_dict


def cache_key(
    *, sha256: str, config: dict[str, Any], spec: dict[str, dict[str, Any]], modalities: Iterable[str] | None = None
) -> str:
    """`modalities`: the modalities extracted (None: all three). The key of the full set is the
    one used before modalities could be chosen, so existing caches keep hitting; any other set
    adds its sorted names to what is hashed."""
    extractors = {m: [s["id"], s["version"]] for m, s in sorted(spec.items())}
    content: dict[str, Any] = {"format": CACHE_FORMAT, "media": sha256, "config": config, "extractors": extractors}
    if modalities is not None and set(modalities) != set(MODALITIES):
        chosen = sorted(set(modalities))
        # only the chosen modalities' options and extractors: a voice-only cache stays valid
        # when, say, the text options change
        content.update(modalities=chosen, config={m: config[m] for m in chosen if m in config},
                       extractors={m: extractors[m] for m in chosen if m in extractors})
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(directory: Path, key: str) -> Path:
    return directory / "extractions" / key[:2] / f"{key}.npz"
