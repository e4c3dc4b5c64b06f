import hashlib
import math
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from extractors.errors import MediaError
from extractors.media import load_audio, probe, sample_frames

from helpers import MEDIA_DIR as DATA

GRID, SINGLE, MOV, JFK = (DATA / n for n in ("grid_id2_vcd_swwp2s.mpg", "single_face.mp4", "face_noface.mov", "jfk.flac"))


def make_video(path: Path, *, seconds: float = 1.0, fps: int = 10, size=(64, 48), rotation: int = 0,
               audio: bool = False, faststart: bool = False, noise: bool = False) -> Path:
    """A small H.264 mp4: a white block in the top-left corner of the coded picture
    (`noise`: random pixels elsewhere, so every frame costs about the same bytes)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[: size[1] // 3, : size[0] // 3] = 255
        rng = np.random.default_rng(0)
        for i in range(int(seconds * fps)):
            if noise:
                image[size[1] // 3:] = rng.integers(0, 256, image[size[1] // 3:].shape, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


@pytest.mark.parametrize(
    "path, facts",
    [
        (GRID, dict(container="mpeg", has_audio=True, has_video=True, width=360, height=288, fps=25.0,
                    video_codec="mpeg1video", audio_codec="mp2", audio_sample_rate=44100, duration=2.98)),
        (SINGLE, dict(has_audio=True, has_video=True, width=640, height=360, fps=30.0, video_codec="h264",
                      audio_sample_rate=44100, duration=2.42)),
        (MOV, dict(has_audio=True, has_video=True, width=960, height=540, video_codec="hevc", audio_codec="aac",
                   duration=6.42)),
        (JFK, dict(container="flac", has_audio=True, has_video=False, width=None, fps=None, video_codec=None,
                   audio_codec="flac", duration=11.0)),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else "",
)
def test_probe_facts(path, facts):
    info = probe(path)
    duration = facts.pop("duration")
    assert info.duration_s == pytest.approx(duration, abs=0.01)
    for key, value in facts.items():
        assert getattr(info, key) == value, key
    assert info.size_bytes == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.rotation == 0


@pytest.mark.parametrize("path", [GRID, SINGLE, MOV, JFK], ids=lambda p: p.name)
def test_audio_is_16k_mono_on_the_media_timeline(path):
    audio = load_audio(path)
    duration = probe(path).duration_s
    assert audio.dtype == np.float32 and audio.ndim == 1
    # within one codec frame (AAC: 1024 samples at 44.1 kHz) of the container's duration
    assert abs(len(audio) / 16000 - duration) < 0.05
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 1e-3


def test_audio_channels_are_averaged_not_summed():
    # ffmpeg's own stereo -> mono downmix adds +3 dB; jfk's stereo channels peak at 0.78
    assert 0.7 < np.abs(load_audio(JFK)).max() < 0.8
    assert len(load_audio(JFK, sample_rate=8000)) == 88000


def test_late_audio_is_padded_to_stay_aligned():
    # face_noface.mov's audio track starts 2.43 s into the file
    audio = load_audio(MOV)
    assert not audio[: int(2.4 * 16000)].any()
    assert np.abs(audio[int(2.5 * 16000):]).max() > 0.01


@pytest.mark.parametrize("path", [GRID, SINGLE, MOV], ids=lambda p: p.name)
def test_frames_sampled_by_timestamp(path):
    info = probe(path)
    frames = list(sample_frames(path, rate=15.0, max_side=200))
    assert abs(len(frames) - info.duration_s * 15) <= 1
    times = np.array([t for t, _ in frames])
    np.testing.assert_allclose(times, np.arange(len(frames)) / 15.0)
    assert times[-1] < info.duration_s
    h, w = frames[0][1].shape[:2]
    assert max(h, w) == 200 and abs(w / h - info.width / info.height) < 0.02
    assert all(f.dtype == np.uint8 and f.shape == (h, w, 3) for _, f in frames)


def test_variable_frame_rate_picks_the_frame_on_screen():
    # face_noface.mov is variable-rate (frame gaps 14-42 ms): the frame at t is the last with pts <= t
    width, height = 96, 54
    with av.open(str(MOV)) as c:
        decoded = [(f.time, f.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"))
                   for f in c.decode(video=0)]
    starts = np.array([t for t, _ in decoded])
    for t, frame in sample_frames(MOV, rate=15.0, max_side=96):
        i = max(0, np.searchsorted(starts, t, side="right") - 1)
        np.testing.assert_array_equal(frame, decoded[i][1])


def test_full_size_frames_and_other_rates():
    frames = list(sample_frames(GRID, rate=5.0))
    assert len(frames) == math.ceil(2.98 * 5) and frames[0][1].shape == (288, 360, 3)


@pytest.mark.integration
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    path = make_video(tmp_path / "rot.mp4", rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    frame = next(sample_frames(path))[1]
    assert frame.shape == (info.height, info.width, 3)
    # the coded top-left block, turned counter-clockwise by `rotation` for display (ffmpeg agrees)
    corner = {90: (-1, 0), -90: (0, -1), 180: (-1, -1)}[rotation]
    assert frame[corner[0], corner[1]].mean() > 200
    assert frame[-1 - corner[0], -1 - corner[1]].mean() < 50


def test_audio_only_file_has_no_frames():
    assert list(sample_frames(JFK)) == []
    assert probe(JFK).has_video is False


@pytest.mark.integration
def test_video_without_audio(tmp_path):
    path = make_video(tmp_path / "mute.mp4", seconds=2.0)
    info = probe(path)
    assert info.has_video and not info.has_audio and info.audio_codec is None
    assert load_audio(path).shape == (0,)
    assert len(list(sample_frames(path))) == 30


def _use(path):
    probe(path)
    load_audio(path)
    list(sample_frames(path))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: _write(d / "empty.mp4", b""), "empty"),
        (lambda d: _write(d / "notes.mp4", b"just some text\n" * 50), "not a media file"),
        (lambda d: _truncated(SINGLE, d / "half.mp4"), "truncated"),
        (lambda d: _truncated(MOV, d / "half.mov"), "truncated"),
        (lambda d: _truncated(JFK, d / "half.flac"), "truncated"),
        (lambda d: d, "not a file"),
        (lambda d: _write(d / "subs.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n\n"), "neither a video nor an audio"),
    ],
    ids=["missing", "0-byte", "text-as-mp4", "truncated-mp4", "truncated-mov", "truncated-flac", "directory",
         "subtitles-only"],
)
def test_bad_input_raises_a_media_error(tmp_path, make, expect):
    path = make(tmp_path)
    with pytest.raises(MediaError) as caught:
        _use(path)
    message = str(caught.value)
    assert expect in message and str(path) in message and "\n" not in message


@pytest.mark.integration
def test_truncated_file_whose_header_survives(tmp_path):
    # moov at the front: the file opens, but the data stops half way
    path = _truncated(make_video(tmp_path / "fast.mp4", seconds=6.0, noise=True, faststart=True), tmp_path / "cut.mp4")
    assert probe(path).duration_s == pytest.approx(6.0, abs=0.2)
    with pytest.raises(MediaError, match="looks truncated: its video should run to 6.00 s but the data ends at [23]\\."):
        list(sample_frames(path))


def test_truncated_mpeg_program_stream_is_a_shorter_file(tmp_path):
    # an MPEG-PS has no index: half the bytes is a valid file of half the duration
    path = _truncated(GRID, tmp_path / "half.mpg")
    info = probe(path)
    assert 1.2 < info.duration_s < 1.7
    assert abs(len(list(sample_frames(path))) - info.duration_s * 15) <= 1


def test_copy_has_the_same_content_hash(tmp_path):
    copy = shutil.copy(GRID, tmp_path / "renamed.mpg")
    assert probe(copy).sha256 == probe(GRID).sha256


def encode(path: Path, video_codec: str | None, audio_codec: str | None, seconds: float = 1.0,
           audio_seconds: float | None = None) -> Path:
    """A tiny file of the given container (by suffix) and codecs: moving gradient, 220 Hz tone
    (`audio_seconds`: a tone shorter than the video)."""
    with av.open(str(path), "w") as out:
        if video_codec:
            video = out.add_stream(video_codec, rate=25)
            video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        if audio_codec:
            audio = out.add_stream(audio_codec, rate=48000 if audio_codec == "libopus" else 44100)
            size = audio.codec_context.frame_size or 1024
            sr = audio.codec_context.sample_rate
            to_codec = av.AudioResampler(format=audio.codec_context.format.name, layout=audio.codec_context.layout, rate=sr)
            t = np.arange(int((audio_seconds or seconds) * sr)) / sr
            tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            for i in range(0, len(tone) - size + 1, size):
                frame = av.AudioFrame.from_ndarray(tone[None, i: i + size], format="flt", layout="mono")
                frame.sample_rate, frame.pts = sr, i
                for converted in to_codec.resample(frame):
                    out.mux(audio.encode(converted))
            out.mux(audio.encode())
        if video_codec:
            ramp = np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None].repeat(64, 0).repeat(3, 2)
            for i in range(int(seconds * 25)):
                frame = av.VideoFrame.from_ndarray(np.roll(ramp, i, axis=1), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode())
    return path


@pytest.mark.integration
def test_audio_that_ends_before_the_video_is_not_called_truncated(tmp_path):
    # Matroska keeps no per-stream duration: the audio's declared end falls back to the file's
    path = encode(tmp_path / "short_audio.mkv", "libx264", "aac", seconds=4.0, audio_seconds=1.0)
    info = probe(path)
    assert info.duration_s == pytest.approx(4.0, abs=0.15)
    audio = load_audio(path)
    assert abs(len(audio) / 16000 - 1.0) < 0.1
    assert len(list(sample_frames(path))) == pytest.approx(4.0 * 15, abs=1)


@pytest.mark.integration
@pytest.mark.parametrize(
    "name, video_codec, audio_codec",
    [
        ("clip.mkv", "libx264", "aac"),
        ("clip.avi", "mpeg4", "libmp3lame"),
        ("clip.webm", "libvpx-vp9", "libopus"),
        ("clip.flv", "flv", "libmp3lame"),
        ("clip.mpg", "mpeg1video", "mp2"),
        ("tone.wav", None, "pcm_s16le"),
        ("tone.mp3", None, "libmp3lame"),
    ],
)
def test_containers(tmp_path, name, video_codec, audio_codec):
    path = encode(tmp_path / name, video_codec, audio_codec, seconds=2.0)
    info = probe(path)
    assert info.duration_s == pytest.approx(2.0, abs=0.15)
    assert info.has_video == bool(video_codec) and info.has_audio
    audio = load_audio(path)
    assert abs(len(audio) / 16000 - info.duration_s) < 0.15
    assert 0.15 < np.abs(audio[4000:-4000]).max() < 0.4  # the 0.3 tone survives, not +3 dB
    frames = list(sample_frames(path))
    if video_codec:
        assert abs(len(frames) - info.duration_s * 15) <= 1 and frames[0][1].shape == (64, 96, 3)
    else:
        assert frames == []
