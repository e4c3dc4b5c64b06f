"""MFSA and the baselines: pure PyTorch, no file or network I/O, no import of mfsa_pipe or extractors."""

from models.base import MODALITIES, TASKS, ModelConfig, ModelOutput, task_loss
from models.lstm_baselines import EFLSTM, LFLSTM, EFLSTMConfig, LFLSTMConfig
from models.mctn import MCTN, MCTNConfig
from models.mfsa import MFSA, MFSAConfig, separation_loss
from models.mult import MulT, MulTConfig
from models.raven import RAVEN, RAVENConfig
from models.registry import MODELS, build_model, config_from_dict

__all__ = [
    "EFLSTM", "LFLSTM", "MFSA", "MODALITIES", "MODELS", "TASKS", "EFLSTMConfig", "LFLSTMConfig", "MFSAConfig",
    "ModelConfig", "ModelOutput", "MulT", "MulTConfig", "build_model", "config_from_dict", "separation_loss",
    "task_loss",
    "MCTN", "MCTNConfig", "RAVEN", "RAVENConfig",
]
