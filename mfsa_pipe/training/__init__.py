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
"""

from extractors.hashing import file_sha256
from mfsa_pipe.training.augmentation import AugmentedSplit
from mfsa_pipe.training.loop import amp_settings, seed_everything, train_one_epoch
from mfsa_pipe.training.settings import TrainingError, TrainSettings, build_config, parse_overrides
from mfsa_pipe.training.state import STATE_FORMAT, TrainState
from mfsa_pipe.training.stopping import EarlyStopping
from mfsa_pipe.training.trainer import TrainResult, fit, train

__all__ = [
    "AugmentedSplit", "EarlyStopping", "STATE_FORMAT", "TrainResult", "TrainSettings", "TrainState", "TrainingError",
    "amp_settings", "build_config", "file_sha256", "fit", "parse_overrides", "seed_everything", "train",
    "train_one_epoch",
]
