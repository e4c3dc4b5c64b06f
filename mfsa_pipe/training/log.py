"""log.jsonl: one JSON object per finished epoch, appended and synced as the epoch ends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mfsa_pipe.atomic import atomic_path


class EpochLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> list[dict[str, Any]]:
        """A fresh run: an empty log."""
        self._write([])
        return []

    def resume(self, upto: int) -> list[dict[str, Any]]:
        """Keep the lines of epochs <= upto (later lines belong to an epoch the interrupted run
        never checkpointed: it is redone) and return them."""
        rows = self.read(upto)
        self._write(rows)
        return rows

    def read(self, upto: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interrupt
            if isinstance(row, dict) and int(row.get("epoch", 0)) <= upto:
                rows.append(row)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows), encoding="utf-8")
