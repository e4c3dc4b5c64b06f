"""metrics.json: every setting and every measured figure of a rebuild, and the card written from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from default_recipe.card import write_card
from default_recipe.fitting import model_overrides
from default_recipe.measures import text_logreg
from default_recipe.mix import rare_emotion_times
from default_recipe.settings import (ALONE_VIEWS, EMOTION_SENTIMENT, EMOTIONS, ENSEMBLE, EXTRACTION, HEADS,
                                     LICENCES, MIX, TEXT_BIAS, TRAINING)


def collect_metrics(data: dict, *, seed: int, built: dict, cv: list[dict], replicates: list[dict],
                    clip_temperatures: dict, final: dict, seconds: float, timing_note: str) -> dict[str, Any]:
    meld_train = [s for s in data["text"]["train"] if s.id.startswith("meld-")]
    return {
        "model": "ensemble of mfsa", "task": "multihead", "heads": HEADS, "model_config": model_overrides(data["feature_spec"]),
        "extraction": EXTRACTION,
        "training": TRAINING,
        "ensemble": ENSEMBLE, "mix": MIX, "text_bias": TEXT_BIAS, "alone_views": ALONE_VIEWS,
        "rare_emotion_times": {EMOTIONS[c]: t for c, t in rare_emotion_times(meld_train, power=MIX["meld_balance"]).items()},
        "seed": seed, "data": built, "licences": LICENCES, "emotion_to_sentiment": EMOTION_SENTIMENT,
        "text_logreg_meld_dev": text_logreg(data), "cross_validation": cv,
        "cross_validation_other_seeds": replicates, "cv_clip_temperatures": clip_temperatures, "final": final,
        "total_seconds": round(seconds, 1), "timing_note": timing_note,
        "command": "python examples/train_default_model.py",
    }


def compact_json(obj) -> str:
    """json.dumps(indent=1) with every list of plain numbers on one line (per-clip results stay short)."""
    number = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
    return re.sub(rf"\[\n\s*((?:{number},\n\s*)*{number})\n\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", json.dumps(obj, indent=1))


def write_metrics(metrics: dict[str, Any], target: Path) -> None:
    """target/metrics.json and target/MODEL_CARD.md."""
    from mfsa_pipe.json_values import json_safe

    (target / "metrics.json").write_text(compact_json(json_safe(metrics)))
    write_card(metrics, target / "MODEL_CARD.md")
