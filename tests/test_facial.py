"""Facial extractor on the bundled real clips (examples/media/ATTRIBUTION.md) and on synthetic meshes."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

from extractors.config import VisionConfig
from extractors.errors import BackendUnavailableError
from extractors.facial import COLUMNS, FaceRows, FacialExtractor, backend_for, describe, geometry, select_face
from extractors.facial.mesh import MeshBackend
from extractors.facial.pyfeat import PyFeatBackend

from helpers import MEDIA_DIR as DATA

RATE = 15.0


def decode(path: Path, *, rate: float = RATE) -> tuple[list[tuple[float, np.ndarray]], float]:
    """(time, RGB frame) at `rate` by timestamp, and the duration (PyAV directly, see brief)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        out, nxt = [], 0.0
        for frame in c.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t + 1e-6 >= nxt:
                out.append((t, frame.to_ndarray(format="rgb24")))
                while nxt <= t + 1e-6:
                    nxt += 1.0 / rate
        return out, c.duration / 1e6


@pytest.fixture(scope="module")
def single_face():
    frames, duration = decode(DATA / "single_face.mp4")
    return frames, duration, FacialExtractor().extract(frames, duration_s=duration)


@pytest.fixture(scope="module")
def face_noface():
    frames, duration = decode(DATA / "face_noface.mov")
    return frames, duration, FacialExtractor().extract(frames, duration_s=duration)


def col(seq, name: str) -> np.ndarray:
    return seq.features[:, COLUMNS.index(name)]


def test_describe_names_35_columns_and_validates_options():
    spec = describe(VisionConfig())
    assert spec["id"] == "vision.mesh-fer-au" and spec["dim"] == 35 == len(set(spec["columns"]))
    assert spec["rate"] == 15.0 and spec["config"]["backend"] == "mesh"
    assert spec["columns"][0] == "face_present" and "au12_est" in spec["columns"]
    assert describe(VisionConfig(backend="py-feat"))["id"] != spec["id"]  # not interchangeable
    for bad in ({"face": "first"}, {"max_faces": 0}, {"max_side": 32}):
        with pytest.raises(ValueError):
            VisionConfig(**bad)


@pytest.mark.integration
def test_single_face_rows_boxes_and_finite(single_face):
    frames, duration, seq = single_face
    height, width = frames[0][1].shape[:2]
    assert abs(seq.length - duration * RATE) <= 1
    assert seq.columns == COLUMNS and seq.spec() == describe(VisionConfig())
    assert np.isfinite(seq.features).all()
    assert np.all(np.diff(seq.times[:, 0]) > 0) and np.all(seq.times[:, 1] >= seq.times[:, 0])
    assert seq.meta["face_coverage"] == 1.0 and col(seq, "face_present").min() == 1.0
    boxes = seq.meta["boxes"]
    assert boxes.shape == (seq.length, 4) and np.isfinite(boxes).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert ((boxes[:, 2] - boxes[:, 0]) > 0.1 * width).all()  # a face, not a speck
    emo = seq.features[:, 1:8]
    np.testing.assert_allclose(emo.sum(1), 1.0, atol=1e-3)
    aus = seq.features[:, 8:28]
    assert aus.min() >= 0.0 and aus.max() <= 1.0


@pytest.mark.integration
def test_smile_raises_happy_and_au12(single_face):
    _, _, seq = single_face
    third = seq.length // 3
    for name, gain in (("emo_happy", 0.3), ("au12_est", 0.1)):
        v = col(seq, name)
        assert v[-third:].mean() > v[:third].mean() + gain, (name, v[:third].mean(), v[-third:].mean())


@pytest.mark.integration
def test_face_then_no_face(face_noface):
    _, duration, seq = face_noface
    assert abs(seq.length - duration * RATE) <= 1
    t, present = seq.times[:, 0], col(seq, "face_present")
    assert present[t < 2.0].mean() > 0.9
    assert present[t > 3.0].max() == 0.0
    absent = present == 0
    assert (seq.features[absent] == 0).all()
    assert np.isnan(seq.meta["boxes"][absent]).all() and np.isfinite(seq.meta["boxes"][~absent]).all()
    assert 0.25 < seq.meta["face_coverage"] < 0.6


@pytest.mark.integration
def test_blank_and_noise_frames_have_no_face():
    rng = np.random.default_rng(0)
    frames = [(i / RATE, np.full((240, 320, 3), 128, np.uint8)) for i in range(5)]
    frames += [((5 + i) / RATE, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for i in range(5)]
    seq = FacialExtractor().extract(frames, duration_s=10 / RATE)
    assert seq.length == 10 and (seq.features == 0).all()
    assert seq.meta["face_coverage"] == 0.0 and np.isnan(seq.meta["boxes"]).all()


def test_no_frames_gives_empty_sequence_with_reason():
    seq = FacialExtractor().extract(iter([]), duration_s=0.0)
    assert seq.length == 0 and seq.dim == 35 and seq.columns == COLUMNS
    assert "no video frames" in seq.meta["empty_reason"]


@pytest.mark.integration
def test_repeatable_and_boxes_in_video_pixels(single_face):
    frames, duration, seq = single_face
    again = FacialExtractor().extract(frames[:12], duration_s=duration)  # tracker state reset
    np.testing.assert_allclose(again.features, seq.features[:12], atol=1e-5)
    height, width = frames[0][1].shape[:2]
    half = [(t, im[::2, ::2].copy()) for t, im in frames[:6]]
    scaled = FacialExtractor().extract(half, duration_s=duration, frame_size=(width, height))
    np.testing.assert_allclose(scaled.meta["boxes"], seq.meta["boxes"][:6], rtol=0.1, atol=8)


def assert_face_rows(rows: FaceRows, *, frames: int) -> None:
    """A backend's FaceRows: one entry per frame, feature rows for the frames with a face only."""
    assert isinstance(rows, FaceRows)
    assert len(rows.times) == len(rows.sizes) == len(rows.counts) == len(rows.boxes) == frames
    assert rows.features.shape == (int(rows.present.sum()), len(COLUMNS)) and rows.features.dtype == np.float32
    assert (rows.features[:, COLUMNS.index("face_present")] == 1.0).all()
    assert all((c > 0) == p for c, p in zip(rows.counts, rows.present))


@pytest.mark.integration
def test_mesh_backend_returns_face_rows_in_chunks(face_noface):
    frames, _, seq = face_noface
    backend = backend_for(VisionConfig(), chunk_rows=4)
    assert isinstance(backend, MeshBackend)
    rows = backend.run(frames)
    assert_face_rows(rows, frames=len(frames))
    assert rows.present.any() and not rows.present.all()
    # the extractor's rows are the backend's, faces in order, whatever the chunking
    np.testing.assert_array_equal(rows.features, seq.features[rows.present])


def test_pose_and_au_inversion_on_the_model_mesh():
    model = geometry.load_au_model()
    rng = np.random.default_rng(1)
    true = np.zeros(23)
    true[model.au_names.index("AU12")] = 0.8
    face = model.neutral + (true @ model.basis).reshape(-1, 3)
    for yaw, pitch, roll in ((0, 0, 0), (20, -10, 5), (-30, 15, -8)):
        ry, rx, rz = (np.radians(a) for a in (yaw, -pitch, roll))
        rot = (np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
               @ np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
               @ np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]]))
        observed = 1.7 * face @ rot.T + [300.0, 50.0, 10.0] + rng.normal(0, 0.2, face.shape)
        out = geometry.analyse(geometry.to_model_frame(observed)[None], model=model)
        np.testing.assert_allclose(out["pose"][0], [yaw, pitch, roll], atol=1.0)
        # ridge shrinkage: 0.8 reads ~0.4, and it stays the dominant AU
        au12 = out["aus"][0, model.au_names.index("AU12")]
        assert au12 > 0.3 and np.delete(out["aus"][0], model.au_names.index("AU12")).max() < au12


def test_face_selection_rules_and_continuity():
    small, big = np.array([10.0, 10, 60, 60]), np.array([200.0, 100, 400, 300])
    assert select_face([small, big], previous=None, rule="largest", frame_wh=(640, 360)) == 1
    centred = np.array([300.0, 160, 340, 200])
    assert select_face([big, centred], previous=None, rule="center", frame_wh=(640, 360)) == 1
    # the followed face stays followed while it overlaps its previous box, even if smaller
    assert select_face([big, small + 2], previous=small, rule="largest", frame_wh=(640, 360)) == 1


def test_pyfeat_backend_without_pyfeat_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "feat", None)  # import feat -> ImportError, even if installed
    frames = [(0.0, np.zeros((64, 64, 3), np.uint8))]
    with pytest.raises(BackendUnavailableError, match="py-feat.*not installed.*mesh"):
        FacialExtractor(VisionConfig(backend="py-feat")).extract(frames, duration_s=1.0)


def test_pyfeat_mapping_with_a_stand_in_detector(monkeypatch):
    """The adapter's column mapping, with a stand-in for py-feat's Detectorv2 (py-feat itself
    cannot run here: not installed, and its weights come from the Hugging Face hub)."""
    import types

    import pandas as pd

    class StandIn:
        def __init__(self, device):
            self.device = device

        def detect(self, tensor, **kwargs):
            assert tuple(tensor.shape[1:]) == (3, 120, 160)
            lm = {f"x_{j}": 40.0 + j for j in range(68)} | {f"y_{j}": 30.0 + (j % 17) for j in range(68)}
            face = {"FaceRectX": 40.0, "FaceRectY": 20.0, "FaceRectWidth": 60.0, "FaceRectHeight": 80.0,
                    "AU12": 0.7, "Happy": 0.9, "Neutral": 0.1, "Yaw": 5.0, "Pitch": -2.0, "Roll": 1.0, **lm}
            none = {"FaceRectX": np.nan}
            return pd.DataFrame([{**face, "frame": 0}, {**none, "frame": 1}])

    monkeypatch.setitem(sys.modules, "feat", types.SimpleNamespace(Detectorv2=StandIn))
    frames = [(0.0, np.zeros((120, 160, 3), np.uint8)), (1 / RATE, np.zeros((120, 160, 3), np.uint8))]
    seq = FacialExtractor(VisionConfig(backend="py-feat", device="cpu")).extract(frames, duration_s=2 / RATE)
    assert seq.source["id"] == "vision.py-feat" and seq.length == 2
    assert col(seq, "face_present").tolist() == [1.0, 0.0] and (seq.features[1] == 0).all()
    assert col(seq, "au12_est")[0] == pytest.approx(0.7) and col(seq, "emo_happy")[0] == pytest.approx(0.9)
    assert col(seq, "au01_est")[0] == 0.0 and col(seq, "pose_yaw")[0] == 5.0
    np.testing.assert_allclose(seq.meta["boxes"][0], [40, 20, 100, 100])
    assert col(seq, "geo_face_scale")[0] == pytest.approx(80 / 120)
    backend = backend_for(VisionConfig(backend="py-feat", device="cpu"))
    assert isinstance(backend, PyFeatBackend)
    assert_face_rows(backend.run(frames), frames=2)
