"""Checkpoint round trip, weights_only loading, spec mismatch messages, corrupt files."""

import json

import numpy as np
import pytest
import torch

from mfsa_pipe.checkpoint import Checkpoint, CheckpointError, SpecMismatchError, load_checkpoint, save_checkpoint
from mfsa_pipe.datasets.base import NormStats
from models.registry import build_model, config_from_dict

SPEC = {
    "text": {"id": "text/glove", "version": "1.0", "config": {"vectors": "glove-6b-50d"}, "dim": 6, "rate": None,
             "columns": [f"g{i}" for i in range(6)]},
    "audio": {"id": "acoustic/opensmile", "version": "2.5", "config": {}, "dim": 3, "rate": 12.5,
              "columns": ["pitch", "loudness", "hnr"]},
    "vision": {"id": "facial/mesh", "version": "0.1", "config": {}, "dim": 4, "rate": 15.0,
               "columns": ["au1", "au2", "yaw", "face_present"]},
}


def make_checkpoint():
    torch.manual_seed(0)
    config = config_from_dict("lf_lstm", {"dims": [6, 3, 4], "task": "classification", "num_classes": 3, "hidden": 8})
    model = build_model("lf_lstm", config)
    norm = NormStats(mean={m: np.arange(d, dtype=np.float32) for m, d in (("text", 6), ("audio", 3), ("vision", 4))},
                     std={m: np.full(d, 2.0, np.float32) for m, d in (("text", 6), ("audio", 3), ("vision", 4))})
    return model, Checkpoint(
        model_name="lf_lstm", model_config=config.to_dict(),
        label_spec={"task": "classification", "classes": ["neutral", "happy", "sad"]},
        feature_spec=SPEC, normalization=norm, state_dict=model.state_dict(),
        metrics={"valid": {"acc": 0.5, "corr": float("nan")}},
        training={"seed": 3, "epochs": 2, "lr": 1e-3, "dataset": {"path": "x.h5", "sha256": "ab"}},
    )


def test_round_trip_and_weights_only(tmp_path):
    model, ckpt = make_checkpoint()
    path = save_checkpoint(ckpt, tmp_path / "model.ckpt")
    raw = torch.load(path, weights_only=True)  # only tensors and plain containers inside
    assert raw["format"] == "mfsa-pipe-checkpoint" and isinstance(raw["model_config"], str)
    assert json.loads(raw["metrics"])["valid"]["corr"] is None  # NaN stored as null
    back = load_checkpoint(path)
    assert back.model_name == "lf_lstm" and back.label_spec == ckpt.label_spec and back.feature_spec == SPEC
    assert back.training["seed"] == 3 and back.package_version
    np.testing.assert_array_equal(back.normalization.mean["audio"], [0, 1, 2])
    rebuilt = back.build_model()
    assert not rebuilt.training
    x = {m: torch.randn(2, 5, d) for m, d in (("text", 6), ("audio", 3), ("vision", 4))}
    masks = {f"{m}_mask": torch.ones(2, 5, dtype=torch.bool) for m in x}
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**x, **masks).prediction, model(**x, **masks).prediction)


def test_same_checkpoint_same_bytes(tmp_path):
    """A rebuilt checkpoint can be compared with `cmp`: the temporary file's name does not enter the archive."""
    _, ckpt = make_checkpoint()
    first = save_checkpoint(ckpt, tmp_path / "a" / "model.ckpt").read_bytes()
    again = save_checkpoint(load_checkpoint(tmp_path / "a" / "model.ckpt"), tmp_path / "b.ckpt").read_bytes()
    assert first == again
    assert b".partial" not in first and b"archive/data.pkl" in first


def test_spec_mismatch_lists_differences(tmp_path):
    _, ckpt = make_checkpoint()
    ckpt = load_checkpoint(save_checkpoint(ckpt, tmp_path / "model.ckpt"))
    ckpt.check_feature_spec(json.loads(json.dumps(SPEC)))  # identical: fine
    other = json.loads(json.dumps(SPEC))
    other["audio"]["rate"] = 100.0
    other["vision"]["version"] = "0.2"
    other["vision"]["columns"][2] = "pitch_deg"
    other["text"]["dim"] = 7
    with pytest.raises(SpecMismatchError) as err:
        ckpt.check_feature_spec(other)
    diffs = {(m, f) for m, f, _, _ in err.value.differences}
    assert diffs == {("audio", "rate"), ("vision", "version"), ("vision", "columns"), ("text", "dim")}
    msg = str(err.value)
    assert "audio.rate: checkpoint expects 12.5, found 100.0" in msg
    assert 'vision.version: checkpoint expects "0.1", found "0.2"' in msg
    assert "yaw" in msg and "pitch_deg" in msg  # which column changed
    with pytest.raises(SpecMismatchError, match="label_spec"):
        ckpt.check_label_spec({"task": "classification", "classes": ["a", "b", "c"]})


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable mfsa-pipe checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mfsa-pipe checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    _, ckpt = make_checkpoint()
    path = save_checkpoint(ckpt, tmp_path / "model.ckpt")
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "none.ckpt")
