"""checkpoint_header: a checkpoint's fields read without torch, as load_checkpoint reads them;
the same one-line refusals; no code in the file run; analyze's background model load."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from mfsa_pipe.analysis.video import analyze
from mfsa_pipe.checkpoint import CheckpointError, load_checkpoint
from mfsa_pipe.checkpoint_header import COMBINED_NAMES, MODEL_NAMES, CheckpointHeader, read_checkpoint_header
from mfsa_pipe.default_model import default_checkpoint_path
from models.registry import COMBINED, MODELS
from test_reliability import _bad_checkpoints

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("model_name", "model_config", "label_spec", "feature_spec", "metrics", "training", "calibration",
          "package_version", "format_version", "path")
# refused only once the model classes are at hand (load_checkpoint / the Predictor in the background)
NEEDS_THE_MODEL = {"weights of the wrong shape"}


def test_reads_the_shipped_checkpoint_as_load_checkpoint_does():
    path = default_checkpoint_path()
    header, loaded = read_checkpoint_header(path), load_checkpoint(path)
    assert isinstance(header, CheckpointHeader)
    for name in FIELDS:
        assert getattr(header, name) == getattr(loaded, name), name
    assert header.weight_shapes == {k: tuple(v.shape) for k, v in loaded.state_dict.items()}
    assert header.normalization_shapes == {m: v.shape for m, v in loaded.normalization.mean.items()}


def test_reading_a_header_imports_no_torch():
    code = ("import sys; from mfsa_pipe.checkpoint_header import read_checkpoint_header; "
            "from mfsa_pipe.default_model import default_checkpoint_path; "
            "h = read_checkpoint_header(default_checkpoint_path()); "
            "print(h.model_name, len(h.weight_shapes), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    name, weights, torch_imported = out.split()
    assert name == "ensemble" and int(weights) > 100 and torch_imported == "False"  # the default: 3 MFSA runs


def test_model_names_are_the_registry_names():
    assert sorted(MODEL_NAMES) == sorted(MODELS) and sorted(COMBINED_NAMES) == sorted(COMBINED)


def test_malformed_files_are_refused_with_load_checkpoints_line(tmp_path):
    for name, (path, phrase) in _bad_checkpoints(tmp_path).items():
        if name in NEEDS_THE_MODEL:
            header = read_checkpoint_header(path)  # well-formed apart from what the model says
            assert header.weight_shapes[next(iter(header.weight_shapes))] == (1,)
            with pytest.raises(CheckpointError, match=phrase):
                load_checkpoint(path).build_model()
            continue
        with pytest.raises(CheckpointError) as loaded:
            load_checkpoint(path)
        with pytest.raises(CheckpointError) as read:
            read_checkpoint_header(path)
        assert str(read.value) == str(loaded.value), name
        assert phrase in str(read.value) and "\n" not in str(read.value), name
    assert not (tmp_path / "ran").exists()  # the pickled os.mkdir was never called


def test_a_disallowed_global_is_refused_unresolved(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))  # builtins.print: harmless, but not a tensor or plain data

    path = tmp_path / "global.ckpt"
    torch.save({"format": "mfsa-pipe-checkpoint", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"it holds a Python object \(print\); refused") as read:
        read_checkpoint_header(path)
    with pytest.raises(CheckpointError) as loaded:
        load_checkpoint(path)
    assert str(read.value) == str(loaded.value)


def test_truncated_and_foreign_archives(tmp_path):
    data = default_checkpoint_path().read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{cut}: not a readable mfsa-pipe checkpoint .*BadZipFile"):
        read_checkpoint_header(cut)
    other = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("a/data.pkl", b"\x80\x02}q\x00(X\x01")  # a pickle cut short
    with pytest.raises(CheckpointError, match="not a readable mfsa-pipe checkpoint"):
        read_checkpoint_header(other)
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(b"\x80\x02" + b"\x00" * 10)  # a pre-zip torch file: left to load_checkpoint
    assert read_checkpoint_header(legacy) is None


@pytest.mark.integration
def test_weights_that_do_not_fit_stop_analyze_and_leave_no_folder(media_dir, tmp_path):
    path, phrase = _bad_checkpoints(tmp_path)["weights of the wrong shape"]
    stages = []
    out = tmp_path / "new" / "out"
    with pytest.raises(CheckpointError, match=phrase):
        analyze(media_dir / "grid_id2_vcd_swwp2s.mpg", checkpoint=path, out_dir=out, device="cpu", cache_dir=False,
                render_video=False, progress=stages.append)
    assert not (tmp_path / "new").exists()
    assert "model" not in stages  # refused while extracting (or at the latest as the model stage began)
