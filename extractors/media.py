"""Decoding with PyAV: probe a file, load its audio as 16 kHz mono, sample its frames by timestamp.

Times are on the media timeline: t = 0 is the container's start, so audio that starts late
(an edit list, a late first packet) is padded with silence and stays aligned with the frames.
Bad input raises `MediaError` with a message meant for the user, never a raw av error.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

from extractors.errors import MediaError
from extractors.hashing import file_sha256

# a stream that ends this much before its declared end was cut short (a partial download)
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.1


@dataclass(frozen=True)
class MediaInfo:
    path: str
    sha256: str
    size_bytes: int
    container: str
    duration_s: float
    has_audio: bool
    has_video: bool
    width: int | None = None  # display size, after rotation
    height: int | None = None
    fps: float | None = None  # average frame rate (variable-rate files have no single one)
    rotation: int = 0  # degrees counter-clockwise applied to the coded frames for display
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MediaInfo":
        return cls(**data)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise MediaError(f"{path}: not a file; give a video or audio file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes); re-copy or re-download it")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise MediaError(
            f"{path}: not a media file that ffmpeg can read, or damaged/truncated ({_reason(e)}); "
            "check that it is a video or audio file and that it was copied completely"
        ) from None
    except OSError as e:
        raise MediaError(f"{path}: cannot be read ({e.strerror or e})") from None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    attached = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not stream.disposition & attached:  # cover art in an mp3/m4a is not a video
            return stream
    return None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _start(container: av.container.InputContainer) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _stream_end(stream: av.stream.Stream, t0: float) -> float | None:
    if not stream.duration:
        return None
    start = stream.start_time * stream.time_base if stream.start_time is not None else t0
    return float(start + stream.duration * stream.time_base) - t0


def _duration(container: av.container.InputContainer) -> float:
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    t0 = _start(container)
    ends = [e for e in (_stream_end(s, t0) for s in container.streams if s.type in ("audio", "video")) if e]
    if ends:
        return max(ends)
    # raw streams carry no duration: read the packet times (no decoding)
    end = 0.0
    for packet in container.demux():
        if packet.pts is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base) - t0)
    container.seek(0)
    return end


def _first_frames(container, streams: list, path) -> dict[int, av.frame.Frame]:
    """Decode each stream's first frame in one pass: proves it decodes, and gives the rotation."""
    found: dict[int, av.frame.Frame] = {}
    current = streams[0]
    try:
        for packet in container.demux(streams):
            current = packet.stream
            if packet.stream.index in found:
                continue
            for frame in packet.decode():
                found[packet.stream.index] = frame
                break
            if len(found) == len(streams):
                break
    except av.error.FFmpegError as e:
        raise MediaError(
            f"{path}: its {current.type} stream ({current.codec_context.name}) cannot be decoded "
            f"({_reason(e)}); the file is damaged or uses an unsupported codec, re-encode it "
            "(e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4)"
        ) from None
    return found


def probe(path: str | os.PathLike) -> MediaInfo:
    """What the file holds; raises MediaError when it is not usable media."""
    path = Path(path)
    with _open(path) as container:
        video, audio = _video_stream(container), _audio_stream(container)
        if video is None and audio is None:
            raise MediaError(f"{path}: holds neither a video nor an audio stream; give a video or audio file")
        duration = _duration(container)
        if not duration > 0:
            raise MediaError(f"{path}: has no duration (no playable data); re-encode or re-download it")
        first = _first_frames(container, [s for s in (video, audio) if s is not None], path)
        width = height = fps = video_codec = None
        rotation = 0
        if video is not None:
            if video.index not in first:
                raise MediaError(f"{path}: the video stream holds no frames; the file is damaged or truncated")
            rotation = _rotation(first[video.index])
            width, height = video.codec_context.width, video.codec_context.height
            if rotation % 180:
                width, height = height, width
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else None
            video_codec = video.codec_context.name
        if audio is not None and audio.index not in first:
            audio = None  # a declared but empty audio track: treat as no audio
        return MediaInfo(
            path=str(path),
            sha256=file_sha256(path),
            size_bytes=path.stat().st_size,
            container=container.format.name,
            duration_s=float(duration),
            has_audio=audio is not None,
            has_video=video is not None,
            width=width,
            height=height,
            fps=fps,
            rotation=rotation,
            video_codec=video_codec,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
        )


def _rotation(frame: av.VideoFrame) -> int:
    # the display matrix may hold any angle; frames are only ever turned by quarter turns
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360


def _check_complete(path, kind: str, decoded_end: float | None, declared_end: float | None) -> None:
    if decoded_end is None or not declared_end:
        return
    slack = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared_end)
    if decoded_end < declared_end - slack:
        raise MediaError(
            f"{path}: looks truncated: its {kind} should run to {declared_end:.2f} s but the data ends "
            f"at {decoded_end:.2f} s; re-copy or re-download the file"
        )


def load_audio(path: str | os.PathLike, *, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream as float32 mono in [-1, 1] at `sample_rate`, on the media timeline.

    Channels are averaged (ffmpeg's own downmix adds +3 dB and clips). Empty when the file
    has no audio stream.
    """
    with _open(path) as container:
        stream = _audio_stream(container)
        if stream is None:
            return np.zeros(0, np.float32)
        t0 = _start(container)
        # planar float at the target rate, channel layout kept: channels are averaged below
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_time = end_time = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if first_time is None and frame.time is not None:
                        first_time = frame.time - t0
                    if frame.time is not None:
                        end_time = frame.time - t0 + frame.samples / frame.sample_rate
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as e:
            raise MediaError(
                f"{path}: the audio is damaged or truncated ({_reason(e)}); re-copy or re-encode the file"
            ) from None
        # Without a duration of its own (Matroska) the audio may legitimately end before the
        # file does; the video's check then covers truncation. Audio-only files use the file's.
        declared = _stream_end(stream, t0) or (None if container.streams.video else _duration(container))
        _check_complete(path, "audio", end_time, declared)
        lead = int(round(max(first_time or 0.0, 0.0) * sample_rate))
        audio = np.concatenate([np.zeros(lead, np.float32), *chunks]) if chunks else np.zeros(0, np.float32)
        return np.clip(audio, -1.0, 1.0, out=audio.astype(np.float32, copy=False))


def _display_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Coded (width, height) to decode into, so the rotated frame fits in max_side."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale))), max(2, int(round(height * scale)))


def sample_frames(
    path: str | os.PathLike, *, rate: float = 15.0, max_side: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t, RGB uint8 frame) for t = k / rate, k = 0, 1, ... while t < duration.

    The frame at t is the one on screen at t (the last with a timestamp <= t), so variable
    frame rates are sampled correctly. Rotation metadata is applied; `max_side` shrinks
    frames in the scaler, before conversion. Nothing is yielded when there is no video.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            return
        stream.thread_type = "AUTO"  # frame + slice threads: the decoder is the cost here
        t0 = _start(container)
        duration = _duration(container)
        count = max(0, math.ceil(duration * rate - 1e-9))
        width, height = _display_size(stream.codec_context.width, stream.codec_context.height, max_side)
        step = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)

        def convert(frame: av.VideoFrame) -> np.ndarray:
            # AREA: the cheapest good filter for shrinking (default bicubic costs ~50% more)
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
            turns = _rotation(frame) // 90
            return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb

        k = 0
        shown: av.VideoFrame | None = None  # the frame on screen now, converted only if sampled
        t = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    t = frame.time - t0 if frame.time is not None else (t + step if t is not None else 0.0)
                    if shown is None:
                        shown = frame  # the first frame also stands for any time before it
                    while k < count and k / rate < t:
                        yield k / rate, convert(shown)  # rarely twice: only when rate > fps
                        k += 1
                    shown = frame
                    if k >= count:
                        break
                if k >= count:
                    break
        except av.error.FFmpegError as e:
            raise MediaError(
                f"{path}: the video is damaged or truncated near {t or 0.0:.2f} s ({_reason(e)}); "
                "re-copy or re-encode the file"
            ) from None
        if k < count:
            _check_complete(path, "video", None if t is None else t + step, _stream_end(stream, t0) or duration)
        while k < count and shown is not None:  # the last frame stays on screen to the end
            yield k / rate, convert(shown)
            k += 1
