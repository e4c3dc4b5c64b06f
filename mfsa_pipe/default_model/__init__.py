"""Where the shipped default checkpoint lives (trained on real labelled clips; see MODEL_CARD.md).

Only the lookup is here: `analyze` uses this checkpoint when none is given, and falls back to
no model (signals only, stated plainly) when the package carries none.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_NAME = "model.ckpt"


def default_checkpoint_path() -> Path | None:
    """The default checkpoint shipped in the package, or None when there is none."""
    path = Path(__file__).resolve().parent / CHECKPOINT_NAME
    return path if path.is_file() else None
