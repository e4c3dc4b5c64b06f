"""Utterances without speech follow the face: the change-point splitter on synthetic vision
sequences, the gaps between speech segments, and (when /work/shared is here) a real silent clip
whose face goes sad -> fear -> happy."""

from pathlib import Path

import numpy as np
import pytest

from extractors.pipeline import feature_spec
from extractors.sequence import Sequence
from mfsa_pipe.segmentation import (
    DEFAULT_WINDOW_S,
    MIN_WINDOW_S,
    Utterance,
    face_change_points,
    face_windows,
    make_utterances,
    slice_rows,
)

SPEC = feature_spec()["vision"]
COLUMNS = list(SPEC["columns"])
EMOTIONS = [c for c in COLUMNS if c.startswith("emo_")]
SHARED = Path("/work/shared/media/WolfgangLanger_Pexels.mp4")


def _vision(states: list[tuple[float, str | None]], duration: float, *, noise: float = 0.05, seed: int = 0) -> Sequence:
    """15 Hz rows; states: (start time, dominant emotion or None = no face), in order. The
    dominant emotion holds ~0.8 of the mass, the rest is noise, as FER estimates look."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * 15))
    times = np.stack([np.arange(n) / 15, (np.arange(n) + 1) / 15], axis=1)
    feats = np.zeros((n, len(COLUMNS)), np.float32)
    mid = times.mean(axis=1)
    for k, (start, state) in enumerate(states):
        end = states[k + 1][0] if k + 1 < len(states) else duration
        rows = (mid >= start) & (mid < end)
        if state is None:
            continue  # no face: face_present 0, estimates 0
        p = rng.dirichlet(np.ones(len(EMOTIONS)) * 2, rows.sum()) * 0.2 + rng.random((rows.sum(), 1)) * noise
        p[:, EMOTIONS.index(f"emo_{state}")] += 0.8
        p /= p.sum(axis=1, keepdims=True)
        feats[rows, COLUMNS.index("face_present")] = 1.0
        feats[np.ix_(rows, [COLUMNS.index(e) for e in EMOTIONS])] = p
    return Sequence(features=feats, times=times, columns=COLUMNS, rate=15.0,
                    source={k: SPEC[k] for k in ("id", "version", "config")})


def _spans(utts: list[Utterance]) -> list[tuple[float, float]]:
    return [(round(u.start, 2), round(u.end, 2)) for u in utts]


def _check_tiling(utts: list[Utterance], start: float, end: float) -> None:
    assert utts[0].start == pytest.approx(start) and utts[-1].end == pytest.approx(end)
    for a, b in zip(utts[:-1], utts[1:]):
        assert a.end == pytest.approx(b.start)
    for u in utts:
        assert MIN_WINDOW_S - 1e-6 <= u.end - u.start <= DEFAULT_WINDOW_S + 1e-6


def test_a_silent_video_is_cut_where_the_face_changes():
    vision = _vision([(0.0, "sad"), (6.0, "fear"), (10.0, "happy")], 19.7)
    utts = make_utterances(segments=[], duration_s=19.7, vision=vision)
    assert all(u.source == "window" and u.text == "" for u in utts) and [u.index for u in utts] == list(range(len(utts)))
    _check_tiling(utts, 0.0, 19.7)
    cuts = face_change_points(vision, 0.0, 19.7)
    assert len(cuts) == 2 and cuts[0] == pytest.approx(6.0, abs=0.2) and cuts[1] == pytest.approx(10.0, abs=0.2)
    edges = [u.start for u in utts]
    assert any(abs(e - 6.0) <= 0.2 for e in edges) and any(abs(e - 10.0) <= 0.2 for e in edges)
    # pieces longer than 5 s are cut into equal parts: 0-6 in two, 6-10 whole, 10-19.7 in two
    assert len(utts) == 5
    # deterministic
    assert _spans(make_utterances(segments=[], duration_s=19.7, vision=vision)) == _spans(utts)


def test_a_steady_face_gets_equal_windows_and_no_face_the_fixed_ones():
    steady = _vision([(0.0, "neutral")], 12.0)
    assert face_change_points(steady, 0.0, 12.0) == []
    assert _spans(make_utterances(segments=[], duration_s=12.0, vision=steady)) == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    # no face anywhere (or no vision at all): fixed 5 s windows as before, the short tail joined
    nobody = _vision([(0.0, None)], 12.0)
    assert _spans(make_utterances(segments=[], duration_s=12.0, vision=nobody)) == [(0.0, 5.0), (5.0, 12.0)]
    assert _spans(make_utterances(segments=[], duration_s=12.0)) == [(0.0, 5.0), (5.0, 12.0)]
    # shorter than two minimal windows: one window
    assert _spans(make_utterances(segments=[], duration_s=2.4, vision=_vision([(0.0, "sad"), (1.2, "happy")], 2.4))) == [(0.0, 2.4)]


def test_a_face_leaving_is_a_change_and_a_brief_flicker_is_not():
    leaving = _vision([(0.0, "happy"), (2.4, None)], 6.4)
    assert face_change_points(leaving, 0.0, 6.4) == pytest.approx([2.4], abs=0.15)
    flicker = _vision([(0.0, "neutral"), (4.0, "surprise"), (4.3, "neutral")], 9.0)  # 0.3 s
    assert face_change_points(flicker, 0.0, 9.0) == []
    # min window: two changes 1 s apart give one boundary
    close = _vision([(0.0, "sad"), (4.0, "fear"), (5.0, "happy")], 9.0)
    assert len(face_change_points(close, 0.0, 9.0)) == 1
    windows = face_windows(close, 0.0, 9.0)
    assert all(b - a >= MIN_WINDOW_S - 1e-6 for a, b in windows)


def test_long_gaps_between_speech_with_a_face_get_windows():
    vision = _vision([(0.0, "neutral"), (5.0, "happy"), (9.5, "sad")], 14.0)
    segs = [{"start": 0.5, "end": 2.0, "text": "hello"}, {"start": 9.5, "end": 11.0, "text": "bye"}]
    utts = make_utterances(segments=segs, duration_s=14.0, vision=vision)
    assert [(u.source, u.text) for u in utts if u.source == "speech"] == [("speech", "hello"), ("speech", "bye")]
    # 0-0.5 is too short to fill; the 2.0-9.5 gap is cut at the face change near 5 s; 11-14 is 3 s
    gap = [u for u in utts if u.source == "window" and 2.0 <= u.start < 9.5]
    assert gap[0].start == pytest.approx(2.0) and gap[-1].end == pytest.approx(9.5)
    assert any(abs(u.start - 5.0) <= 0.2 for u in gap[1:])
    assert [(u.start, u.end) for u in utts if u.start >= 11.0] == [(11.0, 14.0)]
    assert all(a.end <= b.start + 1e-9 for a, b in zip(utts[:-1], utts[1:]))
    assert [u.index for u in utts] == list(range(len(utts)))
    # without a face in the gap, it stays uncovered, as do all gaps without vision
    nobody = _vision([(0.0, None)], 14.0)
    assert [u.source for u in make_utterances(segments=segs, duration_s=14.0, vision=nobody)] == ["speech", "speech"]
    assert [u.source for u in make_utterances(segments=segs, duration_s=14.0)] == ["speech", "speech"]


def test_words_go_to_speech_utterances_only():
    utts = [Utterance(0, 0.0, 1.0, "a b", "speech"), Utterance(1, 1.0, 4.0, "", "window")]
    words = Sequence(features=np.zeros((2, 1), np.float32), times=np.array([[0.2, 0.5], [0.9, 1.3]]), columns=["g"],
                     rate=None, source={"id": "t", "version": "0"}, tokens=["a", "b"])
    frames = Sequence(features=np.zeros((4, 1), np.float32), times=np.array([[0.0, 0.5], [0.9, 1.3], [2, 2.5], [5, 6]]),
                      columns=["f"], rate=2.0, source={"id": "v", "version": "0"})
    assert [r.tolist() for r in slice_rows(words, utts)] == [[0, 1], []]  # "b" (midpoint 1.1) stays with its segment
    assert [r.tolist() for r in slice_rows(frames, utts)] == [[0], [1, 2]]


@pytest.mark.integration
@pytest.mark.skipif(not SHARED.is_file(), reason="needs /work/shared/media (not in CI)")
def test_real_silent_clip_follows_the_face(tmp_path_factory):
    """WolfgangLanger_Pexels.mp4: 19.7 s, silent, the face goes sad -> fear -> happy (~10 s)."""
    from mfsa_pipe.analysis.video import analyze

    cache = tmp_path_factory.getbasetemp() / "mfsa-extraction-cache"
    cache.mkdir(exist_ok=True)
    report = analyze(SHARED, out_dir=tmp_path_factory.mktemp("wolf"), no_model=True, render_video=False, cache_dir=cache)
    utts = report.utterances
    assert all(u.source == "window" for u in utts) and len(utts) >= 4
    assert all(MIN_WINDOW_S - 1e-3 <= u.end - u.start <= DEFAULT_WINDOW_S + 1e-3 for u in utts)
    top = [max(u.signals.emotions, key=u.signals.emotions.get) for u in utts]
    assert top[0] == "sad" and top[-1] == "happy" and "fear" in top
    # the happy face starts near 9.5-10 s: a window boundary there, not a window straddling it
    assert any(9.0 <= u.start <= 10.3 for u in utts)
    assert all(u.modalities["text"].reason == "no words" and u.modalities["audio"].reason == "silent" for u in utts)
    assert all(u.modalities["vision"].reason is None and u.modalities["vision"].used is None for u in utts)
