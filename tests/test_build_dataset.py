"""build-dataset and the CMU label adapters.

Real extraction runs on the bundled clips (labels made up for the test) once per session,
into a session feature cache; the other builds reuse it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mfsa_pipe.datasets import build as bd
from mfsa_pipe.datasets import labels_table as lt
from mfsa_pipe.datasets import label_adapters as la

from helpers import write_csv

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


# ------------------------------------------------------------------------------ labels table


def test_read_labels_infers_ids_groups_and_tasks(tmp_path):
    csv_path = write_csv(tmp_path / "l.csv", [
        {"path": "a.mp4", "label": "happy", "speaker": "s1", "start": "", "end": ""},
        {"path": "b.mp4", "label": "sad", "speaker": "s2", "start": "1.5", "end": "3"},
    ])
    rows = lt.read_labels(csv_path, media_root=tmp_path)
    assert [r.id for r in rows] == ["a.mp4", "b.mp4@1.500-3.000"]
    assert rows[0].start is None and rows[1].start == 1.5 and rows[1].end == 3.0
    assert [r.group for r in rows] == ["s1", "s2"]
    assert rows[0].file == tmp_path / "a.mp4"
    assert lt.infer_label_spec(["happy", "sad", "happy"]).to_dict() == {"task": "classification", "classes": ["happy", "sad"]}
    assert lt.infer_label_spec(["-1.5", "2", "0"]).to_dict() == {"task": "regression", "range": [-1.5, 2.0]}
    assert lt.infer_label_spec(["0", "1"], task="classification").classes == ("0", "1")
    spec = lt.infer_label_spec(["sad", "happy"], classes=["neutral", "happy", "sad"])
    assert spec.classes == ("neutral", "happy", "sad") and lt.encode_label("sad", spec) == 2


@pytest.mark.parametrize("rows, message", [
    ([{"path": "a.mp4"}], "'label' is required"),
    ([{"path": "a.mp4", "label": "x", "split": "holdout"}], "split must be one of"),
    ([{"path": "a.mp4", "label": "x", "start": "3", "end": "2"}], "0 <= start < end"),
    ([{"path": "a.mp4", "label": "x"}, {"path": "a.mp4", "label": "y"}], "appears on lines 2 and 3"),
    ([{"path": "a.mp4", "label": "x", "split": "train"}, {"path": "b.mp4", "label": "x", "split": ""}], "split column is empty"),
])
def test_read_labels_errors_name_the_problem(tmp_path, rows, message):
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with pytest.raises(lt.LabelsError, match=message):
        lt.read_labels(write_csv(tmp_path / "l.csv", rows, cols), media_root=tmp_path)


def test_deterministic_split_keeps_groups_whole_and_is_order_free():
    speakers = [f"jv0{i}" for i in (1, 2, 3, 4, 6, 7, 8, 9)]
    a = lt.deterministic_split(speakers)
    b = lt.deterministic_split(list(reversed(speakers)))
    assert a == b
    counts = {s: list(a.values()).count(s) for s in bd.SPLITS}
    assert counts == {"train": 6, "valid": 1, "test": 1}
    many = lt.deterministic_split([f"clip{i}" for i in range(100)])
    assert [list(many.values()).count(s) for s in bd.SPLITS] == [70, 15, 15]
    assert set(lt.deterministic_split(["x", "y"]).values()) == {"train"}

    rows = [lt.Row(f"{g}_{k}", "p", Path("p"), "a", None, g) for g in speakers for k in range(3)]
    rule = lt.assign_splits(rows)
    assert "speaker/group" in rule
    for g in speakers:
        assert len({r.split for r in rows if r.group == g}) == 1


def test_slice_sequence_midpoint_rule_and_per_row_meta():
    from extractors.sequence import Sequence

    t = np.arange(10) / 2.0  # rows of 0.5 s: [0, .5), [.5, 1), ...
    seq = Sequence(
        features=np.arange(20, dtype=np.float32).reshape(10, 2), times=np.stack([t, t + 0.5], 1),
        columns=("a", "b"), rate=2.0, source={"id": "x", "version": "1"},
        meta={"boxes": np.arange(40.0).reshape(10, 4), "note": "kept"},
    )
    # midpoints 1.25, 1.75, 2.25 are inside; [2.5, 3.0) straddles the end, its midpoint 2.75 within
    # 0.25 s of it: analyze's utterance rule (segmentation.row_utterance_index) keeps it; [0.5, 1.0) is out
    part = bd.slice_sequence(seq, 1.2, 2.6)
    assert part.length == 4
    np.testing.assert_array_equal(part.features[:, 0], [4, 6, 8, 10])
    np.testing.assert_allclose(part.times[0], [0.0, 0.3])  # [1.0, 1.5) shifted by 1.2, clipped at 0
    np.testing.assert_allclose(part.times[-1], [1.3, 1.4])  # clipped at the segment's length
    assert part.meta["boxes"].shape == (4, 4) and part.meta["note"] == "kept"
    assert part.meta["segment"] == [1.2, 2.6]
    empty = bd.slice_sequence(seq, 20.0, 21.0)
    assert empty.length == 0 and "no rows" in empty.meta["empty_reason"]

    words = Sequence(features=np.ones((2, 3)), times=[[0.1, 0.4], [2.0, 2.4]], columns=("x", "y", "z"),
                     rate=None, source={"id": "t", "version": "1"}, tokens=["hello", "world"])
    assert bd.slice_sequence(words, 1.0, 3.0).tokens == ["world"]


# ------------------------------------------------------------------------------ adapters

MOSEI_HEADER = ["", "file", "index", "start", "end", "label2a", "label2b", "label6", "label7", "split"]


def test_mosei_adapter_targets_layouts_and_folds(tmp_path):
    rows = [
        {"": 0, "file": "vidA", "index": 0, "start": -0.2, "end": 3.0, "label2a": 1, "label2b": 1, "label6": 0, "label7": 2, "split": 0},
        {"": 1, "file": "vidA", "index": 1, "start": 3.0, "end": 7.5, "label2a": 0, "label2b": -1, "label6": 2, "label7": -1, "split": 0},
        {"": 2, "file": "vidB", "index": 0, "start": 1.0, "end": 2.0, "label2a": 1, "label2b": 0, "label6": 5, "label7": 0, "split": 2},
        {"": 3, "file": "vidC", "index": 0, "start": 1.0, "end": 2.0, "label2a": 1, "label2b": 0, "label6": 1, "label7": 0, "split": 3},
    ]
    src = write_csv(tmp_path / "mosei.csv", rows, MOSEI_HEADER)
    res = la.mosei_labels(src)
    assert res.dropped == 1  # split 3: in no standard fold
    assert [r["label"] for r in res.rows] == [2, -1, 0]
    assert res.rows[0] == {"id": "vidA_0", "path": "vidA.mp4", "label": 2, "split": "train", "group": "vidA",
                           "start": 0.0, "end": 3.0}
    seg = la.mosei_labels(src, target="emotion", layout="segmented", path_template="Segmented/{file}_{index}.mp4")
    assert [(r["path"], r["label"]) for r in seg.rows] == [
        ("Segmented/vidA_0.mp4", "happy"), ("Segmented/vidA_1.mp4", "anger"), ("Segmented/vidB_0.mp4", "fear")]
    assert "start" not in seg.rows[0]
    assert [r["label"] for r in la.mosei_labels(src, target="binary").rows] == ["non-negative", "negative", "non-negative"]
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"mosei": {"standard_train_fold": ["vidB"], "standard_valid_fold": ["vidC"],
                                           "standard_test_fold": ["vidA"]}}))
    by_folds = la.mosei_labels(src, folds_json=folds)
    assert [(r["id"], r["split"]) for r in by_folds.rows] == [
        ("vidA_0", "test"), ("vidA_1", "test"), ("vidB_0", "train"), ("vidC_0", "valid")]

    out = la.write_generic_csv(res, tmp_path / "generic.csv")
    parsed = lt.read_labels(out, media_root=tmp_path)
    assert [r.id for r in parsed] == ["vidA_0", "vidA_1", "vidB_0"]
    assert lt.infer_label_spec([r.label for r in parsed]).task == "regression"
    assert la.detect_format(src) == "mosei" and la.detect_format(out) == "generic"


def test_fold_and_mmsa_adapters(tmp_path):
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"mosi": {"standard_train_fold": ["abc"], "standard_valid_fold": ["d_e"],
                                          "standard_test_fold": ["xyz"]}}))
    generic = write_csv(tmp_path / "g.csv", [
        {"path": "Raw/abc/abc_1.mp4", "label": "1.2"}, {"path": "d_e_3.mp4", "label": "-0.4"},
        {"path": "clips/xyz.mp4", "label": "0"}, {"path": "other.mp4", "label": "0"}])
    res = la.apply_cmu_folds(generic, folds_json=folds, dataset="mosi")
    assert [(r["path"], r["split"], r["group"]) for r in res.rows] == [
        ("Raw/abc/abc_1.mp4", "train", "abc"), ("d_e_3.mp4", "valid", "d_e"), ("clips/xyz.mp4", "test", "xyz")]
    assert res.dropped == 1
    mmsa = write_csv(tmp_path / "label.csv", [
        {"video_id": "abc", "clip_id": "1", "text": "good", "label": "1.4", "mode": "train"},
        {"video_id": "xyz", "clip_id": "2", "text": "bad", "label": "-2.0", "mode": "valid"}])
    res = la.mmsa_labels(mmsa)
    assert res.rows[1] == {"id": "xyz_2", "path": "Raw/xyz/2.mp4", "label": -2.0, "split": "valid", "group": "xyz"}
    assert la.mmsa_labels(mmsa, folds_json=folds, dataset="mosi").rows[1]["split"] == "test"


@pytest.mark.skipif(not (SHARED / "data" / "CMU_MOSEI_Labels.csv").is_file(), reason="../shared/data not beside the repo")
def test_real_mosei_labels_match_the_standard_folds():
    a = la.mosei_labels(SHARED / "data" / "CMU_MOSEI_Labels.csv")
    b = la.mosei_labels(SHARED / "data" / "CMU_MOSEI_Labels.csv", folds_json=SHARED / "data" / "cmu_std_folds.json")
    assert len(a.rows) == len(b.rows) == 22860 and a.dropped == 399
    assert [r["split"] for r in a.rows] == [r["split"] for r in b.rows]
    assert a.counts() == {"train": 16327, "valid": 1871, "test": 4662}
    assert {r["label"] for r in a.rows} == {-3, -2, -1, 0, 1, 2, 3}


# ------------------------------------------------------------------------------ real builds


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="session")
def media_root(tmp_path_factory, media_dir):
    root = tmp_path_factory.mktemp("media")
    for name in ("single_face.mp4", "grid_id2_vcd_swwp2s.mpg", "face_noface.mov"):
        os.symlink(media_dir / name, root / name)
    # a truncated, garbage "video": the first bytes of a real mp4 and then noise
    head = (media_dir / "single_face.mp4").read_bytes()[:2048]
    (root / "broken.mp4").write_bytes(head + np.random.default_rng(0).bytes(4096))
    return root


LABEL_ROWS = [
    {"path": "single_face.mp4", "label": "happy", "speaker": "pyfeat", "split": "train"},
    {"path": "grid_id2_vcd_swwp2s.mpg", "label": "neutral", "speaker": "grid", "split": "train"},
    {"path": "broken.mp4", "label": "sad", "speaker": "x", "split": "train"},
    {"path": "face_noface.mov", "label": "happy", "speaker": "pyfeat2", "split": "train"},
    {"path": "face_noface.mov", "label": "sad", "speaker": "pyfeat2", "split": "valid", "start": "0.5", "end": "2.5"},
    {"path": "grid_id2_vcd_swwp2s.mpg", "label": "neutral", "speaker": "grid", "split": "test", "start": "0", "end": "1.5"},
]
COLUMNS = ["path", "label", "speaker", "split", "start", "end"]


@pytest.fixture(scope="session")
def built(tmp_path_factory, media_root, feature_cache):
    work = tmp_path_factory.mktemp("built")
    labels = write_csv(work / "labels.csv", LABEL_ROWS, COLUMNS)
    out = work / "clips.h5"
    report = bd.build_dataset(labels, media_root=media_root, out=out, cache_dir=feature_cache)
    return {"labels": labels, "out": out, "report": report}


@pytest.mark.integration
def test_build_dataset_on_real_clips(built):
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec
    from mfsa_pipe.datasets import open_dataset

    report = built["report"]
    assert (report.total, report.added, report.failed) == (6, 5, 1)
    assert report.failures[0]["id"] == "broken.mp4" and report.failures[0]["error"]
    assert report.label_spec.to_dict() == {"task": "classification", "classes": ["happy", "neutral", "sad"]}
    saved = json.loads(Path(report.report_json).read_text())
    assert saved["failed"] == 1 and saved["split_rule"] == "from the labels CSV's split column"
    with open(report.report_csv) as fh:
        statuses = {r["id"]: r["status"] for r in csv.DictReader(fh)}
    assert statuses["broken.mp4"] == "failed" and statuses["single_face.mp4"] == "added"

    ds = open_dataset(built["out"])
    assert json.dumps(ds.feature_spec, sort_keys=True) == json.dumps(feature_spec(ExtractionConfig()), sort_keys=True)
    assert ds.label_spec == report.label_spec
    assert {k: len(v) for k, v in ds.splits.items() if len(v)} == {"train": 3, "valid": 1, "test": 1}
    train = {ds.splits["train"][i].id: ds.splits["train"][i] for i in range(len(ds.splits["train"]))}
    whole = train["face_noface.mov"]
    segment = ds.splits["valid"][0]
    assert segment.id == "face_noface.mov@0.500-2.500" and segment.label == 2  # "sad"
    assert 0 < segment.vision.shape[0] < whole.vision.shape[0]
    assert abs(segment.vision.shape[0] - 2.0 * 15) <= 2  # 2 s at 15 Hz
    assert abs(segment.audio.shape[0] - 2.0 * 12.5) <= 2  # 2 s at 12.5 Hz
    assert train["single_face.mp4"].label == 0 and train["single_face.mp4"].group == "pyfeat"


@pytest.mark.integration
def test_build_resumes_after_an_interrupt(tmp_path, media_root, feature_cache, monkeypatch):
    from mfsa_pipe.datasets import open_dataset

    labels = write_csv(tmp_path / "labels.csv", LABEL_ROWS, COLUMNS)
    out = tmp_path / "clips.h5"
    real = bd._run_extract
    calls: list[str] = []

    def interrupted_after_two(file, config, cache_dir, modalities=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(Path(file).name)
        return real(file, config, cache_dir, modalities)

    monkeypatch.setattr(bd, "_run_extract", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        bd.build_dataset(labels, media_root=media_root, out=out, cache_dir=feature_cache)
    assert calls == ["single_face.mp4", "grid_id2_vcd_swwp2s.mpg"]
    partial = json.loads(out.with_name("clips.h5.report.json").read_text())
    assert partial["added"] == 3  # single_face + both grid samples (one file, extracted once)
    assert sum(r["status"] == "not done (interrupted)" for r in partial["records"]) == 3

    calls.clear()
    monkeypatch.setattr(bd, "_run_extract", lambda f, c, d, m=None: (calls.append(Path(f).name), real(f, c, d, m))[1])
    report = bd.build_dataset(labels, media_root=media_root, out=out, cache_dir=feature_cache)
    assert sorted(calls) == ["broken.mp4", "face_noface.mov"]  # only the rest
    assert (report.already_present, report.added, report.failed) == (3, 2, 1)
    ds = open_dataset(out)
    assert sum(len(s) for s in ds.splits.values()) == 5


@pytest.mark.integration
def test_build_without_split_column_splits_by_speaker(tmp_path, media_root, feature_cache):
    from mfsa_pipe.datasets import open_dataset

    rows = [{"path": "grid_id2_vcd_swwp2s.mpg", "label": str(v), "speaker": f"s{k}", "start": str(k * 0.5), "end": str(k * 0.5 + 1.0)}
            for k, v in enumerate([-1.0, 0.5, 2.0, 1.5])]
    labels = write_csv(tmp_path / "labels.csv", rows, ["path", "label", "speaker", "start", "end"])
    report = bd.build_dataset(labels, media_root=media_root, out=tmp_path / "reg.h5", cache_dir=feature_cache)
    assert report.label_spec.to_dict() == {"task": "regression", "range": [-1.0, 2.0]}
    assert report.split_counts == {"train": 2, "valid": 1, "test": 1}
    ds = open_dataset(tmp_path / "reg.h5")
    labels_by_id = {s.id: s.label for split in ds.splits.values() for s in split}
    assert sorted(labels_by_id.values()) == [-1.0, 0.5, 1.5, 2.0]


@pytest.mark.integration
def test_cli_build_dataset_and_labels_from_cmu(tmp_path, built, media_root, feature_cache):
    from typer.testing import CliRunner

    from mfsa_pipe.cli import app

    runner = CliRunner()
    out = tmp_path / "cli.h5"
    result = runner.invoke(app, ["build-dataset", str(built["labels"]), "--media-root", str(media_root),
                                 "--out", str(out), "--cache-dir", str(feature_cache)])
    assert result.exit_code == 1, result.output  # one clip failed: reported, the rest built
    assert "5 added" in result.output and "broken.mp4" in result.output
    assert out.is_file() and out.with_name("cli.h5.report.csv").is_file()

    src = write_csv(tmp_path / "mosei.csv", [
        {"": 0, "file": "v1", "index": 0, "start": 0, "end": 2, "label2a": 1, "label2b": 1, "label6": 0, "label7": 1, "split": 1}],
        MOSEI_HEADER)
    result = runner.invoke(app, ["labels-from-cmu", str(src), "--out", str(tmp_path / "g.csv"), "--target", "ternary"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "g.csv") as fh:
        assert list(csv.DictReader(fh)) == [{"id": "v1_0", "path": "v1.mp4", "start": "0.0", "end": "2.0",
                                              "label": "positive", "split": "valid", "group": "v1"}]


@pytest.mark.integration
def test_train_and_evaluate_on_a_built_dataset(built, tmp_path):
    from mfsa_pipe.training import train

    result = train(model_name="mfsa", dataset=str(built["out"]), out_dir=tmp_path / "run", epochs=2, batch_size=2,
                   seed=0, device="cpu", overrides=TINY_MFSA, progress=False)
    ckpt_path = tmp_path / "run" / "model.ckpt"
    assert ckpt_path.is_file() and result.epochs_run == 2
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.training.evaluation import evaluate

    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec

    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.label_spec.classes == ("happy", "neutral", "sad")
    ckpt.check_feature_spec(feature_spec(ExtractionConfig()))  # what analyze extracts
    metrics = evaluate([ckpt_path], dataset=str(built["out"]), split="test")
    assert metrics["samples"] == 1 and 0.0 <= metrics["metrics"]["acc"]["mean"] <= 1.0
    assert np.asarray(metrics["confusion"]["matrix"]).sum() == 1


TINY_MFSA = {"d": 8, "d_h": 16, "num_heads": 2, "psa_layers": 1, "hca_layers": 1, "wal_hidden": 8,
             "fusion_heads": 2, "fusion_ffn": 16}
