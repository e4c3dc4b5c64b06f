"""One registry: model name -> (config class, model class)."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.base import ModelConfig, check
from models.ensemble import Ensemble, EnsembleConfig
from models.lstm_baselines import EFLSTM, LFLSTM, EFLSTMConfig, LFLSTMConfig
from models.mctn import MCTN, MCTNConfig
from models.mfsa import MFSA, MFSAConfig
from models.mica import MICA, MICAConfig
from models.mult import MulT, MulTConfig
from models.raven import RAVEN, RAVENConfig
from models.pmr import PMR, PMRConfig

MODELS: dict[str, tuple[type[ModelConfig], type[nn.Module]]] = {
    "mfsa": (MFSAConfig, MFSA),
    "mult": (MulTConfig, MulT),
    "ef_lstm": (EFLSTMConfig, EFLSTM),
    "lf_lstm": (LFLSTMConfig, LFLSTM),
    "raven": (RAVENConfig, RAVEN),
    "mctn": (MCTNConfig, MCTN),
    "pmr": (PMRConfig, PMR),
    "mica": (MICAConfig, MICA),
}
# models made of trained models after training (mfsa_pipe/training/ensembling.py), never trained
# themselves: checkpoints load them, `train` does not offer them
COMBINED: dict[str, tuple[type[ModelConfig], type[nn.Module]]] = {"ensemble": (EnsembleConfig, Ensemble)}


def _lookup(name: str) -> tuple[type[ModelConfig], type[nn.Module]]:
    if name in COMBINED:
        return COMBINED[name]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def member_config_class(name: str) -> type[ModelConfig]:
    """The config class of model `name` (an ensemble's members)."""
    return _lookup(name)[0]


def check_member_overrides(config: EnsembleConfig) -> EnsembleConfig:
    """An ensemble's members may differ only in their model's fields fitted after training."""
    fitted = member_config_class(config.member).FITTED_AFTER_TRAINING
    extra = sorted({k for o in config.member_overrides for k in o} - set(fitted))
    check(not extra, f"member_overrides may set only the fields fitted after training "
                     f"({', '.join(fitted) or 'none'} for {config.member}), not {', '.join(extra)}")
    return config


def config_from_dict(name: str, data: dict[str, Any]) -> ModelConfig:
    """Rebuild a model's config from its `to_dict()` form (e.g. read from a checkpoint)."""
    config = _lookup(name)[0].from_dict(data)
    return check_member_overrides(config) if isinstance(config, EnsembleConfig) else config


def build_model(name: str, config: ModelConfig | dict[str, Any] | None = None) -> nn.Module:
    """Instantiate `name` from its config (a config object, a dict, or None for the defaults)."""
    config_cls, model_cls = _lookup(name)
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"model {name!r} takes a {config_cls.__name__}, got {type(config).__name__}")
    if model_cls is Ensemble:
        check_member_overrides(config)
        return Ensemble(config, [build_model(config.member, member) for member in config.member_configs()])
    return model_cls(config)
