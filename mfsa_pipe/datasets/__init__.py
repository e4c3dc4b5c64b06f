"""Dataset readers -> `DatasetBundle`. `open_dataset(path)` tells the format from the path:

- a folder holding `.csd` files: CMU-MultimodalSDK computational sequences (`csd.py`);
- an HDF5 file with root attribute format="mfsa-pipe-dataset": the own format (`h5.py`);
- a pickle: MMSA (`unaligned_50.pkl`, splits with audio_lengths/regression_labels) or MulT
  (`*_data_noalign.pkl`, splits with labels), told apart by the keys of its splits.
Loading a pickle executes code stored in it: only open pickles from a source you trust.

Building a dataset from labelled videos (`mfsa-pipe build-dataset`) lives here too: `build.py`
(labels.csv + media -> the own HDF5 format, written by `h5.py`'s DatasetWriter) and
`label_adapters.py` (CMU-MOSI/MOSEI and MMSA label layouts -> labels.csv).
"""

from __future__ import annotations

import os
from pathlib import Path

from mfsa_pipe.datasets.base import (
    MODALITIES,
    Batch,
    DatasetBundle,
    DatasetError,
    NormStats,
    PreparedSplit,
    Sample,
    collate,
)
from mfsa_pipe.datasets.csd import read_csd_folder
from mfsa_pipe.datasets.h5 import read_h5
from mfsa_pipe.datasets.mmsa import read_mmsa
from mfsa_pipe.datasets.mult import load_pickle, read_mult

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

__all__ = [
    "MODALITIES",
    "Batch",
    "DatasetBundle",
    "DatasetError",
    "NormStats",
    "PreparedSplit",
    "Sample",
    "collate",
    "open_dataset",
]


def open_dataset(path: str | os.PathLike) -> DatasetBundle:
    """Open a dataset of any supported format (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(p.suffix.lower() == ".csd" for p in path.iterdir()):
            return read_csd_folder(path)
        raise DatasetError(
            f"{path}: a folder given as dataset must hold CMU-MultimodalSDK .csd files; found none"
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        if path.suffix.lower() == ".csd":
            raise DatasetError(f"{path}: a single .csd file; give the folder holding the modality and label .csd files")
        return read_h5(path)
    if head[:1] == b"\x80" or path.suffix.lower() in (".pkl", ".pickle"):
        data = load_pickle(path)
        first = None
        if isinstance(data, dict):
            first = next((data[k] for k in ("train", "valid", "test") if isinstance(data.get(k), dict)), None)
        if isinstance(first, dict) and ("regression_labels" in first or "audio_lengths" in first):
            return read_mmsa(path, data)
        return read_mult(path, data)
    raise DatasetError(
        f"{path}: unknown dataset format; expected a MulT/MMSA pickle, an mfsa-pipe HDF5 dataset "
        f"or a folder of .csd files (first bytes: {head!r})"
    )
