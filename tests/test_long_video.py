"""Long videos in bounded memory: the chunked and blocked stages give what one pass gives.

Peak memory itself is measured by benchmarks/bench_analyze.py --durations; here, on short clips
with tiny chunks, each chunked stage is compared with one pass over the whole input. The
60-minute case (a real long video built with ffmpeg) is marked slow.
"""

import difflib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from extractors.acoustic import AcousticExtractor
from extractors.config import TextConfig
from extractors.facial import FacialExtractor
from extractors.media import load_audio, probe, sample_frames
from extractors.text import _quiet_cuts, load_recogniser, transcribe_blocks
from mfsa_pipe.analysis import render

from helpers import MEDIA_DIR as DATA

JFK, SINGLE, FACE_NOFACE = DATA / "jfk.flac", DATA / "single_face.mp4", DATA / "face_noface.mov"
SR = 16000


def facial(path, *, chunk_rows):
    info = probe(path)
    frames = sample_frames(path, rate=15.0, max_side=640)
    return FacialExtractor().extract(frames, duration_s=info.duration_s, frame_size=(info.width, info.height),
                                     chunk_rows=chunk_rows)


@pytest.mark.integration
def test_facial_columns_in_chunks_equal_one_pass():
    # face_noface: faces come and go, so chunks end both inside and between face runs
    whole = facial(FACE_NOFACE, chunk_rows=10_000)
    chunked = facial(FACE_NOFACE, chunk_rows=3)
    assert 0 < whole.meta["face_coverage"] < 1
    np.testing.assert_array_equal(chunked.features, whole.features)
    np.testing.assert_array_equal(chunked.times, whole.times)
    np.testing.assert_array_equal(chunked.meta["boxes"], whole.meta["boxes"])


@pytest.mark.integration
def test_acoustic_in_blocks_equals_one_pass():
    audio = load_audio(JFK)
    extractor = AcousticExtractor()
    whole = extractor.extract(audio, sample_rate=SR, duration_s=11.0)
    blocked = extractor.extract(audio, sample_rate=SR, duration_s=11.0, block_s=2.0)  # 6 blocks
    assert whole.length == 138 and whole.meta["voice_activity_fraction"] > 0.3
    np.testing.assert_array_equal(blocked.features, whole.features)
    np.testing.assert_array_equal(blocked.times, whole.times)


@pytest.mark.integration
def test_acoustic_blocks_past_the_end_of_the_audio_are_silence():
    audio = load_audio(JFK)[: 3 * SR]  # 3 s of audio in a 6 s file
    whole = AcousticExtractor().extract(audio, sample_rate=SR, duration_s=6.0)
    blocked = AcousticExtractor().extract(audio, sample_rate=SR, duration_s=6.0, block_s=1.0)
    np.testing.assert_array_equal(blocked.features, whole.features)
    assert not blocked.features[40:, blocked.columns.index("loudness")].any()


def test_quiet_cuts_fall_in_the_quietest_half_second_before_each_limit():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(100 * SR)).astype(np.float32)
    audio[37 * SR:38 * SR] = 0  # silence where the first block may end
    cuts = _quiet_cuts(audio, block=40 * SR, search=10 * SR)
    assert cuts[0] == 0 and cuts[-1] == len(audio)
    assert all(0 < b - a <= 40 * SR for a, b in zip(cuts[:-1], cuts[1:]))
    assert 37 * SR <= cuts[1] <= 38 * SR
    assert _quiet_cuts(audio[: 40 * SR], block=40 * SR, search=10 * SR) == [0, 40 * SR]


@pytest.mark.integration
def test_speech_in_blocks_keeps_the_words_and_their_times():
    audio = load_audio(JFK)
    config = TextConfig()
    recogniser = load_recogniser(config)
    whole = recogniser.transcribe(audio, config=config)
    assert transcribe_blocks(recogniser, audio, config=config, block_s=60.0) == whole  # short: one call
    blocked = transcribe_blocks(recogniser, audio, config=config, block_s=5.0)
    words = [w["word"].strip(" ,.").lower() for w in whole["words"]]
    got = [w["word"].strip(" ,.").lower() for w in blocked["words"]]
    assert len(words) >= 20
    assert difflib.SequenceMatcher(a=words, b=got).ratio() >= 0.8
    starts = [w["start"] for w in blocked["words"]]
    assert starts == sorted(starts) and 0 <= starts[0] and blocked["words"][-1]["end"] <= 11.0 + 1e-6
    # a word found by both keeps its time to within a few tenths of a second
    ask = next(w for w in blocked["words"] if "ask" in w["word"].lower())
    ask_whole = next(w for w in whole["words"] if "ask" in w["word"].lower())
    assert abs(ask["start"] - ask_whole["start"]) < 0.5
    assert blocked["language"] == whole["language"] == "en"


def test_timeline_draws_cjk_titles_with_an_installed_font(tmp_path):
    title = "インタビュー 采访 2024.mp4"
    families = render.fallback_fonts([title])
    if not families:
        pytest.skip("no installed font has CJK glyphs (e.g. apt-get install fonts-wqy-microhei)")
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties(family=families[0]), fallback_to_default=False)
    assert {ord(c) for c in "インタビュー采访"} <= set(FT2Font(path).get_charmap())
    assert render.fallback_fonts(["plain ascii.mp4", "café"]) == []
    data = render.OverlayData(duration_s=2.0, utterances=[(0.0, 2.0)], words=[(0.2, 0.6, "你好")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render.render_timeline_png(data=data, path=tmp_path / "t.png", title=title, texts=["你好"])
    assert (tmp_path / "t.png").stat().st_size > 0
    assert not [w for w in caught if "missing from" in str(w.message)]


@pytest.mark.integration
@pytest.mark.slow
def test_sixty_minute_video_in_bounded_memory(tmp_path):
    """A 60-minute 360p video (one minute of a bundled clip with speech, repeated) analyses
    with peak RSS under 1.5 GB and rows for the whole hour."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    unit, listing, video = tmp_path / "unit.mp4", tmp_path / "list.txt", tmp_path / "hour.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-stream_loop", "-1", "-i", str(SINGLE), "-stream_loop", "-1",
                    "-i", str(JFK), "-map", "0:v", "-map", "1:a", "-t", "60", "-vf", "scale=640:360,fps=24",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-c:a", "aac", "-ac", "1", str(unit)],
                   check=True)
    listing.write_text("".join(f"file '{unit}'\n" for _ in range(60)))
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(video)], check=True)
    code = ("import json, resource, sys; from mfsa_pipe.analysis.video import analyze; "
            "r = analyze(sys.argv[1], out_dir=sys.argv[2], no_model=True, cache_dir=False); "
            "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "'duration': r.input.duration_s}))")
    out = subprocess.run([sys.executable, "-c", code, str(video), str(tmp_path / "out")], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["duration"] == pytest.approx(3600, abs=1)
    assert result["rss_mb"] < 1500
    with np.load(tmp_path / "out" / "features.npz") as features:
        assert features["vision.features"].shape[0] == pytest.approx(3600 * 15, abs=2)
        assert features["audio.features"].shape[0] == pytest.approx(3600 * 12.5, abs=2)
        assert features["text.features"].shape[0] > 3000  # JFK's 22 words, 327 times
