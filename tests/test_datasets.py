"""Readers on small files written in exactly the benchmark formats, the own HDF5 format with
resume and crash recovery, masks/lengths, and wrong-structure errors."""

import json
import pickle

import h5py
import numpy as np
import pytest

from mfsa_pipe.datasets import DatasetError, NormStats, PreparedSplit, collate, open_dataset
from mfsa_pipe.datasets.h5 import TMP_PREFIX, DatasetWriter, encode_name

from helpers import OWN_SPEC, own_sequences, write_mult


def test_mult_regression(tmp_path):
    p = tmp_path / "mosi_data_noalign.pkl"
    data = write_mult(p)
    b = open_dataset(p)
    assert b.source["format"] == "mult-pickle"
    assert b.label_spec.to_dict() == {"task": "regression", "range": [-3.0, 3.0]}
    assert b.dims == (4, 3, 2)
    assert sorted(b.splits) == ["test", "train", "valid"]
    tr = b.split("train")
    s = tr[0]
    assert (s.text.shape, s.audio.shape, s.vision.shape) == ((6, 4), (7, 3), (8, 2))
    assert s.audio[1, 2] == 0.0 and np.isfinite(tr[0].audio).all()  # -inf -> 0
    assert s.label == pytest.approx(-3.0)
    assert s.group == "vid0" and s.id == "vid0_0.0_1.0"
    # lengths from the data: trailing all-zero rows are padding; sample 3 has no audio at all
    assert [tr[i].text.shape[0] for i in range(5)] == [6, 3, 1, 2, 4]
    assert tr[3].audio.shape == (0, 3)
    np.testing.assert_array_equal(tr[1].vision, data["train"]["vision"][1])


def test_collate_masks(tmp_path):
    p = tmp_path / "mosi_data_noalign.pkl"
    write_mult(p)
    tr = open_dataset(p).split("train")
    batch = collate([tr[i] for i in range(5)], task="regression", dims={"text": 4, "audio": 3, "vision": 2})
    assert tuple(batch.text.shape) == (5, 6, 4)
    assert str(batch.text_mask.dtype) == "torch.bool" and str(batch.text.dtype) == "torch.float32"
    assert batch.text_mask.sum(1).tolist() == [6, 3, 1, 2, 4]
    assert batch.audio_mask.sum(1).tolist() == [7, 4, 2, 0, 5]
    assert float(batch.text[2, 1:].abs().sum()) == 0.0  # padding is zeros
    # a batch where a modality is empty everywhere still has one (masked) row, never T = 0
    empty = collate([tr[3]], task="regression", dims={"text": 4, "audio": 3, "vision": 2})
    assert tuple(empty.audio.shape) == (1, 1, 3) and not bool(empty.audio_mask.any())
    assert batch.labels.shape == (5,)


def test_mult_iemocap_multilabel(tmp_path):
    p = tmp_path / "iemocap_data_noalign.pkl"
    data = write_mult(p, iemocap=True)
    b = open_dataset(p)
    assert b.label_spec.to_dict() == {"task": "multilabel", "labels": ["Neutral", "Happy", "Sad", "Angry"]}
    s = b.split("valid")[2]
    np.testing.assert_array_equal(s.label, np.argmax(data["valid"]["labels"][2], axis=1))
    batch = collate([b.split("valid")[i] for i in range(5)], task="multilabel", dims=dict(zip(("text", "audio", "vision"), b.dims)))
    assert tuple(batch.labels.shape) == (5, 4)


def test_mmsa_uses_given_lengths(tmp_path):
    rng = np.random.default_rng(1)
    n = 4
    data = {}
    for split in ("train", "valid", "test"):
        bert = np.zeros((n, 3, 50), np.int64)
        for i, ln in enumerate([50, 10, 3, 1]):
            bert[i, 1, :ln] = 1
        data[split] = {
            "raw_text": [f"sentence {i}" for i in range(n)],
            "audio": rng.standard_normal((n, 20, 5)).astype(np.float32),  # padding not zero here
            "vision": rng.standard_normal((n, 30, 7)).astype(np.float32),
            "id": np.array([f"vid{i}$_${i}" for i in range(n)]),
            "text": rng.standard_normal((n, 50, 768)).astype(np.float32),
            "text_bert": bert,
            "audio_lengths": [20, 5, 1, 0],
            "vision_lengths": np.array([30, 2, 7, 9]),
            "regression_labels": np.array([1.2, -0.4, 0.0, 3.0], np.float32),
            "classification_labels": np.array([2, 0, 1, 2]),
        }
    p = tmp_path / "unaligned_50.pkl"
    with open(p, "wb") as f:
        pickle.dump(data, f)
    b = open_dataset(p)
    assert b.source["format"] == "mmsa-pickle" and b.dims == (768, 5, 7)
    s = b.split("test")[1]
    assert (s.text.shape[0], s.audio.shape[0], s.vision.shape[0]) == (10, 5, 2)
    assert s.group == "vid1" and s.label == pytest.approx(-0.4)
    assert b.split("train")[3].audio.shape == (0, 5)


def _write_csd(path, root, videos, metadata):
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        data = g.create_group("data")
        for vid, (feats, intervals) in videos.items():
            v = data.create_group(vid)
            v.create_dataset("features", data=feats)
            v.create_dataset("intervals", data=intervals)
        meta = g.create_group("metadata")
        for k, val in metadata.items():
            ds = meta.create_dataset(k, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(val)


def test_csd_folder_segments_by_label_intervals(tmp_path):
    folder = tmp_path / "mosi_csd"
    folder.mkdir()
    t = np.arange(0, 10, 0.5)
    iv = np.stack([t, t + 0.5], 1)
    videos = ["2iD-tVS8NPw", "8d-gEyoeBzc", "tmZoasNr4rU"]  # standard MOSI folds: train, train, test
    feats = {v: (np.full((len(t), 3), k + 1.0, np.float32) * t[:, None], iv) for k, v in enumerate(videos)}
    _write_csd(folder / "CMU_MOSI_TimestampedWordVectors.csd", "glove_vectors", feats,
               {"root name": "glove_vectors", "computational sequence version": "1.0",
                "dimension names": ["a", "b", "c"]})
    _write_csd(folder / "CMU_MOSI_COVAREP.csd", "COVAREP",
               {v: (np.ones((40, 2), np.float32), np.stack([np.arange(40) * 0.25, np.arange(40) * 0.25 + 0.25], 1)) for v in videos},
               {"root name": "COVAREP"})
    _write_csd(folder / "CMU_MOSI_Visual_Facet_41.csd", "FACET_4.1",
               {v: (np.ones((10, 4), np.float32), iv[::2]) for v in videos}, {"root name": "FACET_4.1"})
    _write_csd(folder / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels",
               {v: (np.array([[1.5], [-2.0]], np.float32), np.array([[0.0, 4.0], [5.0, 9.0]])) for v in videos},
               {"root name": "Opinion Segment Labels"})
    b = open_dataset(folder)
    assert b.source["format"] == "csd-folder"
    assert b.source["folds"] == "cmu-standard-folds:mosi"
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 4, "test": 2}
    assert b.feature_spec["text"]["columns"] == ["a", "b", "c"]
    s = b.split("train")[1]
    assert s.id.endswith("[1]") and s.label == pytest.approx(-2.0)
    # word rows whose midpoint lies in [5, 9]: starts 5.0 .. 8.5 -> 8 rows, values = start time
    assert s.text.shape == (8, 3)
    assert s.text[0, 0] == pytest.approx(5.0)
    assert s.audio.shape[0] == 16 and s.vision.shape[0] == 4


def test_csd_folder_needs_recognisable_files(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    _write_csd(folder / "a.csd", "a", {"v": (np.ones((1, 1)), np.zeros((1, 2)))}, {})
    with pytest.raises(DatasetError, match="csd.json"):
        open_dataset(folder)


def test_wrong_structure_errors(tmp_path):
    p = tmp_path / "bad.pkl"
    with open(p, "wb") as f:
        pickle.dump({"train": {"text": np.zeros((2, 3, 4)), "audio": np.zeros((2, 3, 4))}}, f)
    with pytest.raises(DatasetError) as err:
        open_dataset(p)
    msg = str(err.value)
    assert "needs keys" in msg and "missing ['vision', 'labels', 'id']" in msg and "found ['audio', 'text']" in msg
    with open(p, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DatasetError, match="found a list"):
        open_dataset(p)
    mult = write_mult(tmp_path / "m.pkl")
    mult["train"]["labels"] = np.zeros((5, 3, 3))
    with open(p, "wb") as f:
        pickle.dump(mult, f)
    with pytest.raises(DatasetError, match=r"found shape \(5, 3, 3\)"):
        open_dataset(p)
    (tmp_path / "junk.bin").write_bytes(b"not a dataset at all")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        open_dataset(tmp_path / "junk.bin")
    with pytest.raises(DatasetError, match="no such"):
        open_dataset(tmp_path / "missing.pkl")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(DatasetError, match="expected an mfsa-pipe-dataset"):
        open_dataset(tmp_path / "other.h5")


# ------------------------------------------------------------------------------ own format

LABELS = {"task": "classification", "classes": ["neg", "pos"]}


def test_own_format_write_read(tmp_path):
    p = tmp_path / "ds.h5"
    with DatasetWriter(p, feature_spec=OWN_SPEC, label_spec=LABELS, extraction_config={"a": 1}, provenance={"by": "test"}) as w:
        w.add("clip/one.mp4", sequences=own_sequences(), label="pos", split="train", group="spk1",
              meta={"path": "clip/one.mp4", "start": 1.0, "end": 2.5})
        w.add("clip two", sequences=own_sequences((0, 2, 4), 2.0), label=0, split="valid", meta={"start": 0.0, "end": 4.0})
        assert w.has("clip/one.mp4") and not w.has("clip three") and len(w) == 2
        with pytest.raises(ValueError, match="not one of the classes"):
            w.add("bad", sequences=own_sequences(), label="maybe", split="train")
        with pytest.raises(ValueError, match="already"):
            w.add("clip two", sequences=own_sequences(), label=0, split="train")
    b = open_dataset(p)
    assert b.source["format"] == "mfsa-pipe-dataset" and b.source["provenance"] == {"by": "test"}
    assert b.feature_spec == OWN_SPEC and b.label_spec.to_dict() == LABELS and b.dims == (3, 2, 4)
    s = b.split("train")[0]
    assert s.id == "clip/one.mp4" and s.label == 1 and s.group == "spk1"
    assert (s.text.shape, s.audio.shape, s.vision.shape) == ((3, 3), (5, 2), (0, 4))
    assert s.meta["start"] == 1.0 and s.meta["source"] == "clip/one.mp4"
    v = b.split("valid")[0]
    assert v.label == 0 and v.text.shape == (0, 3) and v.vision[0, 0] == 2.0 and v.group is None
    assert v.meta["start"] == 0.0 and v.meta["end"] == 4.0  # a segment at the clip's start keeps 0.0
    with h5py.File(p, "r") as f:
        g = f["samples"][encode_name("clip/one.mp4")]
        assert [t.decode() for t in g["text"]["tokens"][()]] == ["w0", "w1", "w2"]
        assert g["audio"]["times"].dtype == np.float64 and g["audio"]["features"].dtype == np.float32


def test_own_format_resume_and_crash_recovery(tmp_path):
    p = tmp_path / "ds.h5"
    kw = dict(feature_spec=OWN_SPEC, label_spec=LABELS, extraction_config={"a": 1})
    with DatasetWriter(p, **kw) as w:
        w.add("a", sequences=own_sequences(), label="neg", split="train")
    # simulate a writer killed mid-sample: a temporary group with half the data
    with h5py.File(p, "a") as f:
        g = f["samples"].create_group(TMP_PREFIX + "b")
        g.create_group("text").create_dataset("features", data=np.ones((2, 3), np.float32))
    b = open_dataset(p)
    assert len(b.split("train")) == 1  # the unfinished sample is invisible to readers
    with DatasetWriter(p, **kw) as w:
        assert w.has("a") and not w.has("b")
        w.add("b", sequences=own_sequences(), label="pos", split="train")
    with h5py.File(p, "r") as f:
        assert sorted(f["samples"]) == ["a", "b"]
    assert len(open_dataset(p).split("train")) == 2
    # another spec: a clear error naming the difference, nothing appended
    other = json.loads(json.dumps(OWN_SPEC))
    other["audio"]["dim"] = 3
    with pytest.raises(DatasetError, match=r"feature_spec.audio.dim: the file has 2, given 3"):
        DatasetWriter(p, feature_spec=other, label_spec=LABELS, extraction_config={"a": 1}).open()
    with pytest.raises(DatasetError, match="label_spec.classes"):
        DatasetWriter(p, feature_spec=OWN_SPEC, label_spec={"task": "classification", "classes": ["x", "y"]},
                      extraction_config={"a": 1}).open()


def test_resume_accepts_a_config_written_before_an_option_existed(tmp_path):
    """A dataset written before `text.temperature_fallback` existed resumes with the option at its
    default; the option set otherwise is still refused, naming it."""
    from extractors.config import ExtractionConfig, TextConfig

    p = tmp_path / "ds.h5"
    old = ExtractionConfig().to_dict()
    del old["text"]["temperature_fallback"]
    with DatasetWriter(p, feature_spec=OWN_SPEC, label_spec=LABELS, extraction_config=old) as w:
        w.add("a", sequences=own_sequences(), label="neg", split="train")
    with DatasetWriter(p, feature_spec=OWN_SPEC, label_spec=LABELS, extraction_config=ExtractionConfig().to_dict()) as w:
        w.add("b", sequences=own_sequences(), label="pos", split="train")
    assert len(open_dataset(p).split("train")) == 2
    fallback = ExtractionConfig(text=TextConfig(temperature_fallback=True)).to_dict()
    with pytest.raises(DatasetError, match="extraction_config.text.temperature_fallback"):
        DatasetWriter(p, feature_spec=OWN_SPEC, label_spec=LABELS, extraction_config=fallback).open()


def test_h5_split_pickles_for_workers(tmp_path):
    p = tmp_path / "ds.h5"
    with DatasetWriter(p, feature_spec=OWN_SPEC, label_spec={"task": "regression", "range": [-3, 3]}, extraction_config={}) as w:
        for i in range(3):
            w.add(f"s{i}", sequences=own_sequences((i + 1, 2, 1)), label=i - 1.0, split="train")
    split = open_dataset(p).split("train")
    split[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(split))  # what a DataLoader worker receives
    assert clone._file is None and clone[2].text.shape == (3, 3) and clone[2].label == 1.0


def test_normalisation_over_real_rows(tmp_path):
    p = tmp_path / "mosi_data_noalign.pkl"
    write_mult(p)
    b = open_dataset(p)
    dims = dict(zip(("text", "audio", "vision"), b.dims))
    stats = NormStats.compute(b.split("train"), dims=dims)
    rows = np.concatenate([b.split("train")[i].text for i in range(5)])  # real rows only
    np.testing.assert_allclose(stats.mean["text"], rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std["text"], rows.std(0), rtol=1e-4)
    prepared = PreparedSplit(b.split("train"), norm=stats, modalities=("text", "vision"))
    s = prepared[0]
    assert s.audio.shape == (0, 3)  # left-out modality is empty
    all_text = np.concatenate([prepared[i].text for i in range(5)])
    np.testing.assert_allclose(all_text.mean(0), 0, atol=1e-5)


WRITER = """
import sys
import numpy as np
from extractors.sequence import Sequence
from mfsa_pipe.datasets.h5 import DatasetWriter
spec = {m: {"id": m, "version": "1", "config": {}, "dim": d, "rate": None, "columns": [str(i) for i in range(d)]}
        for m, d in (("text", 3), ("audio", 2), ("vision", 4))}
def seq(m, t, v):
    d = spec[m]["dim"]
    return Sequence(features=np.full((t, d), v, np.float32), times=np.zeros((t, 2)), columns=spec[m]["columns"],
                    rate=None, source={"id": m, "version": "1"}, tokens=["w"] * t if m == "text" else None)
with DatasetWriter(sys.argv[1], feature_spec=spec, label_spec={"task": "regression"}, extraction_config={}) as w:
    i = 0
    while True:
        if not w.has(f"s{i}"):
            w.add(f"s{i}", sequences={m: seq(m, t, float(i)) for m, t in (("text", 50), ("audio", 300), ("vision", 400))},
                  label=i % 3 - 1.0, split="train")
            print(i, flush=True)
        i += 1
"""


def test_own_format_survives_kill_9(tmp_path):
    """A writer killed with SIGKILL at an arbitrary point, three times: the file stays readable,
    every visible sample is complete, and the next writer continues where the last one stopped."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "killed.h5"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    written = set()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(25):  # let it write some samples, then kill it mid-stream
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            written.add(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        b = open_dataset(path)
        split = b.split("train")
        ids = set()
        for i in range(len(split)):
            s = split[i]
            k = int(s.id[1:])
            assert s.text.shape == (50, 3) and s.audio.shape == (300, 2) and s.vision.shape == (400, 4)
            assert float(s.vision[-1, -1]) == float(k) and s.label == k % 3 - 1.0
            ids.add(k)
        split._file.close()  # HDF5 locks the file while a reader holds it open
        assert written <= ids  # everything reported as written is there
        assert ids == set(range(len(ids)))  # and the next writer continued without gaps


def test_label_spec_reads_and_writes_the_stored_form():
    from mfsa_pipe.datasets.base import LabelHead, LabelSpec

    stored = [{"task": "regression", "range": [-1.5, 2.0]}, {"task": "classification", "classes": ["a", "b"]},
              {"task": "multilabel", "labels": ["x"]},
              {"task": "multihead", "heads": [{"name": "emotion", "classes": ["h", "s", "n"]},
                                              {"name": "sentiment", "classes": ["neg", "pos"]}]}]
    for d in stored:  # byte for byte what datasets and checkpoints hold
        assert json.dumps(LabelSpec.from_dict(d).to_dict()) == json.dumps(d)
    heads = LabelSpec.from_dict(stored[3])
    assert heads.heads[1] == LabelHead(name="sentiment", classes=("neg", "pos"))
    assert heads.head_names == ("emotion", "sentiment") and heads.head_sizes == (3, 2)
    assert heads.head_slices() == [("emotion", slice(0, 3)), ("sentiment", slice(3, 5))]
    assert heads.encode_heads({"sentiment": "pos", "emotion": None}).tolist() == [-1, 1]
    with pytest.raises(KeyError, match="emotion label 'x'"):
        heads.encode_heads({"emotion": "x"})
    # older or hand-written forms: no range, integer bounds, class names given as numbers
    assert LabelSpec.from_dict({"task": "regression"}).range == (-3.0, 3.0)
    assert LabelSpec.from_dict({"task": "regression", "range": [-3, 3]}).to_dict() == {"task": "regression", "range": [-3.0, 3.0]}
    assert LabelSpec.from_dict({"task": "classification", "classes": [0, 1]}).classes == ("0", "1")
    assert LabelSpec.of(heads) is heads and LabelSpec(task="regression").is_regression
    for bad, message in [({}, "task must be one of"), ({"task": "classification", "classes": ["a"]}, ">= 2 classes"),
                         ({"task": "multilabel"}, "non-empty 'labels'"), ({"task": "multihead", "heads": []}, "'heads' list"),
                         ({"task": "multihead", "heads": [{"name": "e", "classes": ["a", "a"]}]}, "distinct classes"),
                         ({"task": "multihead", "heads": [{"name": "e", "classes": ["a", "b"]}] * 2}, "names must be distinct")]:
        with pytest.raises(DatasetError, match=message):
            LabelSpec.from_dict(bad)
