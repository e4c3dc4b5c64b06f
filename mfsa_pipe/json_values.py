"""Values made JSON-safe, the one rule every written JSON file (reports, logs, checkpoints'
metadata, dataset reports) goes through: JSON has no NaN or inf, and no numpy or torch types."""

from __future__ import annotations

import math
from typing import Any


def json_safe(obj: Any, *, digits: int | None = None) -> Any:
    """NaN/inf -> None, numpy/torch scalars and arrays -> Python values, tuples -> lists, dict keys
    -> str, recursively; floats rounded to `digits` decimals when given."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, digits=digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, digits=digits) for v in obj]
    if callable(getattr(obj, "tolist", None)):  # numpy arrays and scalars, torch tensors
        return json_safe(obj.tolist(), digits=digits)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return obj if digits is None else round(obj, digits)
    return obj
