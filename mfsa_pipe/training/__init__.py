"""Train a model of the zoo on a dataset: Adam, model selection on the validation task loss (L1 =
MAE for regression, cross-entropy for classification/multilabel, as MulT selects its best
epoch), atomic checkpoints, one JSON line per epoch, resumable, AMP on CUDA, deterministic per
seed. Two protocols (settings.py): our recipe (gradient clipping, ReduceLROnPlateau, early
stopping) by default, the MFSA paper's section 4.2 (fixed epochs) with an MFSA `--preset`.

Files in `out_dir`:
  model.ckpt   the kept epoch so far (see checkpoint.py); test metrics added when training ends
  last.ckpt    training state after the last finished epoch (weights, optimizer, scheduler,
               GradScaler, RNG states, early-stopping counters): rerunning the same command
               continues from it; more --epochs extend a run that stopped at its epoch limit
  log.jsonl    one JSON object per epoch
  result.json  the summary once training has ended

Multihead datasets (label -1 = no label for a head): selection on the validation task loss (the
sum over heads of each head's mean CE over its labelled samples); validation and test metrics
per head (metrics.multihead_metrics). `calibrate=True` fits temperatures on the valid split
after training (evaluation.calibrate) before model.ckpt gets its test metrics.

The package, one concern per module:
  settings      TrainSettings (frozen, validated; resume_key(), describe()), protocols, model config
  data          the dataset checked for training, its fingerprint, splits and each epoch's loader
  augmentation  AugmentedSplit (crop, noise, modality dropout of the train split)
  loop          train_one_epoch, validate, seeds, determinism, AMP, optimizer and schedule
  stopping      EarlyStopping: model selection and early stopping, counters in TrainState
  state         TrainState: last.ckpt, save / load / restore, resume-key upgrades
  log           log.jsonl
  progress      the progress bar and the printed lines
  distributed   training under torchrun: DDP, each process's share of an epoch, gathers, broadcasts
  trainer       fit(settings, ...) and train(**keywords), TrainResult
and the evaluation beside it:
  evaluation    run_model over a split, evaluate / calibrate a checkpoint on a dataset
  metrics       the benchmark metrics (MMSA's), calibration (ECE, temperature)
  synthetic     the asynchronous-fusion task (MulT's pickle format)

The names below load on first use, so that importing one module of the package (metrics,
synthetic) does not load the trainer; torch is imported inside functions only.
"""

import importlib

_EXPORTS = {  # name -> module it comes from
    "file_sha256": "extractors.hashing",
    "AugmentedSplit": "mfsa_pipe.training.augmentation",
    "amp_settings": "mfsa_pipe.training.loop",
    "seed_everything": "mfsa_pipe.training.loop",
    "train_one_epoch": "mfsa_pipe.training.loop",
    "TrainingError": "mfsa_pipe.training.settings",
    "TrainSettings": "mfsa_pipe.training.settings",
    "build_config": "mfsa_pipe.training.settings",
    "parse_overrides": "mfsa_pipe.training.settings",
    "STATE_FORMAT": "mfsa_pipe.training.state",
    "TrainState": "mfsa_pipe.training.state",
    "EarlyStopping": "mfsa_pipe.training.stopping",
    "TrainResult": "mfsa_pipe.training.trainer",
    "fit": "mfsa_pipe.training.trainer",
    "train": "mfsa_pipe.training.trainer",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mfsa_pipe.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
