"""Concepts with one home (issue 14, item 2): the modalities, the split names and their
spellings, the device resolver, the file hash and the JSON cleaning."""

import json
import math

import numpy as np
import pytest
import torch

import mfsa_pipe.analysis.video
import mfsa_pipe.datasets.base
import mfsa_pipe.datasets.build
import mfsa_pipe.presence
import models.base
from extractors.hashing import file_sha256
from extractors.sequence import MODALITIES
from mfsa_pipe.datasets.base import SPLIT_ALIASES, SPLITS, canonical_split
from mfsa_pipe.devices import DeviceError, resolve_device
from mfsa_pipe.json_values import json_safe


def test_the_modalities_and_splits_are_one_object_everywhere():
    for module in (models.base, mfsa_pipe.analysis.video, mfsa_pipe.presence, mfsa_pipe.datasets.base, mfsa_pipe.datasets.build):
        assert module.MODALITIES is MODALITIES
    assert MODALITIES == ("text", "audio", "vision")
    assert mfsa_pipe.datasets.build.SPLITS is SPLITS and set(SPLIT_ALIASES) == set(SPLITS)


def test_the_label_tasks_agree_between_models_and_datasets():
    # datasets keep a torch-free copy (importing `models` loads torch); the two must not drift
    assert mfsa_pipe.datasets.base.TASKS == models.base.TASKS


def test_every_split_spelling_accepted_before_still_is():
    before = {  # labels.csv (build-dataset) and the MulT pickles' keys
        "train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
        "dev": "valid", "test": "test", "testing": "test",
    }
    for spelling, split in before.items():
        assert canonical_split(spelling) == canonical_split(f" {spelling.upper()} ") == split
    assert SPLIT_ALIASES["valid"][:3] == ("valid", "dev", "val")  # the pickle reader's preference, as before
    assert canonical_split("holdout") is None


def test_one_device_resolver_one_type():
    assert resolve_device("cpu") == torch.device("cpu") and str(resolve_device("cpu")) == "cpu"
    assert str(resolve_device("auto")) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="not one of"):
        resolve_device("tpu")


def test_file_hash_of_a_file_and_of_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"abc")
    import hashlib

    assert file_sha256(tmp_path / "d" / "a.bin") == hashlib.sha256(b"abc").hexdigest()
    before = file_sha256(tmp_path / "d")
    (tmp_path / "d" / "b.bin").write_bytes(b"")
    assert file_sha256(tmp_path / "d") != before  # a folder's hash covers its file names


def test_json_safe_is_the_one_cleaning():
    value = {1: np.float32(0.5), "nan": math.nan, "arr": np.array([1.0, np.inf]), "t": (np.int64(3), np.bool_(True)),
             "x": torch.tensor(2.0), "r": 1 / 3}
    clean = json_safe(value)
    assert clean == {"1": 0.5, "nan": None, "arr": [1.0, None], "t": [3, True], "x": 2.0, "r": 1 / 3}
    assert json_safe(value, digits=6)["r"] == 0.333333  # what reports write
    json.dumps(clean, allow_nan=False)
