"""MFSA and the baselines: pure PyTorch, no file or network I/O, no import of mfsa_pipe or extractors."""

from models.base import TASKS, ModelOutput

__all__ = ["TASKS", "ModelOutput"]
